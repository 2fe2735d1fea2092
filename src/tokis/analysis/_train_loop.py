r"""One training run on an exact token MDP: sample, E epochs x M minibatches of steps, exact J after each.

A run trains the logits :math:`\theta` of a softmax policy (the initial policy :math:`\pi_0` of a
:class:`~tokis.analysis.Family`, stationary (S, V) or time-dependent (T, S, V)) as an LLM-RL
loop does. Iteration ``k``:

1. :math:`\pi_{old} = \pi_\theta`; the sampler :math:`\mu` is :math:`\pi_{old}` itself or
   :math:`\pi_{old}` through a behaviour model (:class:`~tokis.analysis.Behavior`: bf16/fp16
   rounding of the logits, top-p, temperature, ...: engine mismatch);
2. ``n`` sequences from :math:`\mu` (:func:`tokis.envs.sample`, seed :func:`iteration_seed`);
   advantages once for the whole batch: ``G - b`` with ``b`` the batch mean of the returns
   (GRPO's group baseline; or the objective's ``baseline=``), divided by the batch standard
   deviation when ``normalize_std`` (applied to the gradient: every coefficient is positively
   homogeneous of degree one in ``A``), or the exact critic :math:`Q^\mu_t - V^\mu_t`;
3. ``E`` epochs, each a fresh permutation of the batch cut into ``M`` minibatches
   (:func:`numpy.array_split`); per minibatch the objective's sampled gradient
   :func:`tokis.objectives.gradient` (anchor :math:`\pi_{old}`, the clipping reference) and one
   optimizer step :math:`\theta \leftarrow \theta + \Delta\theta` (:mod:`._optim`).

After every update the run records, exactly (no Monte Carlo): :math:`J(\pi_\theta)`
(:func:`tokis.exact.value`); the per-token :math:`KL(\pi_{old}\|\pi_\theta)` under
:math:`\pi_{old}`'s occupancy (:func:`tokis.exact.token_divergence`, the trust-region
quantity); the ``ascent`` :math:`\langle\nabla J(\theta), \Delta\theta\rangle` (the first-order
change of J the step predicts) and the ``cosine`` between :math:`\Delta\theta` and
:math:`\nabla J(\theta)` (:func:`tokis.exact.gradient` at the parameters the step started from;
:math:`\Delta\theta` with each row's mean removed first, since adding a constant to a row of
logits does not change the policy); and, from the minibatch, the clip fraction
(:func:`clip_fraction`). Per iteration: the tokens sampled so far, the batch's mean return, and
the sampler's per-token :math:`KL(\mu\|\pi_{old})` under :math:`\mu`.

Every random number of a run comes from its seed: the batch of iteration ``k`` from
:func:`iteration_seed` ``(seed, k)`` (counter-based sampling), the minibatch permutation of
epoch ``e`` from ``numpy.random.default_rng([seed, k, e])``; numba kernels sum in an order that
does not depend on the thread count, so a run is bit-for-bit the same in this process or in a
worker.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from .. import envs, exact
from .._core._validate import check_flag, check_positive_int, check_real
from ..objectives import coefficients, get_objective
from ..objectives import gradient as sampled_gradient
from ..objectives._coefficients import SequenceCoefficient
from ..objectives._sampled import token_log_probs
from ._config import Behavior, Family, to_jsonable
from ._objective_config import ObjectiveConfig, parse_objective
from ._optim import OPTIMIZERS, make_optimizer

__all__ = ["TrainConfig", "run_seed", "clip_fraction", "iteration_seed", "initial_policy", "DEFAULT_FAMILY",
           "RUN_FIELDS", "UPDATE_FIELDS", "ITERATION_FIELDS"]

#: MDP of the default run: order-1 n-gram over 16 tokens; reward 1 when token 0 was emitted at
#: least 6 times (a sparse terminal reward: J(pi_0) / J* = 0.009 at T = 32).
DEFAULT_FAMILY = Family(vocab=16, reward="count", threshold=6)
#: Per-update series of a run (lists of length ``iterations * epochs * minibatches``).
UPDATE_FIELDS = ("J", "kl", "clip", "cosine", "ascent")
#: Per-iteration series of a run (lists of length ``iterations``).
ITERATION_FIELDS = ("tokens", "batch_return", "sampler_kl")
#: Every field of a run's record (:func:`run_seed`).
RUN_FIELDS = ("J_star", "J0", *UPDATE_FIELDS, *ITERATION_FIELDS)


@dataclass(frozen=True)
class TrainConfig:
    r"""Everything that defines a training run except its seed.

    Parameters
    ----------
    family : Family
        The MDP and the initial policy :math:`\pi_0` (its ``target``).
    horizon : int
        ``T``.
    sampler : Behavior
        How :math:`\mu` is derived from :math:`\pi_{old}` at every iteration (``Behavior()``:
        :math:`\mu = \pi_{old}`).
    objective : ObjectiveConfig or str
        The objective and its settings (``"ppo_clip:eps_high=0.28"``; parsed by
        :func:`~tokis.analysis.gradient.parse_objective`).
    n : int
        Sequences sampled per iteration.
    epochs, minibatches : int
        ``E`` passes over each batch, each in ``M <= n`` minibatches: ``E * M`` updates per
        iteration.
    iterations : int
        Batches sampled.
    optimizer : {"adam", "sgd"}
    lr : float
        Learning rate ``> 0``.
    time_dependent : bool
        Train time-dependent logits (T, S, V) (initialised to :math:`\pi_0` at every step)
        instead of stationary (S, V) logits.
    """

    family: Family = DEFAULT_FAMILY
    horizon: int = 32
    sampler: Behavior = Behavior()
    objective: ObjectiveConfig = ObjectiveConfig("tok")
    n: int = 64
    epochs: int = 4
    minibatches: int = 4
    iterations: int = 20
    optimizer: str = "adam"
    lr: float = 0.05
    time_dependent: bool = False

    def __post_init__(self):
        if not isinstance(self.family, Family):
            raise TypeError(f"family must be a Family, got {type(self.family).__name__}")
        if not isinstance(self.sampler, Behavior):
            raise TypeError(f"sampler must be a Behavior, got {type(self.sampler).__name__}")
        object.__setattr__(self, "objective", parse_objective(self.objective))
        object.__setattr__(self, "horizon", check_positive_int(self.horizon, "horizon"))
        n = check_positive_int(self.n, "n")
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "epochs", check_positive_int(self.epochs, "epochs"))
        m = check_positive_int(self.minibatches, "minibatches")
        if m > n:
            raise ValueError(f"minibatches must be <= n (every minibatch needs a sequence), got {m} > n = {n}")
        object.__setattr__(self, "minibatches", m)
        object.__setattr__(self, "iterations", check_positive_int(self.iterations, "iterations"))
        if not isinstance(self.optimizer, str) or self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        lr = check_real(self.lr, "lr")
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
        object.__setattr__(self, "lr", lr)
        object.__setattr__(self, "time_dependent", check_flag(self.time_dependent, "time_dependent"))

    @property
    def updates(self) -> int:
        """Optimizer steps of a run: ``iterations * epochs * minibatches``."""
        return self.iterations * self.epochs * self.minibatches

    @property
    def sampler_label(self) -> str:
        """``"pi_old"`` or the behaviour model applied to it (``"round=bf16"``)."""
        return "pi_old" if self.sampler == Behavior() else self.sampler.label

    def build(self):
        """``(mdp, pi_0)``: the MDP at :attr:`horizon` and the initial policy (see :func:`initial_policy`)."""
        mdp, target = self.family.build(self.horizon)
        return mdp, initial_policy(target, self.horizon, self.time_dependent)

    def as_dict(self) -> dict:
        """JSON-able description (what a store key hashes, with the fingerprints added by the caller)."""
        out = {f.name: to_jsonable(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "objective"}
        out["objective"] = dict(name=self.objective.name, settings=self.objective.settings)
        return out


def initial_policy(target, horizon: int, time_dependent: bool):
    """The family's target policy, tiled over ``horizon`` steps when ``time_dependent``."""
    if not time_dependent:
        return target
    return envs.Policy(np.broadcast_to(target.logits, (horizon,) + target.logits.shape))


