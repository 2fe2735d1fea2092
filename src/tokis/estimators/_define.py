r"""Declaring an estimator: :func:`define` a form with a reduction, :func:`register` it by name.

An :class:`EstimatorSpec` is the one definition of an estimator. It is callable with the
estimator signature ``spec(log_ratio, rewards, *, mask=None, backend="auto", **params)``;
``tokis.exact.moments`` reads its form to pick the exact method; the harness and every
``tokis`` command find it by name in :data:`REGISTRY` once registered (the 14 built-ins are
declared and registered the same way, in :mod:`._builtins`).
"""

from __future__ import annotations

import hashlib
import inspect
import numbers
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._core._validate import check_flag, check_real
from ._evaluate import evaluate
from ._forms import FORMS, BatchTransform, PerDecision, SequenceTransform, TokenSum, map_params

__all__ = ["Param", "EstimatorSpec", "define", "register", "REGISTRY", "get_estimator", "list_estimators"]

METHODS = ("exact", "asymptotic", "enumeration")


@dataclass(frozen=True)
class Param:
    """A declared parameter: its default and the check every caller applies.

    Parameters
    ----------
    default : object
        Value used when the caller does not pass one.
    check : callable, optional
        ``check(value, name) -> value`` raising ValueError/TypeError naming ``name``. Default:
        ``True``/``False`` for a boolean default, a real number (not NaN) for a numeric one,
        anything otherwise.
    """

    default: Any
    check: Callable | None = None

    def validate(self, value, name: str):
        if self.check is not None:
            return self.check(value, name)
        if isinstance(self.default, (bool, np.bool_)):
            return check_flag(value, name)
        if isinstance(self.default, numbers.Real):
            return check_real(value, name)
        return value


def _as_param(value) -> Param:
    return value if isinstance(value, Param) else Param(value)


