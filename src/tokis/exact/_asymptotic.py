r"""Delta-method (asymptotic) moments of self-normalised estimators.

snis is ``N/D`` with ``N = mean_i W_i G_i``, ``D = mean_i W_i``; with ``b = E[W]``,
``theta = E[WG]/b`` and ``N/D = theta + (N - theta D)/b - (N - theta D)(D - b)/b^2 + ...``:

- limit ``theta``; per-sample asymptotic variance ``E[W^2 (G - theta)^2] / b^2``
  (``n Var(snis) -> `` this);
- ``E[N/D] = theta + (theta E[W^2] - E[W^2 G]) / (n b^2) + O(n^-2)``, because
  ``Cov(N - theta D, D) = (E[W^2 G] - theta E[W^2]) / n``.

wpdis is ``sum_t N_t / D_t`` with ``N_t = mean_i W_{i,<=t} rew_{i,t}`` and ``D_t = mean_i W_{i,<=t}``.
Each term linearises as above with ``b_t = E[W_{<=t}]``, ``theta_t = E[W_{<=t} rew_t]/b_t``, so the
influence function is ``psi = sum_t W_{<=t} (rew_t - theta_t) / b_t`` (mean 0): the pdis
statistic with per-step rewards ``(rew_t - theta_t)/b_t``, including the steps after a sequence
ended (reward 0, weight ``W``). Limit ``sum_t theta_t``, variance ``E[psi^2]``, O(1/n) bias
``sum_t (theta_t E[W_{<=t}^2] - E[W_{<=t}^2 rew_t]) / (n b_t^2)``.

References
----------
Owen (2013), *Monte Carlo theory*, ch. 9 (ratio estimators and the delta method); Precup,
Sutton, Singh (2000) (per-decision importance sampling).
"""

from __future__ import annotations

import math

import numpy as np

from ._errors import NoExactMethodError
from ._recursions import multiplicative, pdis, wpdis_stats
from ._results import _from_log_moments, _signed_exp

__all__ = ["ratio_asymptotic", "per_decision_ratio_asymptotic"]


def ratio_asymptotic(pair, log_r, name: str = "the self-normalised estimator"):
    """(theta, log_var, bias_coef) of a self-normalised product weight ``exp(sum y)`` by the delta method.

    ``log_r`` is the per-step table of ``y`` (``log pi - log mu`` for snis).
    """
    res = multiplicative(pair, log_r)
    w1, wg = float(res.first[0, 0]), float(res.first[0, 1])
    if not w1 > 0:
        raise NoExactMethodError(f"{name} is undefined: E_mu[W] = 0 (the target puts no mass on the "
                         "behaviour's support)")
    theta = wg / w1
    log_b = float(res.scale1[0]) + math.log(w1)
    res2 = multiplicative(pair, log_r, shift=theta)
    v21, v22, s2 = float(res2.second[0, 1]), float(res2.second[0, 2]), float(res2.scale2[0])
    log_var = (s2 + math.log(v22) - 2.0 * log_b) if v22 > 0 else -math.inf
    coef = _signed_exp(-v21, s2 - 2.0 * log_b)
    return theta, log_var, coef


def per_decision_ratio_asymptotic(pair):
    """(sum theta_t, log_var, bias_coef) of a self-normalised per-decision form by the delta method.

    ``pair.log_r`` holds the per-step table of ``y`` (``log pi - log mu`` for wpdis).
    """
    b, theta, c_val, c_scale = wpdis_stats(pair)
    coef = float(sum(_signed_exp(-float(v), float(s) - 2.0 * math.log(bt)) for v, s, bt in zip(c_val, c_scale, b)))
    q = theta / b
    beta = -(np.cumsum(q[::-1])[::-1] - q)  # -sum_{s > t} theta_s / b_s
    # per-step reward (rho - theta_t) / b_t, passed as an affine map of rho (no (T, S, V) array)
    (v1, s1), (v2, s2) = pdis(pair, pair.mdp.step_reward, 1.0 / b, beta, u_shift=theta, u_div=b)
    _, log_var, _ = _from_log_moments(v1, s1, v2, s2)
    return float(theta.sum()), log_var, coef
