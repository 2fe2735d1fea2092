"""Validation of estimator array inputs (log-ratios, rewards, mask) into a :class:`Batch`.

Public estimator functions call :func:`prepare` once; kernels receive float64 arrays with
padding already zeroed and never validate. The array library is picked here, once: numpy
in gives numpy out, cupy in gives cupy out, torch tensors are converted to numpy and
results come back as numpy.

Validation is written once over an array namespace ``xp`` with numpy's API (``numpy``, or
``cupy`` itself): shape and dtype checks read metadata, the value checks are whole-array
reductions (``isfinite``, ``isnan``, comparisons with ``inf``, ``any``/``all``) whose single
boolean comes back to the host, and masked positions are handled with ``where`` rather than
boolean indexing (which would need the number of selected elements on the host). With
``device=True`` cupy input is validated where it lives and the :class:`Batch` holds cupy
arrays (for the cupy kernels); otherwise it is copied to the host first. numpy input runs
the very same code with ``xp = numpy``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import array_api_compat as aac
import numpy as np

from ._xp import array_module, cupy_namespace, is_cupy_array, to_host

__all__ = ["Batch", "input_library", "prepare", "prepare_log_ratio", "terminal_steps", "batch_rows"]


def terminal_steps(returns, mask, last=None):
    """Per-step rewards (n, T) holding ``returns[i]`` at the last real step of row ``i``.

    Parameters
    ----------
    returns : float64 (n,)
    mask : bool (n, T)
    last : int64 (n,), optional
        The last real step of each row when already known; found from ``mask`` otherwise
        (``max_t t * mask[i, t]``: 0 for an empty row).

    Returns
    -------
    float64 (n, T)
        Zeros except ``out[i, last_i] = returns[i]``, in the namespace of ``mask``.
    """
    xp = array_module(mask)
    n, T = mask.shape
    if last is None:
        last = xp.where(mask, xp.arange(T), 0).max(axis=1)
    steps = xp.zeros((n, T))
    steps[xp.arange(n), last] = returns
    return steps


@dataclass(frozen=True, eq=False)
class Batch:
    """Validated float64 inputs of one estimator call.

    Inputs with leading batch dimensions -- ``log_ratio`` (..., n, T), replications as an
    array axis -- are held as ``R = prod(...)`` blocks of ``n`` consecutive rows: every
    (rows, T) array below has ``rows = R * n`` rows, replication ``r`` being rows
    ``r * n .. (r + 1) * n - 1`` (a C-order reshape, a view of C-contiguous input).
    ``shape`` records the leading dimensions (``()`` for a plain (n, T) call).

    Attributes
    ----------
    log_ratio : float64 (rows, T), C-contiguous
        ``log pi - log mu``; 0 at masked positions, ``-inf`` allowed at real ones. May be
        the caller's own array (never written to).
    returns : float64 (rows,) or None
        ``G_i``: the terminal reward, or the sum of the per-step rewards. ``None`` for
        :func:`diagnose`.
    mask : bool (rows, T)
    lengths : int64 (rows,)
        Number of real tokens ``L_i``.
    terminal_only : bool
        Whether rewards were given as (n,).
    library : str
        ``"numpy"``, ``"cupy"`` or ``"torch"``: where the inputs came from.
    xp : module
        Namespace of the arrays held here: ``numpy``, or ``cupy`` when cupy input was
        validated on the device.
    step_rewards : float64 (rows, T) or None
        Per-step rewards as given (padding zeroed); ``None`` for terminal-only rewards.
    last_step : int64 (rows,) or None
        For terminal-only rewards, the last real step of each row when validation found it
        (``None``: found from ``mask`` on first use of :attr:`rewards`).
    shape : tuple of int
        The leading batch dimensions (``()``: one batch).
    """

    log_ratio: Any
    returns: Any
    mask: Any
    lengths: Any
    terminal_only: bool
    library: str
    xp: Any
    step_rewards: Any = None
    last_step: Any = None
    shape: tuple = ()

    @property
    def replications(self) -> int:
        """``R``: the number of (n, T) batches (1 without leading dimensions)."""
        return math.prod(self.shape)

    @property
    def rows(self) -> int:
        """``R * n``: rows of the flattened arrays."""
        return int(self.log_ratio.shape[0])

    @property
    def n(self) -> int:
        """Sequences per batch."""
        return self.rows // self.replications

    def per_batch(self, arr):
        """A (rows, ...) array as (R, n, ...) (a view)."""
        return arr.reshape((self.replications, self.n) + tuple(arr.shape[1:]))

    def unflatten(self, arr):
        """A (R, ...) array as (*shape, ...); unbatched input gives the (...) block itself."""
        return arr.reshape(tuple(self.shape) + tuple(arr.shape[1:]))

    @functools.cached_property
    def full(self) -> bool:
        """Whether every position is a real token (kernels then skip reading the mask)."""
        return bool((self.lengths == self.log_ratio.shape[1]).all())

    @functools.cached_property
    def rewards(self):
        """Per-step rewards (rows, T), 0 at masked positions; ``None`` for :func:`diagnose`.

        Terminal-only rewards (n,) are placed at the last real step of each row (column 0
        for an empty row), built here on first use: only the per-step estimators (``pdis``
        with per-step rewards, ``wpdis``) read it, so the other estimators never write an
        (n, T) array for terminal rewards.
        """
        if not self.terminal_only:
            return self.step_rewards
        if self.returns is None:
            return None
        return terminal_steps(self.returns, self.mask, self.last_step)

    def output(self, arr):
        """Return ``arr`` in the caller's array library: cupy for cupy input (also from host
        results), numpy otherwise (also from device results of ``backend="cupy"``)."""
        if arr is None:
            return arr
        if self.library == "cupy":
            return cupy_namespace().asarray(arr)
        return to_host(arr)


def _library_of(x) -> str:
    if is_cupy_array(x):
        return "cupy"
    if aac.is_numpy_array(x):
        return "numpy"
    if aac.is_torch_array(x):
        return "torch"
    return "other"


def _pick_library(named: dict) -> tuple[str, Any]:
    """Choose the array library once from the array arguments (lists count as numpy)."""
    libs = {}
    for name, value in named.items():
        if value is not None and (is_cupy_array(value) or aac.is_array_api_obj(value)):
            libs[name] = _library_of(value)
    kinds = set(libs.values()) - {"numpy"}
    if len(kinds) > 1 or (kinds and "numpy" in libs.values()):
        detail = ", ".join(f"{k}: {v}" for k, v in libs.items())
        raise TypeError(f"{', '.join(named)} must come from one array library, got {detail}")
    if not kinds:
        return "numpy", np
    lib = kinds.pop()
    if lib == "cupy":
        return lib, cupy_namespace()
    arrays = [v for v in named.values() if v is not None and aac.is_array_api_obj(v)]
    return lib, aac.array_namespace(*arrays)


def input_library(log_ratio, rewards=None, mask=None) -> str:
    """``"numpy"``, ``"cupy"`` or ``"torch"``: the one array library of the inputs.

    Raises
    ------
    TypeError
        When the inputs mix array libraries.
    """
    return _pick_library({"log_ratio": log_ratio, "rewards": rewards, "mask": mask})[0]


def _to_numpy(x, library: str):
    if x is None:
        return None
    if library == "cupy" and is_cupy_array(x):
        return x.get()
    if library == "torch" and aac.is_torch_array(x):
        import torch

        x = x.detach().cpu()
        if x.dtype in (torch.bfloat16,):
            x = x.to(torch.float32)
        return x.numpy()
    return np.asarray(x)


def _as_float(xp, value, name: str, ndim) -> Any:
    """``value`` as a float64 array of ``xp`` with ``ndim`` in the allowed set (as ``as_float_array``)."""
    arr = xp.asarray(value)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.dtype.kind == "c":
        raise TypeError(f"{name} must be real, got dtype {arr.dtype}")
    arr = arr.astype(xp.float64, copy=False)
    if ndim is None:
        return arr
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if arr.ndim not in allowed:
        want = " or ".join(str(d) for d in allowed)
        raise ValueError(f"{name} must be {want}-dimensional, got shape {arr.shape}")
    return arr


def _check_log_ratio(xp, raw):
    lr = _as_float(xp, raw, "log_ratio", None)
    if lr.ndim < 2:
        raise ValueError(f"log_ratio must be 2-dimensional (n, T), or (..., n, T) with leading batch dimensions, "
                         f"got shape {lr.shape}")
    n, T = lr.shape[-2:]
    if n < 1:
        raise ValueError(f"log_ratio must have at least one row (n >= 1), got shape {lr.shape}")
    if T < 1:
        raise ValueError(f"log_ratio must have at least one column (T >= 1), got shape {lr.shape}")
    if 0 in lr.shape[:-2]:
        raise ValueError(f"log_ratio must have at least one batch along each leading dimension, got shape {lr.shape}")
    return lr


def batch_rows(shape) -> tuple[tuple, int, int]:
    """``(leading dimensions, n, T)`` of a (..., n, T) shape."""
    shape = tuple(int(d) for d in shape)
    return shape[:-2], shape[-2], shape[-1]


def _check_mask(xp, raw, shape):
    if raw is None:
        return xp.ones(shape, dtype=bool)
    mask = xp.asarray(raw)
    if mask.dtype != bool:
        raise ValueError(f"mask must be a boolean array, got dtype {mask.dtype}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"mask must have the shape of log_ratio {tuple(shape)}, got {tuple(mask.shape)}")
    return mask


def _all_finite(xp, x) -> bool:
    return bool(xp.isfinite(x).all())


def _clean_log_ratio(xp, lr, mask, full: bool):
    """Reject NaN/+inf at real tokens; return ``lr`` with masked positions set to 0."""
    if not _all_finite(xp, lr):
        real = lr if full else xp.where(mask, lr, 0.0)
        if bool(xp.isnan(real).any()):
            raise ValueError("log_ratio contains NaN at an unmasked position")
        if bool((real == xp.inf).any()):
            raise ValueError("log_ratio contains +inf at an unmasked position")
    return xp.ascontiguousarray(lr) if full else xp.where(mask, lr, 0.0)


def _inputs(named: dict, device: bool):
    """The namespace to validate in and the inputs in it (host copies unless ``device``)."""
    library, xp = _pick_library(named)
    if library == "cupy" and device:
        return library, xp, named
    return library, np, {k: _to_numpy(v, library) for k, v in named.items()}


def _flat(x, T):
    """A (..., n, T) array as (rows, T) (a view when C-contiguous)."""
    return x.reshape(-1, T)


def prepare_log_ratio(log_ratio, mask=None, *, device: bool = False) -> Batch:
    """Validate ``log_ratio`` (..., n, T) and ``mask`` only (for :func:`diagnose`).

    ``device=True`` keeps cupy input on the device (the checks run there).
    """
    library, xp, a = _inputs({"log_ratio": log_ratio, "mask": mask}, device)
    lr = _check_log_ratio(xp, a["log_ratio"])
    lead, _, T = batch_rows(lr.shape)
    m = _check_mask(xp, a["mask"], lr.shape)
    lr = _clean_log_ratio(xp, lr, m, bool(m.all()))
    m = _flat(m, T)
    return Batch(_flat(lr, T), None, m, m.sum(axis=1).astype(xp.int64), False, library, xp, shape=lead)


def _check_rewards(xp, raw, shape):
    """Rewards for log-ratios of ``shape`` (..., n, T): (..., n) terminal or (..., n, T) per step."""
    if raw is None:
        raise TypeError("rewards must be an array of shape (n,) or (n, T), got None")
    rew = _as_float(xp, raw, "rewards", None)
    k = len(shape)
    if rew.ndim < 1 or rew.ndim > k:
        raise ValueError(f"rewards must be {k - 1} or {k}-dimensional, got shape {tuple(rew.shape)}")
    if rew.ndim < k - 1:
        dims = " or ".join(str(d) for d in sorted({max(rew.ndim, 2), rew.ndim + 1}))
        raise ValueError(f"log_ratio must be {dims}-dimensional to go with rewards of shape {tuple(rew.shape)}, got "
                         f"shape {tuple(shape)} (with leading batch dimensions, log_ratio (..., n, T) takes rewards "
                         "(..., n) or (..., n, T))")
    if tuple(rew.shape) not in (tuple(shape[:-1]), tuple(shape)):
        raise ValueError(f"rewards must have shape {tuple(shape[:-1])} or {tuple(shape)}, got {tuple(rew.shape)}")
    return rew


def prepare(log_ratio, rewards, mask=None, *, device: bool = False) -> Batch:
    """Validate estimator inputs and bring them to float64 with padding zeroed.

    Parameters
    ----------
    log_ratio : array (n, T) or (..., n, T)
        Per-token ``log pi - log mu``. NaN or +inf at an unmasked position is an error;
        ``-inf`` (target probability 0) is allowed. Masked positions are ignored. Leading
        dimensions are independent batches (replications).
    rewards : array (..., n) or (..., n, T)
        Terminal-only or per-step rewards; must be finite at unmasked positions.
    mask : bool array (..., n, T), optional
        True where a token exists (default all true).
    device : bool
        Keep cupy input on the device: validate it there (only the pass/fail booleans
        come to the host) and return a Batch of cupy arrays. Otherwise (and for numpy or
        torch input) the Batch holds numpy arrays.

    Returns
    -------
    Batch
        Terminal-only rewards are kept as ``returns`` (rows,); the per-step array is built
        only when :attr:`Batch.rewards` is read. Arrays are flattened to ``rows = R * n``
        rows (``Batch.shape`` keeps the leading dimensions).

    Raises
    ------
    ValueError, TypeError
        With a message naming the offending argument.
    """
    library, xp, a = _inputs({"log_ratio": log_ratio, "rewards": rewards, "mask": mask}, device)
    lr = _check_log_ratio(xp, a["log_ratio"])
    lead, n, T = batch_rows(lr.shape)
    m = _check_mask(xp, a["mask"], lr.shape)
    rew = _check_rewards(xp, a["rewards"], lr.shape)
    lengths = _flat(m, T).sum(axis=1).astype(xp.int64)
    full = bool((lengths == T).all())
    if rew.ndim == lr.ndim - 1:
        if not _all_finite(xp, rew):
            raise ValueError("rewards contains NaN or inf")
        returns = rew.reshape(-1).copy()
        steps = None
        terminal_only = True
    else:
        if not _all_finite(xp, rew) and not _all_finite(xp, xp.where(m, rew, 0.0)):
            raise ValueError("rewards contains NaN or inf at an unmasked position")
        steps = _flat(xp.ascontiguousarray(rew) if full else xp.where(m, rew, 0.0), T)
        returns = steps.sum(axis=1)
        terminal_only = False
    lr = _flat(_clean_log_ratio(xp, lr, m, full), T)
    return Batch(lr, returns, _flat(m, T), lengths, terminal_only, library, xp, step_rewards=steps, shape=lead)
