r"""Real coverage of confidence intervals, measured against exact truth.

At each horizon ``T`` build the MDP, the target :math:`\pi` and the behaviour :math:`\mu`
(:class:`~tokis.analysis.Family`, :class:`~tokis.analysis.Behavior`), draw ``R`` independent
batches of ``n`` sequences from :math:`\mu` (replication ``j`` uses
:func:`~tokis.analysis.replication_seeds` ``(seed, R)[j]``, the same batches for every
estimator and method), run every estimator on each batch and compute
:meth:`tokis.estimators.Estimate.ci` with every interval method. Each row reports, for one
(``T``, estimator, method),

- ``target`` / ``target_value``: what the interval is checked against. Unbiased estimators
  (``seq``, ``pdis``): :math:`J(\pi)`. Biased estimators with exact moments: their own exact mean
  :math:`E_\mu[f]` (``"E_mu[f] (exact)"``; an interval can only cover what its estimator
  estimates: the bias is a separate question, see ``tokis horizon``). Ratio estimators
  (``snis``, ``wpdis``): the delta-method mean :math:`J + b_\infty + c/n`
  (``"asymptotic mean (delta method)"``); where the delta method broke down
  (:func:`~tokis.analysis._harness.delta_method_checks`) there is no trustworthy target and
  the coverage is left NaN (``note`` says so).
- ``coverage``: the fraction of the ``R`` intervals that contain the target, with the Wilson
  95 % binomial interval ``coverage_lo``/``coverage_hi``. An interval that is not finite
  (e.g. a ratio estimate with every weight zero) counts as a miss and is counted in
  ``nonfinite``.
- ``miss_low``: the fraction of intervals entirely below the target (``hi < target``: the
  interval under-estimates); ``miss_high``: entirely above (``lo > target``). For the lower
  bounds (``hi = inf``) ``miss_low`` is always 0 and ``miss_high`` is the failure rate.
- ``mean_width`` (two-sided methods): the mean of ``hi - lo``; ``mean_shortfall`` (lower
  bounds): the mean of ``target - lo``, how far below the target the bound sits (the price
  of the guarantee).
- ``side``: ``"two-sided"`` or ``"lower"`` (a one-sided bound at the same ``level``).

A method that does not apply to an estimator (:meth:`Estimate.ci` raises
:class:`~tokis.estimators._intervals.NotApplicableError`, a ``ValueError``: the
lower bounds on statistics that can be negative or on ratio estimators, Hoeffding without a bound
on the statistic, any method but normal and t on batch transforms) gives a row with
``applicable = False``, NaN values and the reason in ``note``. Hoeffding's bound ``upper`` is
:meth:`tokis.estimators.EstimatorSpec.statistic_bound` at ``T`` with the largest return of
the MDP (:func:`~tokis.analysis._harness.estimate_bounds`); it applies only where returns are
non-negative.

The bootstrap (``bca``) uses ``n_resamples`` resamples (default 999, instead of
:meth:`Estimate.ci`'s 9999, so the default sweep finishes in minutes: the Monte Carlo error of
the BCa end points at 999 resamples is small next to the binomial error of the coverage at
``R = 1000``), seeded per replication from ``(seed, j)``.

Cells (point, estimator, method) are kept in the results store (:mod:`._store`), keyed by the
fingerprints of the MDP and both policies, the estimator and its parameters, the method,
``level``, ``n``, ``R``, the seed, ``n_resamples`` (bca) and the package version.

Command line: ``tokis coverage`` or ``python -m tokis.analysis.coverage`` (see ``--help``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import exact
from ..estimators._forms import TokenSum
from ..estimators._intervals import LOWER_BOUNDS, METHODS, NotApplicableError
from ._common import as_behavior, as_family, parse_horizons
from ._config import Behavior, parse_estimators, to_jsonable
from ._harness import estimate_bounds, exact_columns, replication_seeds
from ._replicate import replication_map
from ._horizon import horizon_points
from ._output import BLANK
from ._store import row_check
from ._sweep import run_cells

__all__ = ["coverage", "display_coverage_table", "wilson_interval", "parse_methods", "COLUMNS", "DISPLAY_COLUMNS",
           "DEFAULT_ESTIMATORS", "DEFAULT_METHODS", "DEFAULT_HORIZONS", "DEFAULT_BEHAVIOR", "DEFAULT_N",
           "DEFAULT_REPLICATIONS", "DEFAULT_LEVEL", "DEFAULT_RESAMPLES"]

#: Estimators of the default sweep (clip_prod: the bounded statistic Hoeffding applies to).
DEFAULT_ESTIMATORS = ("seq", "pdis", "tok", "snis", "clip_tok", "clip_prod")
#: Interval methods of the default sweep.
DEFAULT_METHODS = METHODS
#: Horizons of the default sweep.
DEFAULT_HORIZONS = (2, 4, 8, 16)
#: Behaviour model of the default sweep: per-context KL(pi||mu) = 0.1.
DEFAULT_BEHAVIOR = Behavior(kl=0.1)
#: Sequences per batch.
DEFAULT_N = 64
#: Replications (intervals per cell).
DEFAULT_REPLICATIONS = 1000
#: Nominal level of every interval.
DEFAULT_LEVEL = 0.95
#: Bootstrap resamples of the bca intervals.
DEFAULT_RESAMPLES = 999
#: Version of the coverage cell layout; part of every key.
STORE_SCHEMA = 1

#: Columns of a cell, after ``T``, ``estimator``, ``name`` and ``method``.
COLUMNS = ("side", "applicable", "target", "target_value", "exact_method", "coverage", "coverage_lo", "coverage_hi",
           "covered", "miss_low", "miss_high", "mean_width", "mean_shortfall", "nonfinite", "level", "n",
           "replications", "note")
#: Columns of the printed table.
DISPLAY_COLUMNS = ("T", "estimator", "method", "side", "target", "coverage [95% Wilson]", "miss_low", "miss_high",
                   "mean_width", "mean_shortfall", "flag")

#: Check of a stored coverage row against :data:`COLUMNS` (the results store's ``check``).
check_row = row_check(COLUMNS, text=("side", "target", "exact_method", "note"), flags=("applicable",))

_Z975 = 1.959963984540054


def wilson_interval(k: int, R: int, z: float = _Z975) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``k / R`` (95 % by default)."""
    if R <= 0:
        return (math.nan, math.nan)
    p = k / R
    den = 1.0 + z * z / R
    centre = (p + z * z / (2 * R)) / den
    half = z * math.sqrt(p * (1 - p) / R + z * z / (4 * R * R)) / den
    return (0.0 if k == 0 else max(0.0, centre - half), 1.0 if k == R else min(1.0, centre + half))


