r"""What ``backend="auto"`` runs: the backend, and the threads of a numba call, from the problem size.

The rule (measured in the default environment -- no ``OMP_WAIT_POLICY``, no
``OPENBLAS_NUM_THREADS`` -- on the 2-vCPU machine of ``benchmarks/RESULTS.md``, section "auto"):

- cupy input runs on the device (``"cupy"``): the data is there.
- Everything else runs the numba path (numpy input; torch tensors are converted to numpy).
  With its reductions compiled (one validation sweep, one form kernel, one reduction pass;
  no BLAS call) it measured faster than the numpy reference at every shape tried, from
  1 x 1 to 65536 x 1024, for every family: numpy's own passes (``isfinite``, ``where``,
  ``exp``, ``sum``) already cost more than the whole compiled call. So ``auto`` never picks
  numpy for numpy input (``NUMPY_MAX_ELEMENTS = 0``; a measured counter-example would go
  here).
- A numba call runs on the calling thread unless it has at least
  :data:`tokis._backends._chunks.ESTIMATOR_PARALLEL_MIN` elements (rows x T over all
  batches): below that, waking the sleeping worker threads costs more than they save (see
  :mod:`tokis._backends._chunks` for the wake-up latency measured here). An explicit
  ``backend="numba"`` follows the same thread rule.

:func:`plan` is the rule as a function, so tests check the choice for a given shape without
timing anything; the timings behind it are in the benchmarks.
"""

from __future__ import annotations

from .._backends import _chunks

__all__ = ["plan", "NUMPY_MAX_ELEMENTS"]

#: numpy input with at most this many elements would run the numpy reference under "auto"
#: (0: never -- the compiled path measured faster at every size).
NUMPY_MAX_ELEMENTS = 0


def plan(backend: str, library: str, elements: int) -> tuple[str, int]:
    """``(backend that runs, threads)`` for a call on ``elements`` = rows x T log-ratios.

    Parameters
    ----------
    backend : {"auto", "numpy", "numba", "cupy"}
        As given (already validated).
    library : {"numpy", "cupy", "torch", "other"}
        Where the inputs come from.
    elements : int
        Size of the (..., n, T) log-ratio array.

    Returns
    -------
    (str, int)
        The backend and the numba threads (1 for numpy and cupy).
    """
    if backend == "auto":
        if library == "cupy":
            return "cupy", 1
        backend = "numpy" if elements <= NUMPY_MAX_ELEMENTS else "numba"
    if backend != "numba":
        return backend, 1
    return "numba", _chunks.threads_for(elements, _chunks.ESTIMATOR_PARALLEL_MIN)
