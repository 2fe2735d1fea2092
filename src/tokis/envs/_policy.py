"""Softmax policies over a token MDP's contexts."""

from __future__ import annotations

import numpy as np

from .._core._validate import as_float_array

__all__ = ["Policy", "log_softmax"]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax over the last axis with max-shifting; ``-inf`` logits stay ``-inf``."""
    m = np.max(logits, axis=-1, keepdims=True)
    with np.errstate(over="ignore", divide="ignore"):  # -1e308 - 1e308 = -inf: probability exactly 0
        z = logits - m
        lse = np.log(np.sum(np.exp(z), axis=-1, keepdims=True))
    return z - lse


class Policy:
    r"""A softmax policy ``pi(a | c) = exp(logits[c, a]) / sum_b exp(logits[c, b])``.

    Parameters
    ----------
    logits : float array, shape (S, V) or (T, S, V)
        Stationary or time-dependent logits. ``-inf`` marks a token with probability zero
        (truncated support); NaN and ``+inf`` are rejected, and every row needs at least one
        finite logit.

    Attributes
    ----------
    logits : read-only float64 array, as given
    log_probs : read-only float64 array, same shape, normalised (log-softmax)
    probs : read-only float64 array, same shape
    time_dependent : bool
    num_contexts, vocab_size : int
    """

    def __init__(self, logits):
        if isinstance(logits, Policy):
            logits = logits.logits
        lg = as_float_array(logits, "logits", ndim=(2, 3))
        if lg.shape[-1] < 1 or lg.shape[-2] < 1 or (lg.ndim == 3 and lg.shape[0] < 1):
            raise ValueError(f"logits must be non-empty, got shape {lg.shape}")
        if np.isnan(lg).any():
            raise ValueError("logits contains NaN")
        if np.isposinf(lg).any():
            raise ValueError("logits contains +inf")
        if not np.isfinite(lg).any(axis=-1).all():
            raise ValueError("logits has a row with no finite entry (every context needs a token with positive probability)")
        lg = np.array(lg, dtype=np.float64, copy=True)
        lp = log_softmax(lg)
        p = np.exp(lp)
        for a in (lg, lp, p):
            a.setflags(write=False)
        self.logits = lg
        self.log_probs = lp
        self.probs = p

    @property
    def time_dependent(self) -> bool:
        return self.logits.ndim == 3

    @property
    def num_contexts(self) -> int:
        return int(self.logits.shape[-2])

    @property
    def vocab_size(self) -> int:
        return int(self.logits.shape[-1])

    def log_probs_at(self, t: int) -> np.ndarray:
        """Log-probabilities (S, V) used at step ``t``."""
        return self.log_probs[t] if self.time_dependent else self.log_probs

    def probs_at(self, t: int) -> np.ndarray:
        """Probabilities (S, V) used at step ``t``."""
        return self.probs[t] if self.time_dependent else self.probs

    def expand_log_probs(self, horizon: int) -> np.ndarray:
        """Log-probabilities broadcast to shape (T, S, V) (a read-only view when stationary)."""
        if self.time_dependent:
            return self.log_probs[:horizon]
        return np.broadcast_to(self.log_probs, (horizon,) + self.log_probs.shape)

    def expand_probs(self, horizon: int) -> np.ndarray:
        """Probabilities broadcast to shape (T, S, V)."""
        if self.time_dependent:
            return self.probs[:horizon]
        return np.broadcast_to(self.probs, (horizon,) + self.probs.shape)

    def check_compatible(self, mdp, name: str = "policy") -> None:
        """Raise ValueError unless this policy fits ``mdp`` (contexts, vocabulary, horizon)."""
        if not isinstance(mdp, _mdp_type()):
            raise TypeError(f"mdp must be a TokenMDP, got {type(mdp).__name__}")
        S, V = mdp.num_contexts, mdp.vocab_size
        if self.logits.shape[-2:] != (S, V):
            raise ValueError(
                f"{name} logits have shape {self.logits.shape}, expected (..., {S}, {V}) for this MDP"
            )
        if self.time_dependent and self.logits.shape[0] != mdp.horizon:
            raise ValueError(
                f"{name} is time-dependent with {self.logits.shape[0]} steps but the MDP horizon is {mdp.horizon}"
            )

    def fingerprint(self) -> str:
        import hashlib

        h = hashlib.sha256(np.ascontiguousarray(self.logits).tobytes())
        h.update(str(self.logits.shape).encode())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        return f"Policy(shape={self.logits.shape})"


def _mdp_type():
    from ._mdp import TokenMDP

    return TokenMDP


def as_policy(policy, name: str = "policy") -> Policy:
    """Accept a Policy (or raw logits) and return a Policy; raise TypeError otherwise."""
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, np.ndarray):
        return Policy(policy)
    raise TypeError(f"{name} must be a tokis.envs.Policy, got {type(policy).__name__}")