_SIGNATURE_HEAD = [
    inspect.Parameter("log_ratio", inspect.Parameter.POSITIONAL_OR_KEYWORD),
    inspect.Parameter("rewards", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
    inspect.Parameter("mask", inspect.Parameter.KEYWORD_ONLY, default=None),
]


def _source(func) -> str:
    try:
        return inspect.getsource(func)
    except (OSError, TypeError):
        return repr(getattr(func, "__code__", func))


@dataclass(frozen=True, eq=False)
class EstimatorSpec:
    r"""One estimator: a form, a reduction, its parameters and metadata. Callable.

    ``spec(log_ratio, rewards, *, mask=None, backend="auto", **params) -> Estimate`` (see
    :func:`evaluate` in :mod:`._evaluate` and the DESIGN section 4 conventions), or
    ``spec(prepared, **params)`` on inputs validated once by :func:`~._prepared.prepare`.

    Attributes
    ----------
    name : str
        Registry name.
    form : TokenSum, TokenProduct, PerDecision or SequenceTransform
    reduce : {"mean", "ratio"} or BatchTransform
    params : Mapping[str, Any]
        Parameter names and their defaults (read-only).
    unbiased : bool
        Unbiased for ``J(pi)`` at every n (given support).
    description, reference : str
    level : {"token", "sequence"}
        Where the weights act.
    token_flags, sequence_flags : Mapping[str, callable]
        Diagnostics: the fraction of real tokens (of sequences, on the form's base log-weight)
        where ``flag(l, *params)`` holds, reported under the key.
    """

    name: str
    form: Any
    reduce: Any = "mean"
    param_specs: Mapping[str, Param] = field(default_factory=dict)
    check: Callable | None = None
    unbiased: bool = False
    description: str = ""
    reference: str = ""
    level: str = "sequence"
    token_flags: Mapping[str, Callable] = field(default_factory=dict)
    sequence_flags: Mapping[str, Callable] = field(default_factory=dict)
    notes: str = ""
    weight_bound: Callable | None = None

    def __post_init__(self):
        for key in ("param_specs", "token_flags", "sequence_flags"):
            object.__setattr__(self, key, types.MappingProxyType(dict(getattr(self, key))))
        params = [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=p.default)
                  for k, p in self.param_specs.items()]
        backend = inspect.Parameter("backend", inspect.Parameter.KEYWORD_ONLY, default="auto")
        object.__setattr__(self, "__signature__", inspect.Signature(_SIGNATURE_HEAD + params + [backend]))
        object.__setattr__(self, "__doc__", self._docstring())
        object.__setattr__(self, "__name__", self.name)

    # -- calling -------------------------------------------------------------------------

    def __call__(self, log_ratio, rewards=None, *, mask=None, backend="auto", **params):
        return evaluate(self, log_ratio, rewards, mask=mask, backend=backend, **params)

    def statistic_bound(self, horizon: int, return_max: float, params: Mapping | None = None):
        """A bound on every per-sample statistic for non-negative returns at most ``return_max``, or None.

        From the declaration's ``weight_bound(horizon, **params)`` (a bound on the weight that
        multiplies ``G``), e.g. ``max(c, 1)^T`` for clip_prod; None when the weight is unbounded.
        Hoeffding's lower bound (``Estimate.ci(method="hoeffding", upper=...)``) needs it.
        """
        if return_max < 0:
            raise ValueError(f"return_max must be >= 0, got {return_max}")
        if self.weight_bound is None:
            return None
        p = self.check_params(dict(params or {}))
        args = {k: p[k] for k in map_params(self.weight_bound) if k in p}
        return float(self.weight_bound(int(horizon), **args)) * float(return_max)

    def check_params(self, given: Mapping) -> dict:
        """Validate ``given`` and fill in defaults: the one parameter check of this estimator.

        Used by the call, ``tokis.exact.moments`` and the analysis configurations alike.

        Raises
        ------
        TypeError
            An unknown parameter (listing the accepted ones), as Python does for a function.
        ValueError, TypeError
            An invalid value (naming the parameter).
        """
        extra = [k for k in given if k not in self.param_specs]
        if extra:
            takes = ", ".join(self.param_specs) or "no parameters"
            raise TypeError(f"estimator {self.name!r} got an unexpected keyword argument {extra[0]!r} (it takes: {takes})")
        params = {k: p.validate(given[k], k) if k in given else p.default for k, p in self.param_specs.items()}
        if self.check is not None:
            params = dict(self.check(params))
        return params

    # -- derived metadata ----------------------------------------------------------------

    @property
    def params(self) -> Mapping[str, Any]:
        """Parameter names and defaults (read-only)."""
        return types.MappingProxyType({k: p.default for k, p in self.param_specs.items()})

    def reduction(self, params: Mapping | None = None) -> str:
        """``"mean"`` or ``"ratio"``: how the weights are averaged for these parameters."""
        if isinstance(self.reduce, BatchTransform):
            return self.reduce.reduction(dict(self.params) if params is None else params)
        return self.reduce

    def is_batch(self, params: Mapping | None = None) -> bool:
        """Whether the estimate is not a mean of independent per-sample terms (finite-n moments need n)."""
        params = dict(self.params) if params is None else params
        if isinstance(self.reduce, BatchTransform):
            return not self.reduce.is_per_sample(params)
        return self.reduce == "ratio"

    @property
    def self_normalized(self) -> bool:
        """A ratio estimator at its default parameters (``Estimate.numerator``/``denominator``)."""
        return self.reduction() == "ratio"

    def exact_method(self, params: Mapping | None = None) -> str:
        """How ``tokis.exact.moments`` gets this estimator's moments by default.

        ``"exact"`` (a forward DP: TokenSum, TokenProduct, PerDecision with the mean),
        ``"asymptotic"`` (delta method: TokenProduct or PerDecision with ``reduce="ratio"``) or
        ``"enumeration"`` (SequenceTransform and batch transforms: only by enumerating sequences).
        """
        if isinstance(self.reduce, BatchTransform) or isinstance(self.form, SequenceTransform):
            return "enumeration"
        if self.reduce == "ratio":
            return "asymptotic"
        return "exact"

    @property
    def exact_moments(self) -> str:
        """:meth:`exact_method` at the default parameters."""
        return self.exact_method()

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the declaration (form, maps' source, reduction, parameters): keys stored results."""
        form = self.form
        parts = [type(form).__name__, repr({k: v for k, v in vars(form).items() if not callable(v)})]
        parts += [_source(f) for f in form.maps]
        if isinstance(self.reduce, BatchTransform):
            parts += [_source(self.reduce.transform), repr(self.reduce.then)]
        else:
            parts.append(str(self.reduce))
        parts.append(repr(dict(self.params)))
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def _docstring(self) -> str:
        params = "\n".join(f"    {k} : default {p.default!r}" for k, p in self.param_specs.items()) or "    (none)"
        notes = f"\n\nNotes\n-----\n{self.notes}" if self.notes else ""
        return (f"{self.name}: {self.description}\n\nForm: {type(self.form).__name__}; reduction: "
                f"{self.reduce if isinstance(self.reduce, str) else 'batch transform'}; exact moments: "
                f"{self.exact_moments}; unbiased: {self.unbiased}.\n\nCall as ``{self.name}(log_ratio, rewards, *, "
                f"mask=None, backend='auto', **params) -> Estimate`` (log_ratio (n, T), rewards (n,) or (n, T), "
                f"mask (n, T) bool), or ``{self.name}(prepared, **params)`` on a batch from "
                f"``tokis.estimators.prepare``.\n\nParameters\n----------\n{params}{notes}\n\n"
                f"References\n----------\n{self.reference or '(none given)'}\n")

    def __repr__(self) -> str:
        return f"EstimatorSpec(name={self.name!r}, form={type(self.form).__name__}, reduce={self.reduce!r})"


def define(name: str, form, *, reduce="mean", params=None, unbiased: bool = False, description: str = "",
           reference: str = "", check: Callable | None = None, level: str | None = None,
           token_flags: Mapping | None = None, sequence_flags: Mapping | None = None,
           notes: str = "", weight_bound: Callable | None = None) -> EstimatorSpec:
    r"""Declare an estimator: a form, a reduction and its parameters.

    Parameters
    ----------
    name : str
        An identifier (letters, digits, underscores).
    form : TokenSum, TokenProduct, PerDecision or SequenceTransform
        The per-sample statistic (see :mod:`tokis.estimators` forms).
    reduce : {"mean", "ratio"} or BatchTransform
        ``"mean"`` averages the statistic (standard error by the CLT); ``"ratio"`` self-normalises
        the weights (TokenProduct, SequenceTransform: ``sum w G / sum w``; PerDecision: per step),
        standard error by the delta method; a :class:`BatchTransform` transforms the batch's
        log-weights first.
    params : mapping, optional
        ``{name: default}`` or ``{name: Param(default, check)}`` for every parameter the maps,
        transforms and flags take. Every parameter they name must be declared here.
    unbiased : bool
        Unbiased for ``J(pi)`` at every n (given support).
    description, reference : str
        One line, and a citation.
    check : callable, optional
        ``check(params) -> params`` for relations between parameters (e.g. ``lo <= hi``).
    level : {"token", "sequence"}, optional
        Where the weights act; default ``"token"`` for TokenSum, ``"sequence"`` otherwise.
    token_flags, sequence_flags : mapping, optional
        Diagnostics ``{key: flag}``: the fraction of real tokens (of sequences) where
        ``flag(l, *params)`` (``flag(log_w, *params)``) is true.
    notes : str, optional
        Bias, ESS and diagnostics notes for the generated docstring.
    weight_bound : callable, optional
        ``weight_bound(horizon, *params) -> float``: a bound on the weight multiplying ``G``
        (clipped and masked estimators know theirs); used by Hoeffding's lower bound.

    Returns
    -------
    EstimatorSpec
        Callable as ``spec(log_ratio, rewards, *, mask=None, backend="auto", **params)``. Use
        :func:`register` to make it available by name to ``tokis.exact.moments``, the harness
        and the ``tokis`` commands.

    Raises
    ------
    TypeError, ValueError
        A form or reduction of the wrong kind, an undeclared parameter used by a map.

    Examples
    --------
    A two-sided token clip, ``1 + sum_t (clip(r_t, 1 - eps, 1 + eps) - 1)``:

    >>> import numpy as np
    >>> from tokis.estimators import TokenSum, define
    >>> clip2 = define("clip2", TokenSum(lambda l, eps: np.clip(np.exp(l), 1 - eps, 1 + eps) - 1.0),
    ...                params={"eps": 0.2}, description="two-sided token clip")
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be an identifier, got {name!r}")
    if not isinstance(form, FORMS):
        raise TypeError(f"form must be one of {', '.join(f.__name__ for f in FORMS)}, got {form!r}")
    if not (isinstance(reduce, BatchTransform) or reduce in ("mean", "ratio")):
        raise ValueError(f"reduce must be 'mean', 'ratio' or a BatchTransform, got {reduce!r}")
    if isinstance(form, TokenSum) and reduce != "mean":
        raise ValueError("a TokenSum form is a per-sample average: reduce must be 'mean'")
    if isinstance(reduce, BatchTransform) and isinstance(form, PerDecision):
        raise ValueError("a BatchTransform acts on sequence weights: use a TokenProduct or SequenceTransform form")
    specs = {k: _as_param(v) for k, v in dict(params or {}).items()}
    flags_t, flags_s = dict(token_flags or {}), dict(sequence_flags or {})
    for func in list(form.maps) + list(flags_t.values()) + list(flags_s.values()):
        missing = [p for p in map_params(func) if p not in specs]
        if missing:
            raise ValueError(f"{getattr(func, '__name__', func)} takes parameter {missing[0]!r}, which {name!r} "
                             "does not declare in params")
    if level is None:
        level = "token" if isinstance(form, TokenSum) else "sequence"
    if level not in ("token", "sequence"):
        raise ValueError(f"level must be 'token' or 'sequence', got {level!r}")
    return EstimatorSpec(name=name, form=form, reduce=reduce, param_specs=specs, check=check,
                         unbiased=bool(unbiased), description=description, reference=reference, level=level,
                         token_flags=flags_t, sequence_flags=flags_s, notes=notes,
                         weight_bound=weight_bound)


_REGISTRY: dict[str, EstimatorSpec] = {}

#: Read-only live view ``name -> EstimatorSpec``: the built-ins in DESIGN section 4 order, then
#: whatever :func:`register` added.
REGISTRY: Mapping[str, EstimatorSpec] = types.MappingProxyType(_REGISTRY)


def register(spec: EstimatorSpec, *, replace: bool = False) -> EstimatorSpec:
    """Make ``spec`` usable by name in ``tokis.exact.moments``, the harness and the ``tokis`` commands.

    Raises
    ------
    TypeError
        ``spec`` is not an EstimatorSpec.
    ValueError
        Another estimator already has this name (pass ``replace=True`` to overwrite one of
        yours; built-ins cannot be replaced).
    """
    if not isinstance(spec, EstimatorSpec):
        raise TypeError(f"register takes an EstimatorSpec (from define), got {spec!r}")
    old = _REGISTRY.get(spec.name)
    if old is not None and old is not spec:
        if not replace or old.name in _BUILTIN_NAMES:
            raise ValueError(f"an estimator named {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


_BUILTIN_NAMES: set[str] = set()


def _register_builtin(spec: EstimatorSpec) -> EstimatorSpec:
    register(spec)
    _BUILTIN_NAMES.add(spec.name)
    return spec


def list_estimators() -> tuple[str, ...]:
    """Names of every registered estimator (built-ins first, in DESIGN section 4 order)."""
    return tuple(_REGISTRY)


def get_estimator(estimator) -> EstimatorSpec:
    """The :class:`EstimatorSpec` of a registered name (an EstimatorSpec is returned as is).

    Raises
    ------
    ValueError
        For an unknown name, listing the registered ones.
    """
    if isinstance(estimator, EstimatorSpec):
        return estimator
    if not isinstance(estimator, str) or estimator not in _REGISTRY:
        raise ValueError(f"estimator must be one of {', '.join(_REGISTRY)}; got {estimator!r} (or pass an EstimatorSpec)")
    return _REGISTRY[estimator]

