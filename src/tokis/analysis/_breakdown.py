r"""Delta-method breakdown checks of the asymptotic rows of the Monte Carlo harness.

Asymptotic rows and delta-method breakdown
------------------------------------------
For the ratio estimators (snis, wpdis) :func:`tokis.exact.moments` has no finite recursion and
returns the delta method (method ``"asymptotic"``): ``exact_mean`` is
:math:`J + b_\infty + c/n` (the limit plus the O(1/n) bias term), ``exact_std`` is the
first-order std :math:`\sigma/\sqrt n` and ``exact_mse`` is :math:`(b_\infty + c/n)^2 + \sigma^2/n`.
They sit in the ``exact_*`` columns (the ``method`` column says ``"asymptotic"``), but they are
approximations, and at long horizons or small ``n`` the expansion breaks down and gives absurd
numbers (a bias of 1e7 for an estimate that lies in [0, 1]). Every asymptotic row is therefore
checked; it is marked ``asymptotic_breakdown`` when any of these fails (the failed checks are
named in ``breakdown_reason``):

``non_finite``
    The delta-method mean or std is not a finite number.
``mean_out_of_range``
    ``exact_mean`` lies outside ``[estimate_lo, estimate_hi]``. snis is a convex combination
    of the observed returns, :math:`\sum_i W_i G_i / \sum_i W_i`, and wpdis a sum over steps of
    convex combinations of the step rewards; so both estimates, hence their means, lie in
    :math:`[\sum_t \ell_t, \sum_t u_t]` where :math:`[\ell_t, u_t]` bounds every reward a
    sequence can collect at step ``t`` (:func:`estimate_bounds`, from the MDP's reward tables;
    it contains 0, the reward of an ended sequence and of a step whose weights all vanish).
    In particular :math:`|\text{bias}| \le u - \ell` (:math:`J` lies in the same interval).
``std_over_half_range``
    ``exact_std`` exceeds ``(estimate_hi - estimate_lo) / 2``: a random variable confined to
    an interval of length :math:`L` has a std of at most :math:`L/2` (Popoviciu's inequality).
``bias_1n_over_std``
    The O(1/n) bias term :math:`|c/n|` (``delta_bias_1n``) exceeds the first-order std. The
    expansion orders its terms as :math:`n^{-1/2}` (std) before :math:`n^{-1}` (bias); when the
    second is larger the series is not in its asymptotic regime.
``normalizer_cv_over_1``
    The coefficient of variation of the normaliser :math:`D = \frac1n\sum_i W_i`,
    ``normalizer_cv`` :math:`= \sqrt{(E_\mu[W^2]/E_\mu[W]^2 - 1)/n}` (exact:
    :math:`E_\mu[W]^2/E_\mu[W^2]` is the population ESS fraction), exceeds 1. The delta method
    expands :math:`1/D` around :math:`E[D]` as a power series in :math:`\delta = D/E[D] - 1`,
    which converges only for :math:`|\delta| < 1`; with :math:`\mathrm{sd}(\delta) > 1` a
    typical batch lies outside that range. (For snis,
    Cauchy-Schwarz gives :math:`|c/n| \le \mathrm{cv}(D)\cdot\sigma/\sqrt n`, so
    ``bias_1n_over_std`` can only fail together with this check; wpdis has one normaliser per
    step and the last one, :math:`W_{\le T} = W`, is the one checked.)

These are necessary conditions, derived from the estimator's range and the form of the
expansion: a row that passes them is not certified accurate (the ``std!`` and ``z!`` flags
of the printed tables still apply), but a row that fails them is not to be read as the truth:
the first three checks catch values the estimator cannot have, the last two an expansion used
outside its range of validity. The raw
numbers stay in the table (and in the CSV files); ``z`` is NaN and ``std_underestimated``
False on a broken-down row (there is no trustworthy exact value to compare with), and the
printed tables, plots and overtake computations of the sweeps leave its ``exact_*`` values out
(:func:`breakdown_mask`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["BREAKDOWN_CHECKS", "estimate_bounds", "delta_method_checks", "breakdown_mask", "no_checks",
           "normalizer_cv"]

#: Names of the delta-method breakdown checks (see the module docstring), in the order
#: ``breakdown_reason`` lists them.
BREAKDOWN_CHECKS = ("non_finite", "mean_out_of_range", "std_over_half_range", "bias_1n_over_std",
                    "normalizer_cv_over_1")


def estimate_bounds(mdp) -> tuple[float, float]:
    r"""An interval that contains every value of a self-normalised estimate (snis, wpdis).

    With :math:`[\ell_t, u_t]` the smallest interval that contains 0 and every reward a
    sequence can collect at step ``t`` (the step reward of every token emitted from a context
    reachable at ``t``, plus the terminal reward at the context reached when the token ends the
    sequence: ``eos``, or ``t = T - 1``; under Bernoulli noise the observed terminal reward, 0
    or 1), every return lies in :math:`[\sum_t \ell_t, \sum_t u_t]`, and so does every convex
    combination of returns (snis) and every sum over steps of convex combinations of step
    rewards (wpdis; a step whose weights all vanish contributes 0). The MDP's expected return
    :math:`J(\pi)` and the mean of such an estimate lie there too. Contexts are those reachable
    from the start distribution through any tokens (the policies are not consulted), so the
    interval holds for every pair of policies. The per-step sum is what wpdis can reach (each
    step's weighted average may pick a different sequence); for snis, whose estimate lies
    between the smallest and the largest return, it is wider than needed when rewards come at
    different steps (eos, step rewards), and equal to the range of the returns otherwise.

    Parameters
    ----------
    mdp : TokenMDP

    Returns
    -------
    (lo, hi) : tuple of float
        ``lo <= 0 <= hi``.
    """
    nc, step, T, eos = mdp.next_context, mdp.step_reward, mdp.horizon, mdp.eos
    term = mdp.terminal_reward
    if mdp.reward_noise == "bernoulli":  # observed: 0 or 1 (always 0 where p = 0, always 1 where p = 1)
        t_lo, t_hi = (term >= 1.0).astype(np.float64), (term > 0.0).astype(np.float64)
    else:
        t_lo = t_hi = term
    ends = np.zeros(nc.shape[1], dtype=bool)
    if eos is not None:
        ends[eos] = True
    live = mdp.start > 0  # contexts reachable at step t (through tokens other than eos)

    def envelope(live, last):
        """(min, max) over live contexts of the reward at a step, including 0."""
        done = np.ones_like(ends) if last else ends
        lo = step[live] + np.where(done, t_lo[nc[live]], 0.0)
        hi = step[live] + np.where(done, t_hi[nc[live]], 0.0)
        return min(0.0, float(lo.min())), max(0.0, float(hi.max()))

    lo = hi = 0.0
    t = 0
    while t < T - 1:
        nxt = np.zeros_like(live)
        nxt[nc[live][:, ~ends]] = True
        a, b = envelope(live, False)
        if np.array_equal(nxt, live):  # a fixed point: the same envelope for every step up to T - 2
            k = T - 1 - t
            lo, hi, t = lo + k * a, hi + k * b, T - 1
            break
        lo, hi, live, t = lo + a, hi + b, nxt, t + 1
    a, b = envelope(live, True)
    return lo + a, hi + b


def delta_method_checks(*, exact_mean, exact_std, delta_bias_1n, estimate_lo, estimate_hi,
                        normalizer_cv) -> tuple[str, ...]:
    """The delta-method breakdown checks (:data:`BREAKDOWN_CHECKS`) that an asymptotic row fails.

    Parameters
    ----------
    exact_mean, exact_std : float
        Delta-method mean and first-order std of the estimate at ``n``.
    delta_bias_1n : float
        The O(1/n) bias term ``bias_coef / n``.
    estimate_lo, estimate_hi : float
        Bounds of the estimate (:func:`estimate_bounds`).
    normalizer_cv : float
        Coefficient of variation of the normaliser ``mean_i W_i``.

    Returns
    -------
    tuple of str
        The names of the failed checks (see the module docstring); empty when none fails.
    """
    failed = []
    if math.isfinite(exact_mean) and math.isfinite(exact_std) and math.isfinite(delta_bias_1n):
        tol = 1e-9 * max(1.0, abs(estimate_lo), abs(estimate_hi))  # rounding, not breakdown
        if not estimate_lo - tol <= exact_mean <= estimate_hi + tol:
            failed.append("mean_out_of_range")
        if exact_std > (estimate_hi - estimate_lo) / 2 + tol:
            failed.append("std_over_half_range")
        if abs(delta_bias_1n) > exact_std:
            failed.append("bias_1n_over_std")
    else:
        failed.append("non_finite")
    if not normalizer_cv <= 1.0:  # NaN fails too
        failed.append("normalizer_cv_over_1")
    return tuple(failed)


def breakdown_mask(table: pd.DataFrame) -> np.ndarray:
    """Rows whose ``exact_*`` values must not be shown or used: the delta method broke down.

    True where ``asymptotic_breakdown`` is True, and on ``method == "asymptotic"`` rows that were
    never checked (``asymptotic_breakdown`` missing or NaN: cells stored before the checks
    existed); False elsewhere, including tables without a ``method`` column.

    Parameters
    ----------
    table : pandas.DataFrame

    Returns
    -------
    bool array, shape (len(table),)
    """
    if "method" not in table:
        return np.zeros(len(table), dtype=bool)
    asym = (table["method"] == "asymptotic").to_numpy()
    if "asymptotic_breakdown" not in table:
        return asym
    flag = table["asymptotic_breakdown"]
    return asym & (flag.isna() | flag.fillna(False).astype(bool)).to_numpy()


def no_checks() -> dict:
    """The check columns of a row that is not asymptotic: NaN, False and an empty reason."""
    nan = float("nan")
    return dict(estimate_lo=nan, estimate_hi=nan, delta_bias_1n=nan, normalizer_cv=nan, asymptotic_breakdown=False,
                breakdown_reason="")


def normalizer_cv(mdp, target, behavior, spec, n: int) -> float:
    r"""Coefficient of variation of the normaliser :math:`D = \frac1n\sum_i w_i` of a ratio estimator.

    ``w`` is the weight of the estimator's form (``W`` for snis and wpdis, whose last-step
    normaliser it is): the same form reduced by the mean, on the MDP with terminal reward 1 and
    no step reward, has the per-sample statistic ``w``, so its exact moments give
    :math:`\mathrm{cv}(D) = \sqrt{Var(w) / (n E[w]^2)}` (log space: no overflow).
    """
    from .. import envs, exact
    from ..estimators import define

    declared = spec.resolve()
    weight = define(f"{declared.name}_weight", declared.form, params=dict(declared.params))
    unit = envs.TokenMDP(mdp.next_context, horizon=mdp.horizon, terminal_reward=np.ones(mdp.num_contexts),
                         start=mdp.start, eos=mdp.eos)
    m = exact.moments(unit, target, behavior, weight, **spec.kwargs)
    if not m.mean > 0:
        return math.inf
    with np.errstate(over="ignore"):
        return float(np.exp(0.5 * (m.log_variance - 2.0 * math.log(m.mean) - math.log(n))))


