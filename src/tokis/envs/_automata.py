r"""Reward automata (count of a token, pattern seen, parity, last token) and products of automata.

A :class:`RewardAutomaton` reads the emitted tokens and pays a terminal reward by its final state;
:func:`product` combines a token MDP's context automaton with it. The product of a policy
automaton with ``P`` contexts and a reward automaton with ``K`` states has ``S = P * K``
contexts, flattened as ``c = p * K + k``; :func:`policy_context` recovers ``p`` and
:func:`lift_policy` expands a policy defined on the policy contexts.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from .._core._validate import as_int_array, check_finite, check_int, check_positive_int
from ._mdp import TokenMDP
from ._policy import Policy, as_policy

__all__ = ["RewardAutomaton", "count_automaton", "pattern_automaton", "parity_automaton", "last_token_automaton",
           "product", "policy_context", "lift_policy", "MAX_CONTEXTS", "MAX_TABLE_ENTRIES"]

#: Largest number of contexts a builder will create.
MAX_CONTEXTS = 2_000_000
#: Largest ``next_context`` table (contexts x vocabulary) a builder will create (512 MB of int64).
MAX_TABLE_ENTRIES = 1 << 26

_COMBINE = ("mul", "add")

# --------------------------------------------------------------------------------------------
# Reward automata
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RewardAutomaton:
    r"""A deterministic automaton over tokens with a reward per state.

    After reading tokens ``a_0 .. a_{L-1}`` from ``start`` the automaton is in state
    ``k_L = next_state[k_{L-1}, a_{L-1}]``; the terminal reward of the sequence is
    ``reward[k_L]``. End-of-sequence tokens are read like any other token.

    Parameters
    ----------
    next_state : int array, shape (K, V)
        Transition table, entries in ``[0, K)``.
    reward : float array, shape (K,)
        Reward of each state (finite).
    start : int
        Initial state in ``[0, K)``.
    name : str
        A short description (e.g. ``"count(2>=3)"``).

    Attributes
    ----------
    num_states, vocab_size : int
        ``K`` and ``V``.

    Notes
    -----
    Arrays are stored as read-only copies. Equality is identity (arrays do not compare as
    booleans); compare ``next_state``, ``reward`` and ``start`` explicitly.
    """

    next_state: np.ndarray
    reward: np.ndarray
    start: int
    name: str = "automaton"

    def __post_init__(self):
        ns = as_int_array(self.next_state, "next_state", ndim=2)
        K, V = ns.shape
        if K < 1 or V < 1:
            raise ValueError(f"next_state must have at least one state and one token, got shape {ns.shape}")
        if ns.min() < 0 or ns.max() >= K:
            raise ValueError(f"next_state entries must be states in [0, {K}), got values in [{ns.min()}, {ns.max()}]")
        rw = np.asarray(self.reward)
        if rw.dtype == object or not (np.issubdtype(rw.dtype, np.number) or rw.dtype == bool):
            raise TypeError(f"reward must be numeric, got dtype {rw.dtype}")
        rw = np.array(rw, dtype=np.float64)
        if rw.shape != (K,):
            raise ValueError(f"reward must have shape ({K},), got {rw.shape}")
        check_finite(rw, "reward")
        start = check_int(self.start, "start")
        if not 0 <= start < K:
            raise ValueError(f"start must be a state in [0, {K}), got {start}")
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a str, got {type(self.name).__name__}")
        ns = np.array(ns, dtype=np.int64)
        ns.setflags(write=False)
        rw.setflags(write=False)
        object.__setattr__(self, "next_state", ns)
        object.__setattr__(self, "reward", rw)
        object.__setattr__(self, "start", start)

    @property
    def num_states(self) -> int:
        return int(self.next_state.shape[0])

    @property
    def vocab_size(self) -> int:
        return int(self.next_state.shape[1])

    def __repr__(self) -> str:
        return f"RewardAutomaton(name={self.name!r}, num_states={self.num_states}, vocab_size={self.vocab_size})"


def _check_token(token, vocab: int, name: str) -> int:
    tok = check_int(token, name)
    if not 0 <= tok < vocab:
        raise ValueError(f"{name} must be a token in [0, {vocab}), got {tok}")
    return tok


def count_automaton(vocab, token, threshold) -> RewardAutomaton:
    r"""Reward 1 once ``token`` has been emitted at least ``threshold`` times.

    States ``k = min(#{t : a_t = token}, threshold)``, so ``K = threshold + 1``;
    ``reward[k] = 1{k = threshold}``.

    Parameters
    ----------
    vocab : int
        Vocabulary size ``V >= 1``.
    token : int
        The counted token, in ``[0, V)``.
    threshold : int
        Count needed for reward 1, ``>= 1``.

    Returns
    -------
    RewardAutomaton
        ``next_state`` shape (threshold + 1, V).
    """
    V = check_positive_int(vocab, "vocab")
    tok = _check_token(token, V, "token")
    m = check_positive_int(threshold, "threshold")
    K = m + 1
    if K * V > MAX_TABLE_ENTRIES:
        raise ValueError(f"threshold={m} with vocab={V} gives a transition table over {MAX_TABLE_ENTRIES} entries")
    k = np.arange(K)
    ns = np.repeat(k[:, None], V, axis=1)
    ns[:, tok] = np.minimum(k + 1, m)
    reward = (k == m).astype(np.float64)
    return RewardAutomaton(ns, reward, 0, f"count({tok}>={m})")


def pattern_automaton(vocab, pattern) -> RewardAutomaton:
    r"""Reward 1 once the contiguous token ``pattern`` has appeared (Knuth-Morris-Pratt automaton).

    State ``q in {0..m}`` (``m = len(pattern)``) is the length of the longest prefix of the
    pattern that is a suffix of the tokens read so far; state ``m`` (pattern seen) is absorbing
    and the only rewarded state.

    Parameters
    ----------
    vocab : int
        Vocabulary size ``V >= 1``.
    pattern : sequence of int, length m >= 1
        Tokens in ``[0, V)``.

    Returns
    -------
    RewardAutomaton
        ``next_state`` shape (m + 1, V).
    """
    V = check_positive_int(vocab, "vocab")
    if isinstance(pattern, (numbers.Integral, np.integer)) and not isinstance(pattern, bool):
        pattern = [pattern]
    pat = as_int_array(pattern, "pattern", ndim=1)
    m = int(pat.size)
    if m == 0:
        raise ValueError("pattern must be non-empty")
    if pat.min() < 0 or pat.max() >= V:
        raise ValueError(f"pattern tokens must lie in [0, {V}), got values in [{pat.min()}, {pat.max()}]")
    if (m + 1) * V > MAX_TABLE_ENTRIES:
        raise ValueError(
            f"pattern of length {m} with vocab={V} gives a transition table over {MAX_TABLE_ENTRIES} entries"
        )
    ns = np.zeros((m + 1, V), dtype=np.int64)
    ns[0, pat[0]] = 1
    x = 0  # state reached by the pattern shifted by one (the KMP failure state)
    for q in range(1, m):
        ns[q] = ns[x]
        ns[q, pat[q]] = q + 1
        x = int(ns[x, pat[q]])
    ns[m] = m
    reward = np.zeros(m + 1)
    reward[m] = 1.0
    return RewardAutomaton(ns, reward, 0, "pattern(" + ",".join(str(int(a)) for a in pat) + ")")


def parity_automaton(vocab, token) -> RewardAutomaton:
    r"""Reward 1 when ``token`` has been emitted an odd number of times.

    Two states ``k = #{t : a_t = token} mod 2``; ``reward = [0, 1]``.
    """
    V = check_positive_int(vocab, "vocab")
    tok = _check_token(token, V, "token")
    ns = np.repeat(np.arange(2)[:, None], V, axis=1)
    ns[:, tok] = [1, 0]
    return RewardAutomaton(ns, np.array([0.0, 1.0]), 0, f"parity({tok})")


def last_token_automaton(vocab, token) -> RewardAutomaton:
    r"""Reward 1 when the last token emitted (``eos`` included) equals ``token``.

    Two states ``k = 1{last token = token}`` (``k = 0`` before any token); ``reward = [0, 1]``.
    """
    V = check_positive_int(vocab, "vocab")
    tok = _check_token(token, V, "token")
    ns = np.zeros((2, V), dtype=np.int64)
    ns[:, tok] = 1
    return RewardAutomaton(ns, np.array([0.0, 1.0]), 0, f"last({tok})")


# --------------------------------------------------------------------------------------------
# Products
# --------------------------------------------------------------------------------------------


def product(a, b, *, combine="mul"):
    r"""Product of a context automaton with a reward automaton (or of two reward automata).

    Parameters
    ----------
    a : TokenMDP or RewardAutomaton
        The policy MDP (``P`` contexts) or a first reward automaton (``K_a`` states).
    b : RewardAutomaton
        The reward automaton (``K`` states); same vocabulary as ``a``.
    combine : {"mul", "add"}
        Only for two automata: the reward of the pair state ``(i, j)`` is
        ``a.reward[i] * b.reward[j]`` ("mul": both conditions, for 0/1 rewards) or
        ``a.reward[i] + b.reward[j]`` ("add").

    Returns
    -------
    TokenMDP or RewardAutomaton
        For ``a`` a TokenMDP: an MDP with ``S = P * K`` contexts ``c = p * K + k`` and

        * ``next_context[c, x] = next_context_a[p, x] * K + next_state_b[k, x]``;
        * ``terminal_reward[c] = reward_b[k]`` (the MDP's own terminal reward is replaced);
        * ``step_reward[c, x] = step_reward_a[p, x]`` (kept when ``a`` has one);
        * ``start[c] = start_a[p] * 1{k = start_b}``;
        * ``horizon``, ``eos`` and ``reward_noise`` of ``a``.

        For two automata: the pair automaton with states ``i * K + j`` and start
        ``start_a * K + start_b``.

    Raises
    ------
    TypeError
        If ``a`` is not a TokenMDP or RewardAutomaton, or ``b`` not a RewardAutomaton.
    ValueError
        On a vocabulary mismatch, too many contexts, or an unknown ``combine``.
    """
    if not isinstance(b, RewardAutomaton):
        raise TypeError(f"b must be a RewardAutomaton, got {type(b).__name__}")
    if not isinstance(a, (TokenMDP, RewardAutomaton)):
        raise TypeError(f"a must be a TokenMDP or a RewardAutomaton, got {type(a).__name__}")
    if combine not in _COMBINE:
        raise ValueError(f"combine must be one of {_COMBINE}, got {combine!r}")
    V = a.vocab_size
    if b.vocab_size != V:
        raise ValueError(f"vocabulary mismatch: a has {V} tokens, b has {b.vocab_size}")
    P = a.num_contexts if isinstance(a, TokenMDP) else a.num_states
    K = b.num_states
    S = P * K
    if S > MAX_CONTEXTS or S * V > MAX_TABLE_ENTRIES:
        raise ValueError(
            f"the product has {P} x {K} = {S} contexts with vocab={V}; the limit is {MAX_CONTEXTS} contexts "
            f"and {MAX_TABLE_ENTRIES} table entries"
        )
    first_next = a.next_context if isinstance(a, TokenMDP) else a.next_state
    nxt = (first_next[:, None, :] * K + b.next_state[None, :, :]).reshape(S, V)
    if isinstance(a, RewardAutomaton):
        if combine == "mul":
            reward = (a.reward[:, None] * b.reward[None, :]).ravel()
        else:
            reward = (a.reward[:, None] + b.reward[None, :]).ravel()
        name = f"{a.name}{'*' if combine == 'mul' else '+'}{b.name}"
        return RewardAutomaton(nxt, reward, a.start * K + b.start, name)
    term = np.tile(b.reward, P)
    step = np.repeat(a.step_reward, K, axis=0) if a.has_step_reward else None
    start = np.zeros((P, K))
    start[:, b.start] = a.start
    return TokenMDP(
        nxt,
        horizon=a.horizon,
        terminal_reward=term,
        step_reward=step,
        start=start.ravel(),
        eos=a.eos,
        reward_noise=a.reward_noise,
    )


def policy_context(mdp, automaton) -> np.ndarray:
    r"""Policy context ``p = c // K`` of each context of ``product(base, automaton)``.

    Parameters
    ----------
    mdp : TokenMDP
        An MDP built as a product with ``automaton`` (by :func:`product` or a builder's
        ``reward=automaton``); only the context count is checked.
    automaton : RewardAutomaton
        The reward automaton (``K`` states).

    Returns
    -------
    int64 array, shape (S,)
        ``np.arange(S) // K``.
    """
    if not isinstance(mdp, TokenMDP):
        raise TypeError(f"mdp must be a TokenMDP, got {type(mdp).__name__}")
    if not isinstance(automaton, RewardAutomaton):
        raise TypeError(f"automaton must be a RewardAutomaton, got {type(automaton).__name__}")
    S, K = mdp.num_contexts, automaton.num_states
    if S % K or mdp.vocab_size != automaton.vocab_size:
        raise ValueError(
            f"mdp (S={S}, V={mdp.vocab_size}) is not a product with automaton (K={K}, V={automaton.vocab_size})"
        )
    return np.arange(S, dtype=np.int64) // K


def _check_contexts(contexts, S: int, name: str = "contexts") -> np.ndarray:
    ctx = as_int_array(contexts, name, ndim=1)
    if ctx.shape != (S,):
        raise ValueError(f"{name} must have shape ({S},), got {ctx.shape}")
    if S and ctx.min() < 0:
        raise ValueError(f"{name} must hold non-negative policy contexts, got minimum {ctx.min()}")
    return ctx


def lift_policy(policy, contexts) -> Policy:
    r"""Expand a policy defined on policy contexts to the contexts of a larger (product) MDP.

    ``lifted.logits[..., c, :] = policy.logits[..., contexts[c], :]``.

    Parameters
    ----------
    policy : Policy
        Logits (P, V) or (T, P, V) over the policy contexts.
    contexts : int array, shape (S,)
        Policy context of every MDP context, in ``[0, P)`` (e.g. :func:`policy_context`).

    Returns
    -------
    Policy
        Logits (S, V) or (T, S, V).
    """
    pol = as_policy(policy, "policy")
    ctx = as_int_array(contexts, "contexts", ndim=1)
    P = pol.num_contexts
    if ctx.size and (ctx.min() < 0 or ctx.max() >= P):
        raise ValueError(f"contexts must be policy contexts in [0, {P}), got values in [{ctx.min()}, {ctx.max()}]")
    return Policy(pol.logits[..., ctx, :])
