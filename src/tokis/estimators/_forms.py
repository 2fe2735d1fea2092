r"""The forms an estimator is declared with (DESIGN section 4), and their array path.

A form says how a per-sample statistic is built from the per-token log-ratios
``l_t = log pi - log mu``, the mask and the rewards; everything else (numba kernels, exact
moments, enumeration) is derived from it. The ``token`` of a form is a plain Python function
``token(l, *params)`` of the log-ratio (an array, or a float inside a numba kernel) written with
numpy ufuncs (``np.exp``, ``np.expm1``, ``np.minimum``, ``np.where``, ...); its parameters are
the estimator's parameters it names, in its signature's order. Comparisons against thresholds
are written once, in log space, in the token, so the estimator and its exact moments apply the
same comparison to the same numbers.

=================================================  ==============================================
form                                               per-sample statistic
=================================================  ==============================================
``TokenSum(token, offset=1.0, per_length=False)``  ``(offset + sum_t x(l_t)) [/ L] * G``
``TokenProduct(token, per_length=False)``          ``exp(sum_t y(l_t) [/ L]) * G``
``PerDecision(token)``                             ``sum_t exp(sum_{s<=t} y(l_s)) * rew_t``
``SequenceTransform(base, transform)``             ``exp(transform(log w_base)) * G``
=================================================  ==============================================

``L`` is the number of real tokens; an empty row has weight 1 under ``per_length``. Padded
positions take no token at all. ``BatchTransform`` is a reduction, not a form: it maps the
batch's (n,) sequence log-weights to new ones (PSIS smoothing, Ionides' truncation level).

This module evaluates forms on validated arrays of any namespace ``xp`` with numpy's API
(numpy, or cupy on the device): the reference path. The numba path is
:mod:`tokis._backends._numba_forms`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._core._xp import array_module, rebind_numpy

__all__ = [
    "TokenSum",
    "TokenProduct",
    "PerDecision",
    "SequenceTransform",
    "BatchTransform",
    "FORMS",
    "map_params",
    "evaluate_map",
]


def map_params(func: Callable) -> tuple[str, ...]:
    """Names of the estimator parameters a token map or transform takes (all but the first)."""
    names = list(inspect.signature(func).parameters)
    return tuple(names[1:])


def evaluate_map(func: Callable, x, params) -> Any:
    """``func(x, *[params[p] for p in map_params(func)])`` in the namespace of ``x``.

    For cupy input the map's ``np`` is rebound to cupy (:func:`tokis._core._xp.rebind_numpy`),
    so the same declaration runs on the device. Floating-point warnings are silenced:
    ``-inf`` log-ratios (target probability 0) and ``log(0)`` thresholds are ordinary values.
    """
    xp = array_module(x)
    if xp is not np:
        func = rebind_numpy(func, xp)
    args = [params[p] for p in map_params(func)]
    with np.errstate(divide="ignore", over="ignore", invalid="ignore", under="ignore"):
        return func(x, *args)


def _check_map(func, what: str) -> None:
    if not callable(func):
        raise TypeError(f"{what} must be a function of the log-ratio, got {func!r}")
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be a Python function with a signature, got {func!r}") from exc
    kinds = [p.kind for p in sig.parameters.values()]
    if not kinds or any(k not in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                        for k in kinds):
        raise TypeError(f"{what} must take the log-ratio then named parameters (no *args/**kwargs), got {sig}")


@dataclass(frozen=True)
class TokenSum:
    r"""Additive token form: ``f = (offset + sum_t x(l_t)) [/ L] * G``.

    Parameters
    ----------
    token : callable
        ``x(l, *params)``, the per-token increment (e.g. ``np.expm1(l)`` for tok).
    offset : float
        Constant added to the sum (1 for the first-order surrogate, 0 for the plain sum).
    per_length : bool
        Divide by the number of real tokens ``L`` (an empty row has weight 1).

    Notes
    -----
    Exact moments: forward DP carrying the additive accumulator (method ``"exact"``).
    """

    token: Callable
    offset: float = 1.0
    per_length: bool = False

    def __post_init__(self):
        _check_map(self.token, "TokenSum.token")
        object.__setattr__(self, "offset", float(self.offset))
        object.__setattr__(self, "per_length", bool(self.per_length))

    @property
    def maps(self) -> tuple[Callable, ...]:
        return (self.token,)

    def weights(self, xp, batch, params):
        """Per-row weights ``(offset + sum_t x) [/ L]`` (n,)."""
        x = xp.where(batch.mask, evaluate_map(self.token, batch.log_ratio, params), 0.0)
        s = self.offset + x.sum(axis=1)
        if self.per_length:
            L = batch.lengths
            s = xp.where(L > 0, s / xp.maximum(L, 1), 1.0)
        return s


@dataclass(frozen=True)
class TokenProduct:
    r"""Multiplicative token form: ``f = exp(sum_t y(l_t) [/ L]) * G``.

    Parameters
    ----------
    token : callable
        ``y(l, *params)``, the per-token *log* factor (``l`` itself for sequence IS,
        ``np.minimum(l, np.log(c))`` for the per-token truncated product).
    per_length : bool
        Divide the log-weight by ``L`` (the geometric mean ratio; an empty row has weight 1).

    Notes
    -----
    Exact moments: forward DP with the tilted kernel ``mu exp(k y)`` (method ``"exact"``;
    per final length when ``per_length``). With ``reduce="ratio"`` the delta method.
    """

    token: Callable
    per_length: bool = False

    def __post_init__(self):
        _check_map(self.token, "TokenProduct.token")
        object.__setattr__(self, "per_length", bool(self.per_length))

    @property
    def maps(self) -> tuple[Callable, ...]:
        return (self.token,)

    def log_weights(self, xp, batch, params):
        """Per-row log-weights ``sum_t y(l_t) [/ L]`` (n,)."""
        y = xp.where(batch.mask, evaluate_map(self.token, batch.log_ratio, params), 0.0)
        s = y.sum(axis=1)
        if self.per_length:
            L = batch.lengths
            s = xp.where(L > 0, s / xp.maximum(L, 1), 0.0)
        return s


@dataclass(frozen=True)
class PerDecision:
    r"""Per-decision form: ``f = sum_t exp(sum_{s<=t} y(l_s)) * rew_t``.

    Each step's reward is weighted by the product of the factors of the tokens up to it. With
    terminal-only rewards it equals ``exp(sum_t y(l_t)) * G``. With ``reduce="ratio"`` every
    step is self-normalised over the batch (an ended row keeps its full weight).

    Parameters
    ----------
    token : callable
        ``y(l, *params)``, the per-token log factor (``l`` for per-decision IS).
    """

    token: Callable

    def __post_init__(self):
        _check_map(self.token, "PerDecision.token")

    @property
    def maps(self) -> tuple[Callable, ...]:
        return (self.token,)

    def prefix_log_weights(self, xp, batch, params):
        """Prefix log-weights ``sum_{s<=t} y(l_s)`` (n, T) (an ended row keeps its total)."""
        y = xp.where(batch.mask, evaluate_map(self.token, batch.log_ratio, params), 0.0)
        return xp.cumsum(y, axis=1)


@dataclass(frozen=True)
class SequenceTransform:
    r"""A sequence-level transform of a product weight: ``f = exp(transform(log w)) * G``.

    Parameters
    ----------
    base : TokenProduct
        The weight transformed (``TokenProduct(lambda l: l)`` for ``W``).
    transform : callable
        ``transform(log_w, *params)``, elementwise on the (n,) log-weights, returning the log
        of the transformed weight (``np.minimum(lw, np.log(c))`` truncates ``W`` at ``c``;
        ``np.where(inside, lw, -np.inf)`` masks).

    Notes
    -----
    No finite recursion: exact moments by enumeration of sequences (small MDPs).
    """

    base: TokenProduct
    transform: Callable

    def __post_init__(self):
        if not isinstance(self.base, TokenProduct):
            raise TypeError(f"SequenceTransform.base must be a TokenProduct, got {self.base!r}")
        _check_map(self.transform, "SequenceTransform.transform")

    @property
    def maps(self) -> tuple[Callable, ...]:
        return self.base.maps + (self.transform,)

    def log_weights(self, xp, batch, params):
        """``transform(log w_base)`` (n,)."""
        return evaluate_map(self.transform, self.base.log_weights(xp, batch, params), params)


@dataclass(frozen=True)
class BatchTransform:
    r"""A reduction that first transforms the batch's sequence log-weights as a whole.

    Parameters
    ----------
    transform : callable
        ``transform(log_w, **params) -> (log_w_new, diagnostics)`` on the (n,) numpy
        log-weights of the form (PSIS smoothing; Ionides' ``c = mean(W) sqrt(n)``). It receives
        every parameter of the estimator as a keyword.
    then : {"mean", "ratio"} or callable
        How the transformed weights are averaged; a callable ``then(params) -> str`` chooses
        from the parameters (psis: ``self_normalized``).
    per_sample : callable, optional
        ``per_sample(params) -> bool``: true when, for these parameters, the transform is the
        form's own per-sample statistic (trunc_seq with a numeric ``c``), so exact moments do
        not depend on ``n``. Default: never.
    batched : bool
        ``transform`` also takes (R, n) log-weights, one batch per row, and returns (R, n) and
        diagnostics as (R,) arrays, each row exactly its (n,) call: many replications are then
        transformed in one call instead of a Python loop over them. Default False.

    Notes
    -----
    Exact moments at a given ``n`` by enumerating every multiset of ``n`` sequences.
    """

    transform: Callable
    then: Any = "mean"
    per_sample: Callable | None = None
    batched: bool = False

    def __post_init__(self):
        if not callable(self.transform):
            raise TypeError(f"BatchTransform.transform must be callable, got {self.transform!r}")
        if not (callable(self.then) or self.then in ("mean", "ratio")):
            raise ValueError(f"BatchTransform.then must be 'mean', 'ratio' or a function of the parameters, got {self.then!r}")
        if not isinstance(self.batched, bool):
            raise TypeError(f"BatchTransform.batched must be True or False, got {self.batched!r}")

    def reduction(self, params) -> str:
        """``"mean"`` or ``"ratio"`` for these parameters."""
        return self.then(params) if callable(self.then) else self.then

    def is_per_sample(self, params) -> bool:
        return bool(self.per_sample(params)) if self.per_sample is not None else False


#: The form classes, in DESIGN section 4 order.
FORMS = (TokenSum, TokenProduct, PerDecision, SequenceTransform)
