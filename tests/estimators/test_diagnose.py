"""diagnose(): hand-checked values; PSIS k-hat against known Pareto tails and a plain-Python fit."""

import math
import statistics

import numpy as np
import pytest

import tokis.estimators as est
from tokis.estimators._psis import psis_tail_length

ROWS = [[0.2, -0.1, 0.3], [-0.5, 0.4], [0.1]]


def arrays():
    lr = np.full((3, 3), 3.0)
    mask = np.zeros((3, 3), dtype=bool)
    for i, row in enumerate(ROWS):
        lr[i, : len(row)] = row
        mask[i, : len(row)] = True
    return lr, mask


def kish(w):
    return sum(w) ** 2 / sum(x * x for x in w)


def test_hand_checked_values():
    lr, mask = arrays()
    d = est.diagnose(lr, mask, c=(1.2, 1.5), lo=0.8, hi=1.3)
    toks = [x for r in ROWS for x in r]
    r = [math.exp(x) for x in toks]
    W = [math.exp(sum(row)) for row in ROWS]
    assert d.n == 3 and d.num_tokens == 6
    assert d.ess == pytest.approx(kish(W), rel=1e-12)
    assert d.ess_fraction == pytest.approx(kish(W) / 3, rel=1e-12)
    assert d.token_ess == pytest.approx(kish(r), rel=1e-12)
    assert d.token_ess_fraction == pytest.approx(kish(r) / 6, rel=1e-12)
    assert d.max_weight_share == pytest.approx(max(W) / sum(W), rel=1e-12)
    assert d.log_weight_max == pytest.approx(max(sum(row) for row in ROWS))
    assert d.khat == math.inf  # n = 3: too few draws to assess the tail
    # KL(mu || pi) estimators per token and per sequence.
    assert d.kl_k1 == pytest.approx(statistics.fmean(-x for x in toks), rel=1e-12)
    assert d.kl_k2 == pytest.approx(statistics.fmean(x * x / 2 for x in toks), rel=1e-12)
    assert d.kl_k3 == pytest.approx(statistics.fmean(math.exp(x) - 1 - x for x in toks), rel=1e-12)
    assert d.kl_k1_seq == pytest.approx(statistics.fmean(sum(-x for x in row) for row in ROWS), rel=1e-12)
    assert d.kl_k2_seq == pytest.approx(statistics.fmean(sum(x * x / 2 for x in row) for row in ROWS), rel=1e-12)
    assert d.kl_k3_seq == pytest.approx(statistics.fmean(sum(math.exp(x) - 1 - x for x in row) for row in ROWS), rel=1e-12)
    # chi^2 in log space.
    assert d.log_token_second_moment == pytest.approx(math.log(statistics.fmean(x * x for x in r)), rel=1e-12)
    assert d.token_chi2 == pytest.approx(statistics.fmean(x * x for x in r) - 1, rel=1e-12)
    assert d.log_seq_second_moment == pytest.approx(math.log(statistics.fmean(w * w for w in W)), rel=1e-12)
    assert d.seq_chi2 == pytest.approx(statistics.fmean(w * w for w in W) - 1, rel=1e-12)
    # Geometric-mean ratios.
    geo = [math.exp(sum(row) / len(row)) for row in ROWS]
    assert d.geo_mean == pytest.approx(statistics.fmean(geo), rel=1e-12)
    assert (d.geo_min, d.geo_max) == (pytest.approx(min(geo)), pytest.approx(max(geo)))
    assert d.geo_outside_fraction == pytest.approx(sum(not 0.8 <= x <= 1.3 for x in geo) / 3)
    # Clip and mask fractions.
    assert d.clip_c == (1.2, 1.5)
    assert d.clip_fraction_high == pytest.approx([sum(x > c for x in r) / 6 for c in (1.2, 1.5)])
    assert d.clip_fraction_low == pytest.approx([sum(x < 1 / c for x in r) / 6 for c in (1.2, 1.5)])
    assert d.clip_fraction_high[0] > 0 and d.clip_fraction_low[0] > 0
    assert d.token_mask_fraction == pytest.approx(sum(not 0.8 <= x <= 1.3 for x in r) / 6)
    assert d.seq_mask_fraction == pytest.approx(sum(not 0.8 <= w <= 1.3 for w in W) / 3)
    assert 0 < d.token_mask_fraction < 1 and 0 < d.seq_mask_fraction < 1
    as_dict = d.as_dict()
    assert as_dict["ess"] == d.ess and set(as_dict) >= {"khat", "kl_k3", "seq_chi2", "clip_fraction_high"}


def test_default_thresholds():
    lr, mask = arrays()
    d = est.diagnose(lr, mask)
    assert d.clip_c == (2.0,) and (d.lo, d.hi) == (0.5, 2.0)


def test_chi2_is_not_clamped_and_never_nan():
    lr = np.full((2, 3), 400.0)
    lr[1] = 399.0
    d = est.diagnose(lr)
    # log mean W^2 = log((e^2400 + e^2394) / 2), computed here by factoring out e^2400.
    assert d.log_seq_second_moment == pytest.approx(2400 + math.log((1 + math.exp(-6)) / 2), rel=1e-14)
    assert d.seq_chi2 == math.inf and d.token_chi2 == math.inf
    assert d.log_token_second_moment == pytest.approx(800 + math.log((1 + math.exp(-2)) / 2), rel=1e-14)
    assert d.ess == pytest.approx(kish([1.0, math.exp(-3)]), rel=1e-12)
    small = est.diagnose(np.full((2, 2), -400.0))
    assert small.seq_chi2 == -1.0 and small.log_seq_second_moment == pytest.approx(-1600.0)


