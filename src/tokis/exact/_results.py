"""The frozen result of :func:`tokis.exact.moments` and the log-scale arithmetic that fills it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from ._recursions import log_add, to_float

__all__ = ["Moments", "finish"]


@dataclass(frozen=True)
class Moments:
    r"""Exact (or labelled asymptotic) moments of an estimator under the behaviour policy.

    Attributes
    ----------
    estimator : str
        Estimator name (``tokis.estimators.REGISTRY`` key).
    params : Mapping
        The parameters used (defaults filled in), read-only.
    method : {"exact", "asymptotic", "enumeration"}
        ``"exact"``: finite forward recursion; ``"asymptotic"``: delta method for a ratio
        estimator (``mean`` is the n -> infinity limit); ``"enumeration"``: every sequence (or,
        for batch estimators at a given ``n``, every multiset of ``n`` sequences) summed.
    mean : float
        ``E_mu[f]`` of the per-sample statistic ``f``; for asymptotic the limit of the estimate;
        for a batch estimator enumerated at ``n``, ``E[estimate]`` at that ``n``.
    variance : float
        Per-sample variance, scaled so that ``Var(estimate) = variance / n`` (exactly for
        per-sample estimators and enumerated batch estimators, to first order for asymptotic).
        ``inf`` only where not representable (see ``log_variance``).
    bias : float
        ``mean - target_value``.
    target_value : float
        ``J(pi)``, the quantity estimated.
    n : int or None
        Sample size, when given.
    estimate_variance, estimate_std : float or None
        ``variance / n`` and its square root (None without ``n``).
    bias_n : float or None
        Bias of the estimate at ``n``: ``bias`` plus ``bias_coef / n`` for asymptotic
        (None without ``n``).
    mse : float or None
        ``bias_n**2 + variance / n`` (None without ``n``).
    bias_coef : float
        Coefficient of the O(1/n) bias term of a ratio estimator (0 otherwise).
    log_second_moment : float or None
        ``log E_mu[f^2]`` for per-sample statistics (finite even where ``E[f^2]`` overflows);
        None for asymptotic and finite-n batch results.
    log_variance : float
        ``log(variance)`` (``-inf`` for zero variance), finite where ``variance`` overflows.
    """

    estimator: str
    params: Mapping
    method: str
    mean: float
    variance: float
    bias: float
    target_value: float
    n: int | None = None
    estimate_variance: float | None = None
    estimate_std: float | None = None
    bias_n: float | None = None
    mse: float | None = None
    bias_coef: float = 0.0
    log_second_moment: float | None = None
    log_variance: float = float("nan")


def _exp(x: float) -> float:
    """``exp(x)`` as a float, ``inf`` where it overflows."""
    with np.errstate(over="ignore"):
        return float(np.exp(x))


def _signed_exp(val: float, log_factor: float) -> float:
    """``val * exp(log_factor)`` without intermediate overflow (``+-inf`` only if not representable)."""
    if val == 0:
        return 0.0
    return math.copysign(_exp(math.log(abs(val)) + log_factor), val)


def _log_of(val: float, scale: float) -> float:
    return float(scale + math.log(val)) if val > 0 else -math.inf


def finish(
    name, params, method, mean, log_var, target_value, n, *, bias_coef=0.0, log_second_moment=None
) -> Moments:
    variance = _exp(log_var)
    bias = mean - target_value
    kw = {}
    if n is not None:
        ev = variance / n
        bias_n = bias + bias_coef / n
        kw = dict(estimate_variance=ev, estimate_std=math.sqrt(ev), bias_n=bias_n, mse=bias_n * bias_n + ev)
    return Moments(
        estimator=name,
        params=MappingProxyType(dict(params)),
        method=method,
        mean=float(mean),
        variance=float(variance),
        bias=float(bias),
        target_value=float(target_value),
        n=n,
        bias_coef=float(bias_coef),
        log_second_moment=log_second_moment,
        log_variance=float(log_var),
        **kw,
    )


def _from_log_moments(v1: float, s1: float, v2: float, s2: float):
    """(mean, log_var, log_second) from ``E[f] = v1 e^s1``, ``E[f^2] = v2 e^s2``."""
    mean = float(to_float(np.array(v1), np.array(s1)))
    log_second = _log_of(v2, s2)
    if v2 <= 0:
        return mean, -math.inf, log_second
    # log(mean^2 / second) <= 0; variance = second * (1 - mean^2 / second)
    lq = 2.0 * math.log(abs(v1)) + 2.0 * s1 - math.log(v2) - s2 if v1 != 0 else -math.inf
    rel = -math.expm1(lq)
    log_var = log_second + math.log(rel) if rel > 0 else -math.inf
    return mean, log_var, log_second


def _sum_batches(val: np.ndarray, scale: np.ndarray):
    """Sum per-batch log-scaled rows (B, K) into one (K,) row with one scale."""
    acc, s = np.zeros((1, val.shape[1])), np.full(1, -np.inf)
    for b in range(val.shape[0]):
        acc, s = log_add(acc, s, val[b : b + 1], scale[b : b + 1])
    return acc[0], float(s[0])
