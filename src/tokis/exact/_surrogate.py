r"""Each objective's surrogate along a line in parameter space, next to J and a trust-region bound.

For logits ``theta(alpha) = theta_old + alpha d`` (:func:`surrogate`), three curves:

- the objective's expected surrogate value under the sampler ``mu``,
  ``L(theta) = E_mu[sum_t value_t / nu]`` (the value each coefficient declares,
  ``tokis.objectives.TokenCoefficient(value=...)``, times a correction's factor; a
  sequence-level coefficient contributes ``V (L if per_length else 1) / nu`` per sequence),
  drawn as ``J(theta_old) + L(theta) - L(theta_old)``;
- the exact return ``J(theta)``;
- a finite-horizon trust-region lower bound on ``J(theta)`` built from the first-order (CPI)
  surrogate of ``pi_old`` (derived in :func:`surrogate`).

The surrogate is exact by dynamic programming where its conditional expectation factorises
(the same structure as the expected gradient, :mod:`._objective`: token-level values with the
exact critic, linear in a terminal advantage, or clipped with terminal-only rewards by the sign
split; seq's ``W A`` under the tilted kernel ``mu exp(l)``), and by enumerating every sequence
otherwise (gspo, clipped values with step rewards, sequence-level corrections).

References
----------
Kakade & Langford (2002), Approximately optimal approximate reinforcement learning (the
conservative-policy-iteration surrogate and its state-drift bound); Schulman et al. (2015),
Trust region policy optimization, Theorem 1; Achiam et al. (2017), Constrained policy
optimization, Corollary 1 (the bound with the expected TV under ``pi_old``'s occupancy).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from .._core._validate import as_float_array, check_finite, check_positive_int
from ..envs import Policy
from ..objectives import SequenceCoefficient, TokenCoefficient, get_objective
from ..objectives._sampled import token_log_probs
from ._divergence import _row_divergences
from ._dp import _backward, _forward, _steps, check_pair, value
from ._enumerate import enumerate_outcomes
from ._gradient import gradient
from ._objective import _correction_table, _freeze, _lam, _Problem
from ._pg_engines import Walk, backward_coefficients, forward_pass
from ._recursions import prepare

__all__ = ["SurrogateCurve", "surrogate"]

DIRECTIONS = ("gradient", "natural", "random")
#: Default grid: this many points, symmetric about 0 ...
GRID_POINTS = 41
#: ... out to the step size where the per-token KL(pi_old || pi_theta) under pi_old's
#: occupancy reaches this value (nats per token) on the steeper side.
KL_AT_ENDS = 0.05

BOUND_NAME = "finite-horizon CPI/TRPO lower bound (coupling, expected TV under pi_old)"
BOUND_REFERENCE = ("Kakade & Langford (2002), ICML, Sections 4 and 6; Schulman et al. (2015), TRPO, Theorem 1; "
                   "Achiam et al. (2017), CPO, Corollary 1; finite-horizon undiscounted form derived in "
                   "tokis.exact.surrogate")


@dataclass(frozen=True)
class SurrogateCurve:
    r"""An objective's expected surrogate along ``theta(alpha) = theta_old + alpha d``, with J and a bound.

    Attributes
    ----------
    objective : str
    settings : Mapping
        Aggregation, advantage, baseline used, correction and the objective's parameters.
    method : {"exact", "enumeration"}
        How the surrogate was computed ("enumeration" if any point needed it).
    alphas : (K,) float array
        Step sizes.
    surrogate : (K,) float array
        ``J(theta_old) + L(theta(alpha)) - L(theta_old)`` with
        ``L(theta) = E_mu[sum_t value_t / nu]`` (equal to ``J(theta_old)`` at ``alpha = 0``).
    value : (K,) float array
        The exact return ``J(theta(alpha))`` (:func:`tokis.exact.value`).
    bound : (K,) float array
        A lower bound on ``value``: ``cpi - penalty`` (see :func:`surrogate`).
    cpi : (K,) float array
        ``J(theta_old) + sum_t E_{d^old_t}[sum_a pi_theta A^old_t]``: the first-order surrogate
        the bound is built from (equal to ``surrogate`` for ``tok`` when the sampler and the
        anchor are ``pi_old``, with ``seq_mean_token_sum``, no correction and no std
        normalisation).
    kl : (K,) float array
        Per-token ``KL(pi_old || pi_theta)`` averaged over ``pi_old``'s occupancy
        (``sum_t sum_c d^old_t(c) KL_t(c) / E_old[L]``).
    direction : float array shaped like the logits
        ``d``.
    direction_kind : {"gradient", "natural", "random", "given"}
    value_old : float
        ``J(theta_old)``.
    baseline : float
        ``b`` of the terminal advantage (``J(mu)`` unless given).
    bound_name, reference : str
        The bound and where it comes from.
    """

    objective: str
    settings: Mapping
    method: str
    alphas: np.ndarray
    surrogate: np.ndarray
    value: np.ndarray
    bound: np.ndarray
    cpi: np.ndarray
    kl: np.ndarray
    direction: np.ndarray
    direction_kind: str
    value_old: float
    baseline: float
    bound_name: str
    reference: str


# --------------------------------------------------------------------------- validation


def _check_value_declared(spec, st) -> None:
    """ValueError unless the objective has a surrogate value with these settings."""
    coef = spec.coefficient
    if isinstance(coef, SequenceCoefficient):
        if coef.value is None and not coef.multiplicative:
            raise ValueError(f"objective {spec.name!r} declares no surrogate value: "
                             "give SequenceCoefficient(fn, ..., value=...)")
        if st.advantage == "critic":
            raise ValueError(f"advantage='critic' gives {spec.name!r} no surrogate value: a sequence-level "
                             "coefficient with per-token advantages is not the gradient of any function")
        if st.correction is not None and st.correction_level == "token":
            raise ValueError(f"correction_level='token' gives {spec.name!r} no surrogate value: a sequence-level "
                             "coefficient times a per-token factor is not the gradient of any function "
                             "(use correction_level='sequence')")
    elif coef.value is None:
        raise ValueError(f"objective {spec.name!r} declares no surrogate value: give TokenCoefficient(fn, value=...)")


def _check_alphas(alphas) -> np.ndarray:
    a = as_float_array(alphas, "alphas", ndim=1)
    if a.size == 0:
        raise ValueError("alphas must not be empty")
    check_finite(a, "alphas")
    return np.array(a, copy=True)


def _check_direction(direction, shape) -> np.ndarray:
    d = as_float_array(direction, "direction")
    if d.shape != shape:
        raise ValueError(f"direction must have the logits' shape {shape}, got {d.shape}")
    check_finite(d, "direction")
    if not np.any(d):
        raise ValueError("direction must not be all zeros")
    return np.array(d, copy=True)


# --------------------------------------------------------------------------- directions


def _unit(d: np.ndarray, what: str) -> np.ndarray:
    norm = float(np.linalg.norm(d))
    if not norm > 0:
        raise ValueError(f"direction={what!r}: the direction is zero here (no parameter moves J), "
                         "give direction= as an array")
    return d / norm


def _natural(grad: np.ndarray, probs: np.ndarray, occ: np.ndarray) -> np.ndarray:
    r"""``F^+ grad`` row by row: ``F_c = D_c (diag p_c - p_c p_c^T)`` (``D_c`` the occupancy of row c).

    On the support of ``p_c`` the minimum-norm solution is ``u - mean(u)`` with
    ``u = grad_c / (D_c p_c)``; 0 off the support and on rows with ``D_c = 0``.
    """
    supp = probs > 0
    w = occ[..., None] * probs
    with np.errstate(invalid="ignore", divide="ignore"):
        u = np.where(supp & (w > 0), grad / np.where(w > 0, w, 1.0), 0.0)
    n = supp.sum(axis=-1, keepdims=True)
    m = u.sum(axis=-1, keepdims=True) / np.maximum(n, 1)
    live = supp & (occ[..., None] > 0)
    return np.where(live, u - m, 0.0)


def _direction(kind, mdp, policy_old, seed, d_old) -> tuple[np.ndarray, str]:
    shape = policy_old.logits.shape
    if not isinstance(kind, str):
        return _check_direction(kind, shape), "given"
    if kind not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS} or an array of the logits' shape, got {kind!r}")
    if kind == "random":
        d = np.random.default_rng(seed).standard_normal(shape)
        supp = np.isfinite(policy_old.logits)
        d = np.where(supp, d, 0.0)
        d = np.where(supp, d - d.sum(axis=-1, keepdims=True) / supp.sum(axis=-1, keepdims=True), 0.0)
        return _unit(d, kind), kind
    g = gradient(mdp, policy_old)
    if kind == "natural":
        occ = d_old if policy_old.time_dependent else d_old.sum(axis=0)
        g = _natural(g, policy_old.probs, occ)
    return _unit(g, kind), kind


# --------------------------------------------------------------------------- the line


class _Line:
    """The fixed tables of one line search: pi_old's occupancy and advantages, mu's DP, the problem."""

    def __init__(self, mdp, policy_old, behavior, anchor, spec, st):
        T = mdp.horizon
        self.mdp, self.T = mdp, T
        self.policy_old = policy_old
        self.pb = _Problem(mdp, policy_old, behavior, anchor, spec, st)
        if self.pb.sigma == 0:  # normalize_std with a constant return: A = 0, as the sampled gradient has it
            self.pb.sigma = np.inf
        self.walk = self.pb.walk
        self.log_anchor = _steps(anchor.expand_log_probs(T), T)
        self.log_old = _steps(policy_old.expand_log_probs(T), T)
        self.p_old = np.exp(self.log_old)
        self.d_old = _forward(mdp, self.p_old)[0]
        self.len_old = float(self.d_old.sum())
        self.V_old = _backward(mdp, self.p_old, want_q=False)[0]
        self.J_old = float(mdp.start @ self.V_old[0])
        self.d_mu, self.rho_mu, _ = forward_pass(self.walk, self.pb.mu)
        self.enum = None

    def logits(self, direction, alpha: float) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return np.where(np.isfinite(self.policy_old.logits), self.policy_old.logits + alpha * direction, -np.inf)

    def problem(self, policy: Policy) -> _Problem:
        """The objective's tables at pi_theta = ``policy`` (mu's stay)."""
        pb = copy.copy(self.pb)
        pb.policy = policy
        pb.log_pi = _steps(policy.expand_log_probs(self.T), self.T)
        pb.pi = np.exp(pb.log_pi)
        with np.errstate(invalid="ignore"):
            pb.l = np.where(pb.mu > 0, pb.log_pi - self.log_anchor, 0.0)
        return pb

    def kl(self, log_theta: np.ndarray) -> float:
        """Per-token KL(pi_old || pi_theta) averaged over pi_old's occupancy."""
        lo, lt = self.log_old, log_theta
        if lo.shape != lt.shape:
            shape = (self.T,) + lo.shape[1:]
            lo, lt = np.broadcast_to(lo, shape), np.broadcast_to(lt, shape)
        rows = _row_divergences(lo, lt, "kl")
        w = self.d_old if rows.shape[0] == self.T else self.d_old.sum(axis=0, keepdims=True)
        with np.errstate(invalid="ignore"):
            return float(np.where(w > 0, w * rows, 0.0).sum()) / self.len_old


