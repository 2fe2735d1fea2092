"""Memory-read bandwidth: a plain reduction over an array, the yardstick for estimator kernels.

An estimator that reads ``B`` bytes cannot run faster than ``B / bandwidth``; the benchmarks
report estimator throughput as a fraction of :func:`read_bandwidth` measured in the same run
over an array of the same number of bytes.
"""

from __future__ import annotations

import time

import numba
import numpy as np

__all__ = ["parallel_sum", "read_bandwidth"]


@numba.njit(cache=True, parallel=True, fastmath={"reassoc", "contract"})
def parallel_sum(x):  # pragma: no cover - compiled
    """Sum of a 1-d float64 array, parallel over threads and vectorised within each.

    ``reassoc`` lets LLVM keep several SIMD accumulators, so the loop is limited by memory
    reads, not by the latency of one chain of additions (the result differs from a
    sequential sum only by rounding).
    """
    total = 0.0
    for i in numba.prange(x.shape[0]):
        total += x[i]
    return total


def read_bandwidth(nbytes: int, *, repeats: int = 7, backend: str = "numba") -> float:
    """Median read bandwidth (bytes per second) of a sum over ``nbytes`` bytes of float64.

    Parameters
    ----------
    nbytes : int
        Size of the array read (rounded down to whole float64 values, at least one).
    repeats : int
        Timed repeats after one untimed warm-up pass (which also compiles the kernel).
    backend : {"numba", "numpy", "cupy"}
        ``numba``: :func:`parallel_sum` on every thread; ``numpy``: ``np.sum`` (one thread);
        ``cupy``: ``cupy.sum`` on the GPU, synchronised.

    Returns
    -------
    float
        ``nbytes / median(seconds)``.
    """
    n = max(1, int(nbytes) // 8)
    if backend == "cupy":
        from ._cupy import require_cupy

        cp = require_cupy()
        x = cp.ones(n)

        def run():
            x.sum()
            cp.cuda.Device().synchronize()
    else:
        x = np.ones(n)
        if backend == "numba":
            parallel_sum(x[:8])

            def run():
                parallel_sum(x)
        elif backend == "numpy":

            def run():
                x.sum()
        else:
            raise ValueError(f"backend must be 'numba', 'numpy' or 'cupy', got {backend!r}")
    run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return n * 8 / float(np.median(times))
