"""The counter-based generator of :mod:`tokis._core._rng`, compiled with numba.

``mix64`` is SplitMix64's step (add the golden gamma, then the finaliser) in wrapping uint64
arithmetic; every constant and shift amount is a ``np.uint64`` so numba never promotes to a
signed or floating type. The uniform for (run key ``k``, sequence ``i``, step ``t``) is

    u = (mix(mix(k ^ i) ^ t) >> 11) * 2**-53,

bit for bit the numpy reference's value (the 53-bit integer converts to float64 exactly).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["mix64", "row_key", "uniform_at"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_TWO_M53 = 2.0**-53


@numba.njit(cache=True, inline="always")
def mix64(z):  # pragma: no cover - compiled
    """SplitMix64 step on a uint64 (wrapping)."""
    z = z + _GOLDEN
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@numba.njit(cache=True, inline="always")
def row_key(key, i):  # pragma: no cover - compiled
    """Per-sequence key ``mix(k ^ i)`` for run key ``k`` (uint64) and sequence index ``i``."""
    return mix64(key ^ np.uint64(i))


@numba.njit(cache=True, inline="always")
def uniform_at(rkey, t):  # pragma: no cover - compiled
    """Uniform in [0, 1) for a per-sequence key and step ``t``: ``(mix(rkey ^ t) >> 11) * 2**-53``."""
    h = mix64(rkey ^ np.uint64(t))
    return np.float64(h >> _S11) * _TWO_M53
