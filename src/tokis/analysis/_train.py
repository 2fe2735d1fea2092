r"""Which objective trains best: policy optimisation on exact token MDPs, with the true J after every step.

For every objective (``seq``, ``tok``, ``ppo_clip``, ``cispo``, ``gspo``, or any registered one with
its settings) and every sampler (:math:`\mu = \pi_{old}`, or :math:`\pi_{old}` through a
behaviour model such as bf16 rounding of the logits: engine mismatch), train ``seeds``
independent runs of :func:`~tokis.analysis._train_loop.run_seed` (sample ``n`` sequences, ``E``
epochs of ``M`` minibatch steps on the stale batch, repeat; exact J, KL to π_old, clip
fraction and cosine to ∇J after every update). Run ``j`` of every configuration uses the seed
:func:`~tokis.analysis.replication_seeds` ``(seed, seeds)[j]`` (common random numbers across
configurations; independent streams across runs).

Each (configuration, seed) run is kept in the results store (:mod:`._store`) as soon as it
finishes, keyed by the fingerprints of the MDP and of π_0, the sampler, the objective with every
setting (defaults filled in) and its declaration, ``n``, ``E``, ``M``, the iterations, the
optimizer and learning rate, the parameter shape, the run's seed and the package version: an
interrupted training resumes with the runs that finished, and a repeated one is read back.
``workers > 1`` trains runs in local processes; a run is bit-for-bit the same either way.

:func:`summarize` gives one row per configuration (final J/J*, updates and tokens to reach
90 % of J* − J(π_0), the largest drop of J between consecutive updates, mean clip fraction, KL
and cosine); :func:`learning_curves` the mean of J over seeds with a 95 % band per update.

Command line: ``tokis train`` or ``python -m tokis.analysis.train`` (see ``--help``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ._common import as_behavior, as_family
from ._config import Behavior
from ._objective_config import parse_objectives
from ._harness import replication_seeds
from ._output import BLANK
from ._sweep import run_cells
from ._train_loop import DEFAULT_FAMILY, ITERATION_FIELDS, UPDATE_FIELDS, TrainConfig, run_seed

__all__ = ["train", "configurations", "summarize", "learning_curves", "display_summary", "COLUMNS",
           "SUMMARY_COLUMNS", "DEFAULT_OBJECTIVES", "DEFAULT_SAMPLERS", "DEFAULT_FAMILY", "DEFAULT_HORIZON",
           "DEFAULT_N", "DEFAULT_EPOCHS", "DEFAULT_MINIBATCHES", "DEFAULT_ITERATIONS", "DEFAULT_OPTIMIZER",
           "DEFAULT_LR", "DEFAULT_SEEDS", "REACH"]

#: Objectives of the default run.
DEFAULT_OBJECTIVES = ("seq", "tok", "ppo_clip", "cispo", "gspo")
#: Samplers of the default run: mu = pi_old, and pi_old with its logits rounded to bf16.
DEFAULT_SAMPLERS = (Behavior(), Behavior(round="bf16"))
DEFAULT_HORIZON = 32
DEFAULT_N = 64
DEFAULT_EPOCHS = 4
DEFAULT_MINIBATCHES = 4
DEFAULT_ITERATIONS = 20
DEFAULT_OPTIMIZER = "adam"
DEFAULT_LR = 0.05
DEFAULT_SEEDS = 8
#: Fraction of the possible improvement J* - J(pi_0) that counts as "reached".
REACH = 0.9
#: Version of the stored run layout; part of every key.
STORE_SCHEMA = 1

#: Columns of the long table, one row per (objective, sampler, seed, update); update 0 is pi_0.
COLUMNS = ("objective", "name", "sampler", "seed", "update", "iteration", "epoch", "minibatch", "tokens", "J",
           "J_frac", "J_star", "J0", "kl", "clip_fraction", "cosine", "ascent", "batch_return", "sampler_kl")
#: Columns of :func:`summarize`.
SUMMARY_COLUMNS = ("objective", "sampler", "seeds", "final_J", "final_J_ci", "final_ratio", "reached",
                   "updates_to_reach", "tokens_to_reach", "max_drop", "mean_max_drop", "peak_minus_final",
                   "clip_fraction", "kl", "cosine", "sampler_kl")


def configurations(family=None, samplers=None, *, objectives=DEFAULT_OBJECTIVES, horizon=DEFAULT_HORIZON,
                   n=DEFAULT_N, epochs=DEFAULT_EPOCHS, minibatches=DEFAULT_MINIBATCHES, iterations=DEFAULT_ITERATIONS,
                   optimizer=DEFAULT_OPTIMIZER, lr=DEFAULT_LR, time_dependent=False) -> list[TrainConfig]:
    """The :class:`~tokis.analysis._train_loop.TrainConfig` of every (objective, sampler), objective-major.

    Arguments as in :func:`train`. Raises ValueError/TypeError naming a bad argument.
    """
    family = DEFAULT_FAMILY if family is None else as_family(family)
    objs = parse_objectives(objectives)
    if samplers is None:
        samplers = DEFAULT_SAMPLERS
    if isinstance(samplers, (Behavior, dict)):
        samplers = [samplers]
    behs = list(dict.fromkeys(as_behavior(s, Behavior()) for s in samplers))
    if not behs:
        raise ValueError("samplers is empty")
    return [TrainConfig(family=family, horizon=horizon, sampler=b, objective=o, n=n, epochs=epochs,
                        minibatches=minibatches, iterations=iterations, optimizer=optimizer, lr=lr,
                        time_dependent=time_dependent) for o in objs for b in behs]


def _run_config(cfg: TrainConfig, mdp, pi0, run_seed_: int) -> dict:
    import tokis

    return dict(kind="tokis.train", schema=STORE_SCHEMA, version=tokis.__version__, mdp=mdp.fingerprint(),
                initial=pi0.fingerprint(), config=cfg.as_dict(), definition=cfg.objective.fingerprint(),
                seed=int(run_seed_))


def _check_row(cfg: TrainConfig):
    U, K = cfg.updates, cfg.iterations

    def check(row):
        for f in UPDATE_FIELDS:
            if not isinstance(row.get(f), list) or len(row[f]) != U:
                raise ValueError(f"field {f!r} is not a list of {U} updates")
        for f in ITERATION_FIELDS:
            if not isinstance(row.get(f), list) or len(row[f]) != K:
                raise ValueError(f"field {f!r} is not a list of {K} iterations")
        for f in ("J_star", "J0"):
            if not isinstance(row.get(f), (int, float)):
                raise ValueError(f"field {f!r} is not a number")

    return check


def train(family=None, samplers=None, *, objectives=DEFAULT_OBJECTIVES, horizon=DEFAULT_HORIZON, n=DEFAULT_N,
          epochs=DEFAULT_EPOCHS, minibatches=DEFAULT_MINIBATCHES, iterations=DEFAULT_ITERATIONS,
          optimizer=DEFAULT_OPTIMIZER, lr=DEFAULT_LR, time_dependent=False, seeds=DEFAULT_SEEDS, seed=0, workers=1,
          scheduler=None, store=None, progress=False) -> pd.DataFrame:
    r"""Train every objective with every sampler on an exact MDP, several seeds each.

    Parameters
    ----------
    family : Family, str or dict, optional
        The MDP and the initial policy π_0 (default :data:`DEFAULT_FAMILY`: order-1 n-gram over 16
        tokens, reward 1 when token 0 was emitted at least 6 times).
    samplers : list of Behavior (or dicts), optional
        How μ is derived from π_old at every iteration; ``Behavior()`` is μ = π_old (default
        :data:`DEFAULT_SAMPLERS`: π_old and π_old with bf16 logits).
    objectives : list
        Objective specifications (``"tok"``, ``"ppo_clip:eps_high=0.28"``,
        ``"cispo:advantage=critic"``, ...; :func:`~tokis.analysis.gradient.parse_objectives`).
    horizon : int
        ``T``.
    n, epochs, minibatches, iterations : int
        Sequences per batch; ``E`` epochs of ``M`` minibatch steps per batch; batches.
    optimizer : {"adam", "sgd"}
    lr : float
    time_dependent : bool
        Train (T, S, V) logits instead of (S, V).
    seeds : int
        Runs per configuration (>= 1; >= 2 for a confidence band).
    seed : int
        Master seed of the runs.
    workers : int
        Local processes (one task per run; each process finds the objectives by name in its
        registry, so an objective registered at run time needs ``workers=1``).
    scheduler : None, str or distributed.Client
        Run the seeds on Dask distributed: ``"local"`` (a LocalCluster on this machine) or
        ``"tcp://host:port"`` (a running ``dask scheduler``); None: local processes
        (``workers``). Every run is the same either way (its seed is part of the task).
    store : None, bool, path or ResultStore
        Results store for finished runs (None: none; True: the default file).
    progress : bool
        Show a progress bar (runs).

    Returns
    -------
    pandas.DataFrame
        The long table :data:`COLUMNS`: per (objective, sampler, seed) one row for π_0
        (``update = 0``, ``tokens = 0``, NaN diagnostics) and one per update ``u = 1..U``:
        ``iteration``/``epoch``/``minibatch`` (1-based; 0 for π_0), ``tokens`` sampled so far,
        the exact ``J``, ``J_frac`` = (J − J(π_0)) / (J* − J(π_0)), ``J_star``, ``J0``, ``kl``
        (per-token KL(π_old‖π_θ) under π_old), ``clip_fraction`` (of the update's minibatch),
        ``cosine`` (step vs ∇J) and ``ascent`` ⟨∇J, step⟩, and per iteration ``batch_return``
        and ``sampler_kl`` (per-token KL(μ‖π_old) under μ). ``attrs``: ``total``, ``cached``,
        ``computed`` (runs), ``family``, ``horizon``, ``n``, ``epochs``, ``minibatches``,
        ``iterations``, ``optimizer``, ``lr``, ``seeds``, ``seed``, ``time_dependent``.

    Raises
    ------
    ValueError, TypeError
        A bad argument, naming it.
    """
    from .._core._rng import check_seed
    from .._core._validate import check_positive_int

    configs = configurations(family, samplers, objectives=objectives, horizon=horizon, n=n, epochs=epochs,
                             minibatches=minibatches, iterations=iterations, optimizer=optimizer, lr=lr,
                             time_dependent=time_dependent)
    S = check_positive_int(seeds, "seeds")
    seed = check_seed(seed)
    workers = check_positive_int(workers, "workers")
    run_seeds = replication_seeds(seed, S)
    built = {}
    cells = []
    for c in configs:
        if (c.family, c.horizon, c.time_dependent) not in built:
            built[c.family, c.horizon, c.time_dependent] = c.build()
        mdp, pi0 = built[c.family, c.horizon, c.time_dependent]
        cells.append([_run_config(c, mdp, pi0, s) for s in run_seeds])
    rows, cached, computed = run_cells(cells, _run_cell, lambda i, todo: (configs[i], run_seeds[todo[0]]), store=store,
                                       workers=workers, scheduler=scheduler, progress=progress, desc="train",
                                       unit="run", check=lambda i: _check_row(configs[i]), per_cell=True)
    parts = [_long_rows(c, j, rows[i][j]) for i, c in enumerate(configs) for j in range(S)]
    table = pd.concat(parts, ignore_index=True)
    c0 = configs[0]
    table.attrs.update(total=len(configs) * S, cached=cached, computed=computed, family=c0.family.label, horizon=c0.horizon,
                       n=c0.n, epochs=c0.epochs, minibatches=c0.minibatches, iterations=c0.iterations,
                       optimizer=c0.optimizer, lr=c0.lr, seeds=S, seed=seed, time_dependent=c0.time_dependent)
    return table


def _run_cell(config: TrainConfig, seed: int) -> list[dict]:
    """:func:`run_seed` as a one-cell task of :func:`~tokis.analysis._sweep.run_cells`."""
    return [run_seed(config, seed)]


def _long_rows(c: TrainConfig, j: int, rec: dict) -> pd.DataFrame:
    """One run's rows of the long table (update 0 = pi_0, then every update)."""
    E, M, K = c.epochs, c.minibatches, c.iterations
    U = c.updates
    u = np.arange(U + 1)
    it = np.concatenate([[0], np.repeat(np.arange(1, K + 1), E * M)])
    ep = np.concatenate([[0], np.tile(np.repeat(np.arange(1, E + 1), M), K)])
    mb = np.concatenate([[0], np.tile(np.arange(1, M + 1), K * E)])
    per_it = {f: np.asarray(rec[f], dtype=float) for f in ITERATION_FIELDS}
    nan = np.array([math.nan])

    def by_update(f):
        return np.concatenate([[0.0] if f == "tokens" else nan, per_it[f][it[1:] - 1]])

    J = np.concatenate([[rec["J0"]], np.asarray(rec["J"], dtype=float)])
    gap = rec["J_star"] - rec["J0"]
    frac = (J - rec["J0"]) / gap if gap > 0 else np.full_like(J, math.nan)
    cols = dict(objective=c.objective.label, name=c.objective.name, sampler=c.sampler_label, seed=j, update=u,
                iteration=it, epoch=ep, minibatch=mb, tokens=by_update("tokens").astype(np.int64), J=J, J_frac=frac,
                J_star=rec["J_star"], J0=rec["J0"])
    for f, col in (("kl", "kl"), ("clip", "clip_fraction"), ("cosine", "cosine"), ("ascent", "ascent")):
        cols[col] = np.concatenate([nan, np.asarray(rec[f], dtype=float)])
    cols["batch_return"] = by_update("batch_return")
    cols["sampler_kl"] = by_update("sampler_kl")
    return pd.DataFrame(cols, columns=list(COLUMNS))


# ---------------------------------------------------------------------------------------------
# reading the table
# ---------------------------------------------------------------------------------------------


def _t975(df: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.975, df)) if df >= 1 else math.nan


