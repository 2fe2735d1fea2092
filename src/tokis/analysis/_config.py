r"""Configurations of the analysis: MDP families, behaviour models, estimator specifications.

Every analysis cell is described by three small frozen dataclasses,

* :class:`Family` -- how to build the token MDP and the target policy :math:`\pi` at a
  horizon ``T`` (``iid``, ``ngram`` or ``prefix_tree``, a reward, an optional ``eos``);
* :class:`Behavior` -- how the behaviour policy :math:`\mu` is derived from :math:`\pi`
  (perturbation to a per-token KL or :math:`\chi^2`, temperature, top-k / top-p truncation,
  rounding of the logits);
* :class:`EstimatorConfig` (:mod:`._estimator_config`) -- an estimator with its parameters,
  parsed from strings such as ``"clip_tok:c=2"`` or ``"mask_tok:lo=0.5,hi=2"``,

and :func:`config_key` turns any JSON-able configuration into a stable SHA-256 key (canonical
JSON: sorted keys, no whitespace), used by the results store.

Every constructor validates its input and raises ``ValueError`` or ``TypeError`` with a
message naming the option (the command line prints it as a one-line error).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
from dataclasses import dataclass

import numpy as np

from ._names import FAMILIES, REWARDS, ROUNDINGS
from ._estimator_config import EstimatorConfig, load_declaration, parse_estimator, parse_estimators

__all__ = [
    "FAMILIES",
    "REWARDS",
    "ROUNDINGS",
    "Family",
    "Behavior",
    "EstimatorConfig",  # re-exported from ._estimator_config
    "load_declaration",
    "parse_estimator",
    "parse_estimators",
    "canonical_json",
    "config_key",
    "to_jsonable",
]



# ---------------------------------------------------------------------------------------------
# canonical JSON and keys
# ---------------------------------------------------------------------------------------------


def to_jsonable(value):
    """Convert numpy scalars/arrays, tuples and dataclasses to plain JSON types (recursively)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (numbers.Integral, np.integer)):
        return int(value)
    if isinstance(value, (numbers.Real, np.floating)):
        return float(value)
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"cannot convert {type(value).__name__} to JSON")


def canonical_json(value) -> str:
    """Canonical JSON text: sorted keys, no whitespace, numpy types converted (NaN/inf allowed)."""
    return json.dumps(to_jsonable(value), sort_keys=True, separators=(",", ":"), allow_nan=True)


