r"""The 14 built-in estimators, each declared once with the public :func:`define`.

Notation (DESIGN section 4): ``l_t = log pi(a_t|c_t) - log mu(a_t|c_t)`` of the sampled token,
``r_t = exp(l_t)``, ``W = prod_t r_t``, ``L`` the number of real tokens, ``G`` the return.
Token maps take the log-ratio and compare it with thresholds in log space (``log c``,
``log lo``, ``log hi``); the estimator and its exact moments evaluate the very same map.
"""

from __future__ import annotations

import math

import numpy as np

from .._core._validate import check_band, check_c
from ._define import Param, _register_builtin, define
from ._forms import BatchTransform, PerDecision, SequenceTransform, TokenProduct, TokenSum
from ._psis import khat_threshold, psis_smooth

__all__ = [
    "seq", "tok", "tok_sum", "tok_mean", "pdis", "wpdis", "snis", "trunc_seq", "clip_prod", "clip_tok", "geo",
    "mask_seq", "mask_tok", "psis",
]


# --------------------------------------------------------------------------- token maps


def log_ratio(l):
    """``y(l) = l``: the plain importance ratio, as a log factor."""
    return l


def ratio(l):
    """``x(l) = r``."""
    return np.exp(l)


def ratio_minus_one(l):
    """``x(l) = r - 1`` (``exp(l) - 1``: vectorises in the numba kernel; absolute error ~1e-16 near r = 1)."""
    return np.exp(l) - 1.0


def clipped_log_ratio(l, c):
    """``y(l) = min(l, log c)``: the log of ``min(r, c)``."""
    return np.minimum(l, np.log(c))


def clipped_ratio_minus_one(l, c):
    """``x(l) = min(r, c) - 1``."""
    return np.exp(np.minimum(l, np.log(c))) - 1.0


def above(l, c):
    """``r > c``, compared in log space."""
    return l > np.log(c)


def inside(l, lo, hi):
    """``lo <= r <= hi`` (or ``lo <= W <= hi``), compared in log space: the one band test."""
    return (l >= np.log(lo)) & (l <= np.log(hi))


def outside(l, lo, hi):
    """Not :func:`inside`."""
    return np.logical_not(inside(l, lo, hi))


def masked_ratio_minus_one(l, lo, hi):
    """``x(l) = 1{lo <= r <= hi} (r - 1)``."""
    return np.where(inside(l, lo, hi), np.exp(l) - 1.0, 0.0)


def masked_log_weight(lw, lo, hi):
    """``log(W 1{lo <= W <= hi})``."""
    return np.where(inside(lw, lo, hi), lw, -np.inf)


# --------------------------------------------------------------------------- parameters and batch transforms


def _c(value, name):
    return check_c(value, name)


def _c_or_ionides(value, name):
    return check_c(value, name, allow_ionides=True)


def _product_bound(T, c):
    """``prod_t min(r_t, c) <= max(c, 1)^T``."""
    return max(c, 1.0) ** T


def _token_clip_bound(T, c):
    """``1 + sum_t (min(r_t, c) - 1) <= 1 + T max(c - 1, 0)``."""
    return 1.0 + T * max(c - 1.0, 0.0)


def _token_mask_bound(T, hi):
    """``1 + sum_t 1{band} (r_t - 1) <= 1 + T max(hi - 1, 0)``."""
    return 1.0 + T * max(hi - 1.0, 0.0)


def _sequence_mask_bound(T, hi):
    """``W 1{lo <= W <= hi} <= hi``."""
    return hi


def _band(params):
    params["lo"], params["hi"] = check_band(params["lo"], params["hi"])
    return params


