r"""Growth of the variance of an estimator with the horizon: a regression next to the exact rate.

For sequence-level IS with a per-context :math:`\chi^2(\pi\|\mu) = \chi^2` in every context and a
constant reward :math:`g` (no eos), the per-sample statistic :math:`f = W g` has

.. math:: E_\mu[f^2] = g^2 (1+\chi^2)^T,\qquad \log E_\mu[f^2] = 2\log g + T\log(1+\chi^2),

exactly linear in ``T`` with slope :math:`\log(1+\chi^2)`; in general the exact per-step growth
rate is the slope of the exact :math:`\log E_\mu[f^2]` across the horizons. :func:`growth` runs
the horizon sweep for one estimator, estimates the per-sample second moment (or variance) from
the ``R`` replications as

.. math:: \widehat{Var}(f) = n\, s^2,\qquad \widehat{E[f^2]} = n\, s^2 + \bar J^2

(``s`` the std of the ``R`` estimates, each a mean of ``n`` samples), and fits
:math:`\log \widehat{E[f^2]} = a + b\,T` by ordinary least squares (statsmodels), with a 95 %
confidence interval on the slope ``b``. Each horizon gets its own replication seed (derived from
``(seed, T)``): with one seed the counter-based sampler would reuse the first tokens across
horizons and correlate the regression's points. The same fit on the exact values gives the exact rate;
the two agree when the exact rate lies in the interval. For a ratio estimator (snis, wpdis)
the "exact" values are the delta method's (``method`` ``"asymptotic"``): the per-sample
variance is its first-order limit, horizons where the expansion broke down
(``asymptotic_breakdown``) are left out of the exact rate, and the printed table and plot
say "asymptotic".

``quantity="variance"`` fits :math:`\log Var(f)` instead, which approaches the same slope only
once :math:`(1+\chi^2)^T \gg 1` (at small T, :math:`Var(f) \approx g^2 T \chi^2`).

Command line: ``tokis growth`` or ``python -m tokis.analysis.growth``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from ._common import as_behavior, as_family, parse_horizons
from ._config import Behavior, Family, _choice, parse_estimator
from ._harness import breakdown_mask
from ._horizon import horizon_points
from ._sweep import run_sweep

__all__ = ["growth", "fit_growth", "DEFAULT_HORIZONS", "DEFAULT_BEHAVIOR", "QUANTITIES"]

#: Horizons of the default fit (evenly spaced: the fit is linear in T). Longer horizons make the
#: fourth moment of W explode (E_mu[r^4]^T), and the empirical variance then falls below the exact
#: one more often than not, pulling the fitted slope down: exactly the heavy-tail effect that
#: ``std_underestimated`` flags.
DEFAULT_HORIZONS = (2, 4, 6, 8, 10, 12, 14, 16, 18, 20)
#: Default behaviour model: per-context chi^2 = 0.05, so the rate is log(1.05).
DEFAULT_BEHAVIOR = Behavior(chi2=0.05)
#: Fitted quantities.
QUANTITIES = ("second_moment", "variance")


def _exact_logs(mdp, target, behavior, spec) -> tuple[float, float]:
    """Exact ``log E[f^2]`` and ``log Var(f)`` of the per-sample statistic (NaN where unavailable)."""
    from .. import exact

    try:
        m = exact.moments(mdp, target, behavior, spec.resolve(), **spec.kwargs)
    except exact.NoExactMethodError:
        return math.nan, math.nan
    lsm, logvar = m.log_second_moment, m.log_variance
    if lsm is None:  # asymptotic and finite-n results carry no second moment: from mean and variance
        lsm = float(np.logaddexp(logvar, 2 * math.log(abs(m.mean)))) if m.mean != 0 else float(logvar)
    return float(lsm), float(logvar)


def fit_growth(table: pd.DataFrame, *, quantity: str = "second_moment", level: float = 0.95) -> dict:
    r"""OLS of the Monte Carlo and the exact log quantity against T.

    Parameters
    ----------
    table : pandas.DataFrame
        A :func:`growth` table (``T``, ``mc_log_<quantity>``, ``exact_log_<quantity>``).
    quantity : {"second_moment", "variance"}
    level : float
        Confidence level of the slope interval.

    Returns
    -------
    dict
        ``quantity``; ``mc_slope``, ``mc_slope_lo``, ``mc_slope_hi`` (interval), ``mc_slope_se``,
        ``mc_intercept``, ``mc_r2``, ``points`` (finite MC values used); ``exact_rate`` (slope of
        the exact values, leaving out rows where a delta-method value broke down, see
        :func:`~tokis.analysis._harness.breakdown_mask`) and ``exact_intercept``; ``agree``
        (exact rate inside the interval).

    Raises
    ------
    ValueError
        Fewer than 3 finite points.
    """
    import statsmodels.api as sm

    quantity = _choice(quantity, "quantity", QUANTITIES)
    T = table["T"].to_numpy(dtype=float)
    y_mc = table[f"mc_log_{quantity}"].to_numpy(dtype=float)
    # a delta-method value that broke down (snis, wpdis at long T) is no exact rate to compare with
    y_ex = np.where(breakdown_mask(table), np.nan, table[f"exact_log_{quantity}"].to_numpy(dtype=float))
    ok = np.isfinite(y_mc)
    if ok.sum() < 3:
        raise ValueError(f"the growth fit needs at least 3 horizons with a finite Monte Carlo value, got {int(ok.sum())}")
    fit = sm.OLS(y_mc[ok], sm.add_constant(T[ok])).fit()
    lo, hi = fit.conf_int(alpha=1 - level)[1]
    out = dict(quantity=quantity, mc_slope=float(fit.params[1]), mc_slope_lo=float(lo), mc_slope_hi=float(hi),
               mc_slope_se=float(fit.bse[1]), mc_intercept=float(fit.params[0]), mc_r2=float(fit.rsquared),
               points=int(ok.sum()))
    ex = np.isfinite(y_ex)
    if ex.sum() >= 2:
        efit = sm.OLS(y_ex[ex], sm.add_constant(T[ex])).fit()
        out.update(exact_rate=float(efit.params[1]), exact_intercept=float(efit.params[0]))
    else:
        out.update(exact_rate=math.nan, exact_intercept=math.nan)
    out["agree"] = bool(math.isfinite(out["exact_rate"]) and lo <= out["exact_rate"] <= hi)
    return out


def growth(family=None, behavior=None, *, estimator="seq", horizons=DEFAULT_HORIZONS, quantity="second_moment", n=1024,
           replications=400, seed=0, backend="auto", workers=1, store=None, progress=False,
           scheduler=None) -> pd.DataFrame:
    r"""Fit the growth of log E[f²] (or log Var f) of one estimator against T, next to the exact rate.

    Parameters
    ----------
    family : Family, str or dict, optional
        MDP family (default ``Family(name="iid", reward="random")``: one context and a constant
        reward, where the rate is known in closed form).
    behavior : Behavior or dict, optional
        Behaviour model (default :data:`DEFAULT_BEHAVIOR`, per-context χ² = 0.05).
    estimator : str
        One estimator specification (default ``"seq"``).
    horizons : iterable of int or str
        At least 3 horizons.
    quantity : {"second_moment", "variance"}
        The fitted quantity (see the module docstring).
    n, replications, seed, backend, workers, store, progress, scheduler
        As in :func:`~tokis.analysis.horizon.horizon`.

    Returns
    -------
    pandas.DataFrame
        One row per ``T``: ``T``, ``exact_log_second_moment``, ``mc_log_second_moment``,
        ``exact_log_variance``, ``mc_log_variance``, then the horizon table's columns. ``attrs``:
        ``fit`` (the dict of :func:`fit_growth`, plus ``chi2_rate`` = log(1+χ²) when the
        behaviour model is a pure χ² perturbation, else NaN), and the cell counts.
    """
    family = as_family(family if family is not None else Family(name="iid", reward="random"))
    behavior = as_behavior(behavior, DEFAULT_BEHAVIOR)
    spec = parse_estimator(estimator)
    quantity = _choice(quantity, "quantity", QUANTITIES)
    Ts = parse_horizons(horizons)
    if len(Ts) < 3:
        raise ValueError(f"the growth fit needs at least 3 horizons, got {len(Ts)}")
    # independent replications per horizon (the sampler's streams are shared across horizons for
    # one seed, which would correlate the points of the regression)
    points = [dataclasses.replace(p, seed=_horizon_seed(seed, p.mdp.horizon))
              for p in horizon_points(family, behavior, Ts)]
    table = run_sweep(points, [spec], n=n, replications=replications, seed=seed, backend=backend, store=store,
                      workers=workers, progress=progress, desc="growth", scheduler=scheduler)
    exact_sm, exact_var = zip(*(_exact_logs(p.mdp, p.target, p.behavior, spec) for p in points))
    n_ = table["n"].to_numpy(dtype=float)
    var = n_ * table["mc_std"].to_numpy(dtype=float) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        mc_var = np.log(var)
        mc_sm = np.log(var + table["mc_mean"].to_numpy(dtype=float) ** 2)
    front = pd.DataFrame(dict(T=table["T"], exact_log_second_moment=exact_sm, mc_log_second_moment=mc_sm,
                              exact_log_variance=exact_var, mc_log_variance=mc_var))
    out = pd.concat([front, table.drop(columns=["T"])], axis=1)
    out.attrs.update(table.attrs)
    fit = fit_growth(out, quantity=quantity)
    only_chi2 = behavior.chi2 is not None and _only(behavior, "chi2")
    fit["chi2_rate"] = math.log1p(behavior.chi2) if only_chi2 else math.nan
    fit["estimator"] = spec.label
    out.attrs.update(fit=fit, family=family.label, behavior=behavior.label)
    return out


def _horizon_seed(seed, T: int) -> int:
    """Seed of horizon ``T``'s replications: a fixed function of ``(seed, T)``."""
    from .._core._rng import check_seed

    return int(np.random.SeedSequence([check_seed(seed), int(T)]).generate_state(1, dtype=np.uint64)[0])


def _only(behavior: Behavior, field: str) -> bool:
    """Whether ``field`` is the only transformation set on ``behavior``."""
    others = ("kl", "chi2", "temperature", "top_k", "top_p", "round")
    return all(getattr(behavior, f) is None for f in others if f != field)