# --------------------------------------------------------------------------- the objective's surrogate


def _value_fn(coef):
    """The declared value (a multiplicative sequence coefficient's is ``exp(lam) A``)."""
    if coef.value is None:
        return lambda lam, A: np.exp(lam) * A
    return coef.value


def _call(coef, st, x, A):
    args = [st.params[k] for k in coef.value_params]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _value_fn(coef)(x, A, *args)


def _token_dp(line: _Line, pb: _Problem) -> float | None:
    """``E_mu[sum_t value_t c_t psi(L)]`` by the backward sums of :func:`backward_coefficients` (None: no DP)."""
    st, walk, coef = pb.st, pb.walk, pb.spec.coefficient
    if st.correction is not None and st.correction_level == "sequence":
        return None
    if st.advantage == "critic":
        def coef_at(t):
            g = _call(coef, st, Walk.at(pb.l, t), pb.advantage_at(t)) * _correction_table(pb, t)
            return g, g
        mode = "critic"
    else:
        vp = _call(coef, st, pb.l, 1.0)
        vm = -_call(coef, st, pb.l, -1.0)
        linear = bool(np.array_equal(np.nan_to_num(vp), np.nan_to_num(vm)))
        if not linear and walk.has_r:
            return None
        mode = "linear" if linear else "split"

        def coef_at(t):
            k = _correction_table(pb, t) / pb.sigma
            return Walk.at(vp, t) * k, Walk.at(vm, t) * k
    omega = backward_coefficients(walk, pb.mu, line.d_mu, line.rho_mu, pb.psi, coef_at, baseline=pb.b, mode=mode,
                                  out_shape=(walk.S, walk.V))
    return float(omega.sum())


