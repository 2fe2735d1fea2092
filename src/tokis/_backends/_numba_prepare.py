"""Estimator input validation in one numba pass, for ``backend="numba"``.

:func:`prepare_numba` returns the same :class:`tokis._core._batch.Batch` as
:func:`tokis._core._batch.prepare` (the reference), but reads each (n, T) input once:
one parallel sweep per row checks for NaN/+inf at real tokens and non-finite rewards,
counts the row's tokens, finds its last real step (where a terminal reward is received),
sums the returns, and notes whether any masked entry is non-zero. Only then, and only if
needed (float32 input, or non-zero padding), is a zero-padded float64 copy written; input
that is already float64 with zeros at padding (as ``tokis.envs.sample`` produces) is used as
it is. Terminal-only rewards never become an (n, T) array here: the Batch carries them as
``returns`` (n,) with the last steps (n,) and builds the per-step array only if an
estimator reads ``Batch.rewards``. Anything unusual -- another array library, another
dtype, a non-contiguous or mis-shaped array, or a bad value found by the sweep -- is handed
to the reference, which raises its precise error or converts the input; so the two agree on
every input, errors included. Per-step returns are summed sequentially (numpy sums
pairwise): equal to rounding.
"""

from __future__ import annotations

import numba
import numpy as np

from .._core._batch import Batch, prepare
from ._chunks import chunk_count

__all__ = ["prepare_numba"]

_FLOATS = (np.dtype(np.float64), np.dtype(np.float32))


@numba.njit(cache=True, fastmath={"reassoc"})
def _check_rows(lr, mask, has_mask, rew, per_step, last_step, returns, lengths, bad, dirty, lo, hi):  # pragma: no cover
    # Reads each row once. bad[i]: 1 = NaN/+inf log-ratio at a real token, 2 = non-finite
    # reward (a real step's, or the terminal one). dirty[i]: bit 1 = a masked log-ratio is
    # not 0, bit 2 = a masked per-step reward is not 0 (then a zero-padded copy is needed).
    # last_step[i]: the last real step (0 for an empty row, as the reference). The loops
    # accumulate integer flags and maxima (no branches), so they vectorise.
    T = lr.shape[1]
    for i in range(lo, hi):
        bad_lr = 0
        dirt_lr = 0
        if has_mask:
            L = 0
            last = -1
            for t in range(T):
                real = mask[i, t]
                ri = np.int64(real)
                v = np.float64(lr[i, t])
                L += ri
                last = max(last, t if real else -1)
                bad_lr |= ri & np.int64((v != v) | (v == np.inf))
                dirt_lr |= (1 - ri) & np.int64(v != 0.0)
            last = max(last, 0)
        else:
            L = T
            last = T - 1
            for t in range(T):
                v = np.float64(lr[i, t])
                bad_lr |= np.int64((v != v) | (v == np.inf))
        bad_rew = 0
        dirt_rew = 0
        total = 0.0
        if per_step:
            for t in range(T):
                ri = np.int64(mask[i, t]) if has_mask else 1
                r = np.float64(rew[i, t])
                bad_rew |= ri & np.int64((r != r) | (r == np.inf) | (r == -np.inf))
                dirt_rew |= (1 - ri) & np.int64(r != 0.0)
                total += r if ri else 0.0
        else:
            total = np.float64(rew[i, 0])
            bad_rew = np.int64(not np.isfinite(total))
        last_step[i] = last
        lengths[i] = L
        returns[i] = total
        bad[i] = 1 if bad_lr else (2 if bad_rew else 0)
        dirty[i] = np.int8(dirt_lr | (dirt_rew << 1))


@numba.njit(cache=True)
def _copy_rows(x, mask, out, lo, hi):  # pragma: no cover - compiled
    # out = where(mask, x, 0) as float64
    T = x.shape[1]
    for i in range(lo, hi):
        for t in range(T):
            out[i, t] = np.float64(x[i, t]) if mask[i, t] else 0.0


@numba.njit(cache=True, parallel=True)
def _check_par(lr, mask, has_mask, rew, per_step, last_step, returns, lengths, bad, dirty, nchunks):  # pragma: no cover
    n = lr.shape[0]
    rows = (n + nchunks - 1) // nchunks
    for ch in numba.prange(nchunks):
        _check_rows(lr, mask, has_mask, rew, per_step, last_step, returns, lengths, bad, dirty, ch * rows,
                    min(n, (ch + 1) * rows))


@numba.njit(cache=True, parallel=True)
def _copy_par(x, mask, out, nchunks):  # pragma: no cover - compiled
    n = x.shape[0]
    rows = (n + nchunks - 1) // nchunks
    for ch in numba.prange(nchunks):
        _copy_rows(x, mask, out, ch * rows, min(n, (ch + 1) * rows))


def _cleaned(x, mask, k):
    """``where(mask, x, 0)`` as a new float64 array."""
    out = np.empty(x.shape)
    if k == 1:
        _copy_rows(x, mask, out, 0, x.shape[0])
    else:
        _copy_par(x, mask, out, k)
    return out


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
    tokis._core._batch.Batch
    """
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
    returns = np.empty(n)
    lengths = np.empty(n, dtype=np.int64)
    bad = np.empty(n, dtype=np.int8)
    dirty = np.empty(n, dtype=np.int8)
    last_step = np.empty(n, dtype=np.int64)
    mask_arg = mask if has_mask else np.ones((1, 1), dtype=np.bool_)
    rew_arg = rewards if per_step else rewards.reshape(n, 1)
    args = (log_ratio, mask_arg, has_mask, rew_arg, per_step, last_step, returns, lengths, bad, dirty)
    k = chunk_count(n, T)
    if k == 1:
        _check_rows(*args, 0, n)
    else:
        _check_par(*args, k)
    if bad.any():
        return prepare(log_ratio, rewards, mask)  # raises the reference's error
    m = mask if has_mask else np.ones((n, T), dtype=bool)
    # the input itself when it is float64 and already 0 wherever masked (tokis.envs.sample's
    # Rollouts are); otherwise a zero-padded float64 copy, as the reference makes
    dirt = np.bitwise_or.reduce(dirty) if n else 0
    lr = log_ratio if (log_ratio.dtype == np.float64 and not dirt & 1) else _cleaned(log_ratio, m, k)
    if not per_step:
        return Batch(lr, returns, m, lengths, True, "numpy", np, last_step=last_step)
    steps = rewards if (rewards.dtype == np.float64 and not dirt & 2) else _cleaned(rewards, m, k)
    return Batch(lr, returns, m, lengths, False, "numpy", np, step_rewards=steps)
