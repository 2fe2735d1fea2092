r"""Validation and assembly of per-token log-probabilities into a padded :class:`LogBatch`.

The columns of a batch (whatever file they came from, or arrays given directly) are checked and
padded to (n, T): a per-token column is a 2-D array (padded), a list of per-row arrays or a
:class:`Ragged` (ragged); ragged rows are padded to the longest row, and the mask (when given) must
have the same length as the log-probs in every row.

Every problem raises ``ValueError`` with a message naming the column, the row and the count:
row counts or lengths that disagree between columns, a mask with values other than 0/1, NaN or
infinite log-probabilities at real tokens, NaN/inf rewards, no row or no real token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["ROLES", "Ragged", "LogBatch", "assemble"]

#: Roles of the columns, in the order of :func:`assemble`'s arguments.
ROLES = ("target", "behavior", "mask", "reward", "group")


@dataclass(frozen=True)
class Ragged:
    """A per-token column with rows of different lengths: row ``i`` is ``values[offsets[i]:offsets[i+1]]``."""

    values: np.ndarray
    offsets: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def padded(self) -> tuple[np.ndarray, np.ndarray]:
        """``(array (n, W), present (n, W))``, ``W`` the longest row; 0 where a row has ended."""
        L = self.lengths
        present = np.arange(int(L.max(initial=0)))[None, :] < L[:, None]
        out = np.zeros(present.shape, dtype=self.values.dtype)
        out[present] = self.values
        return out, present


def _ragged(rows, name: str) -> Ragged:
    """A :class:`Ragged` from a sequence of 1-D sequences (None inside a row becomes NaN)."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    flat = [x for r in rows for x in (r.tolist() if hasattr(r, "tolist") else r)]
    try:
        values = np.array(flat, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"column {name!r} holds values that are not numbers") from None
    if values.ndim != 1:
        raise ValueError(f"column {name!r}: each row must be a flat list of numbers")
    return Ragged(values, np.concatenate([[0], np.cumsum(lengths)]))


@dataclass(frozen=True, eq=False)
class LogBatch:
    """Validated per-token log-probabilities of a batch, padded to (n, T).

    Attributes
    ----------
    target, behavior : float64 (n, T)
        Log-probabilities of the sampled tokens under the trainer and the sampler; 0 where
        ``mask`` is false.
    mask : bool (n, T)
        True at the tokens the policy produced.
    rewards : float64 (n,) or (n, T) or None
        Per-response reward, or per-token rewards (0 outside the mask).
    groups : int64 (n,) or None
        Prompt-group index of each response (codes of the group column, in sorted order).
    columns : dict
        Role -> the column (or argument) it came from.
    preset : str or None
        The preset whose names were read (files).
    """

    target: np.ndarray
    behavior: np.ndarray
    mask: np.ndarray
    rewards: np.ndarray | None
    groups: np.ndarray | None
    columns: Mapping
    preset: str | None = None

    @property
    def log_ratio(self) -> np.ndarray:
        """``target - behavior`` per token (0 outside the mask), float64 (n, T)."""
        return self.target - self.behavior

    @property
    def lengths(self) -> np.ndarray:
        """Number of real tokens per response, int64 (n,)."""
        return self.mask.sum(axis=1)

    @property
    def n(self) -> int:
        return int(self.mask.shape[0])


def _tokens(value, label: str):
    """A per-token column as (values (n, W) float64, row lengths (n,) or None when padded)."""
    if isinstance(value, Ragged):
        arr, _ = value.padded()
        return arr.astype(np.float64, copy=False), value.lengths
    if isinstance(value, (list, tuple)) and any(isinstance(r, (list, tuple)) or np.ndim(r) == 1 for r in value):
        rag = _ragged(value, label)
        return rag.padded()[0], rag.lengths
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{label} must hold numbers: an (n, T) array or a list of per-row arrays") from None
    if arr.ndim != 2:
        raise ValueError(f"{label} must be 2-D (n, T) or a list of per-row arrays, got shape {arr.shape}")
    return arr, None


def _same_rows(a, b, la: str, lb: str) -> None:
    """Row lengths (or widths of padded arrays) of two per-token columns must agree."""
    (va, La), (vb, Lb) = a, b
    if va.shape[0] != vb.shape[0]:
        raise ValueError(f"{la} has {va.shape[0]} rows but {lb} has {vb.shape[0]}")
    La = np.full(va.shape[0], va.shape[1]) if La is None else La
    Lb = np.full(vb.shape[0], vb.shape[1]) if Lb is None else Lb
    bad = np.flatnonzero(La != Lb)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{bad.size} rows have different lengths: row {i} has {La[i]} entries in {la} but {Lb[i]} in "
                         f"{lb}")


