"""Reductions over each batch, in log space with max-shifting (the numpy/cupy reference path).

Inputs are per-row pieces ``(b, h)`` of shape (R, n) -- ``R`` batches of ``n`` rows, ``R = 1``
for a plain call -- meaning ``exp(b_i) * h_i``. In every batch the largest magnitude
``m = max_i (b_i + log|h_i|)`` is factored out, so every stored term lies in [-1, 1] and the
result ``exp(m) * mean(terms)`` is finite whenever the true value is representable. Every
reduction runs along the last axis, so a batch's results depend only on its own row of the
(R, n) arrays: the same numbers whether it is reduced alone or with others.

Every reduction works in the namespace of its inputs (numpy, or cupy for device arrays: the
per-sample arrays stay on the device and only the (R,) results come to the host). Masked
maxima are ``where(finite, x, -inf).max()`` rather than boolean indexing, which is the same
value and needs no data-dependent shape. The numba backend has compiled equivalents
(:mod:`tokis._backends._numba_reduce`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._core._xp import array_module, is_cupy_array, to_host

__all__ = ["MeanResult", "RatioResult", "scaled_terms", "mean_reduce", "ratio_reduce", "sum_of_ratios_reduce", "kish",
           "scaled", "host"]


@dataclass(frozen=True, eq=False)
class MeanResult:
    value: np.ndarray  # (R,) host float64
    stderr: np.ndarray
    terms: np.ndarray  # (R, n) f_i * exp(-log_scale)
    log_scale: np.ndarray  # (R,)


@dataclass(frozen=True, eq=False)
class RatioResult:
    value: np.ndarray
    stderr: np.ndarray
    numerator: np.ndarray
    denominator: np.ndarray
    log_scale: np.ndarray


def scaled(log_scale, x) -> np.ndarray:
    """``exp(log_scale) * x`` elementwise on host arrays, without overflowing in between.

    ``0`` and ``nan`` pass through; a magnitude past float64 is ``+-inf``.
    """
    log_scale = np.asarray(log_scale, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    out = x.copy()
    live = (x != 0.0) & ~np.isnan(x)
    if live.any():
        with np.errstate(over="ignore", divide="ignore"):
            mag = np.exp(log_scale[live] + np.log(np.abs(x[live])))
        out[live] = np.copysign(mag, x[live])
    return out


def _finite_max(xp, x, finite):
    """Row maxima of ``x`` over ``finite`` entries (R,), 0 for a row with none."""
    m = xp.where(finite, x, -xp.inf).max(axis=-1)
    return xp.where(finite.any(axis=-1), m, 0.0)


def scaled_terms(b, h) -> tuple:
    """Return ``(s, m)`` with ``exp(b) * h = exp(m) * s`` per row and ``max |s| = 1`` (``m = 0`` if all 0).

    ``b``, ``h`` (R, n); ``s`` (R, n), ``m`` (R,) in their namespace.
    """
    xp = array_module(h)
    with np.errstate(divide="ignore"):
        t = b + xp.log(xp.abs(h))
    finite = xp.isfinite(t)
    m = _finite_max(xp, t, finite)
    s = xp.where(finite, xp.sign(h) * xp.exp(xp.where(finite, t, -xp.inf) - m[..., None]), 0.0)
    return s, m


def host(x, dtype=np.float64) -> np.ndarray:
    """A small (R,) result on the host: one copy, or for a single entry the O(1) scalar (as ``float``)."""
    if is_cupy_array(x) and x.size == 1:
        return np.full(x.shape, x.reshape(()).item(), dtype=dtype)
    return np.asarray(to_host(x), dtype=dtype)


def _sd_over_root_n(z) -> np.ndarray:
    """``std(z, ddof=1) / sqrt(n)`` per row, on the host (nan when n < 2)."""
    n = z.shape[-1]
    if n < 2:
        return np.full(z.shape[:-1], math.nan)
    return host(z.std(axis=-1, ddof=1)) / math.sqrt(n)


def mean_reduce(b, h) -> MeanResult:
    """Mean of ``f_i = exp(b_i) h_i`` per row of (R, n), CLT standard error ``std(f, ddof=1) / sqrt(n)``."""
    s, m = scaled_terms(b, h)
    m_host = host(m)
    return MeanResult(scaled(m_host, host(s.mean(axis=-1))), scaled(m_host, _sd_over_root_n(s)), s, m_host)


def ratio_reduce(log_w, g) -> RatioResult:
    """Self-normalised ratio ``sum_i w_i g_i / sum_i w_i`` per row of (R, n), delta-method standard error.

    The weights ``w_i = exp(log_w_i)`` are shifted by their row maximum. The standard error is
    ``std(z, ddof=1) / sqrt(n)`` with ``z_i = w_i (g_i - R) / mean(w)``, the first-order
    (delta-method) linearisation of the ratio. When every weight of a row is zero the ratio is
    undefined and ``nan`` is returned for it.
    """
    xp = array_module(log_w)
    n = log_w.shape[-1]
    m = _finite_max(xp, log_w, xp.isfinite(log_w))
    w = xp.exp(log_w - m[..., None])
    num = w * g
    den_sum = w.sum(axis=-1)
    empty = den_sum == 0.0
    safe = xp.where(empty, 1.0, den_sum)
    value = num.sum(axis=-1) / safe
    z = (num - value[..., None] * w) / (safe[..., None] / n)
    empty_h = host(empty, bool)
    value_h = np.where(empty_h, math.nan, host(value))
    stderr = np.where(empty_h, math.nan, _sd_over_root_n(z))
    return RatioResult(value_h, stderr, num, w, host(m))


def sum_of_ratios_reduce(num, den, active) -> tuple:
    """``sum_t (sum_i num[i, t] / sum_i den[i, t])`` per batch, with a delta-method standard error.

    Parameters
    ----------
    num, den : (R, n, T)
    active : bool (R, T)
        The columns with a non-zero reward; the others contribute 0 even with zero weight. An
        active column with zero total weight (every prefix impossible under the target) makes
        the batch's value ``nan``.

    Returns
    -------
    value, stderr : float64 (R,), host
    ratios : float64 (R, T)
        The per-step ratios (``nan`` at the undefined columns of an undefined batch, 0 elsewhere there).
    """
    xp = array_module(num)
    n = num.shape[-2]
    num_sum = num.sum(axis=-2)
    den_sum = den.sum(axis=-2)
    undefined = active & (den_sum == 0)
    bad = undefined.any(axis=-1)
    safe = xp.where(active, den_sum, 1.0)
    safe = xp.where(undefined, 1.0, safe)
    ratios = xp.where(active, num_sum / safe, 0.0)
    # inactive columns hold exact zeros (no reward: num = 0 and ratio = 0), so summing every
    # column equals summing the active ones
    z = xp.where(active[..., None, :], (num - ratios[..., None, :] * den) / (safe[..., None, :] / n), 0.0).sum(axis=-1)
    ratios = xp.where(bad[..., None], xp.where(undefined, xp.nan, 0.0), ratios)
    bad_h = host(bad, bool)
    value = np.where(bad_h, math.nan, host(ratios.sum(axis=-1)))
    stderr = np.where(bad_h, math.nan, _sd_over_root_n(z))
    return value, stderr, ratios


def kish(b, h) -> np.ndarray:
    """Kish effective sample size ``(sum w)^2 / sum w^2`` of ``w_i = exp(b_i) h_i`` per row of (R, n) (0 if all 0)."""
    s, _ = scaled_terms(b, h)
    sq = host((s * s).sum(axis=-1))
    total = host(s.sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sq == 0.0, 0.0, total * total / np.where(sq == 0.0, 1.0, sq))