def learning_curves(table: pd.DataFrame, *, value: str = "J") -> pd.DataFrame:
    r"""Mean over seeds of ``value`` per (objective, sampler, update), with a 95 % band.

    The band is the Student-t interval of the mean over the ``s`` seeds,
    :math:`\bar x \pm t_{0.975,\,s-1}\, \mathrm{sd}/\sqrt{s}` (NaN with one seed). ``tokens``
    is the mean over seeds of the tokens sampled so far (the same for every seed without eos).

    Returns
    -------
    pandas.DataFrame
        ``objective``, ``sampler``, ``update``, ``tokens``, ``mean``, ``lo``, ``hi``, ``seeds``.
    """
    if value not in table.columns:
        raise ValueError(f"value must be a column of the table, got {value!r}")
    g = table.groupby(["objective", "sampler", "update"], sort=False)
    out = g.agg(tokens=("tokens", "mean"), mean=(value, "mean"), sd=(value, "std"), seeds=(value, "count"))
    out = out.reset_index()
    half = np.array([_t975(s - 1) for s in out["seeds"]]) * out["sd"].to_numpy() / np.sqrt(out["seeds"].to_numpy())
    out["lo"], out["hi"] = out["mean"] - half, out["mean"] + half
    return out[["objective", "sampler", "update", "tokens", "mean", "lo", "hi", "seeds"]]