def _sequence_dp(pb: _Problem) -> float | None:
    """seq's ``E_mu[W A psi(L)]`` (``L W A psi`` when per_length) under the tilted kernel ``mu exp(l)``."""
    coef, st, walk = pb.spec.coefficient, pb.st, pb.walk
    if not coef.multiplicative or st.correction is not None or (coef.per_length and pb.mdp.eos is not None):
        return None
    y = pb.l / pb.T if coef.per_length else pb.l
    with np.errstate(over="ignore"):
        kern = pb.mu * np.exp(y)
    d, rho, _ = forward_pass(walk, kern)
    # Every one of the L tokens carries g = 1 / sigma; psi / L counts the sequence once.
    psi = pb.psi if coef.per_length else pb.psi / np.arange(1, pb.T + 1)
    g = np.full((walk.S, walk.V), 1.0 / pb.sigma)
    omega = backward_coefficients(walk, kern, d, rho, psi, lambda t: (g, g), baseline=pb.b, mode="linear",
                                  out_shape=(walk.S, walk.V))
    return float(omega.sum())


class _Enumerated:
    """Every sequence under mu, once; the surrogate at any pi_theta is then a weighted sum."""

    def __init__(self, line: _Line, behavior, anchor, max_sequences: int):
        pb = line.pb
        self.coef, self.st = pb.spec.coefficient, pb.st
        o = enumerate_outcomes(prepare(line.mdp, line.policy_old, behavior), max_sequences,
                               what=f"the surrogate of {pb.spec.name} has no exact recursion here")
        self.o = o
        mask = o.mask
        lp_mu = token_log_probs(behavior, o.tokens, o.contexts, mask)
        self.lp_anchor = token_log_probs(anchor, o.tokens, o.contexts, mask)
        with np.errstate(invalid="ignore"):
            l_rho = np.where(mask, self.lp_anchor - lp_mu, 0.0)
        N, T = mask.shape
        if self.st.advantage == "critic":
            A = np.zeros((N, T))
            for t in range(T):
                A[:, t] = np.where(mask[:, t], pb.advantage_at(t)[o.contexts[:, t], o.tokens[:, t]], 0.0)
        else:
            A = ((o.rewards.sum(axis=1) - pb.b) / pb.sigma)[:, None]
        self.A = A
        corr = self.st.correction
        self.factor = np.ones((N, 1))
        if corr is not None:
            cargs = [self.st.correction_params[k] for k in corr.params]
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                if self.st.correction_level == "token":
                    self.factor = corr.factor(l_rho, *cargs)
                else:
                    self.factor = corr.factor(np.where(mask, l_rho, 0.0).sum(axis=1), *cargs)[:, None]
        L = mask.sum(axis=1)
        self.weight = o.prob * pb.psi[np.maximum(L - 1, 0)]
        if isinstance(self.coef, SequenceCoefficient) and self.coef.per_length:
            self.weight = self.weight * L

    def __call__(self, policy: Policy) -> float:
        o, mask = self.o, self.o.mask
        with np.errstate(invalid="ignore"):
            l = np.where(mask, token_log_probs(policy, o.tokens, o.contexts, mask) - self.lp_anchor, 0.0)
        if isinstance(self.coef, SequenceCoefficient):
            per_seq = (_call(self.coef, self.st, _lam(self.coef, l, mask)[:, None], self.A) * self.factor)[:, 0]
        else:
            v = _call(self.coef, self.st, l, self.A) * self.factor
            per_seq = np.where(mask, v, 0.0).sum(axis=1)
        return float(self.weight @ per_seq)


