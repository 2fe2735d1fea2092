r"""Forward and backward dynamic programs over (step, context).

Notation: ``p_t(a | c)`` the policy at step ``t``; ``nxt = mdp.next_context``. The forward
pass propagates the probability ``d_t(c)`` of still running at step ``t`` in context ``c``;
the backward pass computes ``V_t(c)`` and ``Q_t(c, a)``; the log-space forward pass sums
products of an arbitrary non-negative per-token kernel over whole sequences without overflow.
Each step costs O(S*V).

The loops run in numba kernels (``_*_kernel``, compiled once and cached on disk). Each has a
plain-numpy twin (``_*_numpy``) kept as a readable reference; the tests check that the two
agree. Kernels take per-step arrays of shape ``(Tp, S, V)`` with ``Tp = T`` (time-dependent)
or ``Tp = 1`` (stationary: the one slice is reused at every step, so no ``(T, S, V)`` array is
materialised), and ``eos = -1`` when the MDP has no eos token.
"""

from __future__ import annotations

import numba
import numpy as np

from ..envs._mdp import TokenMDP
from ..envs._policy import Policy, as_policy

__all__ = ["occupancy", "final_distribution", "state_values", "q_values", "value", "check_pair"]


def check_pair(mdp, policy, name: str = "policy") -> Policy:
    """Validate ``mdp`` and ``policy`` together and return the Policy.

    Raises
    ------
    TypeError
        If ``mdp`` is not a TokenMDP or ``policy`` is not a Policy (or logits array).
    ValueError
        If the policy's shape does not fit the MDP (contexts, vocabulary, horizon).
    """
    if not isinstance(mdp, TokenMDP):
        raise TypeError(f"mdp must be a TokenMDP, got {type(mdp).__name__}")
    policy = as_policy(policy, name)
    policy.check_compatible(mdp, name)
    return policy


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


#: Problem size ``T * S * V`` from which the compiled DP kernels run: below it the numpy twins
#: (one vectorised step per t) take milliseconds, while compiling the three kernels costs about
#: 4.6 s on a cold cache. Measured on the 2-core machine of this repository's CI.
COMPILE_MIN_WORK = 1 << 16


def _interpret(mdp: TokenMDP) -> bool:
    """Whether ``mdp`` is small enough for the numpy twins (see :data:`COMPILE_MIN_WORK`)."""
    return mdp.horizon * mdp.num_contexts * mdp.vocab_size < COMPILE_MIN_WORK


def _eos_index(mdp: TokenMDP) -> int:
    return -1 if mdp.eos is None else int(mdp.eos)


