r"""Horizon sweep (the flagship): every estimator against exact truth as the horizon T grows.

For a fixed MDP family and behaviour model (e.g. a per-token KL(π‖μ) = 0.01 in every
context), build the MDP and both policies at each horizon ``T = 1, 2, 4, ...`` and report,
per estimator and ``T``, the exact bias, std of the estimate at ``n``, MSE and population ESS
fraction next to the Monte Carlo bias (with its interval), std, mean Kish ESS and z-score.
The variance of sequence-level IS grows like :math:`E_\mu[W^2] = \prod_t (1+\chi^2_t)`, the
bias of token-level IS like the accumulated state mismatch; :func:`overtakes` reads off the
horizon from which one estimator's exact MSE beats another's (e.g. where ``tok`` beats
``seq``).

For snis and wpdis the "exact" columns hold delta-method approximations (``method`` is
``"asymptotic"``); where the expansion breaks down (long horizons at fixed ``n``: see
:mod:`tokis.analysis._harness`) the row is marked ``asymptotic_breakdown``, printed without
its ``exact_*`` values and left out of :func:`overtakes`.

Command line: ``tokis horizon`` or ``python -m tokis.analysis.horizon`` (see ``--help``).
"""

from __future__ import annotations

import math

import pandas as pd

from ._common import as_behavior, as_family, parse_horizons
from ._config import Behavior, Family
from ._harness import ASYMPTOTIC_COLUMNS, breakdown_mask
from ._sweep import Point, run_sweep

__all__ = ["horizon", "overtakes", "DEFAULT_ESTIMATORS", "DEFAULT_HORIZONS", "DEFAULT_BEHAVIOR", "DEFAULT_FAMILY"]

#: Estimators of the default sweep: sequence-level, per-decision, token-level, self-normalised,
#: truncated (sequence-level with Ionides' c, and the per-token clipped forms) and the
#: length-normalised ratio used in practice.
DEFAULT_ESTIMATORS = ("seq", "pdis", "tok", "snis", "trunc_seq", "clip_tok", "clip_prod", "geo")
#: MDP family of the default sweep: an order-1 n-gram over 8 tokens with a step reward (1/T per
#: token 0 emitted), so per-decision IS differs from sequence IS.
DEFAULT_FAMILY = Family(reward="frequency")
#: Horizons of the default sweep.
DEFAULT_HORIZONS = (1, 2, 4, 8, 16, 32, 64)
#: Behaviour model of the default sweep: per-context KL(π‖μ) = 0.05.
DEFAULT_BEHAVIOR = Behavior(kl=0.05)


def horizon_points(family, behavior, horizons) -> list[Point]:
    """The sweep points: MDP, target and behaviour policy at each horizon."""
    pts = []
    for T in horizons:
        mdp, target = family.build(T)
        pts.append(Point((("T", T),), mdp, target, behavior.apply(target)))
    return pts


def horizon(family=None, behavior=None, *, estimators=DEFAULT_ESTIMATORS, horizons=DEFAULT_HORIZONS, n=1024,
            replications=1000, seed=0, backend="auto", workers=1, store=None, progress=False,
            scheduler=None) -> pd.DataFrame:
    r"""Sweep the horizon and compare every estimator with its exact moments.

    Parameters
    ----------
    family : Family, str or dict, optional
        MDP family (default :data:`DEFAULT_FAMILY`: an order-1 n-gram over 8 tokens with the
        step reward ``1/T`` per token 0 emitted).
    behavior : Behavior or dict, optional
        Behaviour model (default :data:`DEFAULT_BEHAVIOR`, per-context KL = 0.05).
    estimators : list
        Estimator specifications (``"seq"``, ``"clip_tok:c=2"``, ...).
    horizons : iterable of int or str
        ``T`` values (``"1..64"`` = powers of two; see :func:`~tokis.analysis._common.parse_horizons`).
    n : int
        Sequences per replication.
    replications : int
        Monte Carlo replications ``R >= 2``.
    seed : int
        Master seed of the replications.
    backend : str
        Sampling/estimator backend.
    workers : int
        Local processes.
    store : None, bool, path or ResultStore
        Results store for finished cells (None: none; True: the default file).
    progress : bool
        Show a progress bar.
    scheduler : None, str or distributed.Client
        Compute the cells on Dask distributed: ``"local"`` (a LocalCluster on this machine) or
        ``"tcp://host:port"`` (a running ``dask scheduler``); None: local processes
        (``workers``). The table is the same either way (:func:`~tokis.analysis._sweep.run_sweep`).

    Returns
    -------
    pandas.DataFrame
        One row per (``T``, estimator): ``T``, the exact point columns (``ess_fraction``,
        ``log_second_moment``, ``seq_kl``, ...) and the harness columns (``exact_bias``,
        ``exact_std``, ``exact_mse``, ``mc_bias`` with ``mc_bias_lo``/``mc_bias_hi``,
        ``mc_std``, ``mean_ess``, ``z``, ``std_underestimated``, ...). ``attrs``: ``total``,
        ``cached`` and ``computed`` cell counts, ``family`` and ``behavior`` labels.

    Raises
    ------
    ValueError, TypeError
        Unknown family or estimator, negative divergence, ``T < 1``, ...
    """
    family = as_family(family, DEFAULT_FAMILY)
    behavior = as_behavior(behavior, DEFAULT_BEHAVIOR)
    Ts = parse_horizons(horizons)
    points = horizon_points(family, behavior, Ts)
    table = run_sweep(points, estimators, n=n, replications=replications, seed=seed, backend=backend, store=store,
                      workers=workers, progress=progress, desc="horizon", scheduler=scheduler)
    table.attrs.update(family=family.label, behavior=behavior.label)
    return table


