"""Dask distributed for the sweeps: the cluster, the client, and the loop that stores cells as they arrive.

``scheduler="local"`` starts a :class:`distributed.LocalCluster` on this machine (one worker
process per core, one thread each, ``NUMBA_NUM_THREADS=1`` in the workers so the processes do
not oversubscribe the cores); ``scheduler="tcp://host:port"`` attaches to a running
``dask scheduler`` with its ``dask worker`` processes. :func:`run_dask_tasks` submits one task per
sweep point and hands each result to the sweep's ``finish`` (which stores the cells) in this
process, in completion order, so the SQLite store is written by the client alone, exactly as
with local processes.

A worker lost mid-task is handled by the Dask scheduler: the task is recomputed on another
worker (a result is only stored once it has arrived whole); a task that kills
``distributed.scheduler.allowed-failures`` workers in a row (default 3) ends the sweep with a
:class:`SchedulerError`. Results do not depend on the scheduler: a task's seeds are part of its
arguments, never of the worker.

Dask is an optional dependency (``pip install -e '.[dask]'``): this module imports it only
inside the functions that need it, so the rest of tokis works without it.
"""

from __future__ import annotations

import contextlib
import os
import re

__all__ = ["SchedulerError", "INSTALL_HINT", "WAIT_FOR_WORKERS", "CONNECT_TIMEOUT", "check_scheduler",
           "local_worker_count", "run_dask_tasks"]

#: How to install the optional dependency (quoted in the errors).
INSTALL_HINT = "pip install -e '.[dask]' (or pip install 'dask[distributed]')"
#: Seconds to wait for the scheduler to answer.
CONNECT_TIMEOUT = 10
#: Seconds to wait for a first worker to join a scheduler that has none.
WAIT_FOR_WORKERS = 60

_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx", "inproc")
_ADDRESS = re.compile(r"^(?:(?P<scheme>[a-z]+)://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+)(?::(?P<port>\d+))?/?$")


class SchedulerError(ValueError):
    """The Dask scheduler cannot be used: dask is missing, the address is unreachable, workers lack tokis, ..."""


def check_scheduler(scheduler, workers: int = 1):
    """Validate the ``scheduler`` argument of a sweep (without importing dask).

    Parameters
    ----------
    scheduler : None, str or distributed.Client
        None: no Dask (local processes, ``workers``); ``"local"``: a LocalCluster on this machine
        (``workers`` processes if ``workers > 1``, else one per core); ``"tcp://host:port"``
        (or ``host:port``, or another Dask scheme: tls, ws, wss, ucx): a running scheduler; or a
        connected ``distributed.Client`` (Python only; it is used, not closed).
    workers : int
        The sweep's ``workers``; more than 1 only makes sense without a scheduler or with ``local``.

    Returns
    -------
    None, str or distributed.Client
        ``scheduler`` normalised (an address without a scheme gets ``tcp://``).

    Raises
    ------
    ValueError
        A malformed address, or ``workers > 1`` with a remote scheduler.
    TypeError
        Neither None, a string nor a Client.
    """
    if scheduler is None:
        return None
    if not isinstance(scheduler, str):
        try:
            from distributed import Client
        except ImportError:
            Client = None
        if Client is not None and isinstance(scheduler, Client):
            if workers > 1:
                raise ValueError(f"workers={workers} starts local processes; with a distributed.Client the "
                                 "cluster's workers compute, so leave workers at 1")
            return scheduler
        raise TypeError(f"scheduler must be 'local', an address tcp://host:port or a distributed.Client, "
                        f"got {type(scheduler).__name__} {scheduler!r}")
    text = scheduler.strip()
    if text == "local":
        return text
    if text.startswith("inproc://") and len(text) > len("inproc://"):  # a scheduler in this very process
        return text
    m = _ADDRESS.match(text)
    if not text or m is None or (m.group("scheme") or "tcp") not in _SCHEMES or \
            (m.group("scheme") in (None, "tcp", "tls", "ws", "wss") and m.group("port") is None):
        raise ValueError(f"--scheduler must be 'local' or the address of a Dask scheduler such as "
                         f"tcp://host:8786, got {scheduler!r}")
    if workers > 1:
        raise ValueError(f"--workers {workers} starts local processes; with --scheduler {text} the cluster's "
                         "workers compute (start more with `dask worker`), so leave --workers at 1")
    return text if m.group("scheme") else f"tcp://{text}"


