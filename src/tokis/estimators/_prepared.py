r"""Validating estimator inputs once: :func:`load_batch`, and the public :func:`prepare`.

Every estimator call validates its arrays (shapes, dtypes, NaN/+inf at real tokens, non-finite
rewards), counts the tokens per row and sums the per-step returns before its form runs. A
caller that runs several estimators on the same arrays -- the Monte Carlo harness runs eight
on every chunk of replications -- does that work once with :func:`prepare` and hands the
:class:`Prepared` batch to each estimator in place of ``log_ratio``; the results are bit for
bit those of the raw-array calls, because the estimator then runs on the very
:class:`~tokis._core._batch.Batch` the raw call would have built.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from .._backends._cupy import require_cupy
from .._backends._numba_prepare import prepare_numba
from .._core import _batch
from .._core._batch import Batch, input_library
from .._core._validate import check_backend_name
from .._core._xp import cupy_namespace
from ._plan import plan

__all__ = ["Prepared", "prepare", "load_batch", "batch_of"]


def _elements(x) -> int:
    shape = getattr(x, "shape", None)
    return math.prod(shape) if shape is not None else math.prod(np.shape(x))


def load_batch(log_ratio, rewards, mask, backend):
    """Validate the inputs once; return ``(batch, backend run, threads)``."""
    check_backend_name(backend)
    library = input_library(log_ratio, rewards, mask)
    if backend == "cupy" and library != "cupy":
        require_cupy("backend")
    be, threads = plan(backend, library, _elements(log_ratio))
    if be == "numba" and library != "cupy":
        # one compiled validation pass (same Batch, same errors as ``prepare``)
        return prepare_numba(log_ratio, rewards, mask, threads=threads), be, threads
    if be == "cupy" and library != "cupy":
        cp = cupy_namespace()
        host_batch = _batch.prepare(log_ratio, rewards, mask)
        moved = {f: (cp.asarray(getattr(host_batch, f)) if getattr(host_batch, f) is not None else None)
                 for f in ("log_ratio", "returns", "mask", "lengths", "step_rewards", "last_step")}
        return dataclasses.replace(host_batch, xp=cp, **moved), be, threads
    # the cupy backend validates cupy input on the device and keeps it there
    return _batch.prepare(log_ratio, rewards, mask, device=be == "cupy"), be, threads


@dataclass(frozen=True, eq=False, repr=False)
class Prepared:
    """Estimator inputs validated once, for a given backend (see :func:`prepare`).

    Attributes
    ----------
    batch : tokis._core._batch.Batch
        The validated float64 arrays, flattened to ``R * n`` rows.
    backend : {"numpy", "numba", "cupy"}
        The backend that runs (``"auto"`` resolved by size and input library).
    threads : int
        Threads of a numba call.
    """

    batch: Batch
    backend: str
    threads: int

    @property
    def shape(self) -> tuple:
        """The log-ratios' shape (..., n, T)."""
        b = self.batch
        return tuple(b.shape) + (b.n, int(b.log_ratio.shape[1]))

    def __repr__(self) -> str:
        kind = "terminal" if self.batch.terminal_only else "per-step"
        return f"Prepared(shape={self.shape}, rewards={kind!r}, backend={self.backend!r})"


def prepare(log_ratio, rewards, *, mask=None, backend="auto") -> Prepared:
    r"""Validate estimator inputs once, to run many estimators on them.

    ``est.seq(prepare(lr, rew, mask=m))`` equals ``est.seq(lr, rew, mask=m)`` bit for bit, for
    every estimator and backend, with or without leading batch dimensions; the checks, the
    token counts and the per-step returns are computed once instead of once per estimator.

    Parameters
    ----------
    log_ratio : array (n, T) or (..., n, T)
        Per-token ``log pi - log mu`` (DESIGN section 4 conventions).
    rewards : array (..., n) or (..., n, T)
        Terminal or per-step rewards.
    mask : bool array (..., n, T), optional
        True where a token exists (default: all).
    backend : {"auto", "numpy", "numba", "cupy"}
        Fixed here: an estimator called on the result runs this backend (it accepts
        ``backend="auto"`` or the same name).

    Returns
    -------
    Prepared
        Pass it to any estimator (or :class:`~tokis.estimators.EstimatorSpec`) as ``log_ratio``,
        without ``rewards`` and ``mask``. Where no copy was needed (float64, C-contiguous,
        padding already 0, as ``tokis.envs.sample`` returns) it holds the caller's own arrays:
        do not modify them while it is in use.

    Raises
    ------
    ValueError, TypeError
        As the estimators raise for the same inputs, naming the argument.

    Examples
    --------
    >>> import numpy as np
    >>> import tokis.estimators as est
    >>> rng = np.random.default_rng(0)
    >>> lr, rew = rng.normal(scale=0.1, size=(64, 8)), rng.random(64)
    >>> batch = est.prepare(lr, rew)
    >>> est.seq(batch).value == est.seq(lr, rew).value
    True
    """
    return Prepared(*load_batch(log_ratio, rewards, mask, backend))


def batch_of(prepared: Prepared, rewards, mask, backend) -> tuple:
    """``(batch, backend, threads)`` of an estimator call on a :class:`Prepared` batch.

    Raises
    ------
    TypeError
        ``rewards`` or ``mask`` passed as well (they were given to :func:`prepare`).
    ValueError
        A ``backend`` other than ``"auto"`` and the one the batch was prepared for.
    """
    for name, value in (("rewards", rewards), ("mask", mask)):
        if value is not None:
            raise TypeError(f"{name} must be omitted when log_ratio is a prepared batch (tokis.estimators.prepare "
                            f"already took the {name})")
    check_backend_name(backend)
    if backend not in ("auto", prepared.backend):
        raise ValueError(f"backend must be 'auto' or {prepared.backend!r} (the backend the batch was prepared for), "
                         f"got {backend!r}")
    return prepared.batch, prepared.backend, prepared.threads
