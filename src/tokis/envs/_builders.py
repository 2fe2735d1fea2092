r"""Builders of token MDPs: n-gram and prefix-tree context automata, reward automata, products.

Every builder returns a :class:`~tokis.envs.TokenMDP` whose contexts summarise the prefix:

* :func:`ngram` -- the last ``k`` tokens (with shorter contexts while fewer than ``k`` tokens
  have been emitted); :func:`iid` is the case ``k = 0`` (one context);
* :func:`prefix_tree` -- the whole prefix (no aliasing; tiny ``V`` and ``T`` only).

Rewards come either from a random terminal reward per context (``reward=None``) or from a
:class:`~tokis.envs.RewardAutomaton` (:mod:`._automata`), in which case the MDP is the product
of the policy automaton with the reward automaton.

Context numbering of a product
------------------------------
The product of a policy automaton with ``P`` contexts and a reward automaton with ``K`` states
has ``S = P * K`` contexts, flattened as ``c = p * K + k`` (``p`` the policy context, ``k`` the
reward state). A policy that should see only the policy part of the context is defined on the
``P`` policy contexts and expanded with :func:`lift_policy` using :func:`policy_context`, or
drawn directly with ``random_policy(mdp, contexts=policy_context(mdp, automaton))``.
"""

from __future__ import annotations

import numbers

import numpy as np

from .._core._validate import check_int, check_positive_int
from ._mdp import TokenMDP
from ._automata import MAX_CONTEXTS, MAX_TABLE_ENTRIES, RewardAutomaton, _check_contexts, _check_token, product
from ._policy import Policy

__all__ = ["iid", "ngram", "prefix_tree", "random_policy", "ngram_index"]


# --------------------------------------------------------------------------------------------
# Context automata
# --------------------------------------------------------------------------------------------


def _ngram_sizes(V: int, k: int, what: str) -> list[int]:
    """Numbers of contexts of each length 0..k, refusing tables over the limits."""
    sizes = []
    total = 0
    for j in range(k + 1):
        sizes.append(V**j)
        total += V**j
        if total > MAX_CONTEXTS or total * V > MAX_TABLE_ENTRIES:
            raise ValueError(
                f"{what} with vocab={V} needs at least {total} contexts ({total * V} table entries); the limits "
                f"are {MAX_CONTEXTS} contexts and {MAX_TABLE_ENTRIES} entries: reduce {what.split('=')[0]} or vocab"
            )
    return sizes


def _ngram_table(V: int, k: int, sizes: list[int]) -> np.ndarray:
    """next_context of the order-k n-gram automaton (see :func:`ngram` for the numbering)."""
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    S = int(offsets[-1])
    nc = np.empty((S, V), dtype=np.int64)
    a = np.arange(V, dtype=np.int64)
    for j in range(k + 1):
        nums = np.arange(sizes[j], dtype=np.int64)[:, None]
        appended = nums * V + a[None, :]
        if j < k:
            nc[offsets[j] : offsets[j + 1]] = offsets[j + 1] + appended
        else:
            nc[offsets[j] : offsets[j + 1]] = offsets[j] + appended % sizes[j]
    return nc


def ngram_index(tokens, vocab: int, order: int) -> int:
    r"""Context of :func:`ngram` (and :func:`prefix_tree`, ``order = horizon``) after ``tokens``.

    With ``w`` the last ``j = min(len(tokens), order)`` tokens (oldest first), the context is
    ``sum_{i<j} V^i + sum_i w_i V^{j-1-i}``.
    """
    V = check_positive_int(vocab, "vocab")
    k = check_positive_int(order, "order", minimum=0)
    toks = [int(x) for x in tokens]
    w = toks[len(toks) - min(len(toks), k) :]
    j = len(w)
    idx = sum(V**i for i in range(j))
    num = 0
    for x in w:
        if not 0 <= x < V:
            raise ValueError(f"tokens must lie in [0, {V}), got {x}")
        num = num * V + x
    return idx + num


def _finish(nc, *, horizon, reward, eos, seed, reward_noise) -> TokenMDP:
    S, V = nc.shape
    if eos is not None:
        _check_token(eos, V, "eos")
    seed = check_int(seed, "seed")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if reward is None:
        term = np.random.default_rng(seed).uniform(0.0, 1.0, size=S)
        return TokenMDP(nc, horizon=horizon, terminal_reward=term, start=0, eos=eos, reward_noise=reward_noise)
    if not isinstance(reward, RewardAutomaton):
        raise TypeError(f"reward must be a RewardAutomaton or None, got {type(reward).__name__}")
    if reward.vocab_size != V:
        raise ValueError(f"reward automaton has vocab {reward.vocab_size}, expected vocab={V}")
    base = TokenMDP(nc, horizon=horizon, start=0, eos=eos, reward_noise=reward_noise)
    return product(base, reward)


