r"""Monte Carlo harness: R replications of n samples, every estimator next to its exact moments.

For one MDP, target :math:`\pi` and behaviour :math:`\mu`, :func:`monte_carlo` draws ``R``
independent batches of ``n`` sequences from :math:`\mu` (replication ``j`` uses the seed
:func:`replication_seeds` derives from ``(seed, j)``; the counter-based sampler makes each seed
an independent stream), runs every estimator on the same batch (common random numbers), and
summarises the ``R`` estimates :math:`\hat J_1, \dots, \hat J_R`:

.. math::
    \bar J = \frac1R\sum_j \hat J_j,\qquad
    s^2 = \frac1{R-1}\sum_j (\hat J_j - \bar J)^2,\qquad
    \bar J \pm z_{0.975}\, s/\sqrt R,

the bias :math:`\bar J - J(\pi)` with the same interval, the standard deviation :math:`s`
with the chi-square interval
:math:`\big[s\sqrt{(R-1)/\chi^2_{R-1,0.975}},\; s\sqrt{(R-1)/\chi^2_{R-1,0.025}}\big]`,
the MSE :math:`\frac1R\sum_j(\hat J_j - J(\pi))^2`, the mean Kish ESS, and the z-score of the
Monte Carlo mean against the exact mean using the exact standard deviation of the estimate,

.. math:: z = \frac{\bar J - E[\hat J]}{\mathrm{sd}(\hat J)/\sqrt R}.

Exact values come from :func:`tokis.exact.moments` (method ``"exact"``, ``"asymptotic"``
for self-normalised estimators, or ``"enumeration"``); where no exact method applies the exact
columns are NaN and the method is ``"none"`` -- they are never filled in by sampling.

The column ``std_underestimated`` flags heavy tails: it is True when the upper end of the
interval on the empirical std is below half the exact std (the empirical std of sequence IS
at long horizons, where a few rare huge weights carry the variance).

Asymptotic rows (snis, wpdis) carry the delta method in their ``exact_*`` columns and are
checked for its breakdown: :mod:`tokis.analysis._breakdown` (the checks and why they hold).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import special

from ._breakdown import BREAKDOWN_CHECKS, breakdown_mask, delta_method_checks, estimate_bounds, no_checks, normalizer_cv
from ._memory import check_batch_memory
from ._replicate import replication_map
from ._store import row_check
from ._config import canonical_json, parse_estimators

__all__ = [
    "COLUMNS",
    "ASYMPTOTIC_COLUMNS",
    "BREAKDOWN_CHECKS",
    "monte_carlo",
    "replication_seeds",
    "check_row",
    "summarise",
    "exact_columns",
    "estimate_bounds",
    "delta_method_checks",
    "breakdown_mask",
]

#: Columns of the table :func:`monte_carlo` returns, in order.
COLUMNS = (
    "estimator",
    "name",
    "params",
    "method",
    "target_value",
    "exact_mean",
    "exact_bias",
    "exact_std",
    "exact_mse",
    "mc_mean",
    "mc_mean_lo",
    "mc_mean_hi",
    "mc_bias",
    "mc_bias_lo",
    "mc_bias_hi",
    "mc_std",
    "mc_std_lo",
    "mc_std_hi",
    "mc_mse",
    "mc_mse_lo",
    "mc_mse_hi",
    "mean_ess",
    "z",
    "std_underestimated",
    "n",
    "replications",
    "mc_nonfinite",
    "exact_note",
    "estimate_lo",
    "estimate_hi",
    "delta_bias_1n",
    "normalizer_cv",
    "asymptotic_breakdown",
    "breakdown_reason",
)

#: Columns that hold delta-method approximations (not exact values) on rows whose ``method`` is
#: ``"asymptotic"``; left out of printed tables, plots and overtakes where the delta method
#: broke down.
ASYMPTOTIC_COLUMNS = ("exact_mean", "exact_bias", "exact_std", "exact_mse")

_Z975 = float(special.ndtri(0.975))  # scipy.special, not scipy.stats: 0.4 s less to import


#: Harness columns holding text; ``std_underestimated`` and ``asymptotic_breakdown`` are flags,
#: every other column a number (NaN allowed).
_TEXT_COLUMNS = frozenset({"estimator", "name", "params", "method", "exact_note", "breakdown_reason"})
_FLAG_COLUMNS = frozenset({"std_underestimated", "asymptotic_breakdown"})


#: Check of a stored harness row against :data:`COLUMNS` (the results store's ``check``): raises
#: ValueError for a missing column or a value of the wrong kind (e.g. ``"exact_mean": "banana"``).
check_row = row_check(COLUMNS, text=_TEXT_COLUMNS, flags=_FLAG_COLUMNS)


def replication_seeds(seed, replications) -> list[int]:
    """Seeds of the ``R`` replications, derived from ``seed``.

    Replication ``j`` uses ``SeedSequence(seed).spawn(R)[j].generate_state(1, uint64)[0]``:
    a fixed function of ``(seed, j)``, so adding replications never changes earlier ones.

    Parameters
    ----------
    seed : int
        In ``[0, 2**64)``.
    replications : int
        ``R >= 1``.

    Returns
    -------
    list of int, length R
    """
    from .._core._rng import check_seed

    seed = check_seed(seed)
    R = _positive_int(replications, "replications")
    children = np.random.SeedSequence(seed).spawn(R)
    return [int(c.generate_state(1, dtype=np.uint64)[0]) for c in children]


def _positive_int(value, name: str, minimum: int = 1) -> int:
    from .._core._validate import check_positive_int

    return check_positive_int(value, name, minimum)


def _moments_fields(m) -> dict:
    """Exact (or delta-method) mean / bias / std / MSE of the estimate at n from a Moments object."""
    target = float(m.target_value)
    bias = float(m.bias_n)
    return dict(
        method=str(m.method),
        exact_mean=target + bias,
        exact_bias=bias,
        exact_std=float(m.estimate_std),
        exact_mse=float(m.mse),
        exact_note="",
    )


def exact_columns(mdp, target, behavior, spec, n: int) -> dict:
    """The exact columns of one estimator at sample size ``n``, with the delta-method checks.

    Returns
    -------
    dict
        ``method``, ``exact_mean``, ``exact_bias``, ``exact_std`` (std of the estimate at n),
        ``exact_mse`` and ``exact_note``; NaN values and method ``"none"`` (the reason in
        ``exact_note``) when :func:`tokis.exact.moments` has no exact method. For method
        ``"asymptotic"`` also ``estimate_lo``, ``estimate_hi`` (:func:`estimate_bounds`),
        ``delta_bias_1n`` (``bias_coef / n``), ``normalizer_cv``, ``asymptotic_breakdown`` and
        ``breakdown_reason`` (the failed checks joined by ``";"``, see :mod:`._breakdown`);
        NaN, False and ``""`` for the other methods.
    """
    from .. import exact

    try:
        m = exact.moments(mdp, target, behavior, spec.resolve(), n=n, **spec.kwargs)
    except exact.NoExactMethodError as err:
        nan = float("nan")
        note = str(err).splitlines()[0] if str(err) else type(err).__name__
        return dict(method="none", exact_mean=nan, exact_bias=nan, exact_std=nan, exact_mse=nan, exact_note=note,
                    **no_checks())
    out = _moments_fields(m)
    if out["method"] != "asymptotic":
        out.update(no_checks())
        return out
    lo, hi = estimate_bounds(mdp)
    checks = dict(estimate_lo=lo, estimate_hi=hi, delta_bias_1n=float(m.bias_coef) / n,
                  normalizer_cv=normalizer_cv(mdp, target, behavior, spec, n))
    failed = delta_method_checks(exact_mean=out["exact_mean"], exact_std=out["exact_std"], **checks)
    out.update(checks, asymptotic_breakdown=bool(failed), breakdown_reason=";".join(failed))
    return out


def summarise(values, ess, exact: dict, target_value: float) -> dict:
    r"""Monte Carlo summary of ``R`` replicated estimates next to the exact values.

    Parameters
    ----------
    values : float array, shape (R,)
        The estimates; non-finite ones are counted (``mc_nonfinite``) and left out.
    ess : float array, shape (R,)
        Kish ESS of each replication.
    exact : dict
        Output of :func:`exact_columns` (at least ``exact_mean`` and ``exact_std``; with
        ``asymptotic_breakdown`` True, ``z`` is NaN and ``std_underestimated`` False: a
        broken-down delta method is no reference to compare with).
    target_value : float
        :math:`J(\pi)`.

    Returns
    -------
    dict
        The Monte Carlo columns of :data:`COLUMNS` (see the module docstring for formulas).
    """
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    v = v[finite]
    R = int(v.size)
    nan = float("nan")
    out = dict(mc_nonfinite=int((~finite).sum()))
    if R == 0:
        out.update({k: nan for k in ("mc_mean", "mc_mean_lo", "mc_mean_hi", "mc_bias", "mc_bias_lo", "mc_bias_hi",
                                      "mc_std", "mc_std_lo", "mc_std_hi", "mc_mse", "mc_mse_lo", "mc_mse_hi",
                                      "z")})
        out["std_underestimated"] = False
    else:
        mean = float(v.mean())
        sd = float(v.std(ddof=1)) if R > 1 else nan
        half = _Z975 * sd / math.sqrt(R)
        if R > 1:
            # chi2 quantiles q_0.975, q_0.025 with R - 1 degrees of freedom (chdtri inverts the upper tail)
            lo = sd * math.sqrt((R - 1) / special.chdtri(R - 1, 0.025))
            hi = sd * math.sqrt((R - 1) / special.chdtri(R - 1, 0.975))
        else:
            lo = hi = nan
        bias = mean - target_value
        sq = (v - target_value) ** 2
        mse = float(sq.mean())
        mse_half = _Z975 * float(sq.std(ddof=1)) / math.sqrt(R) if R > 1 else nan
        out.update(
            mc_mean=mean,
            mc_mean_lo=mean - half,
            mc_mean_hi=mean + half,
            mc_bias=bias,
            mc_bias_lo=bias - half,
            mc_bias_hi=bias + half,
            mc_std=sd,
            mc_std_lo=float(lo),
            mc_std_hi=float(hi),
            mc_mse=mse,
            mc_mse_lo=max(mse - mse_half, 0.0),
            mc_mse_hi=mse + mse_half,
        )
        ex_mean, ex_std = exact["exact_mean"], exact["exact_std"]
        if exact.get("asymptotic_breakdown", False):
            ex_mean = ex_std = nan
        if not (math.isfinite(ex_mean) and math.isfinite(ex_std)):
            z = nan
        elif ex_std > 0:
            z = (mean - ex_mean) / (ex_std / math.sqrt(R))
        else:  # a deterministic estimate: any deviation beyond rounding is infinitely significant
            diff = mean - ex_mean
            z = 0.0 if abs(diff) <= 1e-9 * max(1.0, abs(ex_mean)) else math.copysign(math.inf, diff)
        out["z"] = float(z)
        out["std_underestimated"] = bool(math.isfinite(ex_std) and math.isfinite(hi) and hi < ex_std / 2)
    e = np.asarray(ess, dtype=np.float64)
    e = e[np.isfinite(e)]
    out["mean_ess"] = float(e.mean()) if e.size else nan
    return out


def _simulate(mdp, target, behavior, specs, n, seeds, backend):
    """Estimates and ESS of every spec on every replication: two arrays (K, R), one call per chunk of replications."""
    K, R = len(specs), len(seeds)
    values = np.full((K, R), np.nan)
    ess = np.full((K, R), np.nan)
    funcs = [s.resolve() for s in specs]

    def work(lo, batch):
        return [(e.value, e.ess) for e in (f(batch, **s.kwargs) for f, s in zip(funcs, specs))]

    for lo, count, results in replication_map(mdp, target, behavior, n, seeds, backend, work):
        for k, (value, e) in enumerate(results):
            values[k, lo:lo + count] = value
            ess[k, lo:lo + count] = e
    return values, ess


def monte_carlo(mdp, target, behavior, estimators, *, n, replications, seed=0, backend="auto") -> pd.DataFrame:
    r"""Run ``R`` replications of ``n`` samples and compare every estimator with its exact moments.

    Parameters
    ----------
    mdp : TokenMDP
    target, behavior : Policy
        :math:`\pi` and :math:`\mu`.
    estimators : list
        Names, ``(name, params)`` pairs or strings such as ``"clip_tok:c=2"``
        (see :func:`~tokis.analysis.parse_estimators`).
    n : int
        Sequences per replication, ``>= 1``.
    replications : int
        ``R >= 2``.
    seed : int
        Master seed in ``[0, 2**64)``; replication seeds from :func:`replication_seeds`.
    backend : str
        Sampling and estimator backend (``"auto"``, ``"numpy"``, ``"numba"``, ``"cupy"``).

    Returns
    -------
    pandas.DataFrame
        One row per estimator with the columns of :data:`COLUMNS`: ``estimator`` (label with
        parameters), ``name``, ``params`` (JSON), ``method`` (how the exact values were
        obtained: ``"exact"``, ``"asymptotic"``, ``"enumeration"`` or ``"none"``),
        ``target_value`` :math:`J(\pi)`, ``exact_mean``, ``exact_bias``, ``exact_std`` (std of
        the estimate at ``n``), ``exact_mse``, ``mc_mean`` with its 95 % interval
        ``mc_mean_lo``/``mc_mean_hi``, ``mc_bias`` (± interval), ``mc_std`` (chi-square
        interval), ``mc_mse`` (with a normal 95 % interval ``mc_mse_lo``/``mc_mse_hi`` from the
        R squared errors, clipped at 0), ``mean_ess`` (mean Kish ESS), ``z``, ``std_underestimated``,
        ``n``, ``replications``, ``mc_nonfinite`` (replications with a non-finite estimate,
        left out), ``exact_note`` (why no exact method applies), and for asymptotic rows the
        delta-method checks: ``estimate_lo``/``estimate_hi`` (bounds of the estimate),
        ``delta_bias_1n`` (the O(1/n) bias term), ``normalizer_cv``, ``asymptotic_breakdown``
        and ``breakdown_reason`` (module docstring). On asymptotic rows the ``exact_*``
        columns hold delta-method approximations, not exact values.

    Raises
    ------
    ValueError, TypeError
        Unknown estimator or parameter, ``n < 1``, ``replications < 2``, bad seed, or an MDP
        and policies that do not fit together.

    Examples
    --------
    >>> from tokis import envs
    >>> mdp = envs.ngram(4, 1, 8)
    >>> pi = envs.random_policy(mdp, seed=1)
    >>> mu = envs.perturb(pi, kl=0.05)
    >>> table = monte_carlo(mdp, pi, mu, ["seq", "tok", "clip_tok:c=2"], n=64, replications=50)
    """
    from .. import exact
    from .._core._rng import check_seed

    specs = parse_estimators(estimators)
    n = _positive_int(n, "n")
    R = _positive_int(replications, "replications", 2)
    seed = check_seed(seed)
    check_batch_memory(n, mdp.horizon)
    seeds = replication_seeds(seed, R)
    J = float(exact.value(mdp, target))
    values, ess = _simulate(mdp, target, behavior, specs, n, seeds, backend)
    rows = []
    for k, spec in enumerate(specs):
        ex = exact_columns(mdp, target, behavior, spec, n)
        row = dict(estimator=spec.label, name=spec.name, params=canonical_json(spec.kwargs), target_value=J, n=n,
                   replications=R)
        row.update(ex)
        row.update(summarise(values[k], ess[k], ex, J))
        rows.append(row)
    return pd.DataFrame(rows, columns=list(COLUMNS))
