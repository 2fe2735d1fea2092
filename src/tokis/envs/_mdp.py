"""The tabular autoregressive token MDP."""

from __future__ import annotations

import numpy as np

from .._core._validate import (
    as_float_array,
    as_int_array,
    check_finite,
    check_int,
    check_positive_int,
    check_probability_vector,
    check_shape,
)

__all__ = ["TokenMDP"]

_NOISE = ("none", "bernoulli")


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


class TokenMDP:
    r"""A token-level MDP whose prefixes are summarised by a finite context automaton.

    Tokens are ``a in {0..V-1}``, contexts ``c in {0..S-1}``. A sequence starts in
    ``c_0 ~ start``; at step ``t = 0..T-1`` a token ``a_t ~ policy(. | c_t)`` is emitted, the
    step reward ``step_reward[c_t, a_t]`` is collected and the context moves to
    ``c_{t+1} = next_context[c_t, a_t]``. The sequence stops after ``T`` tokens, or right after
    emitting ``eos``. The terminal reward ``terminal_reward[c_final]`` is read at the context
    after the last token, so the return is

    .. math:: G = \sum_t r^{step}(c_t, a_t) + r^{term}(c_{final}).

    Because policies and rewards see the prefix only through ``c``, dynamic programming over
    ``(t, c)`` is exact for the underlying MDP whose states are whole prefixes.

    Parameters
    ----------
    next_context : int array, shape (S, V)
        Deterministic transition of the context automaton; entries in ``[0, S)``.
    horizon : int
        Maximum number of tokens ``T >= 1``.
    terminal_reward : float array, shape (S,), optional
        Reward read at the final context (default zeros). With ``reward_noise="bernoulli"``
        it is the success probability of a Bernoulli verifier and must lie in ``[0, 1]``.
    step_reward : float array, shape (S, V), optional
        Per-token reward (default: none).
    start : int or float array, shape (S,)
        Start context, or a distribution over start contexts (prompts).
    eos : int, optional
        End-of-sequence token.
    reward_noise : {"none", "bernoulli"}
        Whether the observed terminal reward is Bernoulli(``terminal_reward[c_final]``).

    Attributes
    ----------
    next_context, terminal_reward, step_reward, eos, horizon, reward_noise
        As given (arrays are read-only copies; ``step_reward`` is zeros when not given).
    start : float array, shape (S,)
        The start distribution (a one-hot vector when an int was given).
    num_contexts, vocab_size : int
        ``S`` and ``V``.
    has_step_reward : bool
        Whether a step reward was given.
    """

    def __init__(
        self,
        next_context,
        *,
        horizon,
        terminal_reward=None,
        step_reward=None,
        start=0,
        eos=None,
        reward_noise="none",
    ):
        nc = as_int_array(next_context, "next_context", ndim=2)
        S, V = nc.shape
        if S < 1 or V < 1:
            raise ValueError(f"next_context must have at least one context and one token, got shape {nc.shape}")
        if nc.min() < 0 or nc.max() >= S:
            raise ValueError(
                f"next_context entries must be contexts in [0, {S}), got values in [{nc.min()}, {nc.max()}]"
            )
        T = check_positive_int(horizon, "horizon")

        if terminal_reward is None:
            term = np.zeros(S)
        else:
            term = as_float_array(terminal_reward, "terminal_reward", ndim=1)
            check_shape(term, (S,), "terminal_reward")
            check_finite(term, "terminal_reward")

        self.has_step_reward = step_reward is not None
        if step_reward is None:
            step = np.zeros((S, V))
        else:
            step = as_float_array(step_reward, "step_reward", ndim=2)
            check_shape(step, (S, V), "step_reward")
            check_finite(step, "step_reward")

        if isinstance(start, (int, np.integer)) and not isinstance(start, (bool, np.bool_)):
            s0 = check_int(start, "start")
            if not 0 <= s0 < S:
                raise ValueError(f"start must be a context in [0, {S}), got {s0}")
            start_dist = np.zeros(S)
            start_dist[s0] = 1.0
        else:
            start_arr = np.asarray(start)
            if start_arr.ndim == 0:
                raise TypeError(f"start must be an int context or a probability vector of shape ({S},), got {start!r}")
            start_arr = as_float_array(start_arr, "start", ndim=1)
            check_shape(start_arr, (S,), "start")
            start_dist = check_probability_vector(start_arr, "start")

        if eos is not None:
            eos = check_int(eos, "eos")
            if not 0 <= eos < V:
                raise ValueError(f"eos must be a token in [0, {V}), got {eos}")

        if reward_noise not in _NOISE:
            raise ValueError(f"reward_noise must be one of {_NOISE}, got {reward_noise!r}")
        if reward_noise == "bernoulli" and ((term < 0).any() or (term > 1).any()):
            raise ValueError("terminal_reward must lie in [0, 1] when reward_noise='bernoulli' (it is a success probability)")

        self.next_context = _readonly(nc)
        self.terminal_reward = _readonly(term)
        self.step_reward = _readonly(step)
        self.start = _readonly(start_dist)
        self.eos = eos
        self.horizon = T
        self.reward_noise = reward_noise

    @property
    def num_contexts(self) -> int:
        return int(self.next_context.shape[0])

    @property
    def vocab_size(self) -> int:
        return int(self.next_context.shape[1])

    def with_horizon(self, horizon: int) -> "TokenMDP":
        """Return the same MDP with another horizon."""
        return TokenMDP(
            self.next_context,
            horizon=horizon,
            terminal_reward=self.terminal_reward,
            step_reward=self.step_reward if self.has_step_reward else None,
            start=self.start,
            eos=self.eos,
            reward_noise=self.reward_noise,
        )

    def fingerprint(self) -> str:
        """A stable hash of every field (used as a cache key by the analysis store)."""
        import hashlib

        h = hashlib.sha256()
        for a in (self.next_context, self.terminal_reward, self.step_reward, self.start):
            h.update(np.ascontiguousarray(a).tobytes())
            h.update(str(a.shape).encode())
        h.update(repr((self.eos, self.horizon, self.reward_noise, self.has_step_reward)).encode())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        return (
            f"TokenMDP(num_contexts={self.num_contexts}, vocab_size={self.vocab_size}, horizon={self.horizon}, "
            f"eos={self.eos}, step_reward={self.has_step_reward}, reward_noise={self.reward_noise!r})"
        )