def _objective_value(line: _Line, policy: Policy, behavior, anchor, max_sequences: int) -> tuple[float, str]:
    """``L(theta) = E_mu[sum_t value_t / nu]`` at pi_theta = ``policy`` and the method used."""
    pb = line.problem(policy)
    dp = _token_dp(line, pb) if isinstance(pb.spec.coefficient, TokenCoefficient) else _sequence_dp(pb)
    if dp is not None:
        return dp, "exact"
    if line.enum is None:
        line.enum = _Enumerated(line, behavior, anchor, max_sequences)
    return line.enum(policy), "enumeration"


# --------------------------------------------------------------------------- the bound


def _cpi_and_penalty(line: _Line, policy: Policy) -> tuple[float, float]:
    r"""``sum_t E_{d^old_t}[sum_a pi_theta A^old_t]`` and the penalty of the bound (see :func:`surrogate`)."""
    walk, T = line.walk, line.T
    p = _steps(policy.expand_probs(T), T)
    d_new = _forward(line.mdp, p)[0]
    cpi = penalty = expected_tv = 0.0
    stay = 1.0
    for t in range(T):
        diff = Walk.at(p, t) - Walk.at(line.p_old, t)
        cont = walk.cont(t)[None, :]
        q = walk.r + np.where(cont, line.V_old[t + 1][walk.nxt], walk.m[walk.nxt])
        abar = (diff * (q - line.V_old[t][:, None])).sum(axis=1)  # sum_a pi_theta A^old (pi_old's term is 0)
        old_on, new_on = line.d_old[t] > 0, d_new[t] > 0
        cpi += float(line.d_old[t] @ abar)
        drift = min(expected_tv, 1.0 - stay)  # >= P(the coupled sequences differ before step t)
        up = max(float(abar[old_on].max()), 0.0) if old_on.any() else 0.0
        down = max(-float(abar[new_on].min()), 0.0) if new_on.any() else 0.0
        penalty += drift * (up + down)
        tv = 0.5 * np.abs(diff).sum(axis=1)
        expected_tv += float(line.d_old[t] @ tv)
        stay *= 1.0 - (float(tv[old_on].max()) if old_on.any() else 0.0)
    return cpi, penalty


