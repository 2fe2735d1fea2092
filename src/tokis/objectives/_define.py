r"""Declaring an objective (:func:`define`), its registry, and the one check of its settings.

An :class:`ObjectiveSpec` couples a coefficient (:class:`TokenCoefficient` or
:class:`SequenceCoefficient`) with its parameters and its default aggregation. The settings
every objective shares -- aggregation, advantage, baseline, std normalisation and an
engine-mismatch correction -- are checked once, by :meth:`ObjectiveSpec.settings`, for the
sampled gradient and the exact engine alike.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._core._validate import check_flag, check_real
from ._coefficients import Correction, SequenceCoefficient, TokenCoefficient

__all__ = ["AGGREGATIONS", "ADVANTAGES", "LEVELS", "ObjectiveSpec", "Settings", "define", "register", "REGISTRY",
           "CORRECTIONS", "get_objective", "get_correction", "register_correction"]

#: How the per-sample gradient is normalised: by 1, by the sequence's length L, by E[L] (the
#: B -> infinity limit of dividing the batch by its token count), or by the horizon T (Dr. GRPO).
AGGREGATIONS = ("seq_mean_token_sum", "seq_mean_token_mean", "token_mean", "constant")
#: ``terminal``: A = (G - b) [/ std(G)] for every token; ``critic``: A_t = Q^mu_t - V^mu_t (exact).
ADVANTAGES = ("terminal", "critic")
LEVELS = ("token", "sequence")


@dataclass(frozen=True)
class Settings:
    """The validated settings of one objective evaluation.

    Attributes
    ----------
    params : Mapping
        The objective's own parameters (``eps_low``, ``eps_high``, ``dual_clip``, ...).
    aggregation : str
        One of :data:`AGGREGATIONS`.
    advantage : str
        One of :data:`ADVANTAGES`.
    baseline : float or None
        ``b`` of the terminal advantage; None: ``J(mu)`` (exact) or the batch mean (sampled).
    normalize_std : bool
        Divide the terminal advantage by the standard deviation of the return (GRPO as the
        group grows: the population std under mu; sampled: the batch std).
    correction : Correction or None
    correction_level : str
    correction_params : Mapping
    """

    params: Mapping
    aggregation: str
    advantage: str
    baseline: float | None
    normalize_std: bool
    correction: Correction | None
    correction_level: str
    correction_params: Mapping

    def __post_init__(self):
        for key in ("params", "correction_params"):
            object.__setattr__(self, key, types.MappingProxyType(dict(getattr(self, key))))


def _choice(value, name, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


@dataclass(frozen=True, eq=False)
class ObjectiveSpec:
    """One policy-gradient objective: a coefficient, its parameters, metadata.

    Attributes
    ----------
    name : str
    coefficient : TokenCoefficient or SequenceCoefficient
    defaults : Mapping
        The coefficient's parameters and their defaults.
    aggregation : str
        Default aggregation (what the framework the objective comes from uses).
    unbiased : bool
        The expected gradient equals the true policy gradient (given support).
    description, reference : str
    """

    name: str
    coefficient: Any
    defaults: Mapping[str, Any] = field(default_factory=dict)
    aggregation: str = "seq_mean_token_sum"
    unbiased: bool = False
    description: str = ""
    reference: str = ""

    def __post_init__(self):
        object.__setattr__(self, "defaults", types.MappingProxyType(dict(self.defaults)))

    @property
    def level(self) -> str:
        return "token" if isinstance(self.coefficient, TokenCoefficient) else "sequence"

    def settings(self, *, aggregation=None, advantage="terminal", baseline=None, normalize_std=False,
                 correction=None, correction_level="token", **given) -> Settings:
        """Validate every setting of this objective (the one check; defaults filled in).

        Raises
        ------
        TypeError
            An unknown keyword, as for a Python function.
        ValueError
            A value out of range, naming the argument.
        """
        corr = None if correction is None else get_correction(correction)
        corr_defaults = dict(corr.defaults) if corr is not None else {}
        extra = [k for k in given if k not in self.defaults and k not in corr_defaults]
        if extra:
            takes = ", ".join(list(self.defaults) + list(corr_defaults)) or "no parameters"
            raise TypeError(f"objective {self.name!r} got an unexpected keyword argument {extra[0]!r} "
                            f"(it takes: {takes}; corrections take theirs when correction= is given)")
        params = {}
        for k, default in self.defaults.items():
            v = given.get(k, default)
            params[k] = None if v is None else check_real(v, k)
        _check_eps(params)
        cparams = {k: check_real(given.get(k, d), k) for k, d in corr_defaults.items()}
        if corr is not None and corr.check is not None:
            cparams = corr.check(cparams)
        if baseline is not None:
            baseline = check_real(baseline, "baseline")
        return Settings(
            params=params,
            aggregation=_choice(self.aggregation if aggregation is None else aggregation, "aggregation", AGGREGATIONS),
            advantage=_choice(advantage, "advantage", ADVANTAGES),
            baseline=baseline,
            normalize_std=check_flag(normalize_std, "normalize_std"),
            correction=corr,
            correction_level=_choice(correction_level, "correction_level", LEVELS),
            correction_params=cparams,
        )

    def __repr__(self) -> str:
        return f"ObjectiveSpec(name={self.name!r}, coefficient={type(self.coefficient).__name__})"


def _check_eps(params) -> None:
    for key in ("eps_low", "eps_high"):
        if key in params and params[key] is not None and not params[key] >= 0:
            raise ValueError(f"{key} must be >= 0, got {params[key]!r}")
    if params.get("eps_low") is not None and params["eps_low"] > 1:
        raise ValueError(f"eps_low must be <= 1 (the lower ratio bound 1 - eps_low is >= 0), got {params['eps_low']!r}")
    if params.get("dual_clip") is not None and not params["dual_clip"] > 1:
        raise ValueError(f"dual_clip must be > 1 (or None), got {params['dual_clip']!r}")


def define(name: str, coefficient, *, params=None, aggregation: str = "seq_mean_token_sum", unbiased: bool = False,
           description: str = "", reference: str = "") -> ObjectiveSpec:
    r"""Declare an objective by its per-token gradient coefficient.

    Parameters
    ----------
    name : str
    coefficient : TokenCoefficient or SequenceCoefficient
    params : mapping, optional
        ``{name: default}`` for every parameter the coefficient takes (``None`` allowed as a
        default meaning "off", e.g. ``dual_clip``).
    aggregation : str
        Default aggregation, one of :data:`AGGREGATIONS`.
    unbiased : bool
    description, reference : str

    Returns
    -------
    ObjectiveSpec

    Examples
    --------
    >>> import numpy as np
    >>> from tokis.objectives import TokenCoefficient, define
    >>> tok_clip = define("tok_clip", TokenCoefficient(lambda l, A, c: np.minimum(np.exp(l), c) * A),
    ...                   params={"c": 2.0})
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be an identifier, got {name!r}")
    if not isinstance(coefficient, (TokenCoefficient, SequenceCoefficient)):
        raise TypeError(f"coefficient must be a TokenCoefficient or SequenceCoefficient, got {coefficient!r}")
    defaults = dict(params or {})
    missing = [p for p in coefficient.params if p not in defaults]
    if missing:
        raise ValueError(f"the coefficient of {name!r} takes parameter {missing[0]!r}, which params does not declare")
    _choice(aggregation, "aggregation", AGGREGATIONS)
    return ObjectiveSpec(name=name, coefficient=coefficient, defaults=defaults, aggregation=aggregation,
                         unbiased=bool(unbiased), description=description, reference=reference)


