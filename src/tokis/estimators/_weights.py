"""Weight transforms in log space: the (n, T) -> (n,) kernels an estimator composes.

Every kernel takes already-validated float64 arrays — ``log_ratio`` (n, T) with padding
zeroed (``-inf`` allowed at real tokens), ``mask`` (n, T) bool, ``rewards`` (n, T) with
padding zeroed, ``lengths`` (n,) — and returns per-row pieces. A per-row quantity that may
overflow is returned as a pair ``(b, h)`` meaning ``exp(b) * h`` with ``b`` a log-scale
(possibly ``-inf``) and ``h`` a finite multiplier. Kernels never validate.

These functions are the only heavy passes over the (n, T) data; a backend (numba, cupy)
replaces this table of kernels and nothing else (see :func:`get_kernels`).
"""

from __future__ import annotations

import types

import numpy as np
from .._kernel_contract import kernel_table

__all__ = [
    "log_weight",
    "prefix_log_weight",
    "clipped_log_weight",
    "geo_log_weight",
    "token_linear",
    "per_decision",
    "per_decision_columns",
    "count_above",
    "NUMPY_KERNELS",
    "KERNELS",
    "get_kernels",
    "resolve_backend",
]


def log_weight(log_ratio: np.ndarray) -> np.ndarray:
    """Sequence log-weight ``log W_i = sum_t l_{i,t}`` (n,)."""
    return log_ratio.sum(axis=1)


def prefix_log_weight(log_ratio: np.ndarray) -> np.ndarray:
    """Prefix log-weights ``log W_{i,<=t} = sum_{s<=t} l_{i,s}`` (n, T)."""
    return np.cumsum(log_ratio, axis=1)


def clipped_log_weight(log_ratio: np.ndarray, mask: np.ndarray, log_c: float) -> np.ndarray:
    """``sum_t min(l_{i,t}, log c)`` over real tokens (n,): log of ``prod_t min(r_t, c)``."""
    return np.where(mask, np.minimum(log_ratio, log_c), 0.0).sum(axis=1)


def geo_log_weight(log_ratio: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``sum_t l_{i,t} / L_i`` (n,), 0 for an empty row (weight 1)."""
    total = log_ratio.sum(axis=1)
    return np.where(lengths > 0, total / np.maximum(lengths, 1), 0.0)


def count_above(log_ratio: np.ndarray, mask: np.ndarray, log_c: float) -> int:
    """Number of real tokens with ``l > log c`` (ratios above ``c``)."""
    return int(np.count_nonzero(mask & (log_ratio > log_c)))


def token_linear(
    log_ratio: np.ndarray,
    mask: np.ndarray,
    *,
    log_c: float = np.inf,
    log_lo: float = -np.inf,
    log_hi: float = np.inf,
    offset: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token-additive sequence weight ``w_i = [1 - K_i] + sum_{t in B_i} min(r_t, c)``.

    ``B_i`` is the set of real tokens with ``lo <= r_t <= hi`` and ``K_i = |B_i|``; the
    bracket is present when ``offset`` is true. So ``w_i = 1 + sum_{t in B_i}(min(r_t, c) - 1)``
    (tok, clip_tok, mask_tok) or ``sum_t r_t`` (tok_sum, ``offset=False``).

    Returns
    -------
    b, h : float64 (n,)
        ``w_i = exp(b_i) * h_i`` with ``b_i = max(0, max_t log min(r_t, c))``.
    inside : int64 (n,)
        ``K_i``.
    """
    band = mask & (log_ratio >= log_lo) & (log_ratio <= log_hi)
    u = np.where(band, np.minimum(log_ratio, log_c), -np.inf)
    b = np.maximum(u.max(axis=1), 0.0)
    h = np.exp(u - b[:, None]).sum(axis=1)
    inside = band.sum(axis=1)
    if offset:
        h = h + (1.0 - inside) * np.exp(-b)
    return b, h, inside


def per_decision(log_ratio: np.ndarray, rewards: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-decision statistic ``f_i = sum_t W_{i,<=t} rew_{i,t}`` as ``exp(b_i) * h_i``.

    ``b_i`` is the largest prefix log-weight among steps with a non-zero reward (0 if none).
    """
    clw = np.cumsum(log_ratio, axis=1)
    active = rewards != 0
    b = np.where(active, clw, -np.inf).max(axis=1)
    b = np.where(np.isfinite(b), b, 0.0)
    terms = np.exp(np.where(active, clw - b[:, None], -np.inf)) * rewards
    return b, terms.sum(axis=1)


def per_decision_columns(log_ratio: np.ndarray, rewards: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-step numerators and denominators of weighted per-decision IS.

    Returns
    -------
    num, den : float64 (n, T)
        ``W_{i,<=t} rew_{i,t}`` and ``W_{i,<=t}``, column ``t`` multiplied by ``exp(-m_t)``.
    m : float64 (T,)
        Column log-scales ``m_t = max_i log W_{i,<=t}`` (0 where every weight is 0).
    """
    clw = np.cumsum(log_ratio, axis=1)
    m = clw.max(axis=0)
    m = np.where(np.isfinite(m), m, 0.0)
    den = np.exp(clw - m[None, :])
    return den * rewards, den, m


NUMPY_KERNELS = kernel_table(globals())

#: Kernel tables by backend: numpy here, the compiled ones from :mod:`tokis._backends`.
KERNELS: dict = {"numpy": NUMPY_KERNELS}


def _register_compiled() -> None:
    from .._backends import estimator_kernel_tables

    KERNELS.update(estimator_kernel_tables())


_register_compiled()


def resolve_backend(backend: str, library: str = "numpy") -> str:
    """Map a valid backend name to a registered kernel table.

    ``"auto"`` follows the input: ``"cupy"`` for cupy arrays (validated and computed on the
    device, results stay there) and ``"numba"`` for numpy input and torch tensors (which are
    converted to numpy), the fast CPU table.

    Parameters
    ----------
    backend : {"auto", "numpy", "numba", "cupy"}
    library : {"numpy", "cupy", "torch"}
        Array library of the estimator's inputs.

    Raises
    ------
    ValueError
        For a backend whose kernels are not registered in :data:`KERNELS`.
    """
    if backend == "auto":
        backend = "cupy" if library == "cupy" else "numba"
    if backend not in KERNELS:
        if backend == "cupy":
            raise ValueError("backend='cupy' needs CuPy (pip install 'tokis[cupy]') and a CUDA device, "
                             "which are not available here")
        raise ValueError(f"backend {backend!r} is not available")
    return backend


def get_kernels(backend: str):
    """Return the kernel table (a mapping of the names above) of a resolved backend."""
    return types.SimpleNamespace(**KERNELS[backend])
