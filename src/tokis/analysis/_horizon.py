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
from ._config import Behavior
from ._harness import ASYMPTOTIC_COLUMNS, breakdown_mask
from ._sweep import Point, run_sweep

__all__ = ["horizon", "overtakes", "DEFAULT_ESTIMATORS", "DEFAULT_HORIZONS", "DEFAULT_BEHAVIOR"]

#: Estimators of the default sweep.
DEFAULT_ESTIMATORS = ("seq", "tok", "snis", "clip_tok", "geo", "clip_prod")
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
            replications=1000, seed=0, backend="auto", workers=1, store=None, progress=False) -> pd.DataFrame:
    r"""Sweep the horizon and compare every estimator with its exact moments.

    Parameters
    ----------
    family : Family, str or dict, optional
        MDP family (default ``Family()``: an order-1 n-gram over 8 tokens, reward 1 when the
        last token is 0).
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
    family = as_family(family)
    behavior = as_behavior(behavior, DEFAULT_BEHAVIOR)
    Ts = parse_horizons(horizons)
    points = horizon_points(family, behavior, Ts)
    table = run_sweep(points, estimators, n=n, replications=replications, seed=seed, backend=backend, store=store,
                      workers=workers, progress=progress, desc="horizon")
    table.attrs.update(family=family.label, behavior=behavior.label)
    return table


def overtakes(table: pd.DataFrame, *, x: str = "T", metric: str = "exact_mse") -> pd.DataFrame:
    r"""Where one estimator's metric overtakes another's along the sweep.

    For each ordered pair ``(a, b)``, the smallest ``x`` at which ``metric(a) < metric(b)``
    after ``metric(a) > metric(b)`` at some smaller ``x`` ("a beats b from x on"). Values equal
    up to a relative ``1e-9`` (rounding; e.g. every token-level estimator equals ``seq`` at
    ``T = 1``) are ties, which count neither way. A delta-method value that broke down
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
        Columns ``estimator``, ``beats``, ``from`` (the ``x`` value), ``stays_ahead`` (whether
        ``a`` stays better at every larger ``x`` compared), ``until`` (the last ``x`` where
        both values were compared: later points are missing, e.g. where a delta-method value
        broke down), ``ratio`` (``metric(b) / metric(a)`` at ``until``) and ``asymptotic``
        (whether a compared value of either estimator is a delta-method approximation,
        ``method = "asymptotic"``, rather than exact). Pairs without an overtake are left
        out; points where either value is NaN are skipped.
    """
    table = table.copy()
    if metric in ASYMPTOTIC_COLUMNS:
        table.loc[breakdown_mask(table), metric] = math.nan
    piv = table.pivot_table(index=x, columns="estimator", values=metric, aggfunc="first", dropna=False)
    piv = piv.sort_index()
    methods = dict(zip(zip(table[x], table["estimator"]), table["method"])) if "method" in table else {}
    names = list(dict.fromkeys(table["estimator"]))
    rows = []
    for a in names:
        for b in names:
            if a == b or a not in piv or b not in piv:
                continue
            va, vb = piv[a].to_numpy(dtype=float), piv[b].to_numpy(dtype=float)
            xs = piv.index.to_numpy()
            ok = [i for i in range(len(xs)) if math.isfinite(va[i]) and math.isfinite(vb[i])]
            seen_worse = False
            for pos, i in enumerate(ok):
                if _tied(va[i], vb[i]):
                    continue
                if va[i] > vb[i]:
                    seen_worse = True
                elif seen_worse:
                    later, last = ok[pos:], ok[-1]
                    rows.append({"estimator": a, "beats": b, "from": xs[i].item() if hasattr(xs[i], "item") else xs[i],
                                 "stays_ahead": all(va[j] < vb[j] and not _tied(va[j], vb[j]) for j in later),
                                 "until": xs[last].item() if hasattr(xs[last], "item") else xs[last],
                                 "ratio": vb[last] / va[last] if va[last] > 0 else math.inf,
                                 "asymptotic": any(methods.get((xs[j], e)) == "asymptotic" for j in ok
                                                   for e in (a, b))})
                    break
    return pd.DataFrame(rows, columns=["estimator", "beats", "from", "stays_ahead", "until", "ratio", "asymptotic"])


def _tied(a: float, b: float) -> bool:
    """Equal up to rounding (relative 1e-9): a tie counts as "not better"."""
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b))