def local_worker_count(workers: int = 1) -> int:
    """Worker processes of ``scheduler="local"``: ``workers`` if above 1, else the cores this process may use."""
    if workers > 1:
        return int(workers)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def _import_distributed():
    try:
        import distributed
    except ImportError as err:
        raise SchedulerError(f"--scheduler needs Dask distributed, which is not installed ({err}): "
                             f"{INSTALL_HINT}") from None
    return distributed


@contextlib.contextmanager
def _client(scheduler, workers: int):
    """A connected Client (and its LocalCluster for ``"local"``), closed on exit unless it was given."""
    distributed = _import_distributed()
    if isinstance(scheduler, distributed.Client):
        yield scheduler
        return
    if scheduler == "local":
        cluster = distributed.LocalCluster(n_workers=local_worker_count(workers), threads_per_worker=1,
                                           processes=True, dashboard_address=":0",
                                           env={"NUMBA_NUM_THREADS": "1"})
        try:
            with distributed.Client(cluster) as client:
                yield client
        finally:
            cluster.close()
        return
    try:
        client = distributed.Client(scheduler, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as err:
        raise SchedulerError(f"--scheduler {scheduler}: no Dask scheduler answers there within {CONNECT_TIMEOUT} s "
                             f"({' '.join(str(err).split())}); start one with `dask scheduler` and workers with "
                             f"`dask worker {scheduler}`") from None
    with client:
        try:
            client.wait_for_workers(1, timeout=WAIT_FOR_WORKERS)
        except TimeoutError:
            raise SchedulerError(f"--scheduler {scheduler}: no Dask worker joined within {WAIT_FOR_WORKERS} s; "
                                 f"start some with `dask worker {scheduler} --nthreads 1`") from None
        yield client


def _worker_version() -> str:
    """tokis's version where this runs (called on every worker)."""
    import tokis

    return tokis.__version__


def _check_workers(client, where: str) -> None:
    """Every worker imports the same version of tokis as this process (the version is part of every cell's key)."""
    import tokis

    answers = client.run(_worker_version, on_error="return")
    for address, answer in sorted(answers.items()):
        if isinstance(answer, BaseException):
            raise SchedulerError(f"--scheduler {where}: Dask worker {address} cannot import tokis "
                                 f"({type(answer).__name__}: {' '.join(str(answer).split())}); install it in the "
                                 f"worker's environment (the same version, {tokis.__version__})")
        if answer != tokis.__version__:
            raise SchedulerError(f"--scheduler {where}: Dask worker {address} runs tokis {answer}, this process "
                                 f"{tokis.__version__}; install the same version on every worker")


def run_dask_tasks(tasks, compute, args_of, finish, scheduler, workers: int = 1) -> None:
    """Run ``compute(*args_of(*task))`` on Dask workers; ``finish(*task, result)`` here, as results arrive.

    Parameters
    ----------
    tasks : list of tuple
        The sweep's tasks (one per point with missing cells).
    compute : callable
        A module-level function (workers import it by name: its module must be importable there,
        as must a user's estimator declaration named in the arguments).
    args_of, finish : callable
        As in :func:`tokis.analysis._sweep.run_tasks`.
    scheduler : str or distributed.Client
        As returned by :func:`check_scheduler` (not None).
    workers : int
        Worker processes of ``"local"`` (1: one per core).

    Raises
    ------
    SchedulerError
        Dask is missing, the scheduler does not answer, a worker lacks tokis, or a task killed
        too many workers. An error raised by ``compute`` itself is raised here unchanged; pending
        tasks are then cancelled (also on KeyboardInterrupt), and every result that arrived
        before is already stored.
    """
    distributed = _import_distributed()
    where = scheduler if isinstance(scheduler, str) else "(client)"
    with _client(scheduler, workers) as client:
        _check_workers(client, where)
        futures = {client.submit(compute, *args_of(*task), pure=False): task for task in tasks}
        try:
            for fut in distributed.as_completed(list(futures)):
                task, result = futures.pop(fut), fut.result()
                fut.release()  # the cluster may forget it: a worker lost later does not recompute it
                finish(*task, result)
        except distributed.KilledWorker as err:
            client.cancel(list(futures))
            raise SchedulerError(f"--scheduler {where}: {err.allowed_failures + 1} workers died while running the "
                                 "same task, so the scheduler gave up on it (see the workers' logs; finished cells "
                                 "are stored: rerun to resume)") from None
        except BaseException:
            client.cancel(list(futures))
            raise
