r"""The built-in objectives and corrections, each declared once.

Notation: ``l = log pi_theta - log pi_old`` (so ``r = exp(l)``), ``A`` the advantage,
``l^rho = log pi_old - log mu``. Defaults are the ones the frameworks use: PPO/GRPO clip
``eps = 0.2`` (DAPO's clip-higher: ``eps_high=0.28``), CISPO no lower bound and
``eps_high = 0.28``, GSPO ``3e-4 / 4e-4`` on the geometric-mean ratio, TIS ``C = 2``, masks
``[0.5, 2]``. Thresholds are compared in log space, once.

Each objective also declares its surrogate value (the function its coefficient is the gradient
of; :func:`tokis.exact.surrogate` draws it along a line): seq ``W A``; tok ``r A``; ppo_clip
``min(r A, clip(r) A)`` (dual clip: ``max(., c A)`` for ``A < 0``); gspo ``min(s A, clip(s) A)``;
cispo the continuous antiderivative of its coefficient (:func:`cispo_value`).
"""

from __future__ import annotations

import numpy as np

from .._core._validate import check_band
from ._coefficients import Correction, SequenceCoefficient, TokenCoefficient
from ._define import define, register, register_correction

__all__ = ["seq", "tok", "ppo_clip", "cispo", "gspo", "tis", "mis"]


def kept_by_clip(l, A, eps_low, eps_high):
    """PPO's rule: the gradient survives unless the ratio has left the trust region in A's direction."""
    return np.where(A > 0, l <= np.log1p(eps_high), l >= np.log1p(-eps_low))


def importance_weighted(lam, A):
    """``exp(lam) A``: the REINFORCE coefficient of the sequence-level importance-weighted objective."""
    return np.exp(lam) * A


def token_ratio(l, A):
    """``r_t A``: the gradient coefficient of the seed's token-level objective ``sum_t r_t A``."""
    return np.exp(l) * A


def ppo_coefficient(l, A, eps_low, eps_high, dual_clip):
    """``r A`` where PPO's clipped objective still depends on theta, else 0 (dual clip: ``r > c`` with ``A < 0``)."""
    keep = kept_by_clip(l, A, eps_low, eps_high)
    if dual_clip is not None:
        keep = keep & ~((A < 0) & (l > np.log(dual_clip)))
    return np.where(keep, np.exp(l) * A, 0.0)


def cispo_coefficient(l, A, eps_low, eps_high):
    """``sg(clip(r, 1 - eps_low, 1 + eps_high)) A``: the weight is clipped, no token is dropped."""
    return np.exp(np.clip(l, np.log1p(-eps_low), np.log1p(eps_high))) * A


def gspo_coefficient(lam, A, eps_low, eps_high):
    """``s A`` with ``s = exp(mean_t l_t)`` unless ``s`` left the trust region in A's direction."""
    return np.where(kept_by_clip(lam, A, eps_low, eps_high), np.exp(lam) * A, 0.0)


def _clipped_value(l, A, eps_low, eps_high):
    """``min(r A, clip(r, 1 - eps_low, 1 + eps_high) A)``, clipped by the same rule as :func:`kept_by_clip`."""
    edge = np.where(A > 0, 1.0 + eps_high, 1.0 - eps_low)
    return np.where(kept_by_clip(l, A, eps_low, eps_high), np.exp(l) * A, edge * A)


def ppo_value(l, A, eps_low, eps_high, dual_clip):
    """PPO's surrogate ``min(r A, clip(r) A)``, dual clip ``max(., c A)`` for ``A < 0``: :func:`ppo_coefficient`'s."""
    v = _clipped_value(l, A, eps_low, eps_high)
    if dual_clip is not None:
        v = np.where((A < 0) & (l > np.log(dual_clip)), dual_clip * A, v)
    return v