def parse_methods(methods) -> list[str]:
    """Interval methods from a list or comma-separated text (order kept, duplicates dropped)."""
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    out = []
    for m in methods:
        if not isinstance(m, str) or m not in METHODS:
            raise ValueError(f"unknown interval method {m!r}; choose from {', '.join(METHODS)}")
        if m not in out:
            out.append(m)
    if not out:
        raise ValueError("methods is empty")
    return out


def _target(spec, ex: dict, J: float) -> tuple[str, float, str]:
    """(label, value, note) of the quantity a cell's intervals are checked against."""
    method = ex["method"]
    unbiased = bool(getattr(spec.resolve(), "unbiased", False))
    if method == "none":
        return "none", math.nan, f"no exact mean: {ex.get('exact_note', '')}"
    if method == "asymptotic":
        if ex.get("asymptotic_breakdown", False):
            return ("asymptotic mean (delta method)", math.nan,
                    f"delta method broke down ({ex.get('breakdown_reason', '')}): no trustworthy target")
        return "asymptotic mean (delta method)", float(ex["exact_mean"]), ""
    if unbiased:
        return "J(pi)", J, ""
    return f"E_mu[f] ({method})", float(ex["exact_mean"]), ""


def _lower_bound_reason(spec, ret_lo: float) -> str:
    """Why the lower bounds cannot apply to an estimator at all ("" when they may): decided from its form.

    The bounds need a statistic that is non-negative for every possible batch; deciding it from
    the batches drawn would make a cell applicable by luck. Negative returns, and the additive
    token forms with offset 1 (tok, clip_tok, mask_tok: ``1 + sum_t x_t`` with ``x_t >= -1``,
    negative once two tokens have small ratios), can give negative statistics.
    """
    if ret_lo < 0:
        return "the MDP has negative returns, so the per-sample statistics can be negative"
    form = spec.resolve().form
    if isinstance(form, TokenSum) and float(getattr(form, "offset", 0.0)) != 0.0:
        return (f"{spec.name}'s statistic 1 + sum_t x_t G (x_t >= -1) can be negative, and these are lower bounds "
                "for non-negative statistics")
    return ""