def _truncate(log_w, *, c):
    """Truncate ``W`` at ``c`` (``"ionides"``: ``c = mean(W) sqrt(n)`` from the batch).

    ``log_w`` (n,) is one batch, or (R, n) one batch per row (each row exactly what its own
    (n,) call returns; the diagnostics are then (R,) arrays instead of floats).
    """
    n = log_w.shape[-1]
    if c == "ionides":
        finite = np.isfinite(log_w)
        some = finite.any(axis=-1, keepdims=True)
        top = np.where(some, np.where(finite, log_w, -np.inf).max(axis=-1, keepdims=True), 0.0)
        with np.errstate(divide="ignore"):
            mean_w = np.exp(log_w - top).mean(axis=-1, keepdims=True)
            log_c = np.where(some, top + np.log(mean_w) + 0.5 * math.log(n), -np.inf)
    else:
        log_c = np.full(log_w.shape[:-1] + (1,), math.log(c))
    lc = log_c[..., 0]
    diag = {"c": np.where(lc < 709.0, np.exp(np.minimum(lc, 709.0)), np.inf), "log_c": lc,
            "truncated_fraction": np.count_nonzero(log_w > log_c, axis=-1) / n}
    if log_w.ndim == 1:
        diag = {k: float(v) for k, v in diag.items()}
    return np.minimum(log_w, log_c), diag


def _smooth(log_w, *, self_normalized):
    smoothed, khat, tail = psis_smooth(log_w)
    threshold = khat_threshold(log_w.shape[0])
    return smoothed, {"khat": khat, "khat_threshold": threshold, "reliable": bool(khat <= threshold),
                      "tail_length": tail}


# --------------------------------------------------------------------------- declarations

_W = TokenProduct(log_ratio)

seq = define(
    "seq", _W, unbiased=True, description="sequence-level IS: W G",
    reference="Kahn & Marshall (1953); Precup, Sutton, Singh (2000), ICML",
    notes=("Unbiased for J(pi) when mu > 0 wherever pi > 0; its variance grows like E_mu[W^2], exponentially in "
           "T. ess is Kish's on W."))
tok = define(
    "tok", TokenSum(ratio_minus_one, offset=1.0),
    description="first-order token IS: (1 + sum_t (r_t - 1)) G (CPI surrogate)",
    reference="Kakade & Langford (2002); Schulman et al. (2015), TRPO",
    notes=("The linearisation of W around 1; its expectation is the CPI/TRPO surrogate J(mu) + sum_t "
           "E_{d^mu_t}[sum_a (pi - mu)(a|c) Q^mu_t(c, a)], biased for J(pi) (second order in pi - mu). ess is "
           "Kish's on the implied sequence weights 1 + sum_t (r_t - 1) (which may be negative)."))
tok_sum = define(
    "tok_sum", TokenSum(ratio, offset=0.0), description="token-sum IS: (sum_t r_t) G",
    reference="Schulman et al. (2017), PPO",
    notes=("The seed's L_tok literally (token-sum loss scale): with equal policies it gives E[L G], not J. ess "
           "is Kish's on sum_t r_t."))
tok_mean = define(
    "tok_mean", TokenSum(ratio, offset=0.0, per_length=True), description="token-mean IS: (sum_t r_t / L) G",
    reference="Shao et al. (2024), DeepSeekMath (GRPO)",
    notes="An empty row (L = 0) has weight 1. ess is Kish's on sum_t r_t / L.")
pdis = define(
    "pdis", PerDecision(log_ratio), unbiased=True, description="per-decision IS: sum_t W_{<=t} rew_t",
    reference="Precup, Sutton, Singh (2000), ICML",
    notes=("Unbiased for J(pi); each reward is weighted only by the ratios of the actions that preceded it. "
           "Equals seq for terminal-only rewards (bit for bit when they are given as (n,)). ess is Kish's on W."))
wpdis = define(
    "wpdis", PerDecision(log_ratio), reduce="ratio",
    description="weighted per-decision IS: sum_t sum_i W_{i,<=t} rew_{i,t} / sum_i W_{i,<=t}",
    reference="Precup, Sutton, Singh (2000); Thomas (2015), PhD thesis",
    notes=("Every row enters every step's denominator (an ended sequence keeps W_{<=t} = W). Consistent, biased "
           "at finite n (O(1/n)); the standard error is the delta method on the sum of per-step ratios. "
           "numerator/denominator are (n, T); diagnostics column_log_scale, step_ratios. nan when a step with "
           "rewards has zero total weight."))
snis = define(
    "snis", _W, reduce="ratio", description="self-normalised IS: sum_i W_i G_i / sum_i W_i",
    reference="Owen (2013), Monte Carlo theory, ch. 9",
    notes=("Consistent, biased at finite n (O(1/n)); always within the range of the returns. Standard error by "
           "the delta method; nan when every weight is zero. ess is Kish's on W."))
