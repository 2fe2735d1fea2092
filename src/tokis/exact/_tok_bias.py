r"""The exact bias of the token-level surrogate, decomposed (and the population ESS fraction).

References
----------
Kakade & Langford (2002), Approximately optimal approximate reinforcement learning;
Schulman et al. (2015), Trust region policy optimization (the CPI/TRPO surrogate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._divergence import log_second_moment, support_mismatch
from ._dp import _backward, _forward, check_pair

__all__ = ["TokBiasDecomposition", "tok_bias_decomposition", "population_ess"]


@dataclass(frozen=True)
class TokBiasDecomposition:
    r"""Exact bias of the token-level surrogate ``f = (1 + sum_t (r_t - 1)) G``, decomposed two ways.

    Sums run over steps ``t``, contexts ``c`` and tokens ``a``; ``rho^mu_t(c) = E_mu[R_{<t} 1{c_t = c}]``
    is the step reward collected before ``t`` by sequences running in ``c``. Since
    ``E_mu[(r_t - 1) G] = sum_c sum_{a: mu(a|c) > 0} (pi - mu)(a|c) (d^mu_t(c) Q^mu_t(c, a) + rho^mu_t(c))``,

    .. math::
        \text{surrogate} = E_\mu[f] = J(\mu) + \sum_{t,c} \sum_{a:\, \mu(a|c) > 0}
            (\pi - \mu)(a|c)\, \big(d^\mu_t(c)\, Q^\mu_t(c, a) + \rho^\mu_t(c)\big).

    Under full support (``mu > 0`` wherever ``pi > 0``) ``sum_a (pi - mu) = 0`` removes the
    ``rho`` term and this is the CPI / TRPO surrogate ``J(mu) + sum d^mu (pi - mu) Q^mu``.
    Sampled tokens always have ``mu > 0``, so under support mismatch the sum misses the tokens
    ``mu`` never emits, and ``E_mu[r_t - 1 | c_t] = -pi(mu = 0 | c_t)`` also weights the past
    rewards. Using ``J(pi) - J(mu) = sum d^mu (pi - mu) Q^pi`` and the performance-difference
    identity ``J(pi) - J(mu) = sum d^pi (pi - mu) Q^mu`` (both over all tokens):

    .. math::
        \text{bias} = \text{value\_mismatch} + \text{support\_mismatch}
                    = \text{state\_mismatch} + \text{support\_mismatch}

    Attributes
    ----------
    target_value, behavior_value : float
        ``J(pi)`` and ``J(mu)``.
    surrogate : float
        ``E_mu[f]`` (the CPI / TRPO surrogate under full support).
    bias : float
        ``surrogate - J(pi)``.
    value_mismatch : float
        ``sum_t sum_c d^mu_t(c) sum_a (pi - mu)(a|c) (Q^mu_t - Q^pi_t)(c, a)``: states from mu,
        the value of the continuation is mu's instead of pi's.
    state_mismatch : float
        ``sum_t sum_c (d^mu_t - d^pi_t)(c) sum_a (pi - mu)(a|c) Q^mu_t(c, a)``: advantages under
        Q^mu, weighted by mu's occupancy instead of pi's.
    support_mismatch : float
        ``-sum_t sum_c sum_{a: mu(a|c) = 0} pi(a|c) (d^mu_t(c) Q^mu_t(c, a) + rho^mu_t(c))``: the
        part of the first-order correction that sampling from mu never sees (0 when mu > 0
        wherever pi > 0).
    """

    target_value: float
    behavior_value: float
    surrogate: float
    bias: float
    value_mismatch: float
    state_mismatch: float
    support_mismatch: float


def population_ess(mdp, target, behavior, *, log: bool = False) -> float:
    r"""Population effective-sample-size fraction of sequence weights, ``E_mu[W]^2 / E_mu[W^2]``.

    Kish's ESS of n samples, ``(sum w)^2 / sum w^2``, concentrates at ``n E_mu[W]^2 / E_mu[W^2]``.
    With full support ``E_mu[W] = 1`` and this is ``1 / E_mu[W^2]``; where mu misses part of
    pi's support, ``E_mu[W] = 1 - missing mass`` (:func:`support_mismatch`) and the fraction
    stays in (0, 1]. ``log E_mu[W^2]`` comes from :func:`log_second_moment` (log space), so long
    horizons give tiny but correct fractions (0.0 only below the smallest float).

    Parameters
    ----------
    mdp : TokenMDP
    target, behavior : Policy
    log : bool
        Return the natural log of the fraction instead (finite where the fraction underflows).

    Returns
    -------
    float
        In (0, 1].
    """
    log_m2 = log_second_moment(mdp, target, behavior)
    mean_w = 1.0 - support_mismatch(mdp, target, behavior)
    if not (mean_w > 0 and math.isfinite(log_m2)):
        raise ValueError("population_ess is undefined: E_mu[W] = 0 (the target puts no mass on the behaviour's support)")
    log_frac = 2.0 * math.log(mean_w) - log_m2
    return log_frac if log else math.exp(log_frac)


def _past_rewards(mdp, probs: np.ndarray, d: np.ndarray) -> np.ndarray:
    r"""``rho_t(c) = E[R_{<t} 1{c_t = c, running}]`` (T, S) for per-step probabilities (T, S, V)."""
    T, S = d.shape
    nxt = mdp.next_context.ravel()
    cont = np.ones(mdp.vocab_size)
    if mdp.eos is not None:
        cont[mdp.eos] = 0.0
    rho = np.zeros((T, S))
    for t in range(T - 1):
        flow = (rho[t][:, None] + d[t][:, None] * mdp.step_reward) * probs[t] * cont
        rho[t + 1] = np.bincount(nxt, weights=flow.ravel(), minlength=S)
    return rho


def tok_bias_decomposition(mdp, target, behavior) -> TokBiasDecomposition:
    r"""Exact bias of the tok statistic, decomposed as value mismatch and as state mismatch.

    See :class:`TokBiasDecomposition` for the formulas. All terms come from one forward pass
    (occupancies ``d^mu``, ``d^pi``) and one backward pass (``Q^mu``, ``Q^pi``) per policy.
    """
    target = check_pair(mdp, target, "target")
    behavior = check_pair(mdp, behavior, "behavior")
    T = mdp.horizon
    pi = target.expand_probs(T)
    mu = behavior.expand_probs(T)
    d_mu, _ = _forward(mdp, mu)
    d_pi, _ = _forward(mdp, pi)
    v_mu, q_mu = _backward(mdp, mu)
    v_pi, q_pi = _backward(mdp, pi)
    j_mu = float(mdp.start @ v_mu[0])
    j_pi = float(mdp.start @ v_pi[0])
    diff = pi - mu
    on = mu > 0
    rho = _past_rewards(mdp, mu, d_mu)
    off_pi = np.where(on, 0.0, pi)
    value_mismatch = float(np.einsum("tc,tca,tca->", d_mu, diff, q_mu - q_pi))
    state_mismatch = float(np.einsum("tc,tca,tca->", d_mu - d_pi, diff, q_mu))
    support = -float(np.einsum("tc,tca,tca->", d_mu, off_pi, q_mu) + np.einsum("tc,tca->", rho, off_pi))
    surrogate = j_mu + float(np.einsum("tc,tca,tca->", d_mu, diff, q_mu)) + support
    return TokBiasDecomposition(
        target_value=j_pi,
        behavior_value=j_mu,
        surrogate=surrogate,
        bias=surrogate - j_pi,
        value_mismatch=value_mismatch,
        state_mismatch=state_mismatch,
        support_mismatch=support,
    )