def _compute_cells(*args) -> list[dict]:
    """:func:`_compute_point`'s rows flattened in the order of the cells asked for (estimator-major)."""
    return [row for rows in _compute_point(*args) for row in rows]


def _compute_point(mdp, target, behavior, specs, todo, n, R, seed, level, n_resamples, backend) -> list[list[dict]]:
    """Rows of one point: for each spec, one row per method in ``todo[k]``."""
    seeds = replication_seeds(seed, R)
    J = float(exact.value(mdp, target))
    ret_lo, ret_hi = estimate_bounds(mdp)
    funcs = [s.resolve() for s in specs]
    K = len(specs)
    lo = [{m: np.full(R, np.nan) for m in todo[k]} for k in range(K)]
    hi = [{m: np.full(R, np.nan) for m in todo[k]} for k in range(K)]
    failed = [{} for _ in range(K)]
    uppers = []
    for s in specs:
        up = s.resolve().statistic_bound(mdp.horizon, ret_hi, s.kwargs) if ret_lo >= 0 else None
        uppers.append(up)
    for k, s in enumerate(specs):
        reason = _lower_bound_reason(s, ret_lo)
        if reason:
            for m in todo[k]:
                if m in LOWER_BOUNDS:
                    failed[k][m] = f"ci method {m!r} does not apply: {reason}"
    def work(j0, batch):  # in the thread that drew the chunk; writes its own rows of lo, hi
        count, fails = batch.shape[0], []
        rows = slice(j0, j0 + count)
        for k in range(K):
            est = funcs[k](batch, **specs[k].kwargs)
            for m in todo[k]:
                if m in failed[k]:  # read only here: set before the chunks are drawn
                    continue
                try:
                    if m == "bca":  # each replication resamples with its own generator
                        for i in range(count):
                            rng = np.random.default_rng([int(seed) % 2**63, j0 + i, 1])
                            lo[k][m][j0 + i], hi[k][m][j0 + i] = est[i].ci(level, method=m, rng=rng,
                                                                           n_resamples=n_resamples)
                    else:
                        kw = dict(upper=uppers[k]) if m == "hoeffding" else {}
                        lo[k][m][rows], hi[k][m][rows] = est.ci(level, method=m, **kw)
                except NotApplicableError as err:
                    fails.append((k, m, " ".join(str(err).split())))
        return fails

    chunk_fails = [f for _, _, f in replication_map(mdp, target, behavior, n, seeds, backend, work)]
    for fails in chunk_fails:  # in chunk order: the first chunk's reason, as on one thread
        for k, m, reason in fails:
            failed[k].setdefault(m, reason)
    out = []
    for k, spec in enumerate(specs):
        ex = exact_columns(mdp, target, behavior, spec, n)
        label, tv, tnote = _target(spec, ex, J)
        rows = []
        for m in todo[k]:
            row = dict(side="lower" if m in LOWER_BOUNDS else "two-sided", target=label, target_value=tv,
                       exact_method=ex["method"], level=level, n=n, replications=R)
            nan = math.nan
            if m in failed[k]:
                row.update(applicable=False, coverage=nan, coverage_lo=nan, coverage_hi=nan, covered=0, miss_low=nan,
                           miss_high=nan, mean_width=nan, mean_shortfall=nan, nonfinite=0, note=failed[k][m])
                rows.append(row)
                continue
            a, b = lo[k][m], hi[k][m]
            finite = np.isfinite(a) & (np.isfinite(b) | (row["side"] == "lower") & (b == np.inf))
            nonfinite = int((~finite).sum())
            if not math.isfinite(tv):
                row.update(applicable=True, coverage=nan, coverage_lo=nan, coverage_hi=nan, covered=0, miss_low=nan,
                           miss_high=nan, mean_width=nan, mean_shortfall=nan, nonfinite=nonfinite, note=tnote)
                rows.append(row)
                continue
            cov = finite & (a <= tv) & (tv <= b)
            k_cov = int(cov.sum())
            clo, chi = wilson_interval(k_cov, R)
            width = float(np.mean((b - a)[finite])) if row["side"] == "two-sided" and finite.any() else nan
            short = float(np.mean((tv - a)[finite])) if row["side"] == "lower" and finite.any() else nan
            row.update(applicable=True, coverage=k_cov / R, coverage_lo=clo, coverage_hi=chi, covered=k_cov,
                       miss_low=float(np.mean(finite & (b < tv))), miss_high=float(np.mean(finite & (a > tv))),
                       mean_width=width, mean_shortfall=short, nonfinite=nonfinite, note=tnote)
            rows.append(row)
        out.append([to_jsonable(r) for r in rows])
    return out


