"""Hand-checked values on tiny arrays: every expected number is derived here from the formula."""

import math
import statistics

import numpy as np
import pytest

import tokis.estimators as est

# Three sequences of lengths 3, 2, 1; masked positions hold garbage that must be ignored.
ROWS = [[0.2, -0.1, 0.3], [-0.5, 0.4], [0.1]]
G = [1.0, -2.0, 0.5]
STEP = [[0.1, 0.0, 0.9], [0.3, -2.3], [0.5]]  # per-step rewards, sums equal G
N = len(ROWS)


def arrays(garbage=7.0):
    lr = np.full((N, 3), garbage)
    rew = np.full((N, 3), garbage)
    mask = np.zeros((N, 3), dtype=bool)
    for i, row in enumerate(ROWS):
        lr[i, : len(row)] = row
        rew[i, : len(row)] = STEP[i]
        mask[i, : len(row)] = True
    return lr, np.array(G), rew, mask


def clt(f):
    return statistics.fmean(f), statistics.stdev(f) / math.sqrt(len(f))


def kish(w):
    return sum(w) ** 2 / sum(x * x for x in w)


def check(e, f, weights):
    value, sd = clt(f)
    assert e.value == pytest.approx(value, rel=1e-12)
    assert e.stderr == pytest.approx(sd, rel=1e-12)
    assert e.ess == pytest.approx(kish(weights), rel=1e-12)
    assert e.n == N
    np.testing.assert_allclose(np.asarray(e.samples) * math.exp(e.log_scale), f, rtol=1e-12)
    assert e.numerator is None and e.denominator is None


def W(row):
    return math.exp(sum(row))


def test_sums_of_step_rewards_equal_terminal_rewards():
    assert [sum(s) for s in STEP] == pytest.approx(G)


def test_seq():
    lr, g, _, mask = arrays()
    w = [W(r) for r in ROWS]
    check(est.seq(lr, g, mask=mask), [wi * gi for wi, gi in zip(w, G)], w)


def test_tok():
    lr, g, _, mask = arrays()
    w = [1 + sum(math.exp(x) - 1 for x in r) for r in ROWS]
    check(est.tok(lr, g, mask=mask), [wi * gi for wi, gi in zip(w, G)], w)


def test_tok_sum():
    lr, g, _, mask = arrays()
    w = [sum(math.exp(x) for x in r) for r in ROWS]
    check(est.tok_sum(lr, g, mask=mask), [wi * gi for wi, gi in zip(w, G)], w)


def test_tok_mean():
    lr, g, _, mask = arrays()
    w = [sum(math.exp(x) for x in r) / len(r) for r in ROWS]
    check(est.tok_mean(lr, g, mask=mask), [wi * gi for wi, gi in zip(w, G)], w)


def test_pdis_step_rewards():
    lr, _, rew, mask = arrays()
    f = [sum(math.exp(sum(r[: t + 1])) * s[t] for t in range(len(r))) for r, s in zip(ROWS, STEP)]
    check(est.pdis(lr, rew, mask=mask), f, [W(r) for r in ROWS])


def test_pdis_terminal_rewards_is_seq():
    lr, g, _, mask = arrays()
    w = [W(r) for r in ROWS]
    check(est.pdis(lr, g, mask=mask), [wi * gi for wi, gi in zip(w, G)], w)


def test_wpdis():
    lr, _, rew, mask = arrays()
    # Prefix weights; after a row ends its weight stays W and its reward is 0.
    prefix = [[math.exp(sum(r[: t + 1])) for t in range(3)] for r in ROWS]
    steps = [s + [0.0] * (3 - len(s)) for s in STEP]
    ratios = [sum(prefix[i][t] * steps[i][t] for i in range(N)) / sum(prefix[i][t] for i in range(N)) for t in range(3)]
    z = [sum(prefix[i][t] * (steps[i][t] - ratios[t]) / statistics.fmean(p[t] for p in prefix) for t in range(3)) for i in range(N)]
    e = est.wpdis(lr, rew, mask=mask)
    assert e.value == pytest.approx(sum(ratios), rel=1e-12)
    assert e.stderr == pytest.approx(statistics.stdev(z) / math.sqrt(N), rel=1e-12)
    assert e.ess == pytest.approx(kish([W(r) for r in ROWS]), rel=1e-12)
    num, den = np.asarray(e.numerator), np.asarray(e.denominator)
    assert num.shape == den.shape == (N, 3)
    np.testing.assert_allclose(num.sum(0) / den.sum(0), ratios, rtol=1e-12)
    assert e.samples is None


