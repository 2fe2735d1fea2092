"""The one validation and array-namespace helper at the estimators' boundary.

Public estimator functions call :func:`prepare` once; kernels receive float64 numpy arrays
with padding already zeroed and never validate. The array library is picked here, once:
numpy in gives numpy out, cupy in gives cupy out (computation on the host for the numpy
backend), torch tensors are converted to numpy and results come back as numpy.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import array_api_compat as aac
import numpy as np

from .._validate import as_float_array
from ._weights import resolve_backend

__all__ = [
    "BACKENDS",
    "Batch",
    "prepare",
    "prepare_log_ratio",
    "check_backend",
    "check_c",
    "check_band",
    "check_flag",
]

BACKENDS = ("auto", "numpy", "numba", "cupy")


@dataclass(frozen=True, eq=False)
class Batch:
    """Validated float64 inputs of one estimator call.

    Attributes
    ----------
    log_ratio : float64 (n, T), C-contiguous
        ``log pi - log mu``; 0 at masked positions, ``-inf`` allowed at real ones. May be
        the caller's own array (never written to).
    rewards : float64 (n, T) or None
        Per-step rewards, 0 at masked positions. Terminal-only rewards (n,) are placed at the
        last real step of each row (column 0 for an empty row). ``None`` for :func:`diagnose`.
    returns : float64 (n,) or None
        ``G_i``: the terminal reward, or the sum of the per-step rewards.
    mask : bool (n, T)
    lengths : int64 (n,)
        Number of real tokens ``L_i``.
    terminal_only : bool
        Whether rewards were given as (n,).
    library : str
        ``"numpy"``, ``"cupy"`` or ``"torch"``: where the inputs came from.
    """

    log_ratio: np.ndarray
    rewards: np.ndarray | None
    returns: np.ndarray | None
    mask: np.ndarray
    lengths: np.ndarray
    terminal_only: bool
    library: str
    xp: Any

    @property
    def n(self) -> int:
        return int(self.log_ratio.shape[0])

    def output(self, arr):
        """Return a numpy array in the caller's array library (cupy stays cupy)."""
        if arr is None or self.library != "cupy":
            return arr
        return self.xp.asarray(arr)


def _library_of(x) -> str:
    if aac.is_numpy_array(x):
        return "numpy"
    if aac.is_cupy_array(x):
        return "cupy"
    if aac.is_torch_array(x):
        return "torch"
    return "other"


def _pick_library(named: dict) -> tuple[str, Any]:
    """Choose the array library once from the array arguments (lists count as numpy)."""
    libs = {}
    for name, value in named.items():
        if value is not None and aac.is_array_api_obj(value):
            libs[name] = _library_of(value)
    kinds = set(libs.values()) - {"numpy"}
    if len(kinds) > 1 or (kinds and "numpy" in libs.values()):
        detail = ", ".join(f"{k}: {v}" for k, v in libs.items())
        raise TypeError(f"{', '.join(named)} must come from one array library, got {detail}")
    if not kinds:
        return "numpy", np
    lib = kinds.pop()
    arrays = [v for v in named.values() if v is not None and aac.is_array_api_obj(v)]
    return lib, aac.array_namespace(*arrays)


def _to_numpy(x, library: str):
    if x is None:
        return None
    if library == "cupy" and hasattr(x, "get"):
        return np.asarray(x.get())
    if library == "torch" and aac.is_torch_array(x):
        import torch

        x = x.detach().cpu()
        if x.dtype in (torch.bfloat16,):
            x = x.to(torch.float32)
        return x.numpy()
    return np.asarray(x)


def _check_log_ratio(lr_np) -> np.ndarray:
    lr = as_float_array(lr_np, "log_ratio", ndim=2)
    n, T = lr.shape
    if n < 1:
        raise ValueError(f"log_ratio must have at least one row (n >= 1), got shape {lr.shape}")
    if T < 1:
        raise ValueError(f"log_ratio must have at least one column (T >= 1), got shape {lr.shape}")
    return lr


def _check_mask(mask_np, shape) -> np.ndarray:
    if mask_np is None:
        return np.ones(shape, dtype=bool)
    mask = np.asarray(mask_np)
    if mask.dtype != bool:
        raise ValueError(f"mask must be a boolean array, got dtype {mask.dtype}")
    if mask.shape != tuple(shape):
        raise ValueError(f"mask must have the shape of log_ratio {tuple(shape)}, got {mask.shape}")
    return mask


def _clean_log_ratio(lr: np.ndarray, mask: np.ndarray, full: bool) -> np.ndarray:
    """Reject NaN/+inf at real tokens; return ``lr`` with masked positions set to 0."""
    if not np.isfinite(lr).all():
        real = lr if full else lr[mask]
        if np.isnan(real).any():
            raise ValueError("log_ratio contains NaN at an unmasked position")
        if np.isposinf(real).any():
            raise ValueError("log_ratio contains +inf at an unmasked position")
    return np.ascontiguousarray(lr) if full else np.where(mask, lr, 0.0)


