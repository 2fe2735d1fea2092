"""Estimator input validation in one numba pass, for ``backend="numba"``.

:func:`prepare_numba` returns the same :class:`tokis.estimators._input.Batch` as
:func:`tokis.estimators._input.prepare` (the reference), but reads each (n, T) input once:
one parallel sweep per row checks for NaN/+inf at real tokens and non-finite rewards,
counts the row's tokens, finds its last real step, writes the zero-padded log-ratio copy
(only when a mask was given or the input is float32) and the per-step reward array, and sums
the returns. Anything unusual -- another array library, another dtype, a non-contiguous or
mis-shaped array, or a bad value found by the sweep -- is handed to the reference, which
raises its precise error or converts the input; so the two agree on every input, errors
included. Per-step returns are summed sequentially (numpy sums pairwise): equal to rounding.
"""

from __future__ import annotations

import numba
import numpy as np

from ._numba_estimators import PARALLEL_MIN_ELEMENTS

__all__ = ["prepare_numba"]

_FLOATS = (np.dtype(np.float64), np.dtype(np.float32))


@numba.njit(cache=True)
def _prepare_rows(lr, mask, has_mask, rew, per_step, write_lr, write_steps, out_lr, steps, returns, lengths,
                  bad, lo, hi):  # pragma: no cover - compiled
    # bad[i]: 1 = NaN/+inf log-ratio at a real token, 2 = non-finite reward (at a real token)
    T = lr.shape[1]
    for i in range(lo, hi):
        L = 0
        last = 0
        flag = 0
        total = 0.0
        for t in range(T):
            real = mask[i, t] if has_mask else True
            v = np.float64(lr[i, t])
            if real:
                L += 1
                last = t
                if v != v or v == np.inf:
                    flag = 1
            if write_lr:
                out_lr[i, t] = v if real else 0.0
            if per_step:
                r = np.float64(rew[i, t]) if real else 0.0
                if real and not np.isfinite(r):
                    flag = 2
                if write_steps:
                    steps[i, t] = r
                total += r
            elif write_steps:
                steps[i, t] = 0.0
        if not per_step:
            g = np.float64(rew[i, 0])
            if not np.isfinite(g):
                flag = 2
            steps[i, last] = g  # last real step; column 0 for an empty row (as the reference)
            total = g
        lengths[i] = L
        returns[i] = total
        bad[i] = flag


@numba.njit(cache=True, parallel=True)
def _prepare_par(lr, mask, has_mask, rew, per_step, write_lr, write_steps, out_lr, steps, returns, lengths, bad,
                 nchunks):  # pragma: no cover - compiled
    n = lr.shape[0]
    rows = (n + nchunks - 1) // nchunks
    for ch in numba.prange(nchunks):
        _prepare_rows(lr, mask, has_mask, rew, per_step, write_lr, write_steps, out_lr, steps, returns, lengths,
                      bad, ch * rows, min(n, (ch + 1) * rows))


def _plain(x, ndims) -> bool:
    return isinstance(x, np.ndarray) and x.ndim in ndims and x.dtype in _FLOATS and x.flags.c_contiguous


def prepare_numba(log_ratio, rewards, mask=None):
    """Validate estimator inputs in one pass; same result and errors as the numpy ``prepare``.

    Parameters
    ----------
    log_ratio : array (n, T)
    rewards : array (n,) or (n, T)
    mask : bool array (n, T), optional

    Returns
    -------
    tokis.estimators._input.Batch
    """
    from ..estimators._input import Batch, prepare

    if not (_plain(log_ratio, (2,)) and _plain(rewards, (1, 2)) and min(log_ratio.shape) >= 1):
        return prepare(log_ratio, rewards, mask)
    n, T = log_ratio.shape
    per_step = rewards.ndim == 2
    if rewards.shape != ((n, T) if per_step else (n,)):
        return prepare(log_ratio, rewards, mask)
    has_mask = mask is not None
    if has_mask and not (
        isinstance(mask, np.ndarray) and mask.dtype == np.bool_ and mask.shape == (n, T) and mask.flags.c_contiguous
    ):
        return prepare(log_ratio, rewards, mask)
    write_lr = has_mask or log_ratio.dtype != np.float64
    write_steps = not per_step or has_mask or rewards.dtype != np.float64
    out_lr = np.empty((n, T)) if write_lr else np.empty((1, 1))
    steps = np.empty((n, T)) if write_steps else np.empty((1, 1))
    returns = np.empty(n)
    lengths = np.empty(n, dtype=np.int64)
    bad = np.empty(n, dtype=np.int8)
    mask_arg = mask if has_mask else np.ones((1, 1), dtype=np.bool_)
    rew_arg = rewards if per_step else rewards.reshape(n, 1)
    args = (log_ratio, mask_arg, has_mask, rew_arg, per_step, write_lr, write_steps, out_lr, steps, returns, lengths,
            bad)
    if n * T < PARALLEL_MIN_ELEMENTS or numba.get_num_threads() < 2:
        _prepare_rows(*args, 0, n)
    else:
        _prepare_par(*args, max(1, min(n, 4 * numba.get_num_threads())))
    if bad.any():
        return prepare(log_ratio, rewards, mask)  # raises the reference's error
    m = mask if has_mask else np.ones((n, T), dtype=bool)
    lr = out_lr if write_lr else log_ratio
    st = steps if write_steps else rewards
    return Batch(lr, st, returns, m, lengths, not per_step, "numpy", np)