def ngram(vocab, order, horizon, *, reward=None, eos=None, seed=0, reward_noise="none") -> TokenMDP:
    r"""Token MDP whose context is the last ``order`` tokens.

    Contexts are the token tuples ``w`` of length ``j = 0..k`` (``k = order``): before ``k``
    tokens have been emitted the context is the whole (shorter) prefix, starting from the empty
    context 0 ("no tokens yet"); afterwards it is the last ``k`` tokens. A tuple
    ``w = (w_0, .., w_{j-1})`` (oldest first) has index ``sum_{i<j} V^i + sum_i w_i V^{j-1-i}``
    (see :func:`ngram_index`), so ``S = sum_{j<=k} V^j`` and ``order = 0`` is :func:`iid`.
    Appending ``a`` to ``w`` gives ``w + (a,)`` while ``j < k`` and drops the oldest token
    when ``j = k``.

    Parameters
    ----------
    vocab : int
        Vocabulary size ``V >= 1``.
    order : int
        ``k >= 0``.
    horizon : int
        ``T >= 1``.
    reward : RewardAutomaton, optional
        When given, the MDP is ``product(ngram_mdp, reward)`` (``S * K`` contexts numbered
        ``c * K + state``; terminal reward from the automaton). When None, the terminal reward
        of each context is drawn ``Uniform[0, 1]`` from ``np.random.default_rng(seed)``
        (a reward depending on the last ``k`` tokens).
    eos : int, optional
        End-of-sequence token in ``[0, V)``.
    seed : int
        Seed of the random terminal reward (unused when ``reward`` is given).
    reward_noise : {"none", "bernoulli"}
        Passed to :class:`TokenMDP`.

    Returns
    -------
    TokenMDP
        Starts in the empty context (0).

    Raises
    ------
    ValueError
        If the automaton would exceed :data:`MAX_CONTEXTS` contexts or
        :data:`MAX_TABLE_ENTRIES` table entries, or on an invalid argument.
    """
    V = check_positive_int(vocab, "vocab")
    k = check_positive_int(order, "order", minimum=0)
    T = check_positive_int(horizon, "horizon")
    sizes = _ngram_sizes(V, k, f"order={k}")
    return _finish(_ngram_table(V, k, sizes), horizon=T, reward=reward, eos=eos, seed=seed, reward_noise=reward_noise)


def iid(vocab, horizon, *, reward=None, eos=None, seed=0, reward_noise="none") -> TokenMDP:
    r"""Token MDP with a single context (tokens are i.i.d. under any policy): ``ngram(vocab, 0, horizon)``.

    With ``reward=None`` the single terminal reward is ``Uniform[0, 1]`` from ``seed`` (a constant
    return); pass a :class:`RewardAutomaton` for a reward that depends on the tokens (the MDP
    then has ``K`` contexts, one per automaton state). Other parameters as in :func:`ngram`.
    """
    V = check_positive_int(vocab, "vocab")
    T = check_positive_int(horizon, "horizon")
    return _finish(np.zeros((1, V), dtype=np.int64), horizon=T, reward=reward, eos=eos, seed=seed,
                   reward_noise=reward_noise)


def prefix_tree(vocab, horizon, *, reward=None, eos=None, seed=0, reward_noise="none") -> TokenMDP:
    r"""Token MDP whose context is the whole prefix (no aliasing).

    One context per prefix of length ``0..T``: ``S = sum_{t<=T} V^t`` (the numbering of
    ``ngram(vocab, horizon, horizon)``; prefixes of length ``T`` are final contexts only).
    Meant for tiny ``V`` and ``T``. Other parameters as in :func:`ngram`.

    Raises
    ------
    ValueError
        If ``S`` would exceed :data:`MAX_CONTEXTS` (the message names horizon and vocab).
    """
    V = check_positive_int(vocab, "vocab")
    T = check_positive_int(horizon, "horizon")
    sizes = _ngram_sizes(V, T, f"horizon={T}")
    return _finish(_ngram_table(V, T, sizes), horizon=T, reward=reward, eos=eos, seed=seed, reward_noise=reward_noise)


# --------------------------------------------------------------------------------------------
# Random policies
# --------------------------------------------------------------------------------------------


def random_policy(mdp, *, scale=1.0, seed=0, contexts=None, time_dependent=False) -> Policy:
    r"""A random softmax policy with i.i.d. Gaussian logits ``N(0, scale^2)``.

    Parameters
    ----------
    mdp : TokenMDP
        The MDP (``S`` contexts, ``V`` tokens, horizon ``T``).
    scale : float
        Standard deviation of the logits, finite and ``>= 0`` (0 gives the uniform policy).
    seed : int
        Seed of ``np.random.default_rng``.
    contexts : int array, shape (S,), optional
        Policy context of each MDP context (e.g. :func:`policy_context` for a product with a
        reward automaton). Logits are then drawn for the ``P = max(contexts) + 1`` policy
        contexts, shape (P, V), and expanded with :func:`lift_policy`, so the policy ignores the
        reward state. By default every context gets its own logits.
    time_dependent : bool
        Draw logits (T, P, V) (one row per step) instead of (P, V).

    Returns
    -------
    Policy
        Logits (S, V), or (T, S, V) when ``time_dependent``; the draws are
        ``default_rng(seed).normal(0, scale, size=(T,) P, V)``.
    """
    if not isinstance(mdp, TokenMDP):
        raise TypeError(f"mdp must be a TokenMDP, got {type(mdp).__name__}")
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"scale must be a real number, got {type(scale).__name__}")
    scale = float(scale)
    if not np.isfinite(scale) or scale < 0:
        raise ValueError(f"scale must be finite and >= 0, got {scale}")
    seed = check_int(seed, "seed")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not isinstance(time_dependent, (bool, np.bool_)):
        raise TypeError(f"time_dependent must be a bool, got {type(time_dependent).__name__}")
    S, V = mdp.num_contexts, mdp.vocab_size
    ctx = None if contexts is None else _check_contexts(contexts, S)
    P = S if ctx is None else int(ctx.max()) + 1
    shape = (mdp.horizon, P, V) if time_dependent else (P, V)
    logits = np.random.default_rng(seed).normal(0.0, 1.0, size=shape) * scale
    if ctx is not None:
        logits = logits[..., ctx, :]
    return Policy(logits)
