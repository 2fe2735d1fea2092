"""Input validation shared by every public function.

Kernels never validate; public functions call these helpers once at the boundary.
Every failure raises ``ValueError`` or ``TypeError`` naming the argument.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = [
    "as_int_array",
    "as_float_array",
    "check_finite",
    "check_int",
    "check_positive_int",
    "check_shape",
    "check_probability_vector",
    "BACKENDS",
    "check_backend_name",
    "check_real",
    "check_c",
    "check_band",
    "check_flag",
]


def check_int(value, name: str) -> int:
    """Return ``value`` as a Python int, or raise TypeError naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    return int(value)


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    """Return ``value`` as an int >= ``minimum``; raise ValueError otherwise."""
    v = check_int(value, name)
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def as_int_array(value, name: str, ndim: int | None = None) -> np.ndarray:
    """Convert to an int64 array; reject floats that are not whole numbers and bad ndim."""
    arr = np.asarray(value)
    if arr.dtype == bool:
        raise TypeError(f"{name} must hold integers, got booleans")
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and arr.size and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        elif arr.size == 0 and np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {arr.shape}")
    return arr.astype(np.int64, copy=False)


def as_float_array(value, name: str, ndim: int | tuple[int, ...] | None = None) -> np.ndarray:
    """Convert to a float64 array, checking the number of dimensions."""
    arr = np.asarray(value)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} must be real, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if arr.ndim not in allowed:
            want = " or ".join(str(d) for d in allowed)
            raise ValueError(f"{name} must be {want}-dimensional, got shape {arr.shape}")
    return arr


def check_finite(arr: np.ndarray, name: str, *, allow_neg_inf: bool = False) -> None:
    """Raise ValueError if ``arr`` holds NaN or +-inf (optionally allowing -inf)."""
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN")
    if allow_neg_inf:
        if np.isposinf(arr).any():
            raise ValueError(f"{name} contains +inf")
    elif np.isinf(arr).any():
        raise ValueError(f"{name} contains inf")


def check_shape(arr: np.ndarray, shape: tuple[int, ...], name: str) -> None:
    """Raise ValueError unless ``arr.shape == shape``."""
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(arr.shape)}")


def check_probability_vector(p: np.ndarray, name: str, atol: float = 1e-9) -> np.ndarray:
    """Check a 1-D probability vector (non-negative, sums to one) and renormalise exactly."""
    check_finite(p, name)
    if (p < 0).any():
        raise ValueError(f"{name} must be non-negative (a probability vector)")
    total = p.sum()
    if abs(total - 1.0) > atol:
        raise ValueError(f"{name} must sum to 1 (a probability vector), sums to {total!r}")
    return p / total


BACKENDS = ("auto", "numpy", "numba", "cupy")


def check_backend_name(backend) -> str:
    """Check that ``backend`` is one of :data:`BACKENDS` (TypeError / ValueError otherwise)."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def check_real(value, name: str) -> float:
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
    value = check_real(c, name)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def check_band(lo, hi) -> tuple[float, float]:
    """Return ``(lo, hi)`` with ``0 <= lo <= hi``; ``lo`` finite, ``hi`` may be inf."""
    lo = check_real(lo, "lo")
    hi = check_real(hi, "hi")
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
