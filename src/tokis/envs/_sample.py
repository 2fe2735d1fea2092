"""Sampling rollouts from a behaviour policy, with a counter-based generator.

One seed gives one batch of ``n`` sequences; a sequence of ``R`` seeds gives ``R`` independent
batches (replications) in one call, as a leading array axis: replication ``r`` is bit for bit
the batch ``sample(..., seed=seeds[r])`` draws, so a Monte Carlo harness samples all its
replications at once and hands the (R, n, T) arrays to the estimators, which reduce each
replication separately.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .._core._validate import check_positive_int
from ._mdp import TokenMDP
from ._policy import Policy, as_policy
from .._core._rng import STREAM_REWARD, STREAM_TOKEN, check_seed, uniforms

__all__ = ["Rollouts", "sample", "sample_ratios", "sampling_tables", "BACKENDS"]

BACKENDS = ("auto", "numpy", "numba", "cupy")


@dataclass(frozen=True)
class Rollouts:
    """Sequences sampled from a behaviour policy, padded to the horizon.

    Shapes below are for one seed. With a sequence of ``R`` seeds every field has a leading
    replication axis -- tokens (R, n, T), returns (R, n), ... -- and ``rollouts[r]`` is the
    Rollouts of seed ``r`` alone.

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
        """Sequences per batch."""
        return int(self.tokens.shape[-2])

    @property
    def horizon(self) -> int:
        return int(self.tokens.shape[-1])

    @property
    def batch_shape(self) -> tuple:
        """``(R,)`` for rollouts of R seeds, ``()`` for one seed."""
        return tuple(self.tokens.shape[:-2])

    def __getitem__(self, r) -> "Rollouts":
        """The rollouts of replication ``r`` (an integer or a slice along the leading axis).

        Raises
        ------
        TypeError
            On the rollouts of one seed (there is no replication axis).
        """
        if not self.batch_shape:
            raise TypeError("these Rollouts come from one seed: there is no replication axis to index")
        return Rollouts(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[r])
                           for f in dataclasses.fields(self)})


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


def _check_seeds(seed):
    """One validated seed, or a list of R >= 1 of them (for a sequence of seeds)."""
    if isinstance(seed, (list, tuple)) or (isinstance(seed, np.ndarray) and seed.ndim == 1):
        if len(seed) == 0:
            raise ValueError("seed must be an integer or a non-empty sequence of integers, got an empty sequence")
        out = []
        for k, s in enumerate(seed):
            try:
                out.append(check_seed(s))
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"seed[{k}]: {exc}") from None
        return out
    return check_seed(seed)


def _sample_iv(mdp, behavior, target, n, seed, backend):
    """The checks of :func:`sample`: ``(behavior, target, n, seed, backend)`` validated."""
    if not isinstance(mdp, TokenMDP):
        raise TypeError(f"mdp must be a TokenMDP, got {type(mdp).__name__}")
    behavior = as_policy(behavior, "behavior")
    behavior.check_compatible(mdp, "behavior")
    if target is not None:
        target = as_policy(target, "target")
        target.check_compatible(mdp, "target")
    return behavior, target, check_positive_int(n, "n"), _check_seeds(seed), _validate_backend(backend)


def sample(mdp, behavior, n, *, target=None, seed=0, backend="auto") -> Rollouts:
    """Sample ``n`` sequences from ``behavior`` in ``mdp`` -- or R batches of them, one per seed.

    Token ``t`` of sequence ``i`` is drawn by inverse CDF (:func:`sampling_tables`) from the
    counter-based uniform ``u(seed, token stream, i, t)``; the start context from
    ``u(seed, token stream, i, T)``; Bernoulli reward noise from ``u(seed, reward stream, i, 0)``.
    Every backend therefore draws the same tokens for the same seed.

    Replications: ``seed=[s_0, ..., s_{R-1}]`` draws R independent batches of ``n`` sequences in
    one call and returns them along a leading axis (tokens (R, n, T), returns (R, n), ...);
    replication ``r`` equals ``sample(..., seed=s_r)`` field for field, bit for bit. The numba
    backend draws all ``R * n`` rows in one pass (threads by the total size, see
    :mod:`tokis._backends._chunks`); numpy and cupy draw one seed after the other. Pass the
    arrays straight to an estimator: ``log_ratio`` (R, n, T) gives R estimates at once. The
    harness's replication seeds are :func:`tokis.analysis.replication_seeds`.

    Parameters
    ----------
    mdp : TokenMDP
    behavior : Policy
        The sampling policy mu.
    n : int
        Number of sequences, >= 1.
    target : Policy, optional
        The target policy pi; when given, ``logp_target`` and ``log_ratio`` are filled in.
    seed : int or sequence of int
        Seed in ``[0, 2**64)``, or a non-empty sequence (list, tuple, 1-d array) of R seeds.
    backend : {"auto", "numpy", "numba", "cupy"}
        Implementation; all give identical rollouts, field for field and bit for bit.
        ``"numpy"`` is the vectorised reference. ``"numba"`` (and ``"auto"``: the arrays
        live on the CPU; the compiled sampler measured faster than numpy at every size, see
        ``benchmarks/RESULTS.md``) samples and assembles every field in one pass, on the
        calling thread below ``tokis._backends._chunks.SAMPLE_PARALLEL_MIN`` token slots and on
        every thread above.
        ``"cupy"`` samples the tokens and contexts on the GPU (one thread per sequence),
        copies those two (n, T) arrays to the host once, and assembles the rest with the
        numpy reference: it returns numpy Rollouts, like the other backends (raises
        ValueError without CuPy or a CUDA device).

    Returns
    -------
    Rollouts
        numpy arrays, whatever the backend; with a leading axis of length R for R seeds.

    Raises
    ------
    ValueError, TypeError
        Bad MDP or policies, ``n < 1``, a seed outside ``[0, 2**64)`` or not an integer (the
        message names ``seed[k]`` in a sequence), an empty sequence of seeds, an unknown backend.
    """
    behavior, target, n, seed, backend = _sample_iv(mdp, behavior, target, n, seed, backend)
    cdf = sampling_tables(behavior)
    if backend in ("auto", "numba"):  # tokens and every other field in one parallel pass
        from .._backends._numba_sample import rollouts_numba

        fields = rollouts_numba(mdp, behavior, target, cdf, n, seed)
        if isinstance(seed, list):  # R * n rows -> (R, n, ...)
            R = len(seed)
            fields = {k: (None if v is None else v.reshape((R, n) + v.shape[1:])) for k, v in fields.items()}
        return Rollouts(**fields)
    if isinstance(seed, list):  # one seed after the other, stacked
        parts = [sample(mdp, behavior, n, target=target, seed=s, backend=backend) for s in seed]
        return Rollouts(**{f.name: (None if getattr(parts[0], f.name) is None
                                    else np.stack([getattr(p, f.name) for p in parts]))
                           for f in dataclasses.fields(Rollouts)})
    tokens, contexts = _dispatch(backend)(mdp, cdf, n, seed)
    return _assemble(mdp, behavior, target, tokens, contexts, seed)