def _cell_config(point, spec, method, *, level, n, R, seed, n_resamples) -> dict:
    import tokis

    cfg = dict(kind="tokis.coverage", schema=STORE_SCHEMA, version=tokis.__version__, mdp=point.mdp.fingerprint(),
               target=point.target.fingerprint(), behavior=point.behavior.fingerprint(), estimator=spec.name,
               params=spec.kwargs, method=method, level=float(level), n=int(n), replications=int(R), seed=int(seed))
    if method == "bca":
        cfg["n_resamples"] = int(n_resamples)
    if spec.origin:
        cfg["definition"] = spec.fingerprint()
    return cfg


def coverage(family=None, behavior=None, *, estimators=DEFAULT_ESTIMATORS, methods=DEFAULT_METHODS,
             horizons=DEFAULT_HORIZONS, n=DEFAULT_N, replications=DEFAULT_REPLICATIONS, level=DEFAULT_LEVEL,
             n_resamples=DEFAULT_RESAMPLES, seed=0, backend="auto", workers=1, store=None,
             progress=False, scheduler=None) -> pd.DataFrame:
    r"""Coverage of each interval method for each estimator and horizon, against the exact target.

    Parameters
    ----------
    family : Family, str or dict, optional
        MDP family (default ``Family()``: order-1 n-gram over 8 tokens, reward 1 when the last
        token is 0).
    behavior : Behavior or dict, optional
        Behaviour model (default :data:`DEFAULT_BEHAVIOR`: per-context KL(π‖μ) = 0.1).
    estimators : list
        Estimator specifications (``"seq"``, ``"clip_tok:c=2"``, ...).
    methods : list or str
        Interval methods of :meth:`tokis.estimators.Estimate.ci` (default all five).
    horizons : iterable of int or str
        ``T`` values.
    n : int
        Sequences per batch.
    replications : int
        Intervals per cell, ``R >= 2``.
    level : float
        Nominal level in (0, 1).
    n_resamples : int
        Bootstrap resamples of ``bca`` (default 999).
    seed : int
        Master seed of the replications (and of the bootstrap).
    backend, workers, store, progress, scheduler
        As in :func:`~tokis.analysis.horizon` (one task per horizon).

    Returns
    -------
    pandas.DataFrame
        One row per (``T``, estimator, method): ``T``, ``estimator`` (label), ``name``,
        ``method``, then :data:`COLUMNS` (module docstring). ``attrs``: ``total``, ``cached``,
        ``computed``, ``family``, ``behavior``, ``level``, ``n``, ``replications``,
        ``n_resamples``, ``seed``.

    Raises
    ------
    ValueError, TypeError
        Unknown family, estimator or method, ``level`` outside (0, 1), ``n < 2``, ``R < 2``, ...
    """
    from .._core._rng import check_seed
    from .._core._validate import check_positive_int

    family = as_family(family)
    behavior = as_behavior(behavior, DEFAULT_BEHAVIOR)
    specs = parse_estimators(estimators)
    meths = parse_methods(methods)
    Ts = parse_horizons(horizons)
    n = check_positive_int(n, "n")
    if n < 2:
        raise ValueError(f"n must be >= 2 (an interval needs a spread), got {n}")
    R = check_positive_int(replications, "replications")
    if R < 2:
        raise ValueError(f"replications must be >= 2, got {R}")
    if isinstance(level, bool) or not isinstance(level, (int, float, np.floating, np.integer)):
        raise TypeError(f"level must be a number in (0, 1), got {level!r}")
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    n_resamples = check_positive_int(n_resamples, "n_resamples")
    if n_resamples < 2:
        raise ValueError(f"n_resamples must be >= 2, got {n_resamples}")
    seed = check_seed(seed)
    workers = check_positive_int(workers, "workers")
    if backend not in ("auto", "numpy", "numba", "cupy"):
        raise ValueError(f"unknown backend {backend!r}; choose from auto, numpy, numba, cupy")
    points = horizon_points(family, behavior, Ts)
    items = [(k, m) for k in range(len(specs)) for m in meths]  # the cells of a point
    cells = [[_cell_config(p, specs[k], m, level=level, n=n, R=R, seed=seed, n_resamples=n_resamples)
              for k, m in items] for p in points]

    def args(i, todo):
        p = points[i]
        ks = list(dict.fromkeys(items[j][0] for j in todo))
        methods = [[items[j][1] for j in todo if items[j][0] == k] for k in ks]
        return (p.mdp, p.target, p.behavior, [specs[k] for k in ks], methods, n, R, seed, level, n_resamples,
                backend)

    rows, cached, computed = run_cells(cells, _compute_cells, args, store=store, workers=workers,
                                       scheduler=scheduler, progress=progress, desc="coverage",
                                       check=lambda i: check_row)
    out = [{"T": dict(p.coords)["T"], "estimator": specs[k].label, "name": specs[k].name, "method": m, **row}
           for p, point_rows in zip(points, rows) for (k, m), row in zip(items, point_rows)]
    table = pd.DataFrame(out, columns=["T", "estimator", "name", "method", *COLUMNS])
    table.attrs.update(total=len(points) * len(items), cached=cached, computed=computed, family=family.label,
                       behavior=behavior.label, level=level, n=n, replications=R, n_resamples=n_resamples, seed=seed)
    return table


