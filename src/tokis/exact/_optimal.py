r"""The optimal expected return of a token MDP and an optimal policy, by backward DP with max.

The numba kernel has a plain-numpy twin (:func:`_optimal_numpy`); the tests check that the two
agree.

References
----------
Bellman (1957), Dynamic Programming; Puterman (1994), Markov Decision Processes, section 4.5
(finite-horizon backward induction).
"""

from __future__ import annotations

import numba
import numpy as np

from ..envs._mdp import TokenMDP
from ..envs._policy import Policy
from ._dp import _eos_index

__all__ = ["optimal_value"]


@numba.njit(cache=True)
def _optimal_kernel(nxt, step, term, eos, T):  # pragma: no cover - compiled
    # V*_T = term; Q*_t(c, a) = step(c, a) + (term if a == eos else V*_{t+1})(nxt(c, a));
    # V*_t(c) = max_a Q*_t(c, a), argmax the first (smallest) maximising token.
    S, V = nxt.shape
    values = np.empty((T + 1, S))
    best = np.empty((T, S), dtype=np.int64)
    values[T, :] = term
    for t in range(T - 1, -1, -1):
        vn = values[t + 1]
        for c in range(S):
            m = 0.0
            k = -1
            for a in range(V):
                n = nxt[c, a]
                qa = step[c, a] + (term[n] if a == eos else vn[n])
                if k < 0 or qa > m:
                    m = qa
                    k = a
            values[t, c] = m
            best[t, c] = k
    return values, best


def _optimal_numpy(mdp: TokenMDP):
    """numpy twin of :func:`_optimal_kernel`: ``(V* (T+1, S), argmax (T, S))``."""
    T, S, V = mdp.horizon, mdp.num_contexts, mdp.vocab_size
    nxt = mdp.next_context
    term_next = mdp.terminal_reward[nxt]
    cont = np.ones(V, dtype=bool)
    if mdp.eos is not None:
        cont[mdp.eos] = False
    values = np.empty((T + 1, S))
    best = np.empty((T, S), dtype=np.int64)
    values[T] = mdp.terminal_reward
    for t in range(T - 1, -1, -1):
        q = mdp.step_reward + np.where(cont[None, :], values[t + 1][nxt], term_next)
        best[t] = np.argmax(q, axis=1)
        values[t] = np.take_along_axis(q, best[t][:, None], axis=1)[:, 0]
    return values, best


def _greedy_logits(best: np.ndarray, V: int) -> np.ndarray:
    """Logits (T, S, V): 0 on ``best[t, c]``, ``-inf`` elsewhere."""
    logits = np.full(best.shape + (V,), -np.inf)
    np.put_along_axis(logits, best[..., None], 0.0, axis=-1)
    return logits


def optimal_value(mdp) -> tuple[float, Policy]:
    r"""The best expected return over all policies, and a deterministic policy that attains it.

    Backward induction over ``(t, c)``:

    .. math::
        V^*_T(c) = r^{term}(c),\quad
        Q^*_t(c, a) = r^{step}(c, a) + \begin{cases} r^{term}(nxt(c,a)) & a = eos \\
                                                      V^*_{t+1}(nxt(c,a)) & \text{otherwise}\end{cases},\quad
        V^*_t(c) = \max_a Q^*_t(c, a),

    and :math:`J^* = \sum_c \text{start}(c)\, V^*_0(c)`. Because the context automaton
    summarises the prefix, the best policy over all (history-dependent, stochastic) policies is
    Markov in ``(t, c)`` and deterministic. Since the transitions are deterministic given the
    tokens, ``J*`` is also the start-weighted best return of a single sequence per start context:
    :math:`J^* = \sum_{c_0} \text{start}(c_0) \max_y G(c_0, y)`.

    A stationary optimum need not exist: the remaining horizon counts down while the context
    may stay the same. (With a last-token context, a step reward for token 0 and a terminal
    reward for ending on token 1, the optimum emits 0 and switches to 1 at the last step, in
    the same context.) The returned policy is therefore time-dependent.

    With ``reward_noise="bernoulli"`` the mean terminal reward enters (the expected return).
    Cost O(T*S*V) time; the returned policy holds (T, S, V) arrays (logits, log-probabilities,
    probabilities: 3 * 8 * T * S * V bytes).

    Parameters
    ----------
    mdp : TokenMDP

    Returns
    -------
    J_star : float
        ``max_pi J(pi)``.
    policy : Policy
        Time-dependent logits of shape (T, S, V): 0 on the maximising token of ``Q*_t(c, .)``
        and ``-inf`` elsewhere; exact ties go to the smallest token index. Defined in every
        context, reachable or not. ``value(mdp, policy) == J_star``.

    Raises
    ------
    TypeError
        If ``mdp`` is not a TokenMDP.
    """
    if not isinstance(mdp, TokenMDP):
        raise TypeError(f"mdp must be a TokenMDP, got {type(mdp).__name__}")
    values, best = _optimal_kernel(
        mdp.next_context,
        np.ascontiguousarray(mdp.step_reward, dtype=np.float64),
        np.ascontiguousarray(mdp.terminal_reward, dtype=np.float64),
        _eos_index(mdp),
        mdp.horizon,
    )
    return float(mdp.start @ values[0]), Policy(_greedy_logits(best, mdp.vocab_size))