def iteration_seed(seed: int, k: int) -> int:
    """Sampling seed of iteration ``k`` of the run with seed ``seed``: a fixed function of ``(seed, k)``."""
    return int(np.random.SeedSequence([int(seed), int(k)]).generate_state(1, dtype=np.uint64)[0])


def clip_fraction(spec, settings, l, A, l_rho, mask) -> float:
    r"""Fraction of the real tokens whose coefficient the objective clips.

    A token is clipped when its coefficient differs from the unclipped importance-weighted one
    with the same advantage: :math:`r_t A` for token-level coefficients (ppo_clip drops it,
    cispo clips its weight), :math:`e^{\lambda} A` for sequence-level ones, where every token of
    a clipped sequence counts (gspo; the GSPO paper's "fraction of clipped tokens"). The
    engine-mismatch correction is left out (it is not clipping of the objective). Clipping
    depends only on the sign of the advantage (the coefficients are positively homogeneous in
    ``A``), so both sides are evaluated at ``sign(A)``; a token with ``A = 0`` has nothing to clip.
    seq (``multiplicative``) and tok never clip.

    Parameters
    ----------
    spec : ObjectiveSpec
    settings : Settings
    l, l_rho : float (n, T)
        ``log pi_theta - log pi_old`` and ``log pi_old - log mu`` of the tokens (0 at padding).
    A : float (n, 1) or (n, T)
        Advantages.
    mask : bool (n, T)

    Returns
    -------
    float
        ``#clipped tokens / #tokens`` (0 for an empty batch).
    """
    tokens = int(mask.sum())
    coef = spec.coefficient
    if tokens == 0 or (isinstance(coef, SequenceCoefficient) and coef.multiplicative):
        return 0.0
    unit = np.broadcast_to(np.sign(A), mask.shape)
    w = coefficients(spec, dataclasses.replace(settings, correction=None), l, unit, l_rho, mask)
    if isinstance(coef, SequenceCoefficient):
        lam = np.where(mask, l, 0.0).sum(axis=1)
        if coef.per_length:
            L = mask.sum(axis=1)
            lam = np.where(L > 0, lam / np.maximum(L, 1), 0.0)
        log_ref = np.broadcast_to(lam[:, None], mask.shape)
    else:
        log_ref = l
    with np.errstate(over="ignore", invalid="ignore"):
        ref = np.where(mask, np.exp(log_ref) * unit, 0.0)
        clipped = mask & (np.abs(w - ref) > 1e-12 * np.maximum(np.abs(ref), 1.0))
    return float(clipped.sum()) / tokens


