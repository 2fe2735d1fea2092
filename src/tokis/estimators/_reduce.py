"""Reductions over the batch, in log space with max-shifting.

Inputs are per-row pieces ``(b, h)`` meaning ``exp(b_i) * h_i``. The largest magnitude
``m = max_i (b_i + log|h_i|)`` is factored out, so every stored term lies in [-1, 1] and the
result ``exp(m) * mean(terms)`` is finite whenever the true value is representable.

Every reduction works in the namespace of its inputs (numpy, or cupy for device arrays: the
per-sample arrays stay on the device and only the scalars come to the host). Masked maxima
are ``where(finite, x, -inf).max()`` rather than boolean indexing, which is the same value
and needs no data-dependent shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._core._xp import array_module

__all__ = ["MeanResult", "RatioResult", "scaled_terms", "mean_reduce", "ratio_reduce", "sum_of_ratios_reduce", "kish"]


@dataclass(frozen=True, eq=False)
class MeanResult:
    value: float
    stderr: float
    terms: np.ndarray  # (n,) f_i * exp(-log_scale)
    log_scale: float


@dataclass(frozen=True, eq=False)
class RatioResult:
    value: float
    stderr: float
    numerator: np.ndarray
    denominator: np.ndarray
    log_scale: float


def _scaled(log_scale: float, x: float) -> float:
    """``exp(log_scale) * x`` without overflowing in the intermediate."""
    if x == 0.0 or math.isnan(x):
        return x
    try:
        mag = math.exp(log_scale + math.log(abs(x)))
    except OverflowError:
        mag = math.inf
    return math.copysign(mag, x)


def _finite_max(xp, x, finite) -> float:
    """``max(x[finite])`` as a float (``finite`` must have a true entry)."""
    return float(xp.where(finite, x, -xp.inf).max())


def scaled_terms(b, h) -> tuple:
    """Return ``(s, m)`` with ``exp(b) * h = exp(m) * s`` and ``max |s| = 1`` (``m = 0`` if all 0)."""
    xp = array_module(h)
    with np.errstate(divide="ignore"):
        t = b + xp.log(xp.abs(h))
    finite = xp.isfinite(t)
    if not bool(finite.any()):
        return xp.zeros_like(h), 0.0
    m = _finite_max(xp, t, finite)
    s = xp.where(finite, xp.sign(h) * xp.exp(xp.where(finite, t, -xp.inf) - m), 0.0)
    return s, m


def _sd_over_root_n(z) -> float:
    n = z.shape[0]
    if n < 2:
        return math.nan
    return float(z.std(ddof=1)) / math.sqrt(n)


def mean_reduce(b: np.ndarray, h: np.ndarray) -> MeanResult:
    """Mean of ``f_i = exp(b_i) h_i`` with CLT standard error ``std(f, ddof=1) / sqrt(n)``."""
    s, m = scaled_terms(b, h)
    return MeanResult(_scaled(m, float(s.mean())), _scaled(m, _sd_over_root_n(s)), s, m)


def ratio_reduce(log_w: np.ndarray, g: np.ndarray) -> RatioResult:
    """Self-normalised ratio ``sum_i w_i g_i / sum_i w_i`` with a delta-method standard error.

    The weights ``w_i = exp(log_w_i)`` are shifted by their maximum. The standard error is
    ``std(z, ddof=1) / sqrt(n)`` with ``z_i = w_i (g_i - R) / mean(w)``, the first-order
    (delta-method) linearisation of the ratio. When every weight is zero the ratio is
    undefined and ``nan`` is returned.
    """
    xp = array_module(log_w)
    finite = xp.isfinite(log_w)
    m = _finite_max(xp, log_w, finite) if bool(finite.any()) else 0.0
    w = xp.exp(log_w - m)
    num = w * g
    den_sum = float(w.sum())
    if den_sum == 0.0:
        return RatioResult(math.nan, math.nan, num, w, m)
    value = float(num.sum()) / den_sum
    z = (num - value * w) / (den_sum / w.shape[0])
    return RatioResult(value, _sd_over_root_n(z), num, w, m)


def sum_of_ratios_reduce(num: np.ndarray, den: np.ndarray, active: np.ndarray) -> tuple[float, float, np.ndarray]:
    """``sum_t (sum_i num[i, t] / sum_i den[i, t])`` with a delta-method standard error.

    Only the ``active`` columns (T,) (those with a non-zero reward) count; the others
    contribute 0 even with zero weight. An active column with zero total weight (every
    prefix impossible under the target) makes the value ``nan``.

    Returns
    -------
    value, stderr : float
    ratios : float64 (T,)
        The per-step ratios.
    """
    xp = array_module(num)
    n = num.shape[0]
    num_sum = num.sum(axis=0)
    den_sum = den.sum(axis=0)
    undefined = active & (den_sum == 0)
    if bool(undefined.any()):
        return math.nan, math.nan, xp.where(undefined, xp.nan, 0.0)
    safe = xp.where(active, den_sum, 1.0)
    ratios = xp.where(active, num_sum / safe, 0.0)
    # inactive columns hold exact zeros (no reward: num = 0 and ratio = 0), so summing every
    # column equals summing the active ones
    z = xp.where(active[None, :], (num - ratios[None, :] * den) / (safe[None, :] / n), 0.0).sum(axis=1)
    return float(ratios.sum()), _sd_over_root_n(z), ratios


def kish(b: np.ndarray, h: np.ndarray) -> float:
    """Kish effective sample size ``(sum w)^2 / sum w^2`` of ``w_i = exp(b_i) h_i`` (0 if all 0)."""
    s, _ = scaled_terms(b, h)
    sq = float(array_module(s).dot(s, s))
    if sq == 0.0:
        return 0.0
    return float(s.sum()) ** 2 / sq
