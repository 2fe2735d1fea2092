r"""Exact divergences between a target policy :math:`\pi` and a behaviour policy :math:`\mu`.

Per context ``c`` at step ``t`` (rows of the two policies):

.. math::
    KL_t(c) = \sum_a \pi(a\mid c) \log\frac{\pi(a\mid c)}{\mu(a\mid c)},\qquad
    \chi^2_t(c) = \sum_a \frac{\pi(a\mid c)^2}{\mu(a\mid c)} - 1
               = \sum_a \frac{(\pi - \mu)^2}{\mu},\qquad
    R_{2,t}(c) = \log(1 + \chi^2_t(c)).

Conventions: :math:`0 \log 0 = 0` and :math:`0^2/0 = 0` (tokens neither policy can emit), and a
token with :math:`\mu = 0 < \pi` makes KL, :math:`\chi^2` and :math:`R_2` of that row ``+inf``
(never NaN). Supports are read from the log-probabilities (``-inf`` = probability 0), so
probabilities that merely underflow are not mistaken for a support mismatch.

Sequence-level quantities use the occupancy :math:`d^\pi_t(c)` of :mod:`._dp` and the
log-space forward pass with kernel :math:`\pi^2/\mu` (:func:`log_second_moment`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._dp import _forward, _log_forward, _policy_steps, check_pair

__all__ = ["token_divergence", "sequence_kl", "log_second_moment", "divergences", "Divergences", "support_mismatch"]

_KINDS = ("kl", "chi2", "renyi2")
_UNDER = ("target", "behavior")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _pair(mdp, target, behavior):
    pi = check_pair(mdp, target, "target")
    mu = check_pair(mdp, behavior, "behavior")
    return pi, mu


def _check_choice(value, allowed, name: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def _log_prob_steps(pi, mu, horizon: int):
    """Log-probabilities of both policies as (Tp, S, V), Tp = T if either is time-dependent else 1."""
    lp, lm = pi.log_probs, mu.log_probs
    if lp.ndim == 2 and lm.ndim == 2:
        return lp[None], lm[None]
    shape = (horizon,) + lp.shape[-2:]
    return np.broadcast_to(lp, shape), np.broadcast_to(lm, shape)


def _row_divergences(lp: np.ndarray, lm: np.ndarray, kind: str) -> np.ndarray:
    r"""Per-row divergence over the last axis (shape ``lp.shape[:-1]``), +inf on support mismatch.

    ``chi2`` uses :math:`\mu (e^{r} - 1)^2` with :math:`r = \log\pi - \log\mu`, evaluated as
    :math:`\exp(\log\mu + 2\log|e^r - 1|)`: every term is non-negative and accurate for
    nearby policies and for extreme log-probabilities.
    """
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        pi_zero = lp == -np.inf
        mismatch = (lm == -np.inf) & ~pi_zero
        r = lp - lm
        if kind == "kl":
            term = np.exp(lp) * r
            term = np.where(pi_zero, 0.0, term)
        else:
            log_abs_expm1 = np.where(r > 0, r + np.log(-np.expm1(-r)), np.log(-np.expm1(r)))
            term = np.exp(lm + 2.0 * log_abs_expm1)
            term = np.where(pi_zero & (lm == -np.inf), 0.0, term)
        term = np.where(mismatch, np.inf, term)
        out = term.sum(axis=-1)
        if kind == "renyi2":
            out = np.log1p(out)
    return out


def _weighted_sum(d: np.ndarray, per_context: np.ndarray) -> float:
    r""":math:`\sum_t \sum_c d_t(c)\, D_t(c)` with unreachable ``(t, c)`` (``d = 0``) contributing 0.

    ``per_context`` has shape (T, S) or (1, S) (stationary: the occupancy is summed over t).
    """
    w = d if per_context.shape[0] == d.shape[0] else d.sum(axis=0, keepdims=True)
    with np.errstate(invalid="ignore"):
        return float(np.where(w > 0, w * per_context, 0.0).sum())


def _occupancy(mdp, policy) -> np.ndarray:
    return _forward(mdp, _policy_steps(policy))[0]


def _log_second_moment(mdp, pi, mu) -> float:
    lp, lm = pi.log_probs, mu.log_probs
    if lp.ndim != lm.ndim:
        lp, lm = _log_prob_steps(pi, mu, mdp.horizon)
    with np.errstate(invalid="ignore"):
        log_kernel = np.where(lm == -np.inf, -np.inf, 2.0 * lp - lm)
    log_final = _log_forward(mdp, log_kernel)
    m = log_final.max()
    if m == -np.inf:
        return -np.inf
    return float(m + np.log(np.exp(log_final - m).sum()))


def _support_mismatch(mdp, pi, mu) -> float:
    lp, lm = _log_prob_steps(pi, mu, mdp.horizon)
    outside = lm == -np.inf
    if not outside.any():
        return 0.0
    probs = np.exp(lp)
    inside_probs = np.where(outside, 0.0, probs)
    escape = np.where(outside, probs, 0.0).sum(axis=-1)  # (Tp, S)
    d_inside = _forward(mdp, inside_probs)[0]
    return _weighted_sum(d_inside, escape)


# ---------------------------------------------------------------------------------------------
# public functions
# ---------------------------------------------------------------------------------------------


def token_divergence(mdp, target, behavior, *, kind: str = "kl", under: str = "target") -> float:
    r"""Per-token divergence :math:`D(\pi_t(\cdot\mid c)\,\|\,\mu_t(\cdot\mid c))` averaged over an occupancy.

    .. math:: \bar D = \frac{\sum_t \sum_c d_t(c)\, D_t(c)}{\sum_t \sum_c d_t(c)}

    where :math:`d` is the occupancy (:func:`~tokis.exact.occupancy`) of the policy named
    by ``under``; the denominator is that policy's expected length :math:`E[L]`. This is the
    average divergence per emitted token, the quantity practitioners log per token.

    Parameters
    ----------
    mdp : TokenMDP
    target, behavior : Policy
        :math:`\pi` and :math:`\mu`.
    kind : {"kl", "chi2", "renyi2"}
        :math:`KL(\pi\|\mu) = \sum_a \pi\log(\pi/\mu)`, :math:`\chi^2(\pi\|\mu) = \sum_a \pi^2/\mu - 1`,
        or Rényi-2 :math:`\log(1 + \chi^2)`.
    under : {"target", "behavior"}
        Whose occupancy weights the contexts.

    Returns
    -------
    float
        ``+inf`` when a context reachable under ``under`` has a token with
        :math:`\mu = 0 < \pi` (see :func:`support_mismatch`); never NaN.

    Raises
    ------
    TypeError, ValueError
        Bad ``mdp``/policies (names the argument), or an unknown ``kind`` or ``under``.
    """
    kind = _check_choice(kind, _KINDS, "kind")
    under = _check_choice(under, _UNDER, "under")
    pi, mu = _pair(mdp, target, behavior)
    d = _occupancy(mdp, pi if under == "target" else mu)
    per_context = _row_divergences(*_log_prob_steps(pi, mu, mdp.horizon), kind)
    return _weighted_sum(d, per_context) / float(d.sum())


def sequence_kl(mdp, target, behavior) -> float:
    r"""KL divergence between the sequence distributions, :math:`KL(\pi\|\mu)` over whole sequences.

    .. math:: KL(\pi\|\mu) = E_\pi\Big[\log\frac{\pi(y)}{\mu(y)}\Big]
              = \sum_t \sum_c d^\pi_t(c)\, KL_t(c)

    (chain rule; the start distribution is shared and cancels). Equals
    ``token_divergence(..., kind="kl", under="target")`` times :math:`E_\pi[L]`.

    Returns
    -------
    float
        ``+inf`` under a support mismatch reachable by :math:`\pi`.
    """
    pi, mu = _pair(mdp, target, behavior)
    per_context = _row_divergences(*_log_prob_steps(pi, mu, mdp.horizon), "kl")
    return _weighted_sum(_occupancy(mdp, pi), per_context)


def log_second_moment(mdp, target, behavior) -> float:
    r"""Log of the second moment of the sequence importance weight, :math:`\log E_\mu[W^2]`.

    .. math:: E_\mu[W^2] = \sum_{y:\, \mu(y) > 0} \mu(y) \Big(\frac{\pi(y)}{\mu(y)}\Big)^2
              = \sum_{y:\, \mu(y) > 0} \text{start}(c_0) \prod_{t<|y|}
                \frac{\pi_t(a_t\mid c_t)^2}{\mu_t(a_t\mid c_t)}

    i.e. :math:`1 + \chi^2` between the sequence distributions. Computed by a forward pass
    over contexts with per-token kernel :math:`\pi^2/\mu` in log space (per-row and per-step
    max-shifting), so it is finite and accurate for horizons in the thousands where
    :math:`E_\mu[W^2]` itself overflows. Sequences of every length (eos) are included. With
    :math:`\chi^2` fixed per context and no eos, :math:`E_\mu[W^2] = (1 + \chi^2)^T`.

    Support mismatch: the sum runs over the sequences :math:`\mu` can produce, so the result
    is finite; the :math:`\pi`-mass outside that support (where
    :math:`E_\mu[W] = 1 - \text{missing}`) is reported by :func:`support_mismatch`. Returns
    ``-inf`` when :math:`\pi` puts no mass on :math:`\mu`'s support.

    Returns
    -------
    float
    """
    pi, mu = _pair(mdp, target, behavior)
    return _log_second_moment(mdp, pi, mu)


def support_mismatch(mdp, target, behavior) -> float:
    r"""Target probability of the sequences the behaviour policy cannot produce.

    .. math:: m = P_\pi(\exists t: \mu_t(a_t\mid c_t) = 0)
              = \sum_t \sum_c \tilde d_t(c) \sum_{a:\, \mu_t(a\mid c) = 0} \pi_t(a\mid c)

    where :math:`\tilde d` is the :math:`\pi`-occupancy of the sequences that stayed inside
    :math:`\mu`'s support so far. Importance sampling from :math:`\mu` never sees this mass:
    :math:`E_\mu[W] = 1 - m`, and sequence IS is biased by
    :math:`-E_\pi[G\,1\{\text{outside}\}]`. Computed directly (not as ``1 - inside``) so small
    masses are accurate.

    Returns
    -------
    float in [0, 1]
    """
    pi, mu = _pair(mdp, target, behavior)
    return _support_mismatch(mdp, pi, mu)


@dataclass(frozen=True)
class Divergences:
    r"""Every divergence between :math:`\pi` (target) and :math:`\mu` (behaviour) on one MDP.

    Attributes
    ----------
    token_kl_target, token_kl_behavior : float
        Per-token :math:`KL(\pi\|\mu)` averaged over :math:`d^\pi` / :math:`d^\mu`
        (:func:`token_divergence`).
    token_chi2_target, token_chi2_behavior : float
        Per-token :math:`\chi^2(\pi\|\mu)`, same averaging.
    token_renyi2_target, token_renyi2_behavior : float
        Per-token Rényi-2 :math:`\log(1 + \chi^2)`, same averaging.
    sequence_kl : float
        :math:`KL(\pi\|\mu)` between sequence distributions (:func:`sequence_kl`).
    log_second_moment : float
        :math:`\log E_\mu[W^2]` over :math:`\mu`'s support (:func:`log_second_moment`).
    population_ess_fraction : float
        :math:`E_\mu[W]^2/E_\mu[W^2]` with :math:`E_\mu[W] = 1 -` ``missing_mass``: the large-n
        limit of the Kish ESS of sequence weights divided by n; equal to
        :math:`1/E_\mu[W^2] = e^{-\text{log\_second\_moment}}` under full support. In [0, 1].
    missing_mass : float
        :math:`P_\pi` of sequences outside :math:`\mu`'s support (:func:`support_mismatch`).
    expected_length_target, expected_length_behavior : float
        :math:`E_\pi[L]` and :math:`E_\mu[L]` (the token-average denominators).
    """

    token_kl_target: float
    token_kl_behavior: float
    token_chi2_target: float
    token_chi2_behavior: float
    token_renyi2_target: float
    token_renyi2_behavior: float
    sequence_kl: float
    log_second_moment: float
    population_ess_fraction: float
    missing_mass: float
    expected_length_target: float
    expected_length_behavior: float


def divergences(mdp, target, behavior) -> Divergences:
    r"""All divergences of :class:`Divergences` at once (each occupancy is computed once).

    Parameters
    ----------
    mdp : TokenMDP
    target, behavior : Policy

    Returns
    -------
    Divergences
    """
    pi, mu = _pair(mdp, target, behavior)
    lp, lm = _log_prob_steps(pi, mu, mdp.horizon)
    d_pi = _occupancy(mdp, pi)
    d_mu = _occupancy(mdp, mu)
    len_pi, len_mu = float(d_pi.sum()), float(d_mu.sum())
    out = {}
    for kind in _KINDS:
        rows = _row_divergences(lp, lm, kind)
        tot_pi = _weighted_sum(d_pi, rows)
        out[f"token_{kind}_target"] = tot_pi / len_pi
        out[f"token_{kind}_behavior"] = _weighted_sum(d_mu, rows) / len_mu
        if kind == "kl":
            out["sequence_kl"] = tot_pi
    lsm = _log_second_moment(mdp, pi, mu)
    missing = _support_mismatch(mdp, pi, mu)
    with np.errstate(divide="ignore", over="ignore"):  # disjoint supports: fraction 0
        ess_fraction = float(np.exp(2.0 * np.log1p(-missing) - lsm)) if missing < 1 else 0.0
    return Divergences(
        **out,
        log_second_moment=lsm,
        population_ess_fraction=ess_fraction,
        missing_mass=missing,
        expected_length_target=len_pi,
        expected_length_behavior=len_mu,
    )