# --------------------------------------------------------------------------- public


def _default_alphas(line: _Line, d: np.ndarray) -> np.ndarray:
    """``GRID_POINTS`` steps in ``[-a, a]``, ``a`` where the larger end's per-token KL is ``KL_AT_ENDS``."""
    T = line.T

    def kl_both(a):
        return max(line.kl(_steps(Policy(line.logits(d, s)).expand_log_probs(T), T)) for s in (a, -a))

    hi = 1.0
    while kl_both(hi) < KL_AT_ENDS and hi < 1e8:
        hi *= 2.0
    if kl_both(hi) < KL_AT_ENDS:  # d does not move pi_old where it is reached
        a = 1.0
    else:
        lo = 0.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if kl_both(mid) < KL_AT_ENDS else (lo, mid)
        a = hi
    half = GRID_POINTS // 2
    return np.arange(-half, half + 1) / half * a


def surrogate(mdp, policy_old, behavior, objective, *, direction="gradient", alphas=None, anchor=None, seed=0,
              max_sequences: int = 200_000, **params) -> SurrogateCurve:
    r"""An objective's expected surrogate along a line ``theta_old + alpha d``, next to J and a lower bound.

    For each step ``alpha``, with ``pi_theta = softmax(theta_old + alpha d)``:

    .. math::
        	ext{surrogate}(lpha) = J(\pi_{old}) + L(	heta(lpha)) - L(	heta_{old}),\qquad
        L(	heta) = E_\mu\Big[rac{1}{
u} \sum_t 	ext{value}(l_t, A_t)\Big],

    with ``l_t = log pi_theta - log pi_anchor`` and each objective's declared value
    (``tokis.objectives``): seq ``W A``, tok ``r A``, ppo_clip ``min(r A, clip(r) A)`` (dual
    clip ``max(., c A)`` for ``A < 0``), cispo the continuous antiderivative of
    ``clip(r) A`` in ``l`` (``r A`` in the band, linear in ``l`` outside it, so its gradient is
    CISPO's coefficient at every theta), gspo ``min(s A, clip(s) A)`` per sequence
    (``s = exp(mean_t l_t)``). Its gradient at every theta is the objective's expected
    gradient (:func:`tokis.exact.objective_gradient`); for tok with ``mu = pi_old`` its slope
    at 0 is ``<grad J, d>``. Next to it the exact ``J(theta(alpha))`` and the bound below.

    Parameters
    ----------
    mdp : TokenMDP
    policy_old : Policy
        ``pi_old`` (logits ``theta_old``, (S, V) or (T, S, V)): where the line starts.
    behavior : Policy
        The sampler ``mu``.
    objective : str or ObjectiveSpec
        An objective whose coefficient declares its ``value``.
    direction : {"gradient", "natural", "random"} or array
        ``"gradient"``: ``grad J(theta_old)`` normalised to unit norm. ``"natural"``:
        ``F^+ grad J`` normalised, with ``F`` the exact Fisher information of the sequence
        distribution under ``pi_old``, block diagonal over rows:
        ``F_c = D_c (diag pi_c - pi_c pi_c^T)``, ``D_c = sum_t d^old_t(c)`` (per ``(t, c)`` for
        time-dependent logits); its pseudo-inverse row by row is ``u - mean(u)`` on the support,
        ``u = grad_c / (D_c pi_c)`` (0 on unreached rows). ``"random"``: a standard normal
        draw from ``np.random.default_rng(seed)``, zero where ``theta_old = -inf``, each row
        centred (a constant added to a row moves nothing), unit norm. An array of the logits'
        shape is used as given (not normalised), so ``alpha = 1`` is the step ``theta_old + d``.
    alphas : 1-D array, optional
        Step sizes. Default: 41 points ``a * k / 20``, ``k = -20..20``, with ``a`` the step at
        which the per-token ``KL(pi_old || pi_theta)`` under ``pi_old``'s occupancy reaches
        0.05 nats on the steeper side: beyond PPO's clip range (``|l| ~ 0.3``) but not
        degenerate.
    anchor : Policy, optional
        The clipping reference of ``l`` (default ``policy_old``).
    seed : int
        Seed of the random direction.
    max_sequences : int
        Largest enumeration.
    **params
        The objective's parameters and settings, as for :func:`tokis.exact.objective_gradient`
        (``baseline`` defaults to ``J(mu)``).

    Returns
    -------
    SurrogateCurve

    Notes
    -----
    **The bound** (``bound``), a finite-horizon undiscounted version of Kakade & Langford
    (2002) / TRPO Theorem 1 (Schulman et al., 2015) with CPO's expected TV (Achiam et al.,
    2017, Corollary 1). With ``A^old_t = Q^old_t - V^old_t`` and ``d_t`` the sub-probability
    of running at step ``t`` (eos allowed), the performance difference lemma gives exactly

    .. math::
        J(\pi) - J(\pi_{old}) = \sum_t E_{d^\pi_t}[ar a_t],\qquad
        ar a_t(c) = \sum_a \pi(a|c) A^{old}_t(c, a),

    while the CPI surrogate is ``sum_t E_{d^old_t}[abar_t]`` (``cpi``). Couple the two
    token processes step by step (maximal coupling: equal tokens with probability
    ``1 - TV_t(c)``); until they first differ they are in the same context, so
    ``d^pi_t - d^old_t`` is carried by the event ``D_t`` that they differed before ``t``, and

    .. math::
        P(D_t) \le \delta_t = \min\Big(\sum_{s<t} E_{d^{old}_s}[TV_s],\;
            1 - \prod_{s<t} (1 - \max_c TV_s(c))\Big),\qquad
        J(\pi) \ge J(\pi_{old}) + \sum_t E_{d^{old}_t}[ar a_t]
            - \sum_t \delta_t ig(\max_{c} ar a_t^+ + \max_{c} ar a_t^-ig),

    maxima over reached contexts. Since ``|abar_t| <= 2 TV max|A^old|``, the penalty is at most
    ``2 T (T - 1) max_c TV^2 max|A^old|`` (TRPO's ``4 eps gamma alpha^2 / (1 - gamma)^2`` with
    the horizon in place of ``1 / (1 - gamma)``), and by Pinsker ``TV <= sqrt(KL / 2)``. The
    bound equals ``J(pi_old)`` at ``alpha = 0`` and has the slope ``<grad J, d>`` there.

    Raises
    ------
    NoExactMethodError
        The DP does not apply and the MDP is too large to enumerate.
    ValueError, TypeError
        Bad input, naming the argument; an objective that declares no surrogate value.

    References
    ----------
    Kakade & Langford (2002), Approximately optimal approximate reinforcement learning, ICML;
    Schulman et al. (2015), Trust region policy optimization, ICML, Theorem 1; Achiam et al.
    (2017), Constrained policy optimization, ICML, Corollary 1.
    """
    spec = get_objective(objective)
    st = spec.settings(**params)
    _check_value_declared(spec, st)
    policy_old = check_pair(mdp, policy_old, "policy_old")
    behavior = check_pair(mdp, behavior, "behavior")
    anchor = policy_old if anchor is None else check_pair(mdp, anchor, "anchor")
    max_sequences = check_positive_int(max_sequences, "max_sequences")
    seed = check_positive_int(seed, "seed", minimum=0)
    if alphas is not None:
        alphas = _check_alphas(alphas)
    line = _Line(mdp, policy_old, behavior, anchor, spec, st)
    d, kind = _direction(direction, mdp, policy_old, seed, line.d_old)
    if alphas is None:
        alphas = _default_alphas(line, d)
    K, T = alphas.size, mdp.horizon
    base, method = _objective_value(line, policy_old, behavior, anchor, max_sequences)
    out = {k: np.empty(K) for k in ("surrogate", "value", "bound", "cpi", "kl")}
    for i, a in enumerate(alphas):
        pol = Policy(line.logits(d, a))
        L, used = _objective_value(line, pol, behavior, anchor, max_sequences)
        if used == "enumeration":
            method = used
        cpi, penalty = _cpi_and_penalty(line, pol)
        out["surrogate"][i] = line.J_old + (L - base)
        out["value"][i] = value(mdp, pol)
        out["cpi"][i] = line.J_old + cpi
        out["bound"][i] = out["cpi"][i] - penalty
        out["kl"][i] = line.kl(_steps(pol.expand_log_probs(T), T))
    pb = line.pb
    settings = {"aggregation": st.aggregation, "advantage": st.advantage, "baseline": pb.b,
                "normalize_std": st.normalize_std,
                "correction": None if st.correction is None else st.correction.name,
                "correction_level": st.correction_level, **dict(st.params), **dict(st.correction_params)}
    return SurrogateCurve(
        objective=spec.name, settings=MappingProxyType(settings), method=method, alphas=_freeze(alphas),
        **{k: _freeze(v) for k, v in out.items()}, direction=_freeze(d), direction_kind=kind,
        value_old=line.J_old, baseline=float(pb.b), bound_name=BOUND_NAME, reference=BOUND_REFERENCE)
