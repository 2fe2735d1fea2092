r"""Forward and backward dynamic programs over (step, context).

Notation: ``p_t(a | c)`` the policy at step ``t``; ``nxt = mdp.next_context``. The forward
pass propagates the probability ``d_t(c)`` of still running at step ``t`` in context ``c``;
the backward pass computes ``V_t(c)`` and ``Q_t(c, a)``. Each step costs O(S*V).
"""

from __future__ import annotations

import numpy as np

from .._mdp import TokenMDP
from .._policy import Policy, as_policy

__all__ = ["occupancy", "final_distribution", "state_values", "q_values", "value", "check_pair"]


def check_pair(mdp, policy, name: str = "policy") -> Policy:
    """Validate ``mdp`` and ``policy`` together and return the Policy."""
    if not isinstance(mdp, TokenMDP):
        raise TypeError(f"mdp must be a TokenMDP, got {type(mdp).__name__}")
    policy = as_policy(policy, name)
    policy.check_compatible(mdp, name)
    return policy


def _continue_mask(mdp: TokenMDP) -> np.ndarray:
    """(V,) float: 1 for tokens after which the sequence continues, 0 for eos."""
    cont = np.ones(mdp.vocab_size)
    if mdp.eos is not None:
        cont[mdp.eos] = 0.0
    return cont


def _forward(mdp: TokenMDP, probs: np.ndarray):
    """Return (d (T, S), final (S,)) for per-step probabilities ``probs`` (T, S, V)."""
    T, S = mdp.horizon, mdp.num_contexts
    nxt = mdp.next_context.ravel()
    cont = _continue_mask(mdp)
    d = np.empty((T, S))
    final = np.zeros(S)
    cur = mdp.start.astype(np.float64)
    for t in range(T):
        d[t] = cur
        flow = cur[:, None] * probs[t]
        if t == T - 1:
            final += np.bincount(nxt, weights=flow.ravel(), minlength=S)
            break
        if mdp.eos is not None:
            final += np.bincount(mdp.next_context[:, mdp.eos], weights=flow[:, mdp.eos], minlength=S)
        cur = np.bincount(nxt, weights=(flow * cont).ravel(), minlength=S)
    return d, final


def _backward(mdp: TokenMDP, probs: np.ndarray):
    """Return (V (T+1, S), Q (T, S, V)) for per-step probabilities ``probs`` (T, S, V)."""
    T, S, V = mdp.horizon, mdp.num_contexts, mdp.vocab_size
    nxt = mdp.next_context
    term_next = mdp.terminal_reward[nxt]  # (S, V)
    cont = _continue_mask(mdp).astype(bool)
    values = np.empty((T + 1, S))
    q = np.empty((T, S, V))
    values[T] = mdp.terminal_reward
    for t in range(T - 1, -1, -1):
        future = np.where(cont[None, :], values[t + 1][nxt], term_next)
        q[t] = mdp.step_reward + future
        values[t] = np.einsum("sa,sa->s", probs[t], q[t])
    return values, q


def occupancy(mdp, policy) -> np.ndarray:
    r"""Probability of still running at step ``t`` in context ``c``.

    .. math:: d_0 = \text{start},\quad
              d_{t+1}(c') = \sum_{c,a:\, nxt(c,a)=c',\, a\neq eos} d_t(c)\, p_t(a\mid c).

    Parameters
    ----------
    mdp : TokenMDP
    policy : Policy

    Returns
    -------
    d : float array, shape (T, S)
        ``d[t].sum()`` is the probability that the sequence has more than ``t`` tokens.
    """
    policy = check_pair(mdp, policy)
    return _forward(mdp, policy.expand_probs(mdp.horizon))[0]


def final_distribution(mdp, policy) -> np.ndarray:
    """Distribution of the final context ``c_final`` (where the terminal reward is read), shape (S,)."""
    policy = check_pair(mdp, policy)
    return _forward(mdp, policy.expand_probs(mdp.horizon))[1]


def state_values(mdp, policy) -> np.ndarray:
    r"""Expected return from step ``t`` in context ``c`` (given the sequence is running).

    .. math:: V_T(c) = r^{term}(c),\quad V_t(c) = \sum_a p_t(a\mid c)\, Q_t(c, a).

    Returns
    -------
    V : float array, shape (T + 1, S)
    """
    policy = check_pair(mdp, policy)
    return _backward(mdp, policy.expand_probs(mdp.horizon))[0]


def q_values(mdp, policy) -> np.ndarray:
    r"""Expected return from step ``t`` in context ``c`` after emitting token ``a``.

    .. math:: Q_t(c, a) = r^{step}(c, a) +
              \begin{cases} r^{term}(nxt(c,a)) & a = eos \\ V_{t+1}(nxt(c,a)) & \text{otherwise}\end{cases}

    Returns
    -------
    Q : float array, shape (T, S, V)
    """
    policy = check_pair(mdp, policy)
    return _backward(mdp, policy.expand_probs(mdp.horizon))[1]


def value(mdp, policy) -> float:
    r"""The expected return :math:`J(p) = \sum_c \text{start}(c)\, V_0(c)`."""
    policy = check_pair(mdp, policy)
    values, _ = _backward(mdp, policy.expand_probs(mdp.horizon))
    return float(mdp.start @ values[0])
