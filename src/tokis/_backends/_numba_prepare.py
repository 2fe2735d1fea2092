"""Estimator input validation in compiled passes, for ``backend="numba"``.

:func:`prepare_numba` returns the same :class:`tokis._core._batch.Batch` as
:func:`tokis._core._batch.prepare` (the reference), in two passes: one flat sweep over the
entries (it vectorises whatever T is) checks for NaN/+inf at real tokens and non-finite
rewards and notes whether any masked entry is non-zero or any entry is masked at all; a
per-row pass counts the tokens, finds the last real steps (where a terminal reward is
received) and sums per-step returns (without reading the mask when nothing is masked).
Leading batch dimensions are flattened into rows (a view). Only then, and only if
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
from . import _chunks

__all__ = ["prepare_numba"]

_FLOATS = (np.dtype(np.float64), np.dtype(np.float32))


@numba.njit(cache=True, nogil=True)
def _scan_rows(lr, mask, has_mask, rew, per_step, flags, lo, hi):  # pragma: no cover - compiled
    # The value checks of rows [lo, hi) as one flat pass over their lo*T..hi*T entries (so the
    # loops vectorise whatever T is). flags (counts; > 0 means yes): [0] NaN/+inf log-ratios at
    # real tokens, [1] non-finite rewards (a real step's, or the terminal one), [2] masked
    # log-ratios that are not 0, [3] masked per-step rewards that are not 0 (then a zero-padded
    # copy is needed), [4] masked entries.
    T = lr.shape[1]
    a = lo * T
    b = hi * T
    x = lr.ravel()[a:b]  # views indexed from 0: no negative-index wraparound checks in the loops
    bad_lr = 0
    dirt_lr = 0
    bad_rew = 0
    dirt_rew = 0
    holes = 0
    # counts of selects (they vectorise best); "not (v < inf)" is NaN or +inf
    if has_mask:
        mk = mask.ravel()[a:b]
        for j in range(x.shape[0]):
            r = mk[j]
            v = np.float64(x[j])
            bad_lr += 1 if (r and not (v < np.inf)) else 0
            dirt_lr += 1 if ((not r) and v != 0.0) else 0
            holes += 0 if r else 1
    else:
        for j in range(x.shape[0]):
            v = np.float64(x[j])
            bad_lr += 0 if v < np.inf else 1
    if per_step:
        y = rew.ravel()[a:b]
        if has_mask:
            mk = mask.ravel()[a:b]
            for j in range(y.shape[0]):
                r = mk[j]
                v = np.float64(y[j])
                bad_rew += 1 if (r and not (abs(v) < np.inf)) else 0
                dirt_rew += 1 if ((not r) and v != 0.0) else 0
        else:
            for j in range(y.shape[0]):
                v = np.float64(y[j])
                bad_rew += 0 if abs(v) < np.inf else 1
    else:
        y = rew.ravel()[lo:hi]
        for i in range(y.shape[0]):
            v = np.float64(y[i])
            bad_rew += 0 if abs(v) < np.inf else 1
    flags[0] = bad_lr
    flags[1] = bad_rew
    flags[2] = dirt_lr
    flags[3] = dirt_rew
    flags[4] = holes


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def _row_stats(mask, holes, rew, per_step, T, last_step, returns, lengths, lo, hi):  # pragma: no cover - compiled
    # Per row: with holes in the mask, the number of real tokens and the last real step (0 for
    # an empty row, as the reference); with per-step rewards, the return (the sum of the real
    # steps' rewards). Views of rows lo..hi-1 indexed from 0 (no wraparound checks).
    for i in range(hi - lo):
        if holes:
            mk = mask[lo:hi]
            L = 0
            last = -1
            for t in range(T):
                real = mk[i, t]
                L += np.int64(real)
                last = max(last, t if real else -1)
            lengths[lo + i] = L
            last_step[lo + i] = max(last, 0)
        if per_step:
            rw = rew[lo:hi]
            total = 0.0
            if holes:
                mk = mask[lo:hi]
                for t in range(T):
                    r = np.float64(rw[i, t])
                    total += r if mk[i, t] else 0.0
            else:
                for t in range(T):
                    total += np.float64(rw[i, t])
            returns[lo + i] = total


@numba.njit(cache=True, nogil=True)
def _copy_rows(x, mask, out, lo, hi):  # pragma: no cover - compiled
    # out = where(mask, x, 0) as float64
    T = x.shape[1]
    for i in range(lo, hi):
        for t in range(T):
            out[i, t] = np.float64(x[i, t]) if mask[i, t] else 0.0


@numba.njit(cache=True, nogil=True, parallel=True)
def _scan_par(lr, mask, has_mask, rew, per_step, flags, nchunks):  # pragma: no cover - compiled
    n = lr.shape[0]
    rows = (n + nchunks - 1) // nchunks
    for ch in numba.prange(nchunks):
        _scan_rows(lr, mask, has_mask, rew, per_step, flags[ch], ch * rows, min(n, (ch + 1) * rows))


@numba.njit(cache=True, nogil=True, parallel=True)
def _stats_par(mask, holes, rew, per_step, T, last_step, returns, lengths, nchunks):  # pragma: no cover - compiled
    n = lengths.shape[0]
    rows = (n + nchunks - 1) // nchunks
    for ch in numba.prange(nchunks):
        _row_stats(mask, holes, rew, per_step, T, last_step, returns, lengths, ch * rows, min(n, (ch + 1) * rows))


@numba.njit(cache=True, nogil=True, parallel=True)
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


def _plain(x) -> bool:
    return isinstance(x, np.ndarray) and x.dtype in _FLOATS and x.flags.c_contiguous


def prepare_numba(log_ratio, rewards, mask=None, threads: int | None = None):
    """Validate estimator inputs in one pass; same result and errors as the numpy ``prepare``.

    Parameters
    ----------
    log_ratio : array (n, T) or (..., n, T)
    rewards : array (..., n) or (..., n, T)
    mask : bool array (..., n, T), optional
    threads : int, optional
        Threads for the sweep (1: on the calling thread); default from the work, by the
        estimators' rule (:data:`tokis._backends._chunks.ESTIMATOR_PARALLEL_MIN`).

    Returns
    -------
    tokis._core._batch.Batch
        Leading dimensions flattened into ``R * n`` rows (``Batch.shape`` keeps them).
    """
    if not (_plain(log_ratio) and _plain(rewards) and log_ratio.ndim >= 2 and min(log_ratio.shape) >= 1):
        return prepare(log_ratio, rewards, mask)
    shape = log_ratio.shape
    lead, T = shape[:-2], shape[-1]
    per_step = rewards.ndim == log_ratio.ndim
    if rewards.shape != (shape if per_step else shape[:-1]):
        return prepare(log_ratio, rewards, mask)
    has_mask = mask is not None
    if has_mask and not (
        isinstance(mask, np.ndarray) and mask.dtype == np.bool_ and mask.shape == shape and mask.flags.c_contiguous
    ):
        return prepare(log_ratio, rewards, mask)
    lr2 = log_ratio.reshape(-1, T)
    rows = lr2.shape[0]
    mask2 = mask.reshape(-1, T) if has_mask else None
    mask_arg = mask2 if has_mask else np.ones((1, 1), dtype=np.bool_)
    rew2 = rewards.reshape(-1, T) if per_step else rewards.reshape(rows, 1)
    if threads is None:
        threads = _chunks.threads_for(rows * T, _chunks.ESTIMATOR_PARALLEL_MIN)
    k = _chunks.chunks_for(rows, threads)
    flags = np.zeros((k, 5), dtype=np.int64)
    if k == 1:
        _scan_rows(lr2, mask_arg, has_mask, rew2, per_step, flags[0], 0, rows)
    else:
        _scan_par(lr2, mask_arg, has_mask, rew2, per_step, flags, k)
    bad_lr, bad_rew, dirt_lr, dirt_rew, holes = flags.max(axis=0)
    if bad_lr or bad_rew:
        return prepare(log_ratio, rewards, mask)  # raises the reference's error
    holes = bool(holes)
    # terminal rewards are the returns as they are (never written to), as float64
    returns = np.empty(rows) if per_step else rewards.reshape(-1).astype(np.float64, copy=False)
    lengths = np.empty(rows, dtype=np.int64) if holes else np.full(rows, T, dtype=np.int64)
    last_step = np.empty(rows, dtype=np.int64) if holes else None  # None: T - 1, found when needed
    if holes or per_step:
        stats = (mask_arg, holes, rew2, per_step, T, last_step if holes else lengths, returns, lengths)
        if k == 1:
            _row_stats(*stats, 0, rows)
        else:
            _stats_par(*stats, k)
    m = mask2 if has_mask else np.ones((rows, T), dtype=bool)
    # the input itself when it is float64 and already 0 wherever masked (tokis.envs.sample's
    # Rollouts are); otherwise a zero-padded float64 copy, as the reference makes
    lr = lr2 if (lr2.dtype == np.float64 and not dirt_lr) else _cleaned(lr2, m, k)
    if not per_step:
        return Batch(lr, returns, m, lengths, True, "numpy", np, last_step=last_step, shape=lead)
    steps = rew2 if (rew2.dtype == np.float64 and not dirt_rew) else _cleaned(rew2, m, k)
    return Batch(lr, returns, m, lengths, False, "numpy", np, step_rewards=steps, shape=lead)