def _width(arr, W):
    return arr if arr.shape[1] == W else np.pad(arr, ((0, 0), (0, W - arr.shape[1])))


def _check_finite(arr, mask, label: str) -> None:
    bad = mask & ~np.isfinite(arr)
    count = int(bad.sum())
    if count:
        i, t = (int(x[0]) for x in np.nonzero(bad))
        kinds = "NaN" if np.isnan(arr[bad]).all() else "NaN/inf"
        raise ValueError(f"{label} has {count} {kinds} log-probabilities at real tokens (first: row {i}, token {t}, "
                         f"value {arr[i, t]})")


def assemble(target, behavior, mask=None, rewards=None, groups=None, *, labels=None) -> LogBatch:
    """Validate and pad the columns of a batch into a :class:`LogBatch`.

    Parameters
    ----------
    target, behavior : array (n, T) or list of n 1-D arrays or Ragged
        Per-token log-probabilities under the trainer and the sampler.
    mask : same layouts, optional
        Nonzero at real tokens. Default: every entry present (padded arrays: all of them).
    rewards : array (n,), or per-token like ``target``, optional
    groups : array (n,) of hashables, optional
    labels : dict, optional
        Role -> name used in messages (e.g. ``"column 'old_log_probs'"``).

    Raises
    ------
    ValueError
        Disagreeing row counts or lengths, a mask with values other than 0/1 or marking tokens
        that have no log-probability, NaN/inf at real tokens, no rows or no real token.
    """
    labels = {role: role for role in ROLES} | dict(labels or {})
    tgt = _tokens(target, labels["target"])
    beh = _tokens(behavior, labels["behavior"])
    _same_rows(tgt, beh, labels["target"], labels["behavior"])
    n = tgt[0].shape[0]
    if n == 0:
        raise ValueError("no rows: the log holds no response")
    W = max(tgt[0].shape[1], 1)
    present = np.arange(W)[None, :] < (tgt[1] if tgt[1] is not None else np.full(n, W))[:, None]
    if mask is None:
        m = present
    else:
        mk = _tokens(mask, labels["mask"])
        _same_rows(tgt, mk, labels["target"], labels["mask"])
        mv = _width(mk[0], W)
        odd = ~np.isin(mv, (0.0, 1.0)) & present
        if odd.any():
            i, t = (int(x[0]) for x in np.nonzero(odd))
            raise ValueError(f"{labels['mask']} must hold 0/1 or booleans, got {mv[i, t]} at row {i}, token {t}")
        m = (mv != 0) & present
    if not m.any():
        raise ValueError(f"no real token: {labels['mask']} is false everywhere")
    tv, bv = (np.where(m, _width(x[0], W), 0.0) for x in (tgt, beh))
    _check_finite(_width(tgt[0], W), m, labels["target"])
    _check_finite(_width(beh[0], W), m, labels["behavior"])
    rew = None
    if rewards is not None:
        if isinstance(rewards, Ragged) or np.ndim(rewards) == 2 or (
                isinstance(rewards, (list, tuple)) and any(np.ndim(r) == 1 for r in rewards)):
            rk = _tokens(rewards, labels["reward"])
            _same_rows(tgt, rk, labels["target"], labels["reward"])
            raw = _width(rk[0], W)
            bad = m & ~np.isfinite(raw)
            rew = np.where(m, raw, 0.0)
        else:
            try:
                rew = np.asarray(rewards, dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"{labels['reward']} must hold numbers") from None
            if rew.shape != (n,):
                raise ValueError(f"{labels['reward']} must have one value per row ({n}), got shape {rew.shape}")
            bad = ~np.isfinite(rew)
        if bad.any():
            raise ValueError(f"{labels['reward']} has {int(bad.sum())} NaN/inf values (first: row "
                             f"{int(np.nonzero(bad)[0][0])})")
    codes = None
    if groups is not None:
        g = np.asarray(groups)
        if g.shape != (n,):
            raise ValueError(f"{labels['group']} must have one value per row ({n}), got shape {g.shape}")
        codes = np.unique(g.astype(str) if g.dtype == object else g, return_inverse=True)[1].astype(np.int64)
    return LogBatch(tv, bv, m, rew, codes, {k: labels[k] for k in ROLES})