def _flag(row) -> str:
    if not row["applicable"]:
        return "n/a"
    if not math.isfinite(row["coverage"]):
        return "no target"
    if row["coverage_hi"] < row["level"]:
        return "under"
    if row["coverage_lo"] > row["level"]:
        return "over"
    return ""


def display_coverage_table(table: pd.DataFrame, *, digits: int = 3) -> pd.DataFrame:
    """The printed form of a :func:`coverage` table (:data:`DISPLAY_COLUMNS`, inapplicable cells as BLANK).

    ``flag``: ``under`` when the Wilson interval lies below the nominal level (the interval
    under-covers), ``over`` when above it (conservative), ``n/a`` when the method does not apply
    (the reason is in the CSV's ``note``), ``no target`` when the target is unavailable.
    """
    recs = []
    for _, r in table.iterrows():
        ok = bool(r["applicable"]) and math.isfinite(r["coverage"])
        cov = (f"{r['coverage']:.{digits}f} [{r['coverage_lo']:.{digits}f}, {r['coverage_hi']:.{digits}f}]"
               if ok else BLANK)
        recs.append({"T": r["T"], "estimator": r["estimator"], "method": r["method"], "side": r["side"],
                     "target": r["target"], "coverage [95% Wilson]": cov,
                     "miss_low": r["miss_low"] if ok else BLANK, "miss_high": r["miss_high"] if ok else BLANK,
                     "mean_width": r["mean_width"] if ok and r["side"] == "two-sided" else BLANK,
                     "mean_shortfall": r["mean_shortfall"] if ok and r["side"] == "lower" else BLANK,
                     "flag": _flag(r)})
    out = pd.DataFrame(recs, columns=list(DISPLAY_COLUMNS))
    notes = [f"Note: coverage of the target over R = {table.attrs.get('replications', '?')} replications at nominal "
             f"level {table.attrs.get('level', '?')}; lower bounds (side lower) are one-sided at the same level. "
             "miss_low: interval entirely below the target; miss_high: entirely above. Targets: J(pi) for "
             "unbiased estimators, the estimator's own exact mean E_mu[f] for biased ones, the delta-method "
             "mean for ratio estimators (asymptotic, not exact)."]
    na = table[~table["applicable"].astype(bool)]
    for (est, m), sub in na.groupby(["estimator", "method"], sort=False):
        notes.append(f"Note: {m} does not apply to {est} (T = {', '.join(map(str, sorted(set(sub['T']))))}): "
                     f"{sub['note'].iloc[0]}")
    out.attrs["notes"] = notes
    return out
