r"""The exact policy gradient of the expected return with respect to softmax logits.

One forward pass (occupancy ``d_t``), one backward pass (``V_t``), then one O(T*S*V) sweep that
forms ``d_t(c) pi_t(a|c) (Q_t(c, a) - V_t(c))`` with ``Q_t`` recomputed on the fly from
``V_{t+1}``, so no ``(T, S, V)`` array of Q is materialised (the stationary gradient needs only
``(S, V)`` memory). The numba kernel has a plain-numpy twin (:func:`_gradient_numpy`, built
from the materialised Q of :func:`._dp._backward_numpy`); the tests check that the two agree.

References
----------
Williams (1992), Simple statistical gradient-following algorithms for connectionist
reinforcement learning. Machine Learning 8, 229-256.
Sutton, McAllester, Singh & Mansour (2000), Policy gradient methods for reinforcement learning
with function approximation. NeurIPS 12 (the policy gradient theorem).
"""

from __future__ import annotations

import numba
import numpy as np

from ..envs._mdp import TokenMDP
from ._dp import _backward, _backward_numpy, _eos_index, _forward, _forward_numpy, _policy_steps, check_pair

__all__ = ["gradient"]


@numba.njit(cache=True)
def _gradient_kernel(nxt, step, term, probs, d, values, eos, T):  # pragma: no cover - compiled
    # out[t] (time-dependent) or out[0] (stationary: summed over t) of
    # d_t(c) p_t(a|c) (Q_t(c, a) - V_t(c)), Q_t(c, a) = step(c, a) + (term or V_{t+1})(nxt(c, a)).
    S, V = nxt.shape
    tdep = probs.shape[0] > 1
    out = np.zeros((probs.shape[0], S, V))
    for t in range(T):
        p = probs[t] if tdep else probs[0]
        g = out[t] if tdep else out[0]
        vn = values[t + 1]
        vt = values[t]
        for c in range(S):
            x = d[t, c]
            if x == 0.0:
                continue
            v = vt[c]
            for a in range(V):
                pa = p[c, a]
                if pa == 0.0:
                    continue
                n = nxt[c, a]
                qa = step[c, a] + (term[n] if a == eos else vn[n])
                g[c, a] += x * pa * (qa - v)
    return out


def _gradient_numpy(mdp: TokenMDP, policy) -> np.ndarray:
    """numpy twin of :func:`gradient`: ``d pi (Q - V)`` from the materialised Q (same shape as the logits)."""
    probs = policy.expand_probs(mdp.horizon)
    d, _ = _forward_numpy(mdp, probs)
    values, q = _backward_numpy(mdp, probs)
    g = d[:, :, None] * probs * (q - values[:-1, :, None])
    return g if policy.time_dependent else g.sum(axis=0)


def gradient(mdp, policy) -> np.ndarray:
    r"""Exact gradient of :math:`J(\pi_\theta) = E_{\pi_\theta}[G]` with respect to the logits.

    By the policy gradient theorem, for softmax logits ``theta_t[c, a]``

    .. math::
        \frac{\partial J}{\partial \theta_t[c, a]} = d^\pi_t(c)\, \pi_t(a \mid c)\,
            \big(Q^\pi_t(c, a) - V^\pi_t(c)\big),

    where ``d^pi_t(c)`` is the probability that the sequence is still running at step ``t`` in
    context ``c`` (:func:`occupancy`), ``Q^pi_t`` the return from step ``t`` after emitting
    ``a`` (:func:`q_values`: step reward, then the continuation, or the terminal reward when
    ``a`` is eos or ``t = T - 1``) and ``V^pi_t(c) = sum_a pi_t(a|c) Q^pi_t(c, a)``
    (:func:`state_values`). For stationary logits ``theta[c, a]`` is shared by every step and
    the gradient is the sum over ``t``. Equivalently (REINFORCE),
    ``grad J = E_pi[G sum_t grad log pi(y_t | c_t)]`` with
    ``d log pi(y_t|c_t) / d theta[c, a'] = 1{c = c_t} (1{a' = y_t} - pi(a'|c_t))``.

    With ``reward_noise="bernoulli"`` this is the gradient of the expected return, so the mean
    terminal reward enters. Tokens with logit ``-inf`` (probability 0) get gradient 0. Each row
    of the gradient sums to 0 over tokens (adding a constant to a row of logits does not change
    the policy). Cost O(T*S*V) time; memory O(T*S) besides the result.

    Parameters
    ----------
    mdp : TokenMDP
    policy : Policy
        Softmax logits ``theta`` of shape (S, V) (stationary) or (T, S, V) (time-dependent).

    Returns
    -------
    grad : float array, shape of ``policy.logits`` ((S, V) or (T, S, V))
        ``grad[..., c, a] = dJ / dtheta[..., c, a]``.

    Raises
    ------
    TypeError
        If ``mdp`` is not a TokenMDP or ``policy`` is not a Policy (or logits array).
    ValueError
        If the policy's shape does not fit the MDP.

    References
    ----------
    Sutton, McAllester, Singh & Mansour (2000), Policy gradient methods for reinforcement
    learning with function approximation; Williams (1992), REINFORCE.
    """
    policy = check_pair(mdp, policy)
    T = mdp.horizon
    probs = _policy_steps(policy)
    d, _ = _forward(mdp, probs)
    values, _ = _backward(mdp, probs, want_q=False)
    out = _gradient_kernel(
        mdp.next_context,
        np.ascontiguousarray(mdp.step_reward, dtype=np.float64),
        np.ascontiguousarray(mdp.terminal_reward, dtype=np.float64),
        probs,
        d,
        values,
        _eos_index(mdp),
        T,
    )
    return out if policy.time_dependent else out[0]
