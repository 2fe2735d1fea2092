"""What practitioners log about a batch of importance ratios: :func:`diagnose`."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from .._core._xp import to_host
from .._core._batch import input_library, prepare_log_ratio
from .._core._validate import check_band, check_c
from ._psis import psis_smooth
from ._reduce import host, kish

__all__ = ["Diagnostics", "diagnose"]


@dataclass(frozen=True)
class Diagnostics:
    """Weight diagnostics of one batch (see :func:`diagnose` for the formulas).

    Token-level quantities average over all real tokens of the batch and are ``nan`` when
    there is none. Log-space quantities are never clamped; their float versions are ``inf``
    when not representable, never NaN. For ``log_ratio`` with leading batch dimensions (...)
    every per-batch field (all but ``n``, ``clip_c``, ``lo``, ``hi``) is a numpy array of shape
    (...) (tuples of such arrays for the clip fractions), batch ``i`` equal to the call on
    that slice.
    """

    n: int
    num_tokens: int
    ess: float
    ess_fraction: float
    token_ess: float
    token_ess_fraction: float
    max_weight_share: float
    log_weight_max: float
    khat: float
    kl_k1: float
    kl_k2: float
    kl_k3: float
    kl_k1_seq: float
    kl_k2_seq: float
    kl_k3_seq: float
    log_token_second_moment: float
    token_chi2: float
    log_seq_second_moment: float
    seq_chi2: float
    geo_mean: float
    geo_min: float
    geo_max: float
    geo_outside_fraction: float
    clip_c: tuple
    clip_fraction_high: tuple
    clip_fraction_low: tuple
    lo: float
    hi: float
    token_mask_fraction: float
    seq_mask_fraction: float

    def as_dict(self) -> dict:
        """All fields as a plain dict."""
        return asdict(self)


def _logmeanexp(xp, x, count):
    """``log(sum exp(x) / count)`` per row of (R, K) with max-shifting: ``-inf`` entries are left out
    of the sum (``-inf`` when every entry of a row is, ``nan`` for ``count = 0``). Host (R,)."""
    finite = xp.isfinite(x)
    anyf = host(finite.any(axis=-1), bool)
    top = host(xp.where(finite, x, -xp.inf).max(axis=-1))
    safe = np.where(anyf, top, 0.0)
    total = host(xp.exp(x - xp.asarray(safe)[..., None]).sum(axis=-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = safe + np.log(total / count)
    out = np.where(anyf, out, -math.inf)
    return np.where(count == 0, math.nan, out)


def _expm1(x):
    with np.errstate(over="ignore"):
        return np.expm1(x)


def _masked_mean(xp, x, mask, count):
    """Mean of ``x`` over the true entries of ``mask`` per row of (R, K) (``nan`` where there is none)."""
    total = host(xp.where(mask, x, 0.0).sum(axis=-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), math.nan)


def _count_share(flags, count):
    """Number of true entries per row of (R, K) over ``count`` (``nan`` where ``count = 0``)."""
    hits = host(flags.sum(axis=-1), np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count > 0, hits / np.maximum(count, 1), math.nan)


def _thresholds(c) -> tuple[float, ...]:
    if isinstance(c, np.ndarray) and c.ndim == 0:
        c = c.item()
    if isinstance(c, Iterable) and not isinstance(c, str):
        values = tuple(check_c(v, "c") for v in c)
        if not values:
            raise ValueError("c must hold at least one threshold")
        return values
    return (check_c(c, "c"),)


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf


def diagnose(log_ratio, mask=None, *, c=2.0, lo=0.5, hi=2.0) -> Diagnostics:
    """Diagnostics of a batch of per-token log importance ratios.

    Parameters
    ----------
    log_ratio : array (n, T) or (..., n, T)
        ``l_t = log pi - log mu`` of tokens sampled from ``mu`` (numpy, cupy or torch); leading
        dimensions are independent batches, each diagnosed on its own.
        ``-inf`` allowed at real tokens, NaN/+inf not; masked positions ignored. cupy input
        is validated and reduced on the device (the PSIS fit copies the n sequence
        log-weights to the host); every field is a Python scalar.
    mask : bool array (..., n, T), optional
        True where a token exists (default all true).
    c : float > 0 or sequence of floats
        Clip thresholds: the fraction of real tokens with ``r_t > c`` and with ``r_t < 1/c``
        is reported for each (default 2.0).
    lo, hi : float
        Mask band, ``0 <= lo <= hi`` (defaults 0.5, 2.0): fraction of real tokens with ``r_t``
        outside and of sequences with ``W`` outside, and of geometric-mean ratios outside.

    Returns
    -------
    Diagnostics
        With ``r_t = exp(l_t)``, ``W_i = prod_t r_t``, ``N`` real tokens in all:

        - ``ess = (sum W)^2 / sum W^2`` (Kish), ``ess_fraction = ess / n``;
          ``token_ess`` the same over all ``r_t``, ``token_ess_fraction = token_ess / N``;
        - ``max_weight_share = max W / sum W``; ``log_weight_max = max log W``;
        - ``khat``: PSIS Pareto shape of the sequence weights (``inf`` when n < 21);
        - KL estimators (Schulman, "Approximating KL divergence", 2020) of ``KL(mu || pi)``,
          the direction that sampling from ``mu`` estimates:
          ``k1 = -l``, ``k2 = l^2 / 2``, ``k3 = (r - 1) - l``. ``kl_k*`` are per-token means
          (k1 and k3 unbiased for the ``d^mu``-averaged per-token KL, k2 biased with low
          variance); ``kl_k*_seq`` the means over sequences of the per-sequence sums (k1, k3
          unbiased for the sequence ``KL(mu || pi)`` by the chain rule);
        - ``log_token_second_moment = log mean_t r_t^2`` and ``token_chi2 = exp(.) - 1``,
          estimating ``chi^2(pi || mu) = E_mu[r^2] - 1`` per token;
          ``log_seq_second_moment = log mean_i W_i^2`` and ``seq_chi2 = exp(.) - 1``
          (sequence ``chi^2(pi || mu)``; ``1 / E[W^2]`` is the population ESS fraction);
        - geometric-mean ratios ``g_i = exp(sum_t l_t / L_i)`` (1 for an empty row):
          ``geo_mean``, ``geo_min``, ``geo_max``, ``geo_outside_fraction`` (outside [lo, hi]);
        - ``clip_fraction_high[j]`` / ``clip_fraction_low[j]``: fraction of real tokens with
          ``r_t > c_j`` / ``r_t < 1 / c_j``;
        - ``token_mask_fraction``: real tokens with ``r_t`` outside [lo, hi];
          ``seq_mask_fraction``: sequences with ``W`` outside [lo, hi].

    Raises
    ------
    ValueError, TypeError
        Bad shapes, non-boolean mask, NaN/+inf at real tokens, bad thresholds.

    References
    ----------
    Kish (1965), Survey sampling; Schulman (2020), Approximating KL divergence,
    http://joschu.net/blog/kl-approx.html; Vehtari et al. (2024), Pareto smoothed importance
    sampling, JMLR 25(72).
    """
    cs = _thresholds(c)
    lo, hi = check_band(lo, hi)
    batch = prepare_log_ratio(log_ratio, mask, device=input_library(log_ratio, None, mask) == "cupy")
    xp, R, n = batch.xp, batch.replications, batch.n
    T = batch.log_ratio.shape[1]
    lr = batch.log_ratio.reshape(R, n, T)
    m = batch.mask.reshape(R, n, T)
    L = batch.lengths.reshape(R, n)
    N = host(L.sum(axis=1), np.int64)  # real tokens per batch
    lw = lr.sum(axis=2)

    def flat(x):  # (R, n, T) -> (R, n * T): sums over a batch's tokens in one order
        return x.reshape(R, n * T)

    ess = kish(lw, xp.ones_like(lw))
    # token weights: every real token, masked ones as weight 0 (log-weight -inf)
    tok_lw = flat(xp.where(m, lr, -xp.inf))
    token_ess = np.where(N > 0, kish(tok_lw, xp.ones_like(tok_lw)), math.nan)
    finite = xp.isfinite(lw)
    anyf = host(finite.any(axis=1), bool)
    top = np.where(anyf, host(xp.where(finite, lw, -xp.inf).max(axis=1)), -math.inf)
    shift = xp.asarray(np.where(anyf, top, 0.0))
    share = np.where(anyf, 1.0 / host(xp.exp(lw - shift[:, None]).sum(axis=1)), math.nan)
    lw_host = to_host(lw)
    khat = np.array([psis_smooth(lw_host[r])[1] for r in range(R)])

    with np.errstate(invalid="ignore", over="ignore"):
        k1 = -lr
        k2 = 0.5 * lr * lr
        k3 = xp.expm1(lr) - lr
    k_tok = [_masked_mean(xp, flat(k), flat(m), N) for k in (k1, k2, k3)]
    k_seq = [host(xp.where(m, k, 0.0).sum(axis=2).mean(axis=1)) for k in (k1, k2, k3)]

    log_tok2 = _logmeanexp(xp, flat(xp.where(m, 2.0 * lr, -xp.inf)), N)
    log_seq2 = _logmeanexp(xp, 2.0 * lw, np.full(R, n))

    log_geo = xp.where(L > 0, lw / xp.maximum(L, 1), 0.0)
    with np.errstate(over="ignore"):
        geo = xp.exp(log_geo)
    log_lo, log_hi = _log(lo), _log(hi)
    geo_out = (log_geo < log_lo) | (log_geo > log_hi)
    seqs = np.full(R, n)

    high = tuple(_count_share(flat(m & (lr > _log(cj))), N) for cj in cs)
    low = tuple(_count_share(flat(m & (lr < -_log(cj))), N) for cj in cs)
    tok_out = _count_share(flat(m & ((lr < log_lo) | (lr > log_hi))), N)
    seq_out = _count_share((lw < log_lo) | (lw > log_hi), seqs)

    def out(x):  # (R,) -> float (one batch) or array of the batch shape
        x = np.asarray(x)
        return x.reshape(()).item() if batch.shape == () else x.reshape(batch.shape)

    return Diagnostics(
        n=n,
        num_tokens=out(N),
        ess=out(ess),
        ess_fraction=out(ess / n),
        token_ess=out(token_ess),
        token_ess_fraction=out(np.where(N > 0, token_ess / np.maximum(N, 1), math.nan)),
        max_weight_share=out(share),
        log_weight_max=out(top),
        khat=out(khat),
        kl_k1=out(k_tok[0]),
        kl_k2=out(k_tok[1]),
        kl_k3=out(k_tok[2]),
        kl_k1_seq=out(k_seq[0]),
        kl_k2_seq=out(k_seq[1]),
        kl_k3_seq=out(k_seq[2]),
        log_token_second_moment=out(log_tok2),
        token_chi2=out(_expm1(log_tok2)),
        log_seq_second_moment=out(log_seq2),
        seq_chi2=out(_expm1(log_seq2)),
        geo_mean=out(host(geo.mean(axis=1))),
        geo_min=out(host(geo.min(axis=1))),
        geo_max=out(host(geo.max(axis=1))),
        geo_outside_fraction=out(_count_share(geo_out, seqs)),
        clip_c=cs,
        clip_fraction_high=tuple(out(x) for x in high),
        clip_fraction_low=tuple(out(x) for x in low),
        lo=lo,
        hi=hi,
        token_mask_fraction=out(tok_out),
        seq_mask_fraction=out(seq_out),
    )