def _subset(ro, idx):
    """The Rollouts of the sequences ``idx``."""
    return envs.Rollouts(**{f.name: (None if getattr(ro, f.name) is None else getattr(ro, f.name)[idx])
                            for f in dataclasses.fields(ro)})


def _centered(x: np.ndarray) -> np.ndarray:
    return x - x.mean(axis=-1, keepdims=True)


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    # np.sum of a product: a summation order that does not depend on BLAS threads
    return float(np.sum(a * b))


def _critic_advantages(mdp, mu, ro) -> np.ndarray:
    """The exact critic ``Q^mu_t(c, a) - V^mu_t(c)`` of each sampled token (n, T); 0 at padding."""
    q = exact.q_values(mdp, mu)
    v = exact.state_values(mdp, mu)
    n, T = ro.mask.shape
    t = np.broadcast_to(np.arange(T), (n, T))
    c, y = np.where(ro.mask, ro.contexts, 0), np.where(ro.mask, ro.tokens, 0)
    return np.where(ro.mask, q[t, c, y] - v[t, c], 0.0)


def run_seed(config: TrainConfig, seed: int) -> dict:
    r"""Train one seed of ``config`` and return its record (JSON-able).

    Parameters
    ----------
    config : TrainConfig
    seed : int
        The run's seed (batches and minibatch permutations; see the module docstring).

    Returns
    -------
    dict
        ``J_star`` (:func:`tokis.exact.optimal_value`), ``J0`` (:math:`J(\pi_0)`), the per-update
        lists ``J``, ``kl``, ``clip``, ``cosine``, ``ascent`` (:data:`UPDATE_FIELDS`, update
        ``u = 1..U`` in order) and the per-iteration lists ``tokens`` (tokens sampled up to and
        including the batch), ``batch_return``, ``sampler_kl`` (:data:`ITERATION_FIELDS`).
        ``cosine`` is NaN where the step or :math:`\nabla J` is 0.
    """
    mdp, pi0 = config.build()
    spec = get_objective(config.objective.name)
    given = config.objective.kwargs
    settings = spec.settings(**given)
    critic = settings.advantage == "critic"
    J_star, _ = exact.optimal_value(mdp)
    opt = make_optimizer(config.optimizer, config.lr)
    theta = np.array(pi0.logits, dtype=np.float64)
    state = opt.init(theta)
    policy = envs.Policy(theta)
    J = float(exact.value(mdp, policy))
    grad = exact.gradient(mdp, policy)
    rec = {"J_star": float(J_star), "J0": J, **{k: [] for k in (*UPDATE_FIELDS, *ITERATION_FIELDS)}}
    n, M = config.n, config.minibatches
    tokens = 0
    for k in range(config.iterations):
        old = policy
        mu = config.sampler.apply(old)
        ro = envs.sample(mdp, mu, n, seed=iteration_seed(seed, k))
        tokens += int(ro.mask.sum())
        rec["tokens"].append(tokens)
        rec["batch_return"].append(float(ro.returns.mean()))
        rec["sampler_kl"].append(float(exact.token_divergence(mdp, mu, old, kind="kl", under="target")))
        kw = dict(given)
        scale = 1.0
        if critic:
            adv = _critic_advantages(mdp, mu, ro)
        else:
            b = float(ro.returns.mean()) if settings.baseline is None else settings.baseline
            kw.update(baseline=b, normalize_std=False)
            if settings.normalize_std:
                sd = float(ro.returns.std())
                scale = 1.0 / sd if sd > 0 else 0.0
            adv = (ro.returns - b)[:, None] * scale
        lp_old = token_log_probs(old, ro.tokens, ro.contexts, ro.mask)
        with np.errstate(invalid="ignore"):
            l_rho_all = np.where(ro.mask, lp_old - ro.logp_behavior, 0.0)
        for e in range(config.epochs):
            perm = np.random.default_rng([int(seed), k, e]).permutation(n)
            for idx in np.array_split(perm, M):
                sub = _subset(ro, idx)
                g = sampled_gradient(spec.name, sub, policy, anchor=old, advantages=adv[idx] if critic else None, **kw)
                if scale != 1.0:
                    g = g * scale
                lp = token_log_probs(policy, sub.tokens, sub.contexts, sub.mask)
                l = np.where(sub.mask, lp - lp_old[idx], 0.0)
                rec["clip"].append(clip_fraction(spec, settings, l, adv[idx], l_rho_all[idx], sub.mask))
                step, state = opt.update(g, state)
                theta = theta + step
                policy = envs.Policy(theta)
                d = _centered(step)
                ascent = _dot(grad, d)
                den = math.sqrt(_dot(d, d) * _dot(grad, grad))
                rec["ascent"].append(ascent)
                rec["cosine"].append(ascent / den if den > 0 else math.nan)
                J = float(exact.value(mdp, policy))
                grad = exact.gradient(mdp, policy)
                rec["J"].append(J)
                rec["kl"].append(float(exact.token_divergence(mdp, old, policy, kind="kl", under="target")))
    return to_jsonable(rec)
