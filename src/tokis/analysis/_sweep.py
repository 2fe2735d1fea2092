"""Sweeps: many harness cells, cached in the results store, run in local processes or on Dask, with progress.

A sweep is a list of :class:`Point` (an MDP, a target and a behaviour policy, plus the
coordinates that locate the point in the sweep, such as ``T = 8``) crossed with a list of
estimators. Each (point, estimator) pair is a *cell*, keyed by the SHA-256 of its full
configuration: the fingerprints of the MDP and both policies, the estimator name and
parameters, ``n``, ``R``, the seed and the package version (:func:`cell_config`).

:func:`run_sweep` reads every stored cell back, computes the missing ones point by point (all
missing estimators of a point share the same samples, exactly as in one harness call), and
commits each finished cell in its own transaction as soon as its point finishes, so an
interrupted sweep resumes without recomputing finished cells, and a repeated sweep computes
nothing. With ``workers > 1`` points run in a pool of local processes, with ``scheduler`` on Dask
distributed (:mod:`tokis.analysis._dask`); either way the parent process alone writes to the store.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
import multiprocessing

import pandas as pd

from ._progress import progress as progress_counter
from . import _harness, _warmup
from ._config import canonical_json, config_key, parse_estimators, to_jsonable
from ._memory import check_batch_memory
from ._store import open_store

__all__ = ["run_cells", "Point", "POINT_COLUMNS", "STORE_SCHEMA", "cell_config", "point_columns", "run_sweep", "compute_point"]

#: Version of the cell layout; part of every key, bumped when the row format changes.
STORE_SCHEMA = 3


@dataclass(frozen=True, eq=False)
class Point:
    """One point of a sweep.

    Attributes
    ----------
    coords : tuple of (str, value)
        Leading columns of the point's rows in the table (e.g. ``(("T", 8),)``).
    mdp : TokenMDP
    target, behavior : Policy
    seed : int, optional
        Master seed of this point's replications, instead of the sweep's seed (e.g. independent
        streams per horizon for a regression across horizons; by default every point uses the
        sweep's seed, i.e. common random numbers).
    n, replications : int, optional
        This point's sequences per replication and replications, instead of the sweep's (a grid
        of configurations, :mod:`tokis.analysis._grid`).
    """

    coords: tuple
    mdp: object
    target: object
    behavior: object
    seed: int | None = None
    n: int | None = None
    replications: int | None = None


def cell_config(point: Point, spec, *, n: int, replications: int, seed: int) -> dict:
    """The full configuration of one cell (what its store key hashes)."""
    import tokis

    config = dict(
        kind="tokis.cell",
        schema=STORE_SCHEMA,
        version=tokis.__version__,
        mdp=point.mdp.fingerprint(),
        target=point.target.fingerprint(),
        behavior=point.behavior.fingerprint(),
        estimator=spec.name,
        params=spec.kwargs,
        n=int(n if point.n is None else point.n),
        replications=int(replications if point.replications is None else point.replications),
        seed=int(seed if point.seed is None else point.seed),
    )
    if spec.origin:  # a user's declaration: its definition is part of the key (edit it, recompute)
        config["definition"] = spec.fingerprint()
    return config


#: Columns of :func:`point_columns`, in table order.
POINT_COLUMNS = ("horizon", "ess_fraction", "log_second_moment", "seq_kl", "token_kl", "token_kl_mu", "missing_mass")


def point_columns(mdp, target, behavior) -> dict:
    r"""Exact per-point columns shared by every estimator of the point.

    Returns
    -------
    dict
        ``horizon``; ``ess_fraction`` (population ESS fraction of the sequence weights,
        :math:`E_\mu[W]^2 / E_\mu[W^2]`, the large-n limit of Kish's ESS divided by n; it is
        :math:`1/E_\mu[W^2]` unless μ misses some of π's support, where
        :math:`E_\mu[W] = 1 - \text{missing\_mass}`); ``log_second_moment`` :math:`\log E_\mu[W^2]`; ``seq_kl``
        (sequence KL(π‖μ)); ``token_kl`` (per-token KL(π‖μ) under :math:`d^\pi`);
        ``token_kl_mu`` (per-token KL(μ‖π) under :math:`d^\mu`, finite under truncation);
        ``missing_mass`` (π-probability of sequences μ cannot produce).
    """
    from .. import exact

    d = exact.divergences(mdp, target, behavior)
    rev = exact.token_divergence(mdp, behavior, target, kind="kl", under="target")
    return dict(
        horizon=int(mdp.horizon),
        ess_fraction=float(d.population_ess_fraction),
        log_second_moment=float(d.log_second_moment),
        seq_kl=float(d.sequence_kl),
        token_kl=float(d.token_kl_target),
        token_kl_mu=float(rev),
        missing_mass=float(d.missing_mass),
    )


def compute_point(mdp, target, behavior, specs, n, replications, seed, backend) -> list[dict]:
    """Compute the cells of one point: the harness rows plus :func:`point_columns` (JSON-able dicts)."""
    table = _harness.monte_carlo(mdp, target, behavior, specs, n=n, replications=replications, seed=seed,
                                 backend=backend)
    extra = point_columns(mdp, target, behavior)
    return [to_jsonable({**extra, **row}) for row in table.to_dict("records")]


def _seed(point: Point, seed: int) -> int:
    return seed if point.seed is None else int(point.seed)


def run_tasks(tasks, compute, args_of, finish, workers: int, scheduler=None) -> None:
    """Run ``compute(*args_of(*task))`` for every task and call ``finish(*task, result)`` as results arrive.

    With ``scheduler`` (``"local"``, ``"tcp://host:port"`` or a ``distributed.Client``) on Dask
    workers (:func:`tokis.analysis._dask.run_dask_tasks`; ``workers`` sizes a local cluster);
    otherwise in this process when ``workers == 1`` (or one task), else on ``workers`` spawned
    processes. ``finish`` always runs in this process, in completion order; pending tasks are
    cancelled if one fails or on KeyboardInterrupt. The one executor of every sweep command;
    each command stores a cell in ``finish``, so an interrupted sweep keeps what finished.
    ``compute`` and what ``args_of`` returns cross to other processes: a module-level function
    and picklable values (configuration dataclasses, names and parameter dicts, MDPs, policies).

    Raises
    ------
    ValueError, TypeError
        A malformed ``scheduler`` (checked even when every cell is stored already).
    tokis.analysis._dask.SchedulerError
        Dask is missing or the scheduler cannot be used (a ``ValueError``).
    """
    if scheduler is not None:
        from ._dask import check_scheduler, run_dask_tasks

        scheduler = check_scheduler(scheduler, workers)
        if tasks:
            run_dask_tasks(tasks, compute, args_of, finish, scheduler, workers)
        return
    if workers == 1 or len(tasks) <= 1:
        for task in tasks:
            finish(*task, compute(*args_of(*task)))
        return
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx) as pool:
        futures = {pool.submit(compute, *args_of(*task)): task for task in tasks}
        try:
            for f in as_completed(futures):
                finish(*futures[f], f.result())
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def run_cells(cells, compute, args_of, *, store=None, workers=1, scheduler=None, progress=False, desc="sweep",
              unit="cell", check=None, per_cell=False, before=None):
    """Compute the cells missing from the store, one task per point, storing each as it arrives.

    The one cell loop of every stored command (sweeps, gradient, coverage, train): each cell is
    keyed by :func:`~tokis.analysis._config.config_key` of its configuration; stored cells are
    read back (rows failing ``check`` are recomputed, see
    :meth:`~tokis.analysis._store.ResultStore.get_many`), cells with the same key are computed
    once, and every finished task's cells are committed as soon as it returns (:func:`run_tasks`).

    Parameters
    ----------
    cells : list of list of dict
        Per point, the configurations of its cells.
    compute, args_of : callable
        ``compute(*args_of(i, todo))`` returns the rows (JSON-able dicts) of the cells ``todo``
        (indices into ``cells[i]``) of point ``i``, in that order.
    store, workers, scheduler, progress, desc
        As in :func:`run_sweep`; ``unit`` names a cell in the progress output.
    check : callable, optional
        ``check(i)`` is the row check of point ``i``'s stored cells (or None).
    per_cell : bool
        One task per cell instead of one per point (each cell stored the moment it finishes).
    before : callable, optional
        ``before(i)`` is called once, with the point of the first task, before cells are
        computed in this process (not when every cell is stored, nor with ``workers > 1`` or a
        ``scheduler``).

    Returns
    -------
    rows : list of list of dict
        ``rows[i][j]``: the row of cell ``j`` of point ``i``.
    cached, computed : int
        Cells read from the store and computed by this call.
    """
    keys = [[config_key(c) for c in cs] for cs in cells]
    configs = {k: c for ks, cs in zip(keys, cells) for k, c in zip(ks, cs)}
    db, owned = open_store(store)
    try:
        stored = {}
        if db is not None:
            for i, ks in enumerate(keys):
                stored.update(db.get_many(ks, check=None if check is None else check(i)))
        cached = sum(k in stored for ks in keys for k in ks)
        tasks, claimed = [], set()
        for i, ks in enumerate(keys):
            todo = [j for j, k in enumerate(ks) if k not in stored and k not in claimed]
            claimed.update(ks[j] for j in todo)
            tasks += [(i, [j]) for j in todo] if per_cell else [(i, todo)] if todo else []
        total = sum(map(len, keys))
        computed = 0
        bar = progress_counter(total, total - sum(len(t) for _, t in tasks), desc, progress, unit)

        def finish(i, todo, result):
            nonlocal computed
            for j, row in zip(todo, result):
                key = keys[i][j]
                stored[key] = row
                if db is not None:
                    db.put(key, canonical_json(configs[key]), row)
            computed += len(todo)
            bar.update(len(todo))

        if before is not None and tasks and workers == 1 and scheduler is None:
            before(tasks[0][0])
        try:
            run_tasks(tasks, compute, args_of, finish, workers, scheduler=scheduler)
        finally:
            bar.close()
    finally:
        if owned:
            db.close()
    return [[stored[k] for k in ks] for ks in keys], cached, computed


def run_sweep(points, estimators, *, n, replications, seed=0, backend="auto", store=None, workers=1,
              progress=False, desc="sweep", scheduler=None) -> pd.DataFrame:
    """Evaluate every (point, estimator) cell, reading finished cells from the store.

    Parameters
    ----------
    points : list of Point
    estimators : list
        Estimator specifications (:func:`~tokis.analysis.parse_estimators`).
    n, replications, seed, backend
        As in :func:`~tokis.analysis.monte_carlo`.
    store : None, bool, path or ResultStore
        Where finished cells are kept (:func:`~tokis.analysis._store.open_store`); None: nowhere.
    workers : int
        Local processes computing points (1: in this process); with ``scheduler="local"``, the
        worker processes of the local Dask cluster (1: one per core).
    progress : bool
        Show a progress bar (tqdm, on stderr) counting cells.
    desc : str
        Label of the progress bar.
    scheduler : None, str or distributed.Client
        Compute on Dask distributed instead of local processes: ``"local"`` (a LocalCluster on
        this machine), ``"tcp://host:port"`` (a running ``dask scheduler`` with ``dask worker``
        processes, which must import tokis and any user estimator module) or a Client. Results
        are identical whatever the scheduler (:func:`run_tasks`). As with ``workers > 1``, a
        script that starts local processes (``"local"``) must call this under
        ``if __name__ == "__main__":``.

    Returns
    -------
    pandas.DataFrame
        The point coordinates followed by :func:`point_columns` and the harness columns, one
        row per cell in point-major order. ``attrs`` holds ``total`` (cells), ``cached`` (read
        from the store) and ``computed`` (computed by this call; ``total - cached``).
    """
    from .._core._validate import check_positive_int
    from .._core._rng import check_seed

    specs = parse_estimators(estimators)
    n = check_positive_int(n, "n")
    R = check_positive_int(replications, "replications", 2)
    seed = check_seed(seed)
    workers = check_positive_int(workers, "workers")
    points = list(points)
    if not points:
        raise ValueError("the sweep has no points")
    for p in points:
        if p.n is not None:
            check_positive_int(p.n, "n")
        if p.replications is not None:
            check_positive_int(p.replications, "replications", 2)
    for p in points:  # before any computation: a batch that cannot fit in memory fails now
        check_batch_memory(n if p.n is None else p.n, p.mdp.horizon)
    def args(i, todo):
        p = points[i]
        return (p.mdp, p.target, p.behavior, [specs[k] for k in todo], n if p.n is None else p.n,
                R if p.replications is None else p.replications, _seed(p, seed), backend)

    cells = [[cell_config(p, s, n=n, replications=R, seed=seed) for s in specs] for p in points]
    rows, cached, computed = run_cells(cells, compute_point, args, store=store, workers=workers,
                                       scheduler=scheduler, progress=progress, desc=desc,
                                       check=lambda i: _harness.check_row,
                                       before=lambda i: _warmup.start(points[i], specs, backend))
    out = [{**dict(p.coords), **row} for p, point_rows in zip(points, rows) for row in point_rows]
    table = pd.DataFrame(out)
    lead = [c for c, _ in points[0].coords] + list(POINT_COLUMNS) + list(_harness.COLUMNS)
    order = [c for c in lead if c in table.columns]
    table = table[order + [c for c in table.columns if c not in order]]
    table.attrs.update(total=len(points) * len(specs), cached=cached, computed=computed)
    return table