trunc_seq = define(
    "trunc_seq", _W, reduce=BatchTransform(_truncate, per_sample=lambda p: p["c"] != "ionides", batched=True),
    params={"c": Param("ionides", _c_or_ionides)},
    description="truncated sequence IS: min(W, c) G, c = mean(W) sqrt(n) by default",
    reference="Ionides (2008), JCGS 17(2)",
    notes=("Biased downwards for non-negative returns. c = 'ionides' uses c = mean(W) sqrt(n) from the batch (a "
           "batch transform: the standard error treats it as fixed). Diagnostics: c and log_c used, "
           "truncated_fraction of sequences with W > c."))
clip_prod = define(
    "clip_prod", TokenProduct(clipped_log_ratio), params={"c": Param(2.0, _c)}, level="token",
    token_flags={"clipped_fraction": above},
    description="per-token truncated product: prod_t min(r_t, c) G",
    reference="Munos et al. (2016), Retrace; Espeholt et al. (2018), IMPALA",
    weight_bound=_product_bound,
    notes=("Biased (downwards for non-negative returns); variance bounded by c^(2T). Diagnostics: "
           "clipped_fraction of real tokens with r_t > c (log-space comparison)."))
clip_tok = define(
    "clip_tok", TokenSum(clipped_ratio_minus_one, offset=1.0), params={"c": Param(2.0, _c)},
    token_flags={"clipped_fraction": above},
    description="token-level TIS: (1 + sum_t (min(r_t, c) - 1)) G",
    reference="Yao et al. (2025), truncated importance sampling for rollout mismatch",
    weight_bound=_token_clip_bound,
    notes="The token surrogate, truncated; biased. Diagnostics: clipped_fraction of real tokens with r_t > c.")
geo = define(
    "geo", TokenProduct(log_ratio, per_length=True),
    description="length-normalised sequence ratio: exp(sum_t l_t / L) G", reference="Zheng et al. (2025), GSPO",
    notes=("GSPO's sequence ratio W^(1/L); an empty row has weight 1. Biased (a different surrogate) but with "
           "variance that does not grow with T."))
mask_seq = define(
    "mask_seq", SequenceTransform(_W, masked_log_weight), params={"lo": 0.5, "hi": 2.0}, check=_band,
    sequence_flags={"masked_fraction": outside},
    description="sequence masking: W G 1{lo <= W <= hi}", reference="Liu et al. (2025), training-inference mismatch",
    weight_bound=_sequence_mask_bound,
    notes="Biased. Diagnostics: masked_fraction of sequences outside the band (compared in log space).")
mask_tok = define(
    "mask_tok", TokenSum(masked_ratio_minus_one, offset=1.0), params={"lo": 0.5, "hi": 2.0}, check=_band,
    token_flags={"masked_fraction": outside},
    description="token masking: (1 + sum_t 1{lo <= r_t <= hi} (r_t - 1)) G", reference="Ling Team (2025), IcePop",
    weight_bound=_token_mask_bound,
    notes=("Tokens outside the band drop out of the token surrogate (one band test, in log space, shared with "
           "the exact moments). Biased. Diagnostics: masked_fraction of real tokens outside."))
psis = define(
    "psis", _W, reduce=BatchTransform(_smooth, then=lambda p: "ratio" if p["self_normalized"] else "mean"),
    params={"self_normalized": True},
    description="Pareto-smoothed sequence IS (self-normalised by default), reports k-hat",
    reference="Vehtari, Simpson, Gelman, Yao, Gabry (2024), JMLR 25(72)",
    notes=("The largest M = ceil(min(n/5, 3 sqrt n)) weights are replaced by expected order statistics of a "
           "fitted generalized Pareto; tied weights share their smoothed value (order-invariant). Diagnostics: "
           "khat (> khat_threshold = min(1 - 1/log10 n, 0.7) is unreliable; inf when n < 21, when 1-4 weights "
           "stand above a tied rest or one weight dominates, or when the fit fails; -inf for a bounded tail), "
           "reliable, tail_length. For cupy input the n log-weights are smoothed on the host."))

for _spec in (seq, tok, tok_sum, tok_mean, pdis, wpdis, snis, trunc_seq, clip_prod, clip_tok, geo, mask_seq,
              mask_tok, psis):
    _register_builtin(_spec)
