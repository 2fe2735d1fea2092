r"""Exact expected gradients of policy-gradient objectives (DESIGN section 10).

For an objective declared by its per-token coefficient (``tokis.objectives``), the per-sample
gradient is ``g_hat = (psi(L)) sum_t w_t grad log pi_theta(y_t | c_t)`` with ``psi`` the
aggregation. :func:`objective_gradient` returns its expectation under the sampler ``mu`` next to
the true gradient ``grad J(pi_theta)`` (:func:`._gradient.gradient`), with method

- ``"exact"`` (dynamic programming, :mod:`._pg_engines`) when the coefficient's conditional
  expectation factorises: token-level coefficients with the exact critic, or with a terminal
  advantage when the coefficient is linear in ``A`` (tok, cispo, tis/mis-corrected ones) or the
  MDP has no step rewards (ppo_clip: the sign of ``A`` is a function of the final context);
  the sequence-weighted ``seq`` under the tilted kernel ``mu exp(l)``; aggregation by the length
  ``L`` through a weight per termination step;
- ``"enumeration"`` otherwise (gspo's clipped sequence ratio, sequence-level corrections, clipped
  coefficients with step rewards), summing over every sequence of a small MDP; and
  :class:`~tokis.exact.NoExactMethodError` when neither applies.

References
----------
Sutton, McAllester, Singh, Mansour (2000), policy gradient theorem; Schulman et al. (2017), PPO;
Kakade & Langford (2002), the state/value mismatch of the first-order surrogate.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from .._core._validate import check_positive_int
from ..objectives import SequenceCoefficient, TokenCoefficient, get_objective
from ..objectives._sampled import coefficients, scatter_numpy, token_log_probs
from ._dp import _backward, _forward, _policy_steps, _steps, check_pair
from ._enumerate import enumerate_outcomes
from ._errors import NoExactMethodError
from ._gradient import gradient
from ._pg_engines import Walk, _ro, backward_tables, forward_pass, moments_tables, sign_probabilities, split_payoffs
from ._pg_kernels import tok_split_kernel
from ._recursions import prepare

__all__ = ["GradientMoments", "objective_gradient"]

METHODS = ("exact", "enumeration")


@dataclass(frozen=True)
class GradientMoments:
    r"""The exact expected gradient of an objective under the sampler, and how it relates to grad J.

    Attributes
    ----------
    objective : str
    settings : Mapping
        Aggregation, advantage, baseline used, correction and the objective's parameters.
    method : {"exact", "enumeration"}
    mean : array shaped like the logits
        ``g_bar = E_mu[g_hat]``.
    true : array shaped like the logits
        ``grad J(pi_theta)``.
    bias : array
        ``g_bar - grad J``.
    relative_bias : float
        ``||bias|| / ||grad J||``.
    cosine : float
        ``<g_bar, grad J> / (||g_bar|| ||grad J||)`` (nan when either is 0).
    ascent : float
        ``<grad J, g_bar> / ||grad J||^2``: the first-order gain in J per unit step along
        ``g_bar``, relative to a step along ``grad J``.
    clip_probability : float
        ``E_mu[#clipped tokens] / E_mu[L]``: tokens whose coefficient is not the unclipped
        ``r_t A`` (token-level objectives), or the probability a sequence is clipped
        (sequence-level; 0 for seq).
    clip_mass : float
        ``||g_bar_unclipped - g_bar|| / ||g_bar_unclipped||``: the share of the expected
        gradient clipping removes (``g_bar_unclipped``: the same settings with ``r A``).
    variance_along : float
        ``Var_mu(<g_hat, u>)`` per sample, ``u = grad J / ||grad J||``.
    trace : float
        ``trace Cov_mu(g_hat)`` per sample (exact by DP for time-dependent logits, by
        enumeration otherwise; nan when neither applies).
    n : int or None
    snr : float or None
        ``<g_bar, u> / sqrt(variance_along / n)``: the batch gradient's component along grad J in
        units of its standard deviation at batch size n.
    baseline : float
        ``b`` of the terminal advantage (``J(mu)`` unless given).
    state_mismatch, value_mismatch : arrays or None
        For ``tok`` (anchor mu, terminal advantage, token-sum aggregation, no correction): the
        exact split ``bias = state_mismatch + value_mismatch + support_mismatch`` with
        ``state = sum_t (d^mu_t - d^pi_t) pi (Q^mu - pi.Q^mu)`` and
        ``value = sum_t d^pi_t pi ((Q^mu - pi.Q^mu) - (Q^pi - V^pi))`` (the seed's mismatches).
    support_mismatch : array or None
        The rest (0 when mu > 0 wherever pi > 0).
    """

    objective: str
    settings: Mapping
    method: str
    mean: np.ndarray
    true: np.ndarray
    bias: np.ndarray
    relative_bias: float
    cosine: float
    ascent: float
    clip_probability: float
    clip_mass: float
    variance_along: float
    trace: float
    n: int | None
    snr: float | None
    baseline: float
    state_mismatch: np.ndarray | None = None
    value_mismatch: np.ndarray | None = None
    support_mismatch: np.ndarray | None = None


def _freeze(a):
    if isinstance(a, np.ndarray):
        a = a.view()
        a.setflags(write=False)
    return a


class _Problem:
    """Every table one objective evaluation reads (log-ratios, kernels, advantages).

    The tables that depend only on the policies (log-ratios, mu's occupancy ``d_mu`` and past
    rewards ``rho_mu``, its values ``V_mu``) are computed once; :meth:`twin` shares them with
    another objective's settings.
    """

    def __init__(self, mdp, policy, behavior, anchor, spec, st):
        self.mdp = mdp
        self.walk = Walk(mdp)
        T = mdp.horizon
        self.T = T
        self.policy = policy
        self.log_pi = _steps(policy.expand_log_probs(T), T)
        self.pi = np.exp(self.log_pi)
        self.log_mu = _steps(behavior.expand_log_probs(T), T)
        self.mu = np.exp(self.log_mu)
        log_old = self.log_mu if anchor is None else _steps(anchor.expand_log_probs(T), T)
        support = self.mu > 0
        with np.errstate(invalid="ignore"):
            self.l = np.where(support, self.log_pi - log_old, 0.0)
            self.l_rho = np.where(support, log_old - self.log_mu, 0.0)
        self.d_mu, self.rho_mu, _ = forward_pass(self.walk, self.mu)
        self.mean_length = float(self.d_mu.sum())
        self.V_mu, _ = _backward(mdp, self.mu, want_q=False)
        self.J_mu = float(mdp.start @ self.V_mu[0])
        self._return_var = None
        self._configure(spec, st)

    def twin(self, spec, st) -> "_Problem":
        """The same policies and MDP with another objective or settings (shared tables)."""
        other = copy.copy(self)
        other._configure(spec, st)
        return other

    def _configure(self, spec, st):
        self.spec, self.st = spec, st
        T = self.T
        if st.advantage == "terminal":
            self.b = self.J_mu if st.baseline is None else st.baseline
            self.sigma = 1.0
            if st.normalize_std:
                if self._return_var is None:
                    self._return_var = _return_variance(self.walk, self.mu)
                var, second = self._return_var
                # a constant return (variance at rounding level of E[G^2]): every advantage is 0, as the
                # batch version says
                self.sigma = math.sqrt(var) if var > 1e-12 * second else math.inf
        else:
            self.b, self.sigma = 0.0, 1.0
        agg = st.aggregation
        self.psi = {"seq_mean_token_sum": np.ones(T), "constant": np.full(T, 1.0 / T),
                    "token_mean": np.full(T, 1.0 / self.mean_length),
                    "seq_mean_token_mean": 1.0 / np.arange(1, T + 1)}[agg]

    def advantage_at(self, t: int) -> np.ndarray:
        """Exact critic ``Q^mu_t(c, a) - V^mu_t(c)`` (S, V)."""
        w = self.walk
        cont = w.cont(t)[None, :]
        q = w.r + np.where(cont, self.V_mu[t + 1][w.nxt], w.m[w.nxt])
        return q - self.V_mu[t][:, None]


def _return_variance(walk: Walk, mu) -> tuple[float, float]:
    """``(Var_mu(G), E_mu[G^2])`` (Bernoulli noise included): X = 1 from the start, F = G."""
    m1, m2, _ = moments_tables(walk, mu, np.zeros((1, walk.S, walk.V)), np.ones(walk.T), baseline=0.0, x_init=1.0)
    return max(m2 - m1 * m1, 0.0), m2


# --------------------------------------------------------------------------- the coefficient tables


def _correction_table(pb: _Problem, t: int) -> np.ndarray | float:
    st = pb.st
    if st.correction is None:
        return 1.0
    args = [st.correction_params[k] for k in st.correction.params]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return st.correction.factor(Walk.at(pb.l_rho, t), *args)


def _correction_tables(pb: _Problem) -> np.ndarray | float:
    """The token-level correction factor of every step, ``(Tp, S, V)`` (or 1.0 without one)."""
    st = pb.st
    if st.correction is None:
        return 1.0
    args = [st.correction_params[k] for k in st.correction.params]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return np.broadcast_to(st.correction.factor(pb.l_rho, *args), pb.l_rho.shape)


def _coef(pb: _Problem, l, A):
    coef = pb.spec.coefficient
    args = [pb.st.params[k] for k in coef.params]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return coef.fn(l, A, *args)


@dataclass(frozen=True, eq=False)
class _Tables:
    """The DP of one objective: mode, path kernel and coefficient tables ``(Tp, S, V)``.

    ``linear``/``split``: ``g_plus``, ``g_minus`` are the coefficients per unit of positive and
    of negative advantage (correction and ``1 / sigma`` included); ``critic``: the same per unit
    of the exact critic advantage ``A`` (``w = A g_plus`` for ``A > 0``, ``A g_minus``
    otherwise, by positive homogeneity), ``critic`` holding ``V^mu`` (T + 1, S).
    """

    mode: str
    kern: np.ndarray
    g_plus: np.ndarray
    g_minus: np.ndarray
    critic: np.ndarray | None = None


def _table_plan(pb: _Problem) -> _Tables | None:
    """The DP's tables, or None when only enumeration applies."""
    spec, st, walk = pb.spec, pb.st, pb.walk
    coef = spec.coefficient
    if st.correction is not None and st.correction_level == "sequence":
        return None
    if st.aggregation == "seq_mean_token_mean" and pb.mdp.eos is None:
        pb.psi = np.full(pb.T, 1.0 / pb.T)  # every sequence has T tokens
    shape = pb.l.shape
    if isinstance(coef, TokenCoefficient):
        gp = np.broadcast_to(_coef(pb, pb.l, 1.0), shape)
        gm = np.broadcast_to(-_coef(pb, pb.l, -1.0), shape)
        corr = _correction_tables(pb)
        if st.advantage == "critic":
            return _Tables("critic", pb.mu, walk.table(gp * corr), walk.table(gm * corr), pb.V_mu)
        linear = bool(np.array_equal(np.nan_to_num(gp), np.nan_to_num(gm)))
        if not linear and walk.has_r:
            return None
        k = corr / pb.sigma
        gp = walk.table(gp * k)
        return _Tables("linear" if linear else "split", pb.mu, gp, gp if linear else walk.table(gm * k))
    if isinstance(coef, SequenceCoefficient) and coef.multiplicative:
        if coef.per_length and pb.mdp.eos is not None:
            return None
        y = pb.l / pb.T if coef.per_length else pb.l
        with np.errstate(over="ignore"):
            kern = walk.table(pb.mu * np.exp(y))
        corr = _correction_tables(pb)
        if st.advantage == "critic":
            g = walk.table(np.broadcast_to(corr, (1, walk.S, walk.V) if np.ndim(corr) == 0 else np.shape(corr)))
            return _Tables("critic", kern, g, g, pb.V_mu)
        g = corr / pb.sigma
        g = walk.table(np.broadcast_to(g, (1, walk.S, walk.V) if np.ndim(g) == 0 else np.shape(g)))
        return _Tables("linear", kern, g, g)
    return None


def _plan(pb: _Problem):
    """``(mode, kernel, coef_at)`` of the DP, or None when only enumeration applies.

    ``coef_at(t) -> (g_plus, g_minus)`` (S, V) per step, the form :func:`._pg_engines.backward_coefficients`
    reads (critic: the coefficient itself, advantage included); the engine itself runs on the
    tables of :func:`_table_plan`.
    """
    tb = _table_plan(pb)
    if tb is None:
        return None
    if tb.mode == "critic":
        def coef_at(t):
            A = pb.advantage_at(t)
            g = np.where(A > 0, Walk.at(tb.g_plus, t), Walk.at(tb.g_minus, t)) * A
            return g, g
    else:
        def coef_at(t):
            return Walk.at(tb.g_plus, t), Walk.at(tb.g_minus, t)
    return tb.mode, tb.kern, coef_at


def _project(pb: _Problem, omega: np.ndarray) -> np.ndarray:
    """``omega - pi * sum_a omega``: expected coefficients to the logits' gradient."""
    if omega.ndim == 3:
        pi = pb.pi if pb.pi.shape[0] == omega.shape[0] else np.broadcast_to(pb.pi, omega.shape)
        return omega - pi * omega.sum(axis=-1, keepdims=True)
    return omega - pb.pi[0] * omega.sum(axis=-1, keepdims=True)


def _phi_at(pb: _Problem, u: np.ndarray):
    """``phi_t(c, a) = u[c, a] - sum_a' pi(a'|c) u[c, a']``: <grad log pi(a|c), u> (S, V)."""
    def phi(t):
        ut = u[t] if u.ndim == 3 else u
        pt = Walk.at(pb.pi, t)
        return ut - (pt * ut).sum(axis=1, keepdims=True)
    return phi


def _phi_table(pb: _Problem, u: np.ndarray) -> np.ndarray:
    """:func:`_phi_at` of every step, ``(Tp, S, V)``."""
    u = u if u.ndim == 3 else u[None]
    return u - (pb.pi * u).sum(axis=-1, keepdims=True)


def _dp(pb: _Problem, tb: _Tables, true, out_shape, *, moments: bool = True):
    """(mean, variance_along, trace) of the objective with tables ``tb`` (:func:`_table_plan`).

    Without ``moments`` only the mean (variance and trace nan).
    """
    walk, mode, kern = pb.walk, tb.mode, tb.kern
    keep_t = len(out_shape) == 3
    seq_like = kern is not pb.mu
    if seq_like:
        d, rho, _ = forward_pass(walk, kern)
    else:
        d, rho = pb.d_mu, pb.rho_mu
    crit = tb.critic
    omega = backward_tables(walk, kern, d, rho, pb.psi, tb.g_plus, tb.g_minus, baseline=pb.b, mode=mode,
                            keep_t=keep_t, critic=crit)
    mean = _project(pb, omega)
    if not moments:
        return mean, math.nan, math.nan
    norm = float(np.linalg.norm(true))
    u = true / norm if norm > 0 else np.zeros_like(true)
    phi = _phi_table(pb, u)
    kern2 = pb.mu * (kern / np.where(pb.mu > 0, pb.mu, 1.0)) ** 2 if seq_like else kern
    gm = tb.g_minus if crit is not None else None
    if mode == "split":
        zp1, zm1 = split_payoffs(walk, pb.b)
        zp2, zm2 = split_payoffs(walk, pb.b, power=2)
        a1, a2, _ = moments_tables(walk, kern, tb.g_plus * phi, pb.psi, baseline=pb.b, z=(zp1, zp2))
        b1, b2, _ = moments_tables(walk, kern, tb.g_minus * phi, pb.psi, baseline=pb.b, z=(zm1, zm2))
        var = a2 + b2 - (a1 - b1) ** 2
    else:
        kw = dict(baseline=pb.b, unit_return=mode == "critic", critic=crit, power=1,
                  x_minus=None if gm is None else gm * phi)
        x = tb.g_plus * phi
        m1, m2, _ = moments_tables(walk, kern, x, pb.psi, **kw)
        if seq_like:
            _, m2, _ = moments_tables(walk, kern2, x, pb.psi, **kw)
        var = m2 - m1 * m1
    trace = math.nan
    if keep_t:  # time-dependent logits: blocks t are disjoint, no cross terms
        kappa = 1.0 - 2.0 * pb.pi + (pb.pi * pb.pi).sum(axis=-1, keepdims=True)
        if mode == "split":
            _, _, tp = moments_tables(walk, kern, tb.g_plus ** 2 * kappa, pb.psi, baseline=pb.b, z=(zp1, zp2))
            _, _, tm = moments_tables(walk, kern, tb.g_minus ** 2 * kappa, pb.psi, baseline=pb.b, z=(zm1, zm2))
            second = tp + tm
        else:
            _, _, second = moments_tables(walk, kern2, tb.g_plus ** 2 * kappa, pb.psi, baseline=pb.b,
                                          unit_return=mode == "critic", critic=crit, power=2,
                                          x_minus=None if gm is None else gm ** 2 * kappa)
        trace = second - float((mean * mean).sum())
    return mean, max(var, 0.0), trace


def _clip_probability(pb: _Problem) -> float:
    """``E_mu[#tokens whose coefficient is not r A] / E_mu[L]`` for token-level coefficients (DP)."""
    coef, walk = pb.spec.coefficient, pb.walk
    if not isinstance(coef, TokenCoefficient):
        return math.nan
    r = np.exp(pb.l)
    with np.errstate(invalid="ignore"):
        ip = (np.abs(_coef(pb, pb.l, 1.0) - r) > 1e-12 * np.maximum(r, 1.0)).astype(float)
        im = (np.abs(_coef(pb, pb.l, -1.0) + r) > 1e-12 * np.maximum(r, 1.0)).astype(float)
    if not ip.any() and not im.any():  # no token is ever clipped
        return 0.0
    d, rho = pb.d_mu, pb.rho_mu
    ones = np.ones(pb.T)
    if pb.st.advantage == "critic":
        omega = backward_tables(walk, pb.mu, d, rho, ones, ip, im, baseline=0.0, mode="critic", critic=pb.V_mu,
                                power=0)
    elif np.array_equal(ip, im):
        omega = backward_tables(walk, pb.mu, d, rho, ones, ip, baseline=0.0, mode="critic")
    elif walk.has_r:
        return math.nan
    else:
        omega = backward_tables(walk, pb.mu, d, rho, ones, ip, -im, baseline=pb.b, mode="split",
                                payoff=sign_probabilities(walk, pb.b))
    return float(omega.sum()) / pb.mean_length


# --------------------------------------------------------------------------- enumeration


def _enumerated(pb: _Problem, behavior, anchor, true, max_sequences: int, out_shape):
    """(mean, variance_along, trace, clip_probability) by summing over every sequence."""
    pair = prepare(pb.mdp, pb.policy, behavior)
    o = enumerate_outcomes(pair, max_sequences, what=f"{pb.spec.name} has no exact recursion here")
    mask = o.mask
    lp_theta = token_log_probs(pb.policy, o.tokens, o.contexts, mask)
    lp_mu = token_log_probs(behavior, o.tokens, o.contexts, mask)
    lp_old = lp_mu if anchor is None else token_log_probs(anchor, o.tokens, o.contexts, mask)
    with np.errstate(invalid="ignore"):
        l = np.where(mask, lp_theta - lp_old, 0.0)
        l_rho = np.where(mask, lp_old - lp_mu, 0.0)
    N, T = mask.shape
    if pb.st.advantage == "critic":
        A = np.zeros((N, T))
        for t in range(T):
            adv = pb.advantage_at(t)
            A[:, t] = np.where(mask[:, t], adv[o.contexts[:, t], o.tokens[:, t]], 0.0)
    else:
        A = ((o.rewards.sum(axis=1) - pb.b) / pb.sigma)[:, None]
    w = coefficients(pb.spec, pb.st, l, A, l_rho, mask)
    L = mask.sum(axis=1)
    w = w * pb.psi[np.maximum(L - 1, 0)][:, None]
    probs = pb.pi if len(out_shape) == 3 else pb.pi[0]
    if len(out_shape) == 3 and probs.shape[0] != T:
        probs = np.broadcast_to(probs, (T,) + probs.shape[1:])
    mean = scatter_numpy(w * o.prob[:, None], o.tokens, o.contexts, mask, probs)
    norm = float(np.linalg.norm(true))
    u = true / norm if norm > 0 else np.zeros_like(true)
    phi = _phi_at(pb, u)
    proj = np.zeros(N)
    for t in range(T):
        proj += np.where(mask[:, t], w[:, t] * phi(t)[o.contexts[:, t], o.tokens[:, t]], 0.0)
    along_mean = float(o.prob @ proj)
    var = float(o.prob @ (proj - along_mean) ** 2)
    trace = math.nan
    size = int(np.prod(out_shape))
    if N * size <= 5e7:
        dense = np.stack([scatter_numpy(w[i:i + 1], o.tokens[i:i + 1], o.contexts[i:i + 1], mask[i:i + 1], probs)
                          .ravel() for i in range(N)])
        trace = float(o.prob @ ((dense - mean.ravel()) ** 2).sum(axis=1))
    clipped = np.nan
    coef = pb.spec.coefficient
    if isinstance(coef, SequenceCoefficient) and not coef.multiplicative:
        unclipped = np.exp(_lam(coef, l, mask))[:, None] * A
        raw = coefficients(pb.spec, pb.st.__class__(**{**_settings_dict(pb.st), "correction": None}), l, A, l_rho,
                           mask)
        cl = np.any(mask & (np.abs(raw - np.where(mask, unclipped, 0.0)) > 1e-12), axis=1)
        clipped = float(o.prob @ cl)
    return mean, var, trace, clipped


def _lam(coef, l, mask):
    lam = np.where(mask, l, 0.0).sum(axis=1)
    if coef.per_length:
        L = mask.sum(axis=1)
        lam = np.where(L > 0, lam / np.maximum(L, 1), 0.0)
    return lam


def _settings_dict(st) -> dict:
    return dict(params=st.params, aggregation=st.aggregation, advantage=st.advantage, baseline=st.baseline,
                normalize_std=st.normalize_std, correction=st.correction, correction_level=st.correction_level,
                correction_params=st.correction_params)


# --------------------------------------------------------------------------- tok's bias, split


def _tok_split_applies(spec, st, pb: _Problem) -> bool:
    """Whether the result carries tok's exact bias split (anchor mu, terminal, token sum, no correction)."""
    return (spec.name == "tok" and st.advantage == "terminal" and st.aggregation == "seq_mean_token_sum"
            and st.correction is None and not st.normalize_std and pb.l_rho.any() == 0)


def _tok_split(pb: _Problem, true, out_shape, *, want_gradient: bool = False):
    """(state, value) mismatch arrays of tok (anchor mu, terminal, token sum, no correction).

    With ``want_gradient``: ``(state, value, grad J)``, the true gradient from the same sweep
    (pi's occupancy and values as :func:`._gradient.gradient` forms them, the same sums).
    """
    mdp, walk = pb.mdp, pb.walk
    probs = _policy_steps(pb.policy)
    d_pi, _ = _forward(mdp, probs)
    V_pi, _ = _backward(mdp, probs, want_q=False)
    keep_t = len(out_shape) == 3
    state, value, grad = tok_split_kernel(walk.nxt32, walk.eos, _ro(walk.r), _ro(walk.m), walk.table(probs),
                                          _ro(pb.d_mu), _ro(d_pi), _ro(pb.V_mu), _ro(V_pi), pb.T, keep_t,
                                          bool(want_gradient), walk.chunks(steps=pb.T))
    if not keep_t:
        state, value, grad = state[0], value[0], grad[0] if want_gradient else grad
    return (state, value, grad) if want_gradient else (state, value)


# --------------------------------------------------------------------------- public


def objective_gradient(mdp, policy, behavior, objective, *, anchor=None, n: int | None = None,
                       method: str | None = None, max_sequences: int = 200_000, **params) -> GradientMoments:
    r"""The exact expected gradient of an objective under the sampler, against grad J.

    Parameters
    ----------
    mdp : TokenMDP
    policy : Policy
        The current policy pi_theta ((S, V) or (T, S, V) logits: the gradient's shape).
    behavior : Policy
        The sampler mu.
    objective : str or ObjectiveSpec
        ``seq``, ``tok``, ``ppo_clip``, ``cispo``, ``gspo`` or a declaration
        (``tokis.objectives.define``).
    anchor : Policy, optional
        pi_old, the clipping reference (default mu). Ratios ``r = pi_theta / pi_old``, engine
        mismatch ``rho = pi_old / mu``.
    n : int, optional
        Batch size for the signal-to-noise ratio.
    method : {"exact", "enumeration"}, optional
        Force a method (default: exact where the DP applies, else enumeration).
    max_sequences : int
        Largest enumeration.
    **params
        The objective's parameters and settings (``aggregation``, ``advantage``,
        ``baseline``, ``normalize_std``, ``correction``, ``correction_level``, ``c``, ``lo``,
        ``hi``, ``eps_low``, ``eps_high``, ``dual_clip``): see ``tokis.objectives.gradient``.
        ``baseline`` defaults to ``J(mu)`` here; ``normalize_std`` divides by the population
        standard deviation of the return under mu; ``token_mean`` divides by ``E_mu[L]``.

    Returns
    -------
    GradientMoments

    Raises
    ------
    NoExactMethodError
        The DP does not apply and the MDP is too large to enumerate.
    ValueError, TypeError
        Bad input, naming the argument.
    """
    spec = get_objective(objective)
    st = spec.settings(**params)
    policy = check_pair(mdp, policy, "policy")
    behavior = check_pair(mdp, behavior, "behavior")
    if anchor is not None:
        anchor = check_pair(mdp, anchor, "anchor")
    if n is not None:
        n = check_positive_int(n, "n")
    max_sequences = check_positive_int(max_sequences, "max_sequences")
    if method is not None and method not in METHODS:
        raise ValueError(f"method must be one of {METHODS} or None, got {method!r}")
    pb = _Problem(mdp, policy, behavior, anchor, spec, st)
    split = None
    if _tok_split_applies(spec, st, pb):  # one sweep gives the split and grad J
        state, value, true = _tok_split(pb, None, policy.logits.shape, want_gradient=True)
        split = (state, value)
    else:
        true = gradient(mdp, policy)
    out_shape = true.shape
    plan = None if method == "enumeration" else _table_plan(pb)
    if plan is None and method == "exact":
        raise NoExactMethodError(f"{spec.name} has no exact recursion with these settings: use method='enumeration'")
    if plan is not None:
        mean, var, trace = _dp(pb, plan, true, out_shape)
        clip_p = _clip_probability(pb) if isinstance(spec.coefficient, TokenCoefficient) else 0.0
        used = "exact"
    else:
        mean, var, trace, clip_p = _enumerated(pb, behavior, anchor, true, max_sequences, out_shape)
        if isinstance(spec.coefficient, TokenCoefficient):
            clip_p = _clip_probability(pb)
        used = "enumeration"
    clip_mass = math.nan
    if isinstance(spec.coefficient, TokenCoefficient):
        from ..objectives import define  # the unclipped twin of this objective, same settings

        twin = define(f"{spec.name}_unclipped", TokenCoefficient(_ratio_times_a))
        pt = pb.twin(twin, twin.settings(**_twin_settings(st)))
        twin_plan = _table_plan(pt)
        if twin_plan is not None:
            if plan is not None and _same_dp(pb, plan, pt, twin_plan):
                ref = mean  # the unclipped twin runs the very same DP (tok)
            else:
                ref, _, _ = _dp(pt, twin_plan, true, out_shape, moments=False)
            nref = float(np.linalg.norm(ref))
            clip_mass = float(np.linalg.norm(ref - mean)) / nref if nref > 0 else math.nan
    return _result(spec, st, used, mean, true, clip_p, clip_mass, var, trace, n, pb, split)


def _same_dp(pb: _Problem, a: _Tables, pt: _Problem, b: _Tables) -> bool:
    """Whether two plans run the same DP (same mode, kernel, tables, weights and baseline)."""
    return (a.mode == b.mode and a.kern is b.kern and a.critic is b.critic and pb.b == pt.b
            and np.array_equal(pb.psi, pt.psi) and np.array_equal(a.g_plus, b.g_plus)
            and np.array_equal(a.g_minus, b.g_minus))


def _ratio_times_a(l, A):
    return np.exp(l) * A


def _twin_settings(st) -> dict:
    kw = dict(aggregation=st.aggregation, advantage=st.advantage, baseline=st.baseline,
              normalize_std=st.normalize_std, correction_level=st.correction_level)
    if st.correction is not None:
        kw["correction"] = st.correction
        kw.update(st.correction_params)
    return kw


def _result(spec, st, method, mean, true, clip_p, clip_mass, var, trace, n, pb, split=None) -> GradientMoments:
    norm_t = float(np.linalg.norm(true))
    norm_m = float(np.linalg.norm(mean))
    dot = float((mean * true).sum())
    bias = mean - true
    along = dot / norm_t if norm_t > 0 else math.nan
    snr = None
    if n is not None:
        snr = along / math.sqrt(var / n) if var > 0 else (math.inf if along > 0 else math.nan)
    state = value = support = None
    if split is None and _tok_split_applies(spec, st, pb):
        split = _tok_split(pb, true, true.shape)
    if split is not None:
        state, value = split
        support = bias - state - value
    settings = {"aggregation": st.aggregation, "advantage": st.advantage, "baseline": pb.b,
                "normalize_std": st.normalize_std,
                "correction": None if st.correction is None else st.correction.name,
                "correction_level": st.correction_level, **dict(st.params), **dict(st.correction_params)}
    return GradientMoments(
        objective=spec.name, settings=MappingProxyType(settings), method=method,
        mean=_freeze(mean), true=_freeze(true), bias=_freeze(bias),
        relative_bias=float(np.linalg.norm(bias)) / norm_t if norm_t > 0 else math.nan,
        cosine=dot / (norm_m * norm_t) if norm_m > 0 and norm_t > 0 else math.nan,
        ascent=dot / norm_t ** 2 if norm_t > 0 else math.nan,
        clip_probability=float(clip_p), clip_mass=float(clip_mass), variance_along=float(var),
        trace=float(trace), n=n, snr=snr, baseline=float(pb.b),
        state_mismatch=_freeze(state), value_mismatch=_freeze(value), support_mismatch=_freeze(support),
    )