def prepare_log_ratio(log_ratio, mask=None) -> Batch:
    """Validate ``log_ratio`` (n, T) and ``mask`` only (for :func:`diagnose`)."""
    library, xp = _pick_library({"log_ratio": log_ratio, "mask": mask})
    lr = _check_log_ratio(_to_numpy(log_ratio, library))
    m = _check_mask(_to_numpy(mask, library), lr.shape)
    lr = _clean_log_ratio(lr, m, bool(m.all()))
    return Batch(lr, None, None, m, m.sum(axis=1).astype(np.int64), False, library, xp)


def prepare(log_ratio, rewards, mask=None) -> Batch:
    """Validate estimator inputs and bring them to float64 numpy with padding zeroed.

    Parameters
    ----------
    log_ratio : array (n, T)
        Per-token ``log pi - log mu``. NaN or +inf at an unmasked position is an error;
        ``-inf`` (target probability 0) is allowed. Masked positions are ignored.
    rewards : array (n,) or (n, T)
        Terminal-only or per-step rewards; must be finite at unmasked positions.
    mask : bool array (n, T), optional
        True where a token exists (default all true).

    Returns
    -------
    Batch

    Raises
    ------
    ValueError, TypeError
        With a message naming the offending argument.
    """
    library, xp = _pick_library({"log_ratio": log_ratio, "rewards": rewards, "mask": mask})
    lr = _check_log_ratio(_to_numpy(log_ratio, library))
    n, T = lr.shape
    m = _check_mask(_to_numpy(mask, library), lr.shape)
    if rewards is None:
        raise TypeError("rewards must be an array of shape (n,) or (n, T), got None")
    rew = as_float_array(_to_numpy(rewards, library), "rewards", ndim=(1, 2))
    lengths = m.sum(axis=1).astype(np.int64)
    full = bool((lengths == T).all())
    if rew.ndim == 1:
        if rew.shape != (n,):
            raise ValueError(f"rewards must have shape ({n},) or ({n}, {T}), got {rew.shape}")
        if not np.isfinite(rew).all():
            raise ValueError("rewards contains NaN or inf")
        returns = rew.copy()
        last = np.where(lengths > 0, T - 1 - np.argmax(m[:, ::-1], axis=1), 0)
        steps = np.zeros((n, T))
        steps[np.arange(n), last] = returns
        terminal_only = True
    else:
        if rew.shape != (n, T):
            raise ValueError(f"rewards must have shape ({n},) or ({n}, {T}), got {rew.shape}")
        if not np.isfinite(rew).all() and not np.isfinite(rew[m]).all():
            raise ValueError("rewards contains NaN or inf at an unmasked position")
        steps = np.ascontiguousarray(rew) if full else np.where(m, rew, 0.0)
        returns = steps.sum(axis=1)
        terminal_only = False
    lr = _clean_log_ratio(lr, m, full)
    return Batch(lr, steps, returns, m, lengths, terminal_only, library, xp)


def check_backend(backend) -> str:
    """Resolve ``backend`` ("auto" | "numpy" | "numba" | "cupy") to an available one."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return resolve_backend(backend)


def _as_real(value, name: str) -> float:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if isinstance(value, np.ndarray) and value.ndim == 0 and np.issubdtype(value.dtype, np.number):
        value = value.item()
    if not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    return value


def check_c(c, name: str = "c", *, allow_ionides: bool = False):
    """Return the truncation level ``c > 0`` as a float (``inf`` allowed), or ``"ionides"``."""
    if isinstance(c, str):
        if allow_ionides and c == "ionides":
            return "ionides"
        want = "a positive number or 'ionides'" if allow_ionides else "a positive number"
        raise (ValueError if allow_ionides else TypeError)(f"{name} must be {want}, got {c!r}")
    value = _as_real(c, name)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def check_band(lo, hi) -> tuple[float, float]:
    """Return ``(lo, hi)`` with ``0 <= lo <= hi``; ``lo`` finite, ``hi`` may be inf."""
    lo = _as_real(lo, "lo")
    hi = _as_real(hi, "hi")
    if lo < 0 or math.isinf(lo):
        raise ValueError(f"lo must be a finite number >= 0, got {lo!r}")
    if lo > hi:
        raise ValueError(f"lo must be <= hi, got lo={lo!r} > hi={hi!r}")
    return lo, hi


def check_flag(value, name: str) -> bool:
    """Return ``value`` as a bool, rejecting anything that is not a bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)