def _first_reach(frac: np.ndarray) -> int | None:
    hit = np.flatnonzero(frac >= REACH)
    return int(hit[0]) if hit.size else None


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    r"""One row per (objective, sampler): how far, how fast and how stably it trained.

    Columns (:data:`SUMMARY_COLUMNS`): ``seeds``; ``final_J`` (mean over seeds of J after the
    last update) with ``final_J_ci`` (half-width of its 95 % t interval) and ``final_ratio`` =
    mean J_final / J*; ``reached`` (fraction of seeds whose J reached J(π_0) + 0.9 (J* − J(π_0))
    at some update), ``updates_to_reach`` and ``tokens_to_reach`` (the first such update and the
    tokens sampled by then, mean over the seeds that reached; NaN if none did); ``max_drop``
    (the largest fall of J between consecutive updates, over every seed: a collapse) and
    ``mean_max_drop`` (its mean over seeds); ``peak_minus_final`` (mean over seeds of the best J
    minus the final J: ground lost and not regained); ``clip_fraction``, ``kl`` (per-token
    KL(π_old‖π_θ) after each update), ``cosine`` (of each step to ∇J) and ``sampler_kl``
    (per-token KL(μ‖π_old)), each the mean over updates and seeds.
    """
    rows = []
    for (obj, smp), sub in table.groupby(["objective", "sampler"], sort=False):
        finals, ratios, reach_u, reach_tok, drops, lost = [], [], [], [], [], []
        for _, run in sub.groupby("seed", sort=True):
            run = run.sort_values("update")
            J = run["J"].to_numpy(dtype=float)
            finals.append(J[-1])
            ratios.append(J[-1] / run["J_star"].iloc[0])
            u = _first_reach(run["J_frac"].to_numpy(dtype=float))
            if u is not None:
                reach_u.append(int(run["update"].iloc[u]))
                reach_tok.append(float(run["tokens"].iloc[u]))
            drops.append(float(np.max(np.maximum(-np.diff(J), 0.0))) if J.size > 1 else 0.0)
            lost.append(float(J.max() - J[-1]))
        s = len(finals)
        sd = float(np.std(finals, ddof=1)) if s > 1 else math.nan
        upd = sub[sub["update"] > 0]
        rows.append(dict(objective=obj, sampler=smp, seeds=s, final_J=float(np.mean(finals)),
                         final_J_ci=_t975(s - 1) * sd / math.sqrt(s), final_ratio=float(np.mean(ratios)),
                         reached=len(reach_u) / s,
                         updates_to_reach=float(np.mean(reach_u)) if reach_u else math.nan,
                         tokens_to_reach=float(np.mean(reach_tok)) if reach_tok else math.nan,
                         max_drop=float(np.max(drops)), mean_max_drop=float(np.mean(drops)),
                         peak_minus_final=float(np.mean(lost)), clip_fraction=float(upd["clip_fraction"].mean()),
                         kl=float(upd["kl"].mean()), cosine=float(upd["cosine"].mean()),
                         sampler_kl=float(upd["sampler_kl"].mean())))
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def display_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """The printed form of :func:`summarize`: final J ± CI as text, a never-reached target as BLANK."""
    recs = []
    for _, r in summary.iterrows():
        ci = r["final_J_ci"]
        final = f"{r['final_J']:.3f} ± {ci:.3f}" if math.isfinite(ci) else f"{r['final_J']:.3f}"
        reached = f"{round(r['reached'] * r['seeds'])}/{r['seeds']}"
        recs.append({"objective": r["objective"], "sampler": r["sampler"], "final J ± 95%": final,
                     "J/J*": r["final_ratio"], f"reached {REACH:.0%}": reached,
                     "updates to reach": r["updates_to_reach"] if r["reached"] > 0 else BLANK,
                     "max drop": r["max_drop"], "peak - final": r["peak_minus_final"],
                     "clip fraction": r["clip_fraction"], "KL to pi_old": r["kl"], "cos(step, grad J)": r["cosine"],
                     "sampler KL": r["sampler_kl"]})
    out = pd.DataFrame(recs)
    out.attrs["notes"] = [
        f"Note: reached {REACH:.0%}: seeds whose exact J reached J(pi_0) + {REACH:g} (J* - J(pi_0)) at some update; "
        f"updates to reach: the mean over those seeds ({BLANK}: none did; tokens to reach in the CSV). "
        "max drop: the largest fall of J between consecutive updates over every seed (a collapse); peak - final: "
        "the best J minus the final J, mean over seeds. clip fraction, KL to pi_old (per token, under pi_old's "
        "occupancy, after each update) and cos(step, grad J) (each step, row means removed, against the exact "
        "gradient where it started): means over updates and seeds. sampler KL: per-token KL(mu || pi_old) under mu "
        "(0 when mu = pi_old)."]
    return out