def _steps(arr, horizon: int) -> np.ndarray:
    """Per-step array as a C-contiguous float64 ``(Tp, S, V)`` with ``Tp in {1, horizon}``.

    Accepts ``(S, V)`` (stationary), ``(1, S, V)`` or ``(T, S, V)``; a broadcast view whose
    leading stride is 0 (``Policy.expand_probs`` of a stationary policy) collapses to one slice.
    """
    a = np.asarray(arr, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    elif a.ndim != 3 or a.shape[0] not in (1, horizon):
        raise ValueError(f"per-step array must have shape (S, V), (1, S, V) or ({horizon}, S, V), got {a.shape}")
    if a.shape[0] > 1 and a.strides[0] == 0:
        a = a[:1]
    return np.ascontiguousarray(a)


def _policy_steps(policy: Policy) -> np.ndarray:
    """A policy's probabilities as ``(Tp, S, V)`` without expanding a stationary policy."""
    p = policy.probs
    return np.ascontiguousarray(p if p.ndim == 3 else p[None])


# ---------------------------------------------------------------------------------------------
# numba kernels
# ---------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def _forward_kernel(nxt, probs, eos, start, T):  # pragma: no cover - compiled
    S, V = nxt.shape
    tdep = probs.shape[0] > 1
    d = np.empty((T, S))
    final = np.zeros(S)
    cur = start.copy()
    new = np.empty(S)
    for t in range(T):
        p = probs[t] if tdep else probs[0]
        d[t, :] = cur
        new[:] = 0.0
        last = t == T - 1
        for c in range(S):
            x = cur[c]
            if x == 0.0:
                continue
            for a in range(V):
                f = x * p[c, a]
                if last or a == eos:
                    final[nxt[c, a]] += f
                else:
                    new[nxt[c, a]] += f
        cur, new = new, cur
    return d, final


@numba.njit(cache=True)
def _backward_kernel(nxt, step, term, probs, eos, T, want_q):  # pragma: no cover - compiled
    S, V = nxt.shape
    tdep = probs.shape[0] > 1
    values = np.empty((T + 1, S))
    q = np.empty((T if want_q else 0, S, V))
    values[T, :] = term
    for t in range(T - 1, -1, -1):
        p = probs[t] if tdep else probs[0]
        vn = values[t + 1]
        for c in range(S):
            acc = 0.0
            for a in range(V):
                n = nxt[c, a]
                qa = step[c, a] + (term[n] if a == eos else vn[n])
                if want_q:
                    q[t, c, a] = qa
                acc += p[c, a] * qa
            values[t, c] = acc
    return values, q


@numba.njit(cache=True)
def _log_forward_kernel(nxt, kern, row_shift, eos, log_start, T):  # pragma: no cover - compiled
    # Sum over sequences of start(c0) * prod_t K_t(c_t, a_t) where
    # K_t(c, a) = kern[t, c, a] * exp(row_shift[t, c]) (kern in [0, 1] after a per-row shift).
    # The running vector is kept in log space (S logs per step); the final mass is kept as
    # (scale, vector) so neither can overflow. Returns (log_scale, scaled final vector (S,)).
    S, V = nxt.shape
    tdep = kern.shape[0] > 1
    lu = log_start.copy()
    w = np.empty(S)
    new = np.empty(S)
    fin = np.zeros(S)
    fin_scale = -np.inf
    for t in range(T):
        k = kern[t] if tdep else kern[0]
        rs = row_shift[t] if tdep else row_shift[0]
        m = -np.inf
        for c in range(S):
            w[c] = lu[c] + rs[c]
            if w[c] > m:
                m = w[c]
        if m == -np.inf:
            break
        last = t == T - 1
        if last or eos >= 0:
            # bring the final vector to scale m (or the new contributions to its scale)
            if m > fin_scale:
                if fin_scale > -np.inf:
                    f = np.exp(fin_scale - m)
                    for c in range(S):
                        fin[c] *= f
                fin_scale = m
            g = np.exp(m - fin_scale)
        else:
            g = 0.0
        new[:] = 0.0
        for c in range(S):
            if w[c] == -np.inf:
                continue
            x = np.exp(w[c] - m)
            for a in range(V):
                f = x * k[c, a]
                if last or a == eos:
                    fin[nxt[c, a]] += f * g
                else:
                    new[nxt[c, a]] += f
        if not last:
            for c in range(S):
                lu[c] = np.log(new[c]) + m if new[c] > 0.0 else -np.inf
    return fin_scale, fin


# ---------------------------------------------------------------------------------------------
# numpy twins (reference implementations checked against the kernels by the tests; they run
# the problems below COMPILE_MIN_WORK)
# ---------------------------------------------------------------------------------------------


def _forward_numpy(mdp: TokenMDP, probs: np.ndarray):
    """numpy twin of :func:`_forward` (``probs`` of shape (T, S, V), broadcast views allowed)."""
    T, S = mdp.horizon, mdp.num_contexts
    nxt = mdp.next_context.ravel()
    cont = np.ones(mdp.vocab_size)
    if mdp.eos is not None:
        cont[mdp.eos] = 0.0
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


def _backward_numpy(mdp: TokenMDP, probs: np.ndarray):
    """numpy twin of :func:`_backward`."""
    T, S, V = mdp.horizon, mdp.num_contexts, mdp.vocab_size
    nxt = mdp.next_context
    term_next = mdp.terminal_reward[nxt]
    cont = np.ones(V, dtype=bool)
    if mdp.eos is not None:
        cont[mdp.eos] = False
    values = np.empty((T + 1, S))
    q = np.empty((T, S, V))
    values[T] = mdp.terminal_reward
    for t in range(T - 1, -1, -1):
        future = np.where(cont[None, :], values[t + 1][nxt], term_next)
        q[t] = mdp.step_reward + future
        values[t] = np.einsum("sa,sa->s", probs[t], q[t])
    return values, q


def _log_forward_numpy(mdp: TokenMDP, log_kernel: np.ndarray):
    """numpy twin of :func:`_log_forward`: log of the final-context masses, shape (S,)."""
    T, S = mdp.horizon, mdp.num_contexts
    lk = np.broadcast_to(np.asarray(log_kernel, dtype=np.float64), (T, S, mdp.vocab_size))
    nxt = mdp.next_context
    with np.errstate(divide="ignore"):
        lu = np.log(mdp.start)
    log_final = np.full(S, -np.inf)

    def scatter(lw, targets):
        # log of sum over entries of exp(lw) grouped by target context
        m = lw.max()
        if m == -np.inf:
            return np.full(S, -np.inf)
        with np.errstate(divide="ignore"):
            return np.log(np.bincount(targets.ravel(), weights=np.exp(lw - m).ravel(), minlength=S)) + m

    for t in range(T):
        lw = lu[:, None] + lk[t]
        if t == T - 1:
            log_final = np.logaddexp(log_final, scatter(lw, nxt))
            break
        if mdp.eos is not None:
            log_final = np.logaddexp(log_final, scatter(lw[:, mdp.eos], nxt[:, mdp.eos]))
            lw = lw.copy()
            lw[:, mdp.eos] = -np.inf
        lu = scatter(lw, nxt)
    return log_final


# ---------------------------------------------------------------------------------------------
# private entry points (shared with _moments and _divergence)
# ---------------------------------------------------------------------------------------------


def _forward(mdp: TokenMDP, probs):
    r"""Forward pass with an arbitrary non-negative per-token kernel.

    Parameters
    ----------
    mdp : TokenMDP
    probs : float array, shape (T, S, V), (1, S, V) or (S, V)
        Per-step kernel ``k_t(c, a)`` (a policy's probabilities, or any non-negative weights).

    Returns
    -------
    d : float array, shape (T, S)
        ``d_0 = start``, ``d_{t+1}(c') = sum_{c, a != eos: nxt(c,a) = c'} d_t(c) k_t(c, a)``.
    final : float array, shape (S,)
        Mass arriving at each final context (after eos, or after the last step).
    """
    T = mdp.horizon
    k = _steps(probs, T)
    if _interpret(mdp):
        return _forward_numpy(mdp, np.broadcast_to(k, (T,) + k.shape[1:]))
    return _forward_kernel(mdp.next_context, k, _eos_index(mdp), mdp.start.astype(np.float64), T)


def _backward(mdp: TokenMDP, probs, *, want_q: bool = True):
    r"""Backward pass: ``(V (T+1, S), Q (T, S, V))`` for per-step probabilities ``probs``.

    ``probs`` as in :func:`_forward`. With ``want_q=False`` the Q array is not materialised
    and an empty ``(0, S, V)`` array is returned in its place.
    """
    T = mdp.horizon
    if _interpret(mdp):
        k = _steps(probs, T)
        values, q = _backward_numpy(mdp, np.broadcast_to(k, (T,) + k.shape[1:]))
        return values, (q if want_q else np.empty((0,) + q.shape[1:]))
    return _backward_kernel(
        mdp.next_context,
        np.ascontiguousarray(mdp.step_reward, dtype=np.float64),
        np.ascontiguousarray(mdp.terminal_reward, dtype=np.float64),
        _steps(probs, T),
        _eos_index(mdp),
        T,
        bool(want_q),
    )


def _log_forward(mdp: TokenMDP, log_kernel) -> np.ndarray:
    r"""Log-space sum over whole sequences of a product of per-token kernels.

    .. math:: F(c) = \log \sum_{y:\, c_{final}(y) = c} \text{start}(c_0)
              \prod_{t < |y|} K_t(c_t, a_t),\qquad K_t = e^{\text{log\_kernel}[t]}

    computed with a per-row shift of the kernel and a per-step shift of the running vector, so
    it is finite wherever the true log-sum is representable (T in the thousands with
    ``K = pi^2 / mu``). ``-inf`` kernel entries are exact zeros.

    Parameters
    ----------
    mdp : TokenMDP
    log_kernel : float array, shape (T, S, V), (1, S, V) or (S, V)
        No NaN or ``+inf``.

    Returns
    -------
    log_final : float array, shape (S,)
        ``logsumexp(log_final)`` is the log of the total sum.
    """
    T = mdp.horizon
    lk = _steps(log_kernel, T)
    if _interpret(mdp):
        return _log_forward_numpy(mdp, lk)
    row_shift = lk.max(axis=2)
    with np.errstate(invalid="ignore"):
        kern = np.exp(lk - row_shift[:, :, None])
    kern[~np.isfinite(row_shift)] = 0.0
    with np.errstate(divide="ignore"):
        log_start = np.log(mdp.start.astype(np.float64))
    scale, fin = _log_forward_kernel(mdp.next_context, kern, row_shift, _eos_index(mdp), log_start, T)
    with np.errstate(divide="ignore"):
        return np.log(fin) + scale


# ---------------------------------------------------------------------------------------------
# public functions
# ---------------------------------------------------------------------------------------------


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
        ``d[t].sum()`` is the probability that the sequence has more than ``t`` tokens, so
        ``d.sum()`` is the expected length ``E_p[L]``.
    """
    policy = check_pair(mdp, policy)
    return _forward(mdp, _policy_steps(policy))[0]


def final_distribution(mdp, policy) -> np.ndarray:
    r"""Distribution of the final context ``c_final`` (where the terminal reward is read).

    The context after the last token: after ``eos`` or after step ``T - 1``.

    Returns
    -------
    q : float array, shape (S,)
        Sums to 1; :math:`E_p[r^{term}(c_{final})] = q \cdot r^{term}`.
    """
    policy = check_pair(mdp, policy)
    return _forward(mdp, _policy_steps(policy))[1]


def state_values(mdp, policy) -> np.ndarray:
    r"""Expected return from step ``t`` in context ``c`` (given the sequence is running).

    .. math:: V_T(c) = r^{term}(c),\quad V_t(c) = \sum_a p_t(a\mid c)\, Q_t(c, a).

    Returns
    -------
    V : float array, shape (T + 1, S)
        Defined for every context, reachable or not (the recursion does not depend on it).
    """
    policy = check_pair(mdp, policy)
    return _backward(mdp, _policy_steps(policy), want_q=False)[0]


def q_values(mdp, policy) -> np.ndarray:
    r"""Expected return from step ``t`` in context ``c`` after emitting token ``a``.

    .. math:: Q_t(c, a) = r^{step}(c, a) +
              \begin{cases} r^{term}(nxt(c,a)) & a = eos \\ V_{t+1}(nxt(c,a)) & \text{otherwise}\end{cases}

    Returns
    -------
    Q : float array, shape (T, S, V)
        ``T * S * V * 8`` bytes (2 GiB at T = 1024, S = 4096, V = 64).
    """
    policy = check_pair(mdp, policy)
    return _backward(mdp, _policy_steps(policy), want_q=True)[1]


def value(mdp, policy) -> float:
    r"""The expected return :math:`J(p) = E_p[G] = \sum_c \text{start}(c)\, V_0(c)`."""
    policy = check_pair(mdp, policy)
    values, _ = _backward(mdp, _policy_steps(policy), want_q=False)
    return float(mdp.start @ values[0])