_REGISTRY: dict[str, ObjectiveSpec] = {}
#: Read-only live view ``name -> ObjectiveSpec``.
REGISTRY: Mapping[str, ObjectiveSpec] = types.MappingProxyType(_REGISTRY)
_CORRECTIONS: dict[str, Correction] = {}
#: Read-only live view ``name -> Correction`` (``tis``, ``mis``).
CORRECTIONS: Mapping[str, Correction] = types.MappingProxyType(_CORRECTIONS)


def register(spec: ObjectiveSpec, *, replace: bool = False) -> ObjectiveSpec:
    """Make an objective usable by name in ``tokis.exact.objective_gradient`` and the commands."""
    if not isinstance(spec, ObjectiveSpec):
        raise TypeError(f"register takes an ObjectiveSpec (from define), got {spec!r}")
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec and not replace:
        raise ValueError(f"an objective named {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def register_correction(correction: Correction) -> Correction:
    if not isinstance(correction, Correction):
        raise TypeError(f"register_correction takes a Correction, got {correction!r}")
    _CORRECTIONS[correction.name] = correction
    return correction


def get_objective(objective) -> ObjectiveSpec:
    """The :class:`ObjectiveSpec` of a registered name (a spec is returned as is)."""
    if isinstance(objective, ObjectiveSpec):
        return objective
    if not isinstance(objective, str) or objective not in _REGISTRY:
        raise ValueError(f"objective must be one of {', '.join(_REGISTRY)}; got {objective!r} (or an ObjectiveSpec)")
    return _REGISTRY[objective]


def get_correction(correction) -> Correction:
    """The :class:`Correction` of a registered name (a Correction is returned as is)."""
    if isinstance(correction, Correction):
        return correction
    if not isinstance(correction, str) or correction not in _CORRECTIONS:
        raise ValueError(f"correction must be one of {', '.join(_CORRECTIONS)} or None; got {correction!r}")
    return _CORRECTIONS[correction]