def config_key(value) -> str:
    """SHA-256 (hex) of :func:`canonical_json` of ``value``: a stable key for a configuration."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# small validators (messages name the option)
# ---------------------------------------------------------------------------------------------


def _int(value, name: str, minimum: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    v = int(value)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def _float(value, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


def _choice(value, name: str, choices) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__} {value!r}")
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose from {', '.join(choices)}")
    return value


# ---------------------------------------------------------------------------------------------
# MDP family
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    r"""How to build the token MDP and the target policy at a horizon.

    Parameters
    ----------
    name : {"iid", "ngram", "prefix_tree"}
        The context automaton: one context, the last ``order`` tokens, or the whole prefix.
    vocab : int
        Vocabulary size ``V >= 1``.
    order : int
        n-gram order ``k >= 0`` (``ngram`` only; ignored otherwise).
    eos : int or None
        End-of-sequence token in ``[0, V)``.
    reward : {"last", "random", "count", "pattern", "parity", "frequency"}
        Default ``"last"`` (reward 1 when the last token is ``token``). ``"random"``: a ``Uniform[0, 1]`` terminal reward per context (drawn from ``seed``);
        ``"frequency"``: a step reward ``1/T`` each time ``token`` is emitted, so the return is
        the token's frequency in ``[0, 1]`` and rewards arrive at every step (per-decision IS
        then differs from sequence IS); otherwise the product with a reward automaton: reward 1
        once ``token`` was emitted at least ``threshold`` times (``count``), once ``pattern``
        was seen (``pattern``), when ``token`` was emitted an even number of times
        (``parity``), or when the last token is ``token`` (``last``).
    token : int
        The token of the reward automaton.
    threshold : int
        Threshold of the ``count`` reward (``>= 1``).
    pattern : tuple of int
        Pattern of the ``pattern`` reward.
    noise : {"none", "bernoulli"}
        Observation noise of the terminal reward (a Bernoulli verifier).
    seed : int
        Seed of the random reward, of the target policy's logits and of the behaviour
        perturbation direction (see :class:`Behavior`).
    scale : float
        Standard deviation of the target policy's Gaussian logits (``>= 0``).

    Notes
    -----
    With a reward automaton, the target policy sees only the policy part of the context
    (the automaton state is invisible to it), as a language model would.
    """

    name: str = "ngram"
    vocab: int = 8
    order: int = 1
    eos: int | None = None
    reward: str = "last"
    token: int = 0
    threshold: int = 2
    pattern: tuple = (0, 1)
    noise: str = "none"
    seed: int = 0
    scale: float = 1.0

    def __post_init__(self):
        _choice(self.name, "family", FAMILIES)
        vocab = _int(self.vocab, "vocab", 1)
        _int(self.order, "order", 0)
        if self.eos is not None:
            eos = _int(self.eos, "eos", 0)
            if eos >= vocab:
                raise ValueError(f"eos must be a token in [0, {vocab}), got {eos}")
        _choice(self.reward, "reward", REWARDS)
        token = _int(self.token, "token", 0)
        if token >= vocab and self.reward not in ("random", "pattern"):  # only the rewards that read it
            raise ValueError(f"reward token must be a token in [0, {vocab}) with vocab={vocab}, got {token}")
        _int(self.threshold, "threshold", 1)
        pattern = tuple(_int(p, "pattern", 0) for p in self.pattern)
        if not pattern:
            raise ValueError("pattern must not be empty")
        if self.reward == "pattern" and max(pattern) >= vocab:
            raise ValueError(f"pattern tokens must be in [0, {vocab}) with vocab={vocab}, got {pattern}")
        object.__setattr__(self, "pattern", pattern)
        _choice(self.noise, "noise", ("none", "bernoulli"))
        if self.noise != "none" and self.reward == "frequency":
            raise ValueError("noise observes a terminal reward; reward 'frequency' has step rewards only")
        _int(self.seed, "mdp seed", 0)
        scale = _float(self.scale, "scale")
        if scale < 0:
            raise ValueError(f"scale must be >= 0, got {scale}")

    def automaton(self):
        """The reward automaton (None for the random reward)."""
        from .. import envs

        V, tok = self.vocab, self.token
        if self.reward in ("random", "frequency"):
            return None
        if self.reward == "count":
            return envs.count_automaton(V, tok, self.threshold)
        if self.reward == "pattern":
            return envs.pattern_automaton(V, list(self.pattern))
        if self.reward == "parity":
            return envs.parity_automaton(V, tok)
        return envs.last_token_automaton(V, tok)

    def build(self, horizon):
        """Build ``(mdp, target)`` at ``horizon``.

        Returns
        -------
        mdp : TokenMDP
        target : Policy
            ``random_policy(mdp, scale=scale, seed=seed)`` (on the policy contexts when a
            reward automaton is used).
        """
        from .. import envs

        T = _int(horizon, "horizon", 1)
        auto = self.automaton()
        kw = dict(reward=auto, eos=self.eos, seed=self.seed, reward_noise=self.noise)
        if self.name == "iid":
            mdp = envs.iid(self.vocab, T, **kw)
        elif self.name == "ngram":
            mdp = envs.ngram(self.vocab, self.order, T, **kw)
        else:
            mdp = envs.prefix_tree(self.vocab, T, **kw)
        if self.reward == "frequency":
            step = np.zeros((mdp.num_contexts, self.vocab))
            step[:, self.token] = 1.0 / T
            mdp = envs.TokenMDP(mdp.next_context, horizon=T, step_reward=step, start=0, eos=self.eos)
        if auto is None:
            target = envs.random_policy(mdp, scale=self.scale, seed=self.seed)
        else:
            contexts = envs.policy_context(mdp, auto)
            target = envs.random_policy(mdp, scale=self.scale, seed=self.seed, contexts=contexts)
        return mdp, target

    @property
    def label(self) -> str:
        """A short description, e.g. ``"ngram(V=8,k=1,reward=random)"``."""
        parts = [f"V={self.vocab}"]
        if self.name == "ngram":
            parts.append(f"k={self.order}")
        parts.append(f"reward={self.reward}")
        if self.eos is not None:
            parts.append(f"eos={self.eos}")
        if self.noise != "none":
            parts.append(f"noise={self.noise}")
        return f"{self.name}({','.join(parts)})"


# ---------------------------------------------------------------------------------------------
# behaviour model
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Behavior:
    r"""How the behaviour policy :math:`\mu` is derived from the target :math:`\pi`.

    The transformations apply in this order: ``perturb`` (to a per-context KL(π‖μ) = ``kl``
    or χ²(π‖μ) = ``chi2``), ``temperature``, ``top_k``, ``top_p``, ``round``. With no option
    set, :math:`\mu = \pi`.

    Parameters
    ----------
    kl, chi2 : float, optional
        Per-context divergence of :func:`tokis.envs.perturb` (at most one of them; ``>= 0``).
    temperature : float, optional
        Sampling temperature ``> 0``.
    top_k : int, optional
        Keep the ``k >= 1`` most likely tokens.
    top_p : float, optional
        Nucleus truncation, ``0 < p <= 1``.
    round : {"bf16", "fp16"}, optional
        Round the logits (trainer vs sampler numerics).
    seed : int
        Seed of the perturbation direction.
    """

    kl: float | None = None
    chi2: float | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    round: str | None = None
    seed: int = 0

    def __post_init__(self):
        for name in ("kl", "chi2"):
            v = getattr(self, name)
            if v is not None:
                v = _float(v, name)
                if v < 0:
                    raise ValueError(f"{name} must be >= 0, got {v}")
                object.__setattr__(self, name, v)
        if self.kl is not None and self.chi2 is not None:
            raise ValueError("give at most one of kl and chi2")
        if self.temperature is not None:
            t = _float(self.temperature, "temperature")
            if t <= 0:
                raise ValueError(f"temperature must be > 0, got {t}")
            object.__setattr__(self, "temperature", t)
        if self.top_k is not None:
            object.__setattr__(self, "top_k", _int(self.top_k, "top_k", 1))
        if self.top_p is not None:
            p = _float(self.top_p, "top_p")
            if not 0 < p <= 1:
                raise ValueError(f"top_p must be in (0, 1], got {p}")
            object.__setattr__(self, "top_p", p)
        if self.round is not None:
            r = _choice(self.round, "round", tuple(ROUNDINGS))
            object.__setattr__(self, "round", r)
        _int(self.seed, "behavior seed", 0)

    def apply(self, target):
        """Return the behaviour policy derived from ``target`` (a Policy)."""
        from .. import envs

        mu = target
        if self.kl is not None:
            mu = envs.perturb(mu, kl=self.kl, seed=self.seed)
        elif self.chi2 is not None:
            mu = envs.perturb(mu, chi2=self.chi2, seed=self.seed)
        if self.temperature is not None:
            mu = envs.temperature(mu, self.temperature)
        if self.top_k is not None:
            mu = envs.top_k(mu, self.top_k)
        if self.top_p is not None:
            mu = envs.top_p(mu, self.top_p)
        if self.round is not None:
            mu = envs.round_logits(mu, ROUNDINGS[self.round])
        return mu

    @property
    def label(self) -> str:
        """A short description, e.g. ``"kl=0.01"`` or ``"tau=1.2,top_p=0.9"`` (``"mu=pi"`` if none)."""
        parts = []
        if self.kl is not None:
            parts.append(f"kl={self.kl:g}")
        if self.chi2 is not None:
            parts.append(f"chi2={self.chi2:g}")
        if self.temperature is not None:
            parts.append(f"tau={self.temperature:g}")
        if self.top_k is not None:
            parts.append(f"top_k={self.top_k}")
        if self.top_p is not None:
            parts.append(f"top_p={self.top_p:g}")
        if self.round is not None:
            parts.append(f"round={self.round}")
        return ",".join(parts) if parts else "mu=pi"
