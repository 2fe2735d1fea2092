r"""Counter-based random numbers: the uniform for (seed, stream, sequence i, step t).

Every backend (numpy, numba, cupy) computes the same 64-bit hash of the four integers, so
the same seed gives the same tokens bit for bit whatever the thread count or chunking.

The hash is SplitMix64's finaliser applied in a chain::

    k = mix(mix(seed) ^ stream)        # per run and stream
    h = mix(mix(k ^ i) ^ t)            # per sequence and step
    u = (h >> 11) * 2**-53             # in [0, 1), 53 random bits

with ``mix(z) = f(z + 0x9E3779B97F4A7C15)``, ``f`` the SplitMix64 finaliser. Streams:
``STREAM_TOKEN`` for token draws and ``STREAM_REWARD`` for Bernoulli reward noise.
"""

from __future__ import annotations

import numpy as np

from ._validate import check_int

__all__ = ["GOLDEN", "MIX1", "MIX2", "STREAM_TOKEN", "STREAM_REWARD", "mix64", "run_key", "uniforms", "check_seed"]

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
STREAM_TOKEN = 0
STREAM_REWARD = 1
_TWO_M53 = 2.0**-53


def mix64(z):
    """SplitMix64 step on uint64 scalars or arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = np.asarray(z, dtype=np.uint64) + GOLDEN
        z = (z ^ (z >> np.uint64(30))) * MIX1
        z = (z ^ (z >> np.uint64(27))) * MIX2
        return z ^ (z >> np.uint64(31))


def check_seed(seed) -> int:
    """Validate a seed: an integer in [0, 2**64)."""
    s = check_int(seed, "seed")
    if not 0 <= s < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {s}")
    return s


def run_key(seed: int, stream: int) -> np.uint64:
    """The per-run, per-stream key ``mix(mix(seed) ^ stream)``."""
    return np.uint64(mix64(mix64(np.uint64(seed)) ^ np.uint64(stream)))


def uniforms(seed: int, stream: int, i, t):
    """Uniforms in [0, 1) for sequence indices ``i`` and steps ``t`` (broadcast together)."""
    k = run_key(seed, stream)
    i = np.asarray(i, dtype=np.uint64)
    t = np.asarray(t, dtype=np.uint64)
    h = mix64(mix64(k ^ i) ^ t)
    return (h >> np.uint64(11)).astype(np.float64) * _TWO_M53
