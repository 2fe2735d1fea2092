"""CuPy access for the GPU kernels: import on first use, one compiled module per source.

Nothing here imports CuPy at module import time, so the package works without it; asking
for ``backend="cupy"`` without CuPy or without a CUDA device raises ``ValueError`` naming
the argument.
"""

from __future__ import annotations

import functools

__all__ = ["require_cupy", "cuda_module", "CUDA_RNG"]

# SplitMix64 chain of tokis._core._rng as CUDA C (wrapping unsigned 64-bit arithmetic).
# (h >> 11) < 2**53 converts to double exactly and 1 / 2**53 is exact, so the uniform is the
# numpy reference's value bit for bit.
CUDA_RNG = r"""
__device__ __forceinline__ unsigned long long tokis_mix64(unsigned long long z) {
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

__device__ __forceinline__ double tokis_uniform(unsigned long long row_key, unsigned long long t) {
    return (double)(tokis_mix64(row_key ^ t) >> 11) * (1.0 / 9007199254740992.0);
}
"""


def require_cupy(name: str = "backend"):
    """Return the ``cupy`` module, or raise ValueError when CuPy or a CUDA device is missing."""
    try:
        import cupy
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise ValueError(f"{name}='cupy' needs CuPy (pip install 'tokis[cupy]'), which is not installed") from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception:  # pragma: no cover - depends on the machine
        count = 0
    if count < 1:  # pragma: no cover - depends on the machine
        raise ValueError(f"{name}='cupy' needs a CUDA device; none was found")
    return cupy


@functools.lru_cache(maxsize=None)
def cuda_module(source: str):
    """Compile ``source`` once per process (CuPy also caches the binary on disk)."""
    cupy = require_cupy()
    return cupy.RawModule(code=source)