def cispo_value(l, A, eps_low, eps_high):
    r"""The continuous antiderivative of CISPO's coefficient in ``l``: ``clip(r) (1 + l - log clip(r)) A``.

    CISPO's loss ``sg(clip(r)) A log pi_theta`` has gradient ``clip(r) A grad log pi_theta``
    at every theta, but its value depends on where the stop-gradient is taken; this is the one
    function of theta whose gradient is that coefficient everywhere and which equals the tok/PPO
    value ``r A`` inside the band: outside it, the linearisation of ``r A`` in ``l`` at the
    band's edge (``sg(clip(r)) A l`` plus the constant that makes it continuous).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        lc = np.clip(l, np.log1p(-eps_low), np.log1p(eps_high))
        return np.where(l == lc, np.exp(l) * A, np.exp(lc) * (1.0 + l - lc) * A)


def gspo_value(lam, A, eps_low, eps_high):
    """GSPO's sequence surrogate ``min(s A, clip(s) A)``, ``s = exp(lam)``; gradient: :func:`gspo_coefficient`."""
    return _clipped_value(lam, A, eps_low, eps_high)


def truncated(l, c):
    """``min(rho, c)``."""
    return np.exp(np.minimum(l, np.log(c)))


def masked(l, lo, hi):
    """``rho 1{lo <= rho <= hi}``."""
    return np.where((l >= np.log(lo)) & (l <= np.log(hi)), np.exp(l), 0.0)


def _band(params):
    params["lo"], params["hi"] = check_band(params["lo"], params["hi"])
    return params


seq = register(define(
    "seq", SequenceCoefficient(importance_weighted, multiplicative=True, value=importance_weighted), unbiased=True,
    description="sequence-level importance weight: W A (REINFORCE on mu's samples)",
    reference="Williams (1992); Precup, Sutton, Singh (2000)"))
tok = register(define(
    "tok", TokenCoefficient(token_ratio, value=token_ratio),
    description="token-level ratio: r_t A (the seed's L_tok; PPO without clipping)",
    reference="Kakade & Langford (2002); Schulman et al. (2015), TRPO"))
ppo_clip = register(define(
    "ppo_clip", TokenCoefficient(ppo_coefficient, value=ppo_value),
    params={"eps_low": 0.2, "eps_high": 0.2, "dual_clip": None},
    aggregation="token_mean",
    description="PPO/GRPO clipped surrogate: r_t A unless clipped (optional dual clip for A < 0)",
    reference="Schulman et al. (2017), PPO; Shao et al. (2024), GRPO; Yu et al. (2025), DAPO (eps_high=0.28); "
              "Ye et al. (2020), dual clip"))
cispo = register(define(
    "cispo", TokenCoefficient(cispo_coefficient, value=cispo_value), params={"eps_low": 1.0, "eps_high": 0.28},
    aggregation="token_mean",
    description="CISPO: sg(clip(r_t, 1 - eps_low, 1 + eps_high)) A",
    reference="MiniMax (2025), MiniMax-M1, arXiv:2506.13585"))
gspo = register(define(
    "gspo", SequenceCoefficient(gspo_coefficient, per_length=True, value=gspo_value),
    params={"eps_low": 3e-4, "eps_high": 4e-4},
    aggregation="seq_mean_token_mean",
    description="GSPO: clipped geometric-mean sequence ratio s = exp(mean_t l_t), s A",
    reference="Zheng et al. (2025), Group sequence policy optimization, arXiv:2507.18071"))

tis = register_correction(Correction(
    "tis", truncated, {"c": 2.0}, description="truncated importance sampling: min(rho, C)",
    reference="Yao et al. (2025), Your efficient RL framework secretly brings you off-policy RL training"))
mis = register_correction(Correction(
    "mis", masked, {"lo": 0.5, "hi": 2.0}, description="masked importance sampling: rho 1{lo <= rho <= hi}",
    reference="Liu et al. (2025), When speed kills stability; Ling Team (2025), IcePop", check=_band))