def overtakes(table: pd.DataFrame, *, x: str = "T", metric: str = "exact_mse") -> pd.DataFrame:
    r"""Where one estimator's metric overtakes another's along the sweep: every crossing.

    For each ordered pair ``(a, b)``, every ``x`` at which ``metric(a) < metric(b)`` after
    ``metric(a) > metric(b)`` at the previous compared ``x`` ("a overtakes b at x"). The last
    crossing of a pair is the one that can hold for good: ``stays_ahead`` is true when ``a``
    stays better at every larger ``x`` compared. Values equal up to a relative ``1e-9``
    (rounding; e.g. every token-level estimator equals ``seq`` at ``T = 1``) are ties, which
    count neither way. A delta-method value that broke down
    (:func:`~tokis.analysis._harness.breakdown_mask`) is never compared: for an ``exact_*``
    metric those points count as missing.

    Parameters
    ----------
    table : pandas.DataFrame
        A sweep table (columns ``x``, ``estimator`` and ``metric``; ``method`` and
        ``asymptotic_breakdown`` where present).
    x : str
        The swept column.
    metric : str
        The compared column (lower is better).

    Returns
    -------
    pandas.DataFrame
        One row per crossing: ``estimator``, ``beats``, ``from`` (the ``x`` value),
        ``stays_ahead`` (only the last crossing of a pair can be true), ``until`` (the last
        ``x`` where both values were compared: later points are missing, e.g. where a
        delta-method value broke down), ``ratio`` (``metric(b) / metric(a)`` at ``until``)
        and ``asymptotic`` (whether a compared value of either estimator is a delta-method
        approximation, ``method = "asymptotic"``, rather than exact). Pairs that never cross
        are left out; points where either value is NaN are skipped.

    Raises
    ------
    ValueError
        When ``table`` lacks the ``x``, ``estimator`` or ``metric`` column.
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in (x, "estimator", metric) if c not in table.columns]
    if missing:
        raise ValueError(f"table lacks the column(s) {', '.join(missing)} (a sweep table from horizon() or "
                         f"divergence() has them)")
    columns = ["estimator", "beats", "from", "stays_ahead", "until", "ratio", "asymptotic"]
    table = table.copy()
    if metric in ASYMPTOTIC_COLUMNS:
        table.loc[breakdown_mask(table), metric] = math.nan
    piv = table.pivot_table(index=x, columns="estimator", values=metric, aggfunc="first", dropna=False)
    piv = piv.sort_index()
    methods = dict(zip(zip(table[x], table["estimator"]), table["method"])) if "method" in table else {}
    names = list(dict.fromkeys(table["estimator"]))
    xs = [v.item() if hasattr(v, "item") else v for v in piv.index.to_numpy()]
    rows = []
    for a in names:
        for b in names:
            if a == b or a not in piv or b not in piv:
                continue
            va, vb = piv[a].to_numpy(dtype=float), piv[b].to_numpy(dtype=float)
            ok = [i for i in range(len(xs)) if math.isfinite(va[i]) and math.isfinite(vb[i])]
            # the order at each compared point: +1 a better, -1 a worse, ties skipped
            order = [(i, 1 if va[i] < vb[i] else -1) for i in ok if not _tied(va[i], vb[i])]
            crossings = [i for (_, prev), (i, cur) in zip(order, order[1:]) if prev < 0 < cur]
            if not crossings:
                continue
            last = ok[-1]
            asym = any(methods.get((xs[j], e)) == "asymptotic" for j in ok for e in (a, b))
            for i in crossings:
                rows.append({"estimator": a, "beats": b, "from": xs[i],
                             "stays_ahead": all(o > 0 for j, o in order if j >= i),
                             "until": xs[last], "ratio": vb[last] / va[last] if va[last] > 0 else math.inf,
                             "asymptotic": asym})
    return pd.DataFrame(rows, columns=columns)


def _tied(a: float, b: float) -> bool:
    """Equal up to rounding (relative 1e-9): a tie counts as "not better"."""
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b))
