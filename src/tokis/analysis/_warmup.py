"""A first run compiles on two cores: a second process compiles the later estimators' kernels.

A sweep's first run after installing (an empty numba cache) spends most of its time in numba
compiling kernels one after the other -- the sampler, the input checks, each estimator's
family kernel, the batch reductions -- while the other core waits: numba compiles one function
at a time per process. :func:`start` launches one more Python process that compiles, on that
core, the family kernels of the sweep's estimators in the *reverse* of the order in which the
sweep needs them (the ratio reduction first, which the sweep needs only at its self-normalised
estimator), writing them to numba's disk cache. The sweep compiles from the front; when it
reaches a kernel the helper has already written, numba loads it from the cache instead of
compiling it. The helper skips what the sweep needs first (the sampler, the input checks and
the mean reduction): it validates its tiny batch on the numpy path and calls the estimators
with the mean reduction replaced by a stub, so it compiles nothing the sweep is about to
compile itself. Nothing the sweep computes depends on the helper: a kernel loaded from the
cache is the kernel the sweep would have compiled (the same source, flags and argument types).

The helper runs once per installation: the first in-process sweep that finds no stamp for the
installed source (``warmup-<key>`` in the kernel cache directory, ``key`` from the numba and
Python versions and the tokis source files' sizes and modification times, which also decide
when numba's cache is stale) claims it and starts the helper; every later run, and any run
without numba's CPU kernels, a second numba thread or a writable cache directory, starts
nothing. The helper runs at a lower priority (``nice 10``), writes nothing but the cache and
exits when done (a few seconds); its output is discarded.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
import tempfile

__all__ = ["start", "warm", "stamp_key"]


def stamp_key() -> str:
    """Hash of the numba and Python versions and the tokis source files' sizes and modification times."""
    import numba

    import tokis

    root = os.path.dirname(os.path.abspath(tokis.__file__))
    h = hashlib.sha256(f"{numba.__version__}\0{sys.version}\0{root}".encode())
    for dirpath, dirnames, files in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            st = os.stat(os.path.join(dirpath, name))
            h.update(f"{os.path.relpath(os.path.join(dirpath, name), root)}:{st.st_size}:{st.st_mtime_ns}\0".encode())
    return h.hexdigest()[:20]


def _claim() -> str | None:
    """The kernel cache directory if this process is the first to claim the stamp, else None."""
    from .._backends._kernel_cache import cache_dir

    directory = cache_dir()
    if directory is None:
        return None
    try:
        fd = os.open(os.path.join(directory, f"warmup-{stamp_key()}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except OSError:  # claimed before (or not writable): nothing to do
        return None
    os.close(fd)
    return directory


def start(point, specs, backend: str):
    """Start the helper process for a sweep about to compute ``point`` with ``specs`` (see the module docstring).

    Returns the :class:`subprocess.Popen` of the helper, or None when none was started.
    """
    import numba

    if backend not in ("auto", "numba") or numba.get_num_threads() < 2 or (os.cpu_count() or 1) < 2:
        return None
    directory = _claim()
    if directory is None:
        return None
    path = None
    try:  # best effort: a job that cannot be handed over (an unpicklable user map, no process) runs without it
        fd, path = tempfile.mkstemp(dir=directory, prefix="warmup-job-", suffix=".pkl")
        with os.fdopen(fd, "wb") as fh:
            pickle.dump((point.mdp, point.target, point.behavior, list(specs)), fh)
        return subprocess.Popen([sys.executable, "-m", __name__, path], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    except Exception:
        if path is not None:
            try:
                os.remove(path)
            except OSError:
                pass
        return None


def _order(specs) -> list:
    """Ratio-reduced estimators first (they compile the ratio reduction), then the rest from the last."""
    ratio = [s for s in specs if s.resolve().reduce == "ratio"]
    return ratio + [s for s in reversed(specs) if s not in ratio]


def warm(mdp, target, behavior, specs) -> None:
    """Compile the family kernels (and the ratio reduction) that ``specs`` run on batches of this MDP.

    On a batch of 2 x 2 sequences validated on the numpy path, on one thread, with
    :func:`tokis._backends._numba_reduce.mean_batches` replaced by a stub in this process (the
    sweep compiles that one first; the values computed here are thrown away).
    """
    import numba
    import numpy as np

    from .._backends import _numba_reduce
    from ..envs._sample import sample_ratios
    from ..estimators import prepare
    from ..estimators._prepared import Prepared

    numba.set_num_threads(1)
    log_ratio, rewards, mask = sample_ratios(mdp, behavior, target, 2, [1, 2], "numpy")
    batch = Prepared(prepare(log_ratio, rewards, mask=mask, backend="numpy").batch, "numba", 1)

    def stub(h, R, **_):
        return np.zeros(R), np.zeros(R), np.zeros(R), np.zeros(R), np.zeros(h.shape[0])

    _numba_reduce.mean_batches = stub
    for spec in _order(specs):
        try:
            spec.resolve()(batch, **spec.kwargs)
        except Exception:  # pragma: no cover - best effort: the sweep compiles whatever is missing
            pass


def main(argv=None) -> int:  # pragma: no cover - run as the helper process
    path = (sys.argv[1:] if argv is None else argv)[0]
    try:
        os.nice(10)
    except (OSError, AttributeError):
        pass
    try:
        with open(path, "rb") as fh:
            mdp, target, behavior, specs = pickle.load(fh)
    finally:
        try:
            os.remove(path)
        except OSError:
            pass
    warm(mdp, target, behavior, specs)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