def test_wpdis_terminal_rewards_sit_at_the_last_real_step():
    lr, g, _, mask = arrays()
    prefix = [[math.exp(sum(r[: t + 1])) for t in range(3)] for r in ROWS]
    last = [len(r) - 1 for r in ROWS]
    expected = 0.0
    for t in range(3):
        num = sum(prefix[i][t] * G[i] for i in range(N) if last[i] == t)
        expected += num / sum(prefix[i][t] for i in range(N)) if num else 0.0
    assert est.wpdis(lr, g, mask=mask).value == pytest.approx(expected, rel=1e-12)


def test_snis():
    lr, g, _, mask = arrays()
    w = [W(r) for r in ROWS]
    value = sum(wi * gi for wi, gi in zip(w, G)) / sum(w)
    z = [wi * (gi - value) / statistics.fmean(w) for wi, gi in zip(w, G)]
    e = est.snis(lr, g, mask=mask)
    assert e.value == pytest.approx(value, rel=1e-12)
    assert e.stderr == pytest.approx(statistics.stdev(z) / math.sqrt(N), rel=1e-12)
    assert e.ess == pytest.approx(kish(w), rel=1e-12)
    num, den = np.asarray(e.numerator), np.asarray(e.denominator)
    np.testing.assert_allclose(num * math.exp(e.log_scale), [wi * gi for wi, gi in zip(w, G)], rtol=1e-12)
    np.testing.assert_allclose(den * math.exp(e.log_scale), w, rtol=1e-12)
    assert e.samples is None


@pytest.mark.parametrize("c", [1.1, "ionides"])
def test_trunc_seq(c):
    lr, g, _, mask = arrays()
    w = [W(r) for r in ROWS]
    level = statistics.fmean(w) * math.sqrt(N) if c == "ionides" else c
    wt = [min(wi, level) for wi in w]
    e = est.trunc_seq(lr, g, mask=mask, c=c)
    check(e, [wi * gi for wi, gi in zip(wt, G)], wt)
    assert e.diagnostics["c"] == pytest.approx(level, rel=1e-12)
    assert e.diagnostics["truncated_fraction"] == pytest.approx(sum(wi > level for wi in w) / N)


def test_trunc_seq_truncates_something():
    assert any(W(r) > 1.1 for r in ROWS) and any(W(r) < 1.1 for r in ROWS)


def test_clip_prod():
    lr, g, _, mask = arrays()
    c = 1.2
    w = [math.prod(min(math.exp(x), c) for x in r) for r in ROWS]
    e = est.clip_prod(lr, g, mask=mask, c=c)
    check(e, [wi * gi for wi, gi in zip(w, G)], w)
    clipped = sum(math.exp(x) > c for r in ROWS for x in r)
    assert clipped > 0
    assert e.diagnostics["clipped_fraction"] == pytest.approx(clipped / 6)


def test_clip_tok():
    lr, g, _, mask = arrays()
    c = 1.2
    w = [1 + sum(min(math.exp(x), c) - 1 for x in r) for r in ROWS]
    e = est.clip_tok(lr, g, mask=mask, c=c)
    check(e, [wi * gi for wi, gi in zip(w, G)], w)


def test_geo():
    lr, g, _, mask = arrays()
    w = [math.exp(sum(r) / len(r)) for r in ROWS]
    check(est.geo(lr, g, mask=mask), [wi * gi for wi, gi in zip(w, G)], w)


def test_mask_seq():
    lr, g, _, mask = arrays()
    lo, hi = 0.8, 1.3
    w = [W(r) * (lo <= W(r) <= hi) for r in ROWS]
    assert 0 < sum(x > 0 for x in w) < N  # the band keeps some rows and drops others
    e = est.mask_seq(lr, g, mask=mask, lo=lo, hi=hi)
    check(e, [wi * gi for wi, gi in zip(w, G)], w)
    assert e.diagnostics["masked_fraction"] == pytest.approx(sum(x == 0 for x in w) / N)


def test_mask_tok():
    lr, g, _, mask = arrays()
    lo, hi = 0.8, 1.3
    w = [1 + sum((math.exp(x) - 1) for x in r if lo <= math.exp(x) <= hi) for r in ROWS]
    outside = sum(not lo <= math.exp(x) <= hi for r in ROWS for x in r)
    assert 0 < outside < 6
    e = est.mask_tok(lr, g, mask=mask, lo=lo, hi=hi)
    check(e, [wi * gi for wi, gi in zip(w, G)], w)
    assert e.diagnostics["masked_fraction"] == pytest.approx(outside / 6)


