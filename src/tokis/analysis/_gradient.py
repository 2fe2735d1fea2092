r"""Exact policy gradients of the objectives PPO/GRPO/GSPO/CISPO optimise, against the true gradient.

At each horizon ``T = 1, 2, 4, ...`` build the MDP and the old policy :math:`\pi_{old}`
(:class:`~tokis.analysis.Family`), move to a current policy :math:`\pi_\theta =`
``perturb(pi_old, kl=k)`` at a per-token KL(π_old‖π_θ) = k in every context (a few values of
``k``: how far the trainer has moved since the batch was sampled), and sample from
:math:`\mu = \pi_{old}` (or from a behaviour model of π_old, engine mismatch; the anchor, the
clipping reference, is always π_old). For each objective, :func:`tokis.exact.objective_gradient`
gives the exact expected gradient :math:`\bar g = E_\mu[\hat g]` next to :math:`\nabla J(\pi_\theta)`,
and the row reports

- ``cosine`` = :math:`\langle\bar g,\nabla J\rangle / (\|\bar g\|\,\|\nabla J\|)`;
- ``relative_bias`` = :math:`\|\bar g - \nabla J\| / \|\nabla J\|`;
- ``ascent`` = :math:`\langle\nabla J,\bar g\rangle / \|\nabla J\|^2` (negative: the expected
  update goes downhill);
- ``variance_along`` = :math:`\mathrm{Var}_\mu\langle\hat g, u\rangle` per sequence,
  :math:`u = \nabla J/\|\nabla J\|`;
- ``snr`` = :math:`\langle\bar g, u\rangle / \sqrt{\mathrm{variance\_along}/n}` at batch size ``n``;
- ``clip_probability``, ``clip_mass`` (token-level objectives), and for ``tok`` the shares
  ``state_share`` = ‖state mismatch‖/‖bias‖ and ``value_share`` = ‖value mismatch‖/‖bias‖
  (NaN where the bias is 0 up to rounding).

Everything is exact (no Monte Carlo). An objective without an exact method at some ``T``
(``gspo``'s clipped geometric-mean ratio is exact only by enumerating every sequence) gives a row
with ``method = "none"``, no values and the reason in ``note``: the
:class:`~tokis.exact.NoExactMethodError` is reported, never raised, and nothing is sampled
instead. Cells are kept in the results store (:mod:`._store`), keyed by the fingerprints of the
MDP and the three policies, the objective with every setting, ``n``, the enumeration limit and
the package version.

:func:`turning_points` reads off, per objective and ``k``, where the expected gradient stops
pointing uphill and where the batch gradient drowns in noise; :func:`landscape` evaluates
``tokis.exact.surrogate`` along :math:`\theta_{old} + \alpha\nabla J` at one horizon.

Command line: ``tokis gradient`` or ``python -m tokis.analysis.gradient`` (see ``--help``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import envs, exact
from ._common import as_behavior, as_family, parse_floats, parse_horizons
from ._config import Behavior, to_jsonable
from ._objective_config import ObjectiveConfig, parse_objective, parse_objectives
from ._output import BLANK
from ._store import row_check
from ._sweep import run_cells

__all__ = [
    "gradient_sweep",
    "turning_points",
    "landscape",
    "ObjectiveConfig",
    "parse_objective",
    "parse_objectives",
    "display_gradient_table",
    "COLUMNS",
    "DISPLAY_COLUMNS",
    "DEFAULT_OBJECTIVES",
    "DEFAULT_HORIZONS",
    "DEFAULT_KLS",
    "DEFAULT_BEHAVIOR",
    "DEFAULT_N",
    "DEFAULT_THETA_SEED",
    "MAX_SEQUENCES",
]

#: Objectives of the default sweep.
DEFAULT_OBJECTIVES = ("seq", "tok", "ppo_clip", "cispo", "gspo")
#: Horizons of the default sweep.
DEFAULT_HORIZONS = (1, 2, 4, 8, 16, 32, 64)
#: Per-token KL(pi_old || pi_theta) of the default sweep.
DEFAULT_KLS = (0.01, 0.05)
#: Sampler of the default sweep: mu = pi_old (no engine mismatch).
DEFAULT_BEHAVIOR = Behavior()
#: Batch size of the signal-to-noise ratio.
DEFAULT_N = 256
#: Seed of the direction in which pi_theta is perturbed away from pi_old.
DEFAULT_THETA_SEED = 1
#: Largest enumeration (sequences) for objectives without a dynamic programme.
MAX_SEQUENCES = 200_000
#: Version of the gradient cell layout; part of every key.
STORE_SCHEMA = 2

#: Value columns of a cell, in table order (after ``T``, ``kl``, ``objective``).
COLUMNS = ("method", "cosine", "relative_bias", "ascent", "variance_along", "snr", "clip_probability", "clip_mass",
           "state_share", "value_share", "support_share", "trace", "grad_norm", "mean_norm", "value_theta",
           "value_old", "baseline", "note")
#: Columns of the printed table.
DISPLAY_COLUMNS = ("T", "kl", "objective", "method", "cosine", "relative_bias", "ascent", "variance_along", "snr",
                   "clip_probability", "clip_mass", "state_share", "value_share")
_METRICS = COLUMNS[1:-1]
#: Check of a stored gradient row against :data:`COLUMNS` (the results store's ``check``).
check_row = row_check(COLUMNS, text=("method", "note"))


# ---------------------------------------------------------------------------------------------
# points and cells
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Point:
    T: int
    kl: float
    mdp: object
    old: object
    theta: object
    mu: object


def _points(family, behavior, horizons, kls, theta_seed) -> list[_Point]:
    pts = []
    for T in horizons:
        mdp, old = family.build(T)
        mu = behavior.apply(old)
        for k in kls:
            theta = envs.perturb(old, kl=k, seed=theta_seed)
            pts.append(_Point(T, k, mdp, old, theta, mu))
    return pts


def _cell_config(p: _Point, obj: ObjectiveConfig, n: int, max_sequences: int) -> dict:
    import tokis

    return dict(kind="tokis.gradient", schema=STORE_SCHEMA, version=tokis.__version__, mdp=p.mdp.fingerprint(),
                policy=p.theta.fingerprint(), behavior=p.mu.fingerprint(), anchor=p.old.fingerprint(),
                objective=obj.name, settings=obj.settings, definition=obj.fingerprint(), n=int(n),
                max_sequences=int(max_sequences))


def _norm(a) -> float:
    return float(np.linalg.norm(a))


def _share(part, bias_norm: float, scale: float) -> float:
    """``||part|| / ||bias||``; NaN without a split or where the bias is 0 up to rounding (1e-12 of ||grad J||)."""
    if part is None or not bias_norm > 1e-12 * scale:
        return math.nan
    return _norm(part) / bias_norm


def compute_cell(mdp, theta, mu, old, objective, kwargs, n, max_sequences) -> dict:
    """One cell: :func:`tokis.exact.objective_gradient` summarised as a JSON-able row of :data:`COLUMNS`.

    A :class:`~tokis.exact.NoExactMethodError` (and only that) gives a row with
    ``method = "none"``, NaN values and the error's message in ``note``.
    """
    row = dict(value_theta=float(exact.value(mdp, theta)), value_old=float(exact.value(mdp, old)))
    try:
        g = exact.objective_gradient(mdp, theta, mu, objective, anchor=old, n=n, max_sequences=max_sequences,
                                     **kwargs)
    except exact.NoExactMethodError as err:
        row.update({c: math.nan for c in _METRICS if c not in row})
        row.update(method="none", grad_norm=_norm(exact.gradient(mdp, theta)), note=" ".join(str(err).split()))
        return to_jsonable({c: row[c] for c in COLUMNS})
    bias_norm, scale = _norm(g.bias), _norm(g.true)
    row.update(method=g.method, cosine=g.cosine, relative_bias=g.relative_bias, ascent=g.ascent,
               variance_along=g.variance_along, snr=g.snr,
               clip_probability=g.clip_probability, clip_mass=g.clip_mass,
               state_share=_share(g.state_mismatch, bias_norm, scale),
               value_share=_share(g.value_mismatch, bias_norm, scale),
               support_share=_share(g.support_mismatch, bias_norm, scale), trace=g.trace, grad_norm=scale,
               mean_norm=_norm(g.mean), baseline=g.baseline, note="")
    return to_jsonable({c: row[c] for c in COLUMNS})


def _compute_point(mdp, theta, mu, old, objectives, n, max_sequences) -> list[dict]:
    """Every cell of one point (``objectives``: list of (registered name, kwargs))."""
    return [compute_cell(mdp, theta, mu, old, name, kw, n, max_sequences) for name, kw in objectives]


def gradient_sweep(family=None, behavior=None, *, objectives=DEFAULT_OBJECTIVES, horizons=DEFAULT_HORIZONS,
                   kls=DEFAULT_KLS, n=DEFAULT_N, theta_seed=DEFAULT_THETA_SEED, max_sequences=MAX_SEQUENCES,
                   workers=1, store=None, progress=False, scheduler=None) -> pd.DataFrame:
    r"""Exact expected gradients of policy-gradient objectives against grad J, across horizons.

    Parameters
    ----------
    family : Family, str or dict, optional
        MDP family and the old policy π_old (default ``Family()``: an order-1 n-gram over 8
        tokens, reward 1 when the last token is 0).
    behavior : Behavior or dict, optional
        How the sampler μ is derived from π_old (default :data:`DEFAULT_BEHAVIOR`: μ = π_old).
    objectives : list
        Objective specifications (``"tok"``, ``"ppo_clip:eps_high=0.28"``, ``("cispo", {...})``,
        ...; :func:`parse_objectives`).
    horizons : iterable of int or str
        ``T`` values (``"1..64"``: powers of two).
    kls : iterable of float or str
        Per-token KL(π_old‖π_θ) of the current policy, π_θ = ``perturb(π_old, kl=k)``; ``>= 0``.
    n : int
        Batch size of the signal-to-noise ratio.
    theta_seed : int
        Seed of the perturbation direction from π_old to π_θ.
    max_sequences : int
        Largest enumeration for objectives without a dynamic programme (gspo).
    workers : int
        Local processes (one task per (T, kl) point; each process finds the objectives by name in
        its registry, so an objective registered at run time needs ``workers=1``).
    store : None, bool, path or ResultStore
        Results store for finished cells (None: none; True: the default file).
    progress : bool
        Show a progress bar.
    scheduler : None, str or distributed.Client
        Compute the points on Dask distributed: ``"local"`` or ``"tcp://host:port"`` (as in
        :func:`~tokis.analysis.horizon.horizon`; the workers find the objectives by name, as
        local processes do).

    Returns
    -------
    pandas.DataFrame
        One row per (``T``, ``kl``, objective), points in the order of ``horizons`` then ``kls``:
        ``T``, ``kl``, ``objective`` (the label), ``name`` (registry name), then :data:`COLUMNS`.
        ``attrs``: ``total``, ``cached`` and ``computed`` cell counts, ``family``, ``behavior``,
        ``n``, ``theta_seed``, ``max_sequences`` and ``aggregations`` (label -> aggregation).

    Raises
    ------
    ValueError, TypeError
        Unknown family or objective, a bad parameter, ``T < 1``, a negative ``kl``, ...
    """
    from .._core._rng import check_seed
    from .._core._validate import check_positive_int

    family = as_family(family)
    behavior = as_behavior(behavior, DEFAULT_BEHAVIOR)
    objs = parse_objectives(objectives)
    Ts = parse_horizons(horizons)
    ks = parse_floats(kls, "kls")
    for k in ks:
        if k < 0:
            raise ValueError(f"kl must be >= 0, got {k}")
    ks = list(dict.fromkeys(ks))
    n = check_positive_int(n, "n")
    theta_seed = check_seed(theta_seed)
    max_sequences = check_positive_int(max_sequences, "max_sequences")
    workers = check_positive_int(workers, "workers")
    points = _points(family, behavior, Ts, ks, theta_seed)
    resolved = [(o.name, o.kwargs) for o in objs]  # names: worker processes look them up in their registry
    cells = [[_cell_config(p, o, n, max_sequences) for o in objs] for p in points]

    def args(i, todo):
        p = points[i]
        return p.mdp, p.theta, p.mu, p.old, [resolved[j] for j in todo], n, max_sequences

    rows, cached, computed = run_cells(cells, _compute_point, args, store=store, workers=workers, scheduler=scheduler,
                                       progress=progress, desc="gradient", check=lambda i: check_row)
    out = [{"T": p.T, "kl": p.kl, "objective": o.label, "name": o.name, **row}
           for p, point_rows in zip(points, rows) for o, row in zip(objs, point_rows)]
    table = pd.DataFrame(out, columns=["T", "kl", "objective", "name", *COLUMNS])
    aggs = {o.label: _aggregation(o) for o in objs}
    table.attrs.update(total=len(points) * len(objs), cached=cached, computed=computed, family=family.label,
                       behavior=behavior.label, n=n, theta_seed=theta_seed, max_sequences=max_sequences,
                       aggregations=aggs)
    return table


def _aggregation(obj: ObjectiveConfig) -> str:
    return json.loads(obj.settings)["aggregation"]


# ---------------------------------------------------------------------------------------------
# reading the table
# ---------------------------------------------------------------------------------------------


def turning_points(table: pd.DataFrame) -> pd.DataFrame:
    """Per (``kl``, objective): where the expected gradient stops pointing uphill, where SNR drops below 1.

    Parameters
    ----------
    table : pandas.DataFrame
        A :func:`gradient_sweep` table.

    Returns
    -------
    pandas.DataFrame
        Columns ``kl``, ``objective``, ``exact_through`` (the largest ``T`` with an exact
        value), ``min_cosine`` and ``min_cosine_T`` (the smallest cosine to grad J and where),
        ``downhill_from`` (the smallest ``T`` with ``ascent < 0``: the expected update lowers
        J), ``downhill_stays`` (``ascent < 0`` at every larger ``T`` with a value),
        ``snr_below_1_from`` (the smallest ``T`` with ``|snr| < 1``: at batch size n the
        gradient's component along grad J is smaller than its noise) and ``snr_at_max_T``.
        ``T`` values are NaN where the event does not happen within the sweep.
    """
    rows = []
    for (k, obj), sub in table.groupby(["kl", "objective"], sort=False):
        sub = sub[sub["method"] != "none"].sort_values("T")
        T = sub["T"].to_numpy()
        row = dict(kl=k, objective=obj, exact_through=T.max() if T.size else math.nan)
        cos = sub["cosine"].to_numpy(dtype=float)
        ok = np.isfinite(cos)
        if ok.any():
            i = int(np.nanargmin(np.where(ok, cos, np.inf)))
            row.update(min_cosine=cos[i], min_cosine_T=T[i])
        else:
            row.update(min_cosine=math.nan, min_cosine_T=math.nan)
        asc = sub["ascent"].to_numpy(dtype=float)
        neg = np.flatnonzero(asc < 0)
        row["downhill_from"] = T[neg[0]] if neg.size else math.nan
        later = asc[neg[0]:] if neg.size else asc[:0]
        row["downhill_stays"] = bool(neg.size) and bool(np.all(later[np.isfinite(later)] < 0))
        snr = sub["snr"].to_numpy(dtype=float)
        low = np.flatnonzero(np.abs(snr) < 1)
        row["snr_below_1_from"] = T[low[0]] if low.size else math.nan
        row["snr_at_max_T"] = snr[-1] if snr.size else math.nan
        rows.append(row)
    cols = ["kl", "objective", "exact_through", "min_cosine", "min_cosine_T", "downhill_from", "downhill_stays",
            "snr_below_1_from", "snr_at_max_T"]
    return pd.DataFrame(rows, columns=cols)


_SCALE_NOTE = ("Note: {which} normalise by the length ({aggs}), so their relative_bias and ascent include that "
               "factor (e.g. 1/E[L] for token_mean); cosine, the sign of ascent and snr do not depend on it.")
_SHARE_NOTE = (f"Note: {BLANK} marks a value that is not defined: clip_mass for sequence-level objectives (seq, gspo), "
               "state_share and value_share except for tok with the terminal advantage, token-sum aggregation and "
               "anchor = sampler (and where tok's bias is 0, at T = 1), and every value on rows with method none.")


def gradient_notes(table: pd.DataFrame) -> list[str]:
    """Footnotes of a printed gradient table: rows without an exact method, length scaling, undefined cells."""
    notes = []
    none = table[table["method"] == "none"]
    for obj, sub in none.groupby("objective", sort=False):
        Ts = sorted(set(sub["T"]))
        first = sub["note"].iloc[0]
        notes.append(f"Note: {obj} has no exact method at T = {', '.join(map(str, Ts))} (method none; nothing is "
                     f"sampled instead): {first}")
    aggs = table.attrs.get("aggregations", {})
    scaled = {o: a for o, a in aggs.items() if a != "seq_mean_token_sum" and o in set(table["objective"])}
    if scaled:
        notes.append(_SCALE_NOTE.format(which=", ".join(scaled),
                                        aggs=", ".join(f"{o}: {a}" for o, a in scaled.items())))
    notes.append(_SHARE_NOTE)
    return notes


def display_gradient_table(table: pd.DataFrame) -> pd.DataFrame:
    """The printed form of a :func:`gradient_sweep` table: :data:`DISPLAY_COLUMNS`, undefined values as BLANK."""
    out = table[list(DISPLAY_COLUMNS)].copy().astype(object)
    none = (table["method"] == "none").to_numpy()
    for c in DISPLAY_COLUMNS[4:]:
        vals = table[c].to_numpy(dtype=float)
        undefined = none | ~np.isfinite(vals) if c in ("clip_mass", "state_share", "value_share") else none
        out[c] = [BLANK if u else v for v, u in zip(table[c], undefined)]
    out = out.reset_index(drop=True)
    out.attrs["notes"] = gradient_notes(table)
    return out


# ---------------------------------------------------------------------------------------------
# the surrogate landscape
# ---------------------------------------------------------------------------------------------


def landscape(family=None, behavior=None, *, objectives=DEFAULT_OBJECTIVES, horizon=4, alphas=None,
              max_sequences=MAX_SEQUENCES) -> pd.DataFrame:
    r"""Each objective's expected surrogate along :math:`\theta_{old} + \alpha\,d`, :math:`d` the gradient direction.

    Calls ``tokis.exact.surrogate(mdp, pi_old, mu, objective, direction="gradient", anchor=pi_old,
    alphas=alphas, max_sequences=max_sequences, **settings)`` at one horizon: ``d`` is grad
    J(θ_old) of unit norm, and the default ``alphas`` reach a per-token KL(π_old‖π_θ) of 0.05 on
    the steeper side.

    Returns
    -------
    pandas.DataFrame
        Long format: ``objective``, ``alpha``, ``surrogate`` (J(θ_old) + L(θ) − L(θ_old), L the
        objective's expected surrogate under μ), ``value`` (J(θ_old + α d)), ``bound`` (the
        trust-region lower bound on J), ``kl`` (per-token KL(π_old‖π_θ) under π_old's
        occupancy), ``method``, ``aggregation``, ``bound_name``, ``reference``, ``note`` (for an objective
        without an exact method: one row with ``method = "none"``, NaN values and the reason).
        ``attrs``: ``T``, ``family``, ``behavior``.

    Raises
    ------
    ValueError, TypeError
        Bad options, an objective that declares no surrogate value.
    """
    family = as_family(family)
    behavior = as_behavior(behavior, DEFAULT_BEHAVIOR)
    objs = parse_objectives(objectives)
    (T,) = parse_horizons([horizon], "horizon")
    mdp, old = family.build(T)
    mu = behavior.apply(old)
    rows = []
    for o in objs:
        try:
            c = exact.surrogate(mdp, old, mu, o.name, direction="gradient", alphas=alphas, anchor=old,
                          max_sequences=max_sequences, **o.kwargs)
        except exact.NoExactMethodError as err:
            rows.append(dict(objective=o.label, alpha=math.nan, surrogate=math.nan, value=math.nan, bound=math.nan,
                             kl=math.nan, method="none", aggregation=json.loads(o.settings)["aggregation"],
                             bound_name="", reference="",
                             note=" ".join(str(err).split())))
            continue
        a = np.asarray(c.alphas, dtype=float)
        for i in range(a.size):
            rows.append(dict(objective=o.label, alpha=a[i], surrogate=float(c.surrogate[i]), value=float(c.value[i]),
                             bound=float(c.bound[i]), kl=float(c.kl[i]), method=c.method,
                             aggregation=c.settings["aggregation"], bound_name=c.bound_name, reference=c.reference,
                             note=""))
    table = pd.DataFrame(rows, columns=["objective", "alpha", "surrogate", "value", "bound", "kl", "method",
                                        "aggregation", "bound_name", "reference", "note"])
    table.attrs.update(T=T, family=family.label, behavior=behavior.label)
    return table
