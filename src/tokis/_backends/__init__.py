"""Compiled backends: numba kernels for the CPU, CuPy (CUDA) kernels for a GPU.

Sampling: :mod:`._numba_sample`, :mod:`._cupy_sample` (routed by ``tokis.envs.sample``;
``backend="auto"`` is numba, which also assembles every Rollouts field in the same parallel
pass). Every backend draws the numpy reference's tokens bit for bit.

Estimators: kernel tables with the names and contracts of ``tokis.estimators._weights``,
:mod:`._numba_estimators` and :mod:`._cupy_estimators`, registered by
:func:`estimator_kernel_tables` (``backend="auto"`` is cupy for cupy input, numba
otherwise), plus the one-pass numba validation :mod:`._numba_prepare`. Only the (n, T)
passes are compiled: validation of cupy input, the O(n) reductions and ``diagnose`` run in
the input's array namespace (numpy, or cupy on the device), and PSIS smoothing sorts the n
log-weights with numpy.

:mod:`._bandwidth` measures the read bandwidth that the benchmarks compare estimator
throughput with.
"""

from __future__ import annotations

import importlib.util

__all__ = ["estimator_kernel_tables"]


def estimator_kernel_tables() -> dict:
    """Kernel tables of the compiled backends present: ``{"numba": ..., "cupy": ...}``.

    ``"numba"`` is always there (numba is a dependency; kernels compile on first use).
    ``"cupy"`` is listed when CuPy is installed; its kernels raise ValueError on first use
    when no CUDA device is found. Neither import compiles anything.
    """
    from ._numba_estimators import NUMBA_KERNELS

    tables = {"numba": NUMBA_KERNELS}
    if importlib.util.find_spec("cupy") is not None:  # pragma: no cover - depends on the machine
        from ._cupy_estimators import CUPY_KERNELS

        tables["cupy"] = CUPY_KERNELS
    return tables