def test_psis_small_n_is_plain_is():
    # n = 3 < 21: the tail has fewer than 5 draws, nothing is smoothed, k-hat = inf.
    lr, g, _, mask = arrays()
    w = [W(r) for r in ROWS]
    sn = est.psis(lr, g, mask=mask)
    assert sn.value == pytest.approx(sum(wi * gi for wi, gi in zip(w, G)) / sum(w), rel=1e-12)
    assert sn.diagnostics["khat"] == math.inf and sn.diagnostics["tail_length"] == 0
    assert not sn.diagnostics["reliable"]
    plain = est.psis(lr, g, mask=mask, self_normalized=False)
    check(plain, [wi * gi for wi, gi in zip(w, G)], w)


def test_empty_rows_conventions():
    # An empty row has W = 1; tok_mean and geo give it weight 1; tok_sum weight 0.
    lr = np.array([[0.3, 0.2], [9.0, 9.0]])
    mask = np.array([[True, True], [False, False]])
    g = np.array([2.0, 3.0])
    w1 = math.exp(0.5)
    assert est.seq(lr, g, mask=mask).value == pytest.approx((w1 * 2 + 3) / 2)
    assert est.tok_mean(lr, g, mask=mask).value == pytest.approx(((math.exp(0.3) + math.exp(0.2)) / 2 * 2 + 3) / 2)
    assert est.geo(lr, g, mask=mask).value == pytest.approx((math.exp(0.25) * 2 + 3) / 2)
    assert est.tok_sum(lr, g, mask=mask).value == pytest.approx((math.exp(0.3) + math.exp(0.2)) * 2 / 2)
    # With per-step rewards an empty row has return 0.
    rew = np.array([[1.0, 1.0], [5.0, 5.0]])
    assert est.seq(lr, rew, mask=mask).value == pytest.approx(w1 * 2 / 2)


def test_zero_target_probability_gives_weight_zero():
    lr = np.array([[-np.inf, 0.1], [0.2, 0.0]])
    g = np.array([4.0, 1.0])
    assert est.seq(lr, g).value == pytest.approx(math.exp(0.2) / 2)
    assert est.tok(lr, g).value == pytest.approx(((1 + (0 - 1) + (math.exp(0.1) - 1)) * 4 + math.exp(0.2)) / 2)
    assert est.snis(lr, g).value == pytest.approx(1.0)
    assert est.clip_prod(lr, g).value == pytest.approx(math.exp(0.2) / 2)


def test_all_weights_zero():
    lr = np.array([[-np.inf], [-np.inf]])
    g = np.array([1.0, 2.0])
    e = est.seq(lr, g)
    assert e.value == 0.0 and e.stderr == 0.0 and e.ess == 0.0
    s = est.snis(lr, g)
    assert math.isnan(s.value) and s.ess == 0.0


def test_wpdis_step_with_rewards_but_no_weight_is_undefined():
    lr = np.array([[-np.inf, 0.0], [-np.inf, 0.3]])
    assert math.isnan(est.wpdis(lr, np.array([[0.0, 1.0], [0.0, 2.0]])).value)
    # A step without rewards contributes nothing, whatever its weight.
    lr2 = np.array([[0.0, -np.inf], [0.2, -np.inf]])
    e = est.wpdis(lr2, np.array([[1.0, 0.0], [3.0, 0.0]]))
    w = math.exp(0.2)
    assert e.value == pytest.approx((1.0 + 3.0 * w) / (1.0 + w))


def test_single_sample_has_nan_stderr():
    e = est.seq(np.array([[0.3]]), np.array([2.0]))
    assert e.value == pytest.approx(2 * math.exp(0.3))
    assert math.isnan(e.stderr)


def test_ci_uses_the_normal_quantile():
    e = est.seq(np.array([[0.3], [0.1], [-0.2]]), np.array([1.0, 2.0, 3.0]))
    lo, hi = e.ci(0.95)
    z = statistics.NormalDist().inv_cdf(0.975)
    assert lo == pytest.approx(e.value - z * e.stderr)
    assert hi == pytest.approx(e.value + z * e.stderr)
    lo90, hi90 = e.ci(0.9)
    assert lo < lo90 < hi90 < hi


def test_estimate_is_frozen_and_read_only():
    e = est.seq(np.array([[0.3], [0.1]]), np.array([1.0, 2.0]))
    with pytest.raises(AttributeError):
        e.value = 1.0
    with pytest.raises(TypeError):
        e.diagnostics["backend"] = "x"
    with pytest.raises(ValueError):
        e.samples[0] = 1.0
    assert e.diagnostics["backend"] == "numba"  # what "auto" resolves to
    assert e.estimator == "seq"