def test_zero_target_probability_gives_infinite_kl_not_nan():
    lr = np.array([[-np.inf, 0.1], [0.2, 0.0]])
    d = est.diagnose(lr)
    assert d.kl_k1 == math.inf and d.kl_k3 == math.inf and d.kl_k2 == math.inf
    assert d.kl_k1_seq == math.inf
    assert d.max_weight_share == 1.0 and d.ess == pytest.approx(1.0)
    values = [v for v in d.as_dict().values() if isinstance(v, float)]
    assert not any(math.isnan(v) for v in values)


def test_rows_without_tokens():
    lr = np.zeros((2, 2))
    mask = np.zeros((2, 2), dtype=bool)
    d = est.diagnose(lr, mask)
    assert d.num_tokens == 0 and math.isnan(d.kl_k1) and math.isnan(d.token_ess)
    assert d.ess == 2.0 and d.geo_mean == 1.0


# --- PSIS k-hat -----------------------------------------------------------------------------


def _zhang_stephens(x):
    """Plain-Python transcription of the Zhang & Stephens (2009) fit with the PSIS prior."""
    n = len(x)
    m = 30 + int(math.sqrt(n))
    q = x[int(n / 4 + 0.5) - 1]
    thetas = [1 / x[-1] + (1 - math.sqrt(m / (j - 0.5))) / (3 * q) for j in range(1, m + 1)]
    ks = [statistics.fmean(math.log1p(-th * xi) for xi in x) for th in thetas]
    logliks = [n * (math.log(-th / k) - k - 1) for th, k in zip(thetas, ks)]
    top = max(logliks)
    post = [math.exp(ll - top) for ll in logliks]
    theta = sum(t * p for t, p in zip(thetas, post)) / sum(post)
    k = statistics.fmean(math.log1p(-theta * xi) for xi in x)
    sigma = -k / theta
    return (n * k + 10 * 0.5) / (n + 10), sigma


def test_psis_matches_a_plain_python_pareto_smoothing(rng):
    n = 30
    w = sorted(float(x) for x in rng.pareto(1.5, size=n) + 1.0)
    g = rng.uniform(0.0, 1.0, size=n)
    M = math.ceil(min(0.2 * n, 3 * math.sqrt(n)))
    assert M == psis_tail_length(n) == 6
    u = w[n - M - 1]
    exceed = [x - u for x in w[n - M :]]
    k, sigma = _zhang_stephens(exceed)
    smoothed = list(w)
    for j in range(M):
        p = (j + 1 - 0.5) / M
        smoothed[n - M + j] = min(u + sigma / k * ((1 - p) ** (-k) - 1), w[-1])
    expected = sum(s * gi for s, gi in zip(smoothed, g)) / sum(smoothed)
    lr = np.log(np.array(w))[:, None] + 5.0  # a common shift changes nothing
    e = est.psis(lr, g)
    assert e.diagnostics["khat"] == pytest.approx(k, rel=1e-10)
    assert e.diagnostics["tail_length"] == M
    assert e.value == pytest.approx(expected, rel=1e-10)
    assert e.ess == pytest.approx(kish(smoothed), rel=1e-10)
    plain = est.psis(lr, g, self_normalized=False)
    assert plain.value == pytest.approx(math.exp(5.0) * statistics.fmean(s * gi for s, gi in zip(smoothed, g)), rel=1e-10)
    assert est.diagnose(lr).khat == pytest.approx(k, rel=1e-10)


@pytest.mark.parametrize("k_true", [0.3, 0.7, 1.2])
def test_khat_recovers_a_pareto_tail(k_true, rng):
    # w = U^(-k) is Pareto with tail index 1/k: its exceedances over any threshold are exactly
    # generalized Pareto with shape k. The fit's standard error is about (1 + k) / sqrt(M); we
    # average R independent batches and allow 4 standard errors plus the prior's pull
    # 10 |k - 0.5| / (M + 10).
    n, R = 20_000, 6
    M = psis_tail_length(n)
    khats = [est.diagnose(-k_true * np.log(rng.uniform(size=(n, 1)))).khat for _ in range(R)]
    tol = 4 * (1 + k_true) / math.sqrt(R * M) + 10 * abs(k_true - 0.5) / (M + 10)
    assert abs(statistics.fmean(khats) - k_true) < tol


@pytest.mark.parametrize("kind", ["uniform", "lognormal", "halfnormal"])
def test_khat_is_small_for_light_tails(kind, rng):
    n = 5_000
    if kind == "uniform":
        logw = np.log(rng.uniform(size=n))
    elif kind == "lognormal":
        logw = rng.normal(scale=0.5, size=n)
    else:
        logw = np.log(np.abs(rng.normal(size=n)))
    d = est.diagnose(logw[:, None])
    assert d.khat < 0.5
    e = est.psis(logw[:, None], np.ones(n))
    assert e.diagnostics["reliable"] and e.diagnostics["khat"] == d.khat


def test_tied_top_weights_have_no_tail():
    d = est.diagnose(np.zeros((100, 3)))
    assert d.khat == -math.inf
