"""Sampling rollouts from a behaviour policy, with a counter-based generator."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._core._validate import check_positive_int
from ._mdp import TokenMDP
from ._policy import Policy, as_policy
from .._core._rng import STREAM_REWARD, STREAM_TOKEN, check_seed, uniforms

__all__ = ["Rollouts", "sample", "sampling_tables", "BACKENDS"]

BACKENDS = ("auto", "numpy", "numba", "cupy")


@dataclass(frozen=True)
class Rollouts:
    """Sequences sampled from a behaviour policy, padded to the horizon.

    Attributes
    ----------
    tokens : int64 (n, T)
        Sampled tokens; ``-1`` after the sequence ended.
    mask : bool (n, T)
        True where a token exists.
    contexts : int64 (n, T)
        Context in which each token was emitted; ``-1`` at padding.
    logp_behavior : float64 (n, T)
        ``log mu(a_t | c_t)``; 0 at padding.
    logp_target : float64 (n, T) or None
        ``log pi(a_t | c_t)`` when a target was given; 0 at padding.
    rewards : float64 (n, T)
        Step rewards, with the (observed) terminal reward added at the last real step.
    returns : float64 (n,)
        ``rewards.sum(axis=1)``.
    log_ratio : float64 (n, T) or None
        ``logp_target - logp_behavior`` (0 at padding; ``-inf`` where pi = 0).
    lengths : int64 (n,)
        Number of tokens per sequence.
    final_contexts : int64 (n,)
        Context after the last token (where the terminal reward is read).
    """

    tokens: np.ndarray
    mask: np.ndarray
    contexts: np.ndarray
    logp_behavior: np.ndarray
    logp_target: np.ndarray | None
    rewards: np.ndarray
    returns: np.ndarray
    log_ratio: np.ndarray | None
    lengths: np.ndarray
    final_contexts: np.ndarray

    @property
    def n(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def horizon(self) -> int:
        return int(self.tokens.shape[1])


def sampling_tables(policy: Policy) -> np.ndarray:
    """Inverse-CDF tables ``cdf[(t,) c, a]`` shared by every backend.

    ``cdf`` is the normalised cumulative sum of the probabilities, with every entry from the
    last positive-probability token on set to 2.0, so a uniform ``u in [0, 1)`` maps to the
    token ``#{a : cdf[c, a] <= u}`` (the first ``a`` with ``u < cdf[c, a]``): tokens of
    probability zero are never drawn, whatever the rounding.
    """
    p = policy.probs
    cdf = np.cumsum(p, axis=-1)
    cdf = cdf / cdf[..., -1:]
    V = p.shape[-1]
    last = V - 1 - np.argmax((p > 0)[..., ::-1], axis=-1)  # last token with positive probability
    idx = np.arange(V)
    cdf = np.where(idx >= last[..., None], 2.0, cdf)
    return np.ascontiguousarray(cdf)


def _validate_backend(backend) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def _sample_numpy(mdp: TokenMDP, cdf: np.ndarray, n: int, seed: int, chunk: int = 1 << 16):
    T = mdp.horizon
    nc = mdp.next_context
    eos = -1 if mdp.eos is None else mdp.eos
    tokens = np.full((n, T), -1, dtype=np.int64)
    contexts = np.full((n, T), -1, dtype=np.int64)
    start_cdf = np.cumsum(mdp.start)
    start_cdf = start_cdf / start_cdf[-1]
    last = len(mdp.start) - 1 - np.argmax((mdp.start > 0)[::-1])
    start_cdf[last:] = 2.0
    timedep = cdf.ndim == 3
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        rows = np.arange(lo, hi)
        # the start context uses step index T of the token stream (never a token step)
        u0 = uniforms(seed, STREAM_TOKEN, rows, T)
        ctx = (start_cdf[None, :] <= u0[:, None]).sum(axis=1)
        alive = np.ones(hi - lo, dtype=bool)
        for t in range(T):
            live = np.flatnonzero(alive)
            if live.size == 0:
                break
            u = uniforms(seed, STREAM_TOKEN, rows[live], t)
            c = ctx[live]
            table = cdf[t] if timedep else cdf
            a = (table[c] <= u[:, None]).sum(axis=1)
            tokens[rows[live], t] = a
            contexts[rows[live], t] = c
            ctx[live] = nc[c, a]
            if eos >= 0:
                alive[live[a == eos]] = False
    return tokens, contexts


def _assemble(mdp, behavior, target, tokens, contexts, seed) -> Rollouts:
    n, T = tokens.shape
    mask = tokens >= 0
    lengths = mask.sum(axis=1)
    rows = np.arange(n)
    tok = np.where(mask, tokens, 0)
    ctx = np.where(mask, contexts, 0)
    steps = np.broadcast_to(np.arange(T), (n, T))

    def logp(policy):
        lp = policy.log_probs[steps, ctx, tok] if policy.time_dependent else policy.log_probs[ctx, tok]
        return np.where(mask, lp, 0.0)

    lpb = logp(behavior)
    final = mdp.next_context[ctx[rows, lengths - 1], tok[rows, lengths - 1]]
    rewards = np.where(mask, mdp.step_reward[ctx, tok], 0.0)
    term = mdp.terminal_reward[final]
    if mdp.reward_noise == "bernoulli":
        term = (uniforms(seed, STREAM_REWARD, rows, 0) < term).astype(np.float64)
    rewards[rows, lengths - 1] += term
    if target is not None:
        lpt = logp(target)
        with np.errstate(invalid="ignore"):
            lr = np.where(mask, lpt - lpb, 0.0)
    else:
        lpt = lr = None
    return Rollouts(
        tokens=tokens,
        mask=mask,
        contexts=contexts,
        logp_behavior=lpb,
        logp_target=lpt,
        rewards=rewards,
        returns=rewards.sum(axis=1),
        log_ratio=lr,
        lengths=lengths,
        final_contexts=final,
    )


def sample(mdp, behavior, n, *, target=None, seed=0, backend="auto") -> Rollouts:
    """Sample ``n`` sequences from ``behavior`` in ``mdp``.

    Token ``t`` of sequence ``i`` is drawn by inverse CDF (:func:`sampling_tables`) from the
    counter-based uniform ``u(seed, token stream, i, t)``; the start context from
    ``u(seed, token stream, i, T)``; Bernoulli reward noise from ``u(seed, reward stream, i, 0)``.
    Every backend therefore draws the same tokens for the same seed.

    Parameters
    ----------
    mdp : TokenMDP
    behavior : Policy
        The sampling policy mu.
    n : int
        Number of sequences, >= 1.
    target : Policy, optional
        The target policy pi; when given, ``logp_target`` and ``log_ratio`` are filled in.
    seed : int
        Seed in ``[0, 2**64)``.
    backend : {"auto", "numpy", "numba", "cupy"}
        Implementation; all give identical rollouts, field for field and bit for bit.
        ``"numpy"`` is the vectorised reference. ``"numba"`` (and ``"auto"``: the arrays
        live on the CPU) samples and assembles every field in one parallel pass.
        ``"cupy"`` samples the tokens and contexts on the GPU (one thread per sequence),
        copies those two (n, T) arrays to the host once, and assembles the rest with the
        numpy reference: it returns numpy Rollouts, like the other backends (raises
        ValueError without CuPy or a CUDA device).

    Returns
    -------
    Rollouts
        numpy arrays, whatever the backend.
    """
    if not isinstance(mdp, TokenMDP):
        raise TypeError(f"mdp must be a TokenMDP, got {type(mdp).__name__}")
    behavior = as_policy(behavior, "behavior")
    behavior.check_compatible(mdp, "behavior")
    if target is not None:
        target = as_policy(target, "target")
        target.check_compatible(mdp, "target")
    n = check_positive_int(n, "n")
    seed = check_seed(seed)
    backend = _validate_backend(backend)
    cdf = sampling_tables(behavior)
    if backend in ("auto", "numba"):  # tokens and every other field in one parallel pass
        from .._backends._numba_sample import rollouts_numba

        return Rollouts(**rollouts_numba(mdp, behavior, target, cdf, n, seed))
    tokens, contexts = _dispatch(backend)(mdp, cdf, n, seed)
    return _assemble(mdp, behavior, target, tokens, contexts, seed)


def _dispatch(backend: str):
    """The token kernel for ``backend``: "auto" is numba (the arrays here live on the CPU)."""
    if backend == "numpy":
        return _sample_numpy
    if backend in ("auto", "numba"):
        from .._backends._numba_sample import sample_numba

        return sample_numba
    from .._backends._cupy_sample import sample_cupy  # backend == "cupy"

    return sample_cupy