def _check_out(out, shape):
    """``out`` for :func:`sample_ratios`: three C-contiguous arrays of ``shape`` (float64, float64, bool)."""
    want = (np.dtype(np.float64), np.dtype(np.float64), np.dtype(np.bool_))
    if not (isinstance(out, tuple) and len(out) == 3):
        raise TypeError(f"out must be a tuple of three arrays (log_ratio, rewards, mask), got {type(out).__name__}")
    for name, a, dt in zip(("log_ratio", "rewards", "mask"), out, want):
        if not (isinstance(a, np.ndarray) and a.dtype == dt and a.shape == shape and a.flags.c_contiguous
                and a.flags.writeable):
            got = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
            raise ValueError(f"out {name} must be a writeable C-contiguous {dt} array of shape {shape}, got {got}")


def sample_ratios(mdp, behavior, target, n, seed, backend="auto", *, out=None) -> tuple:
    """What an estimator reads of ``sample(mdp, behavior, n, target=target, seed=seed, backend=backend)``.

    Returns ``(log_ratio, rewards, mask)``, bit for bit those fields of :func:`sample` (same
    checks, same errors), with the leading axis of length R for a sequence of R seeds. The
    numba backend (and ``"auto"``) draws them in a lean pass that writes nothing else -- no
    tokens, contexts or log-probabilities: 17 of the 49 bytes per token slot
    (:func:`tokis._backends._numba_sample.ratios_numba`); numpy and cupy take the fields of
    :func:`sample`. The Monte Carlo harness and ``tokis coverage`` sample with it.

    Parameters
    ----------
    mdp : TokenMDP
    behavior, target : Policy
        mu (sampled from) and pi; ``target`` is required.
    n : int
    seed : int or sequence of int
    backend : {"auto", "numpy", "numba", "cupy"}
    out : tuple of three arrays, optional
        ``(log_ratio, rewards, mask)`` of the result's shape, dtypes float64, float64, bool,
        C-contiguous: written and returned (a loop over chunks reuses its buffers; the kernel
        then writes to pages already touched instead of fresh ones).

    Returns
    -------
    log_ratio : float64 (n, T) or (R, n, T)
    rewards : float64 (n, T) or (R, n, T)
    mask : bool (n, T) or (R, n, T)

    Raises
    ------
    TypeError
        ``target`` is None; and every error of :func:`sample`.
    """
    if target is None:
        raise TypeError("target must be a Policy: sample_ratios returns log pi - log mu")
    behavior, target, n, seed, backend = _sample_iv(mdp, behavior, target, n, seed, backend)
    shape = ((len(seed),) if isinstance(seed, list) else ()) + (n, mdp.horizon)
    if out is not None:
        _check_out(out, shape)
    if backend not in ("auto", "numba"):
        ro = sample(mdp, behavior, n, target=target, seed=seed, backend=backend)
        fields = (ro.log_ratio, ro.rewards, ro.mask)
        if out is None:
            return fields
        for a, b in zip(out, fields):
            np.copyto(a, b)
        return out
    from .._backends._numba_sample import ratios_numba

    fields = ratios_numba(mdp, behavior, target, sampling_tables(behavior), n, seed, out)
    return tuple(v.reshape(shape) for v in fields)


def _dispatch(backend: str):
    """The token kernel for ``backend``: "auto" is numba (the arrays here live on the CPU)."""
    if backend == "numpy":
        return _sample_numpy
    if backend in ("auto", "numba"):
        from .._backends._numba_sample import sample_numba

        return sample_numba
    from .._backends._cupy_sample import sample_cupy  # backend == "cupy"

    return sample_cupy
