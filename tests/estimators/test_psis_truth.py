"""Truth of psis under ties and under a dominating weight.

Ties: rows with equal log-weight but different returns (e.g. Bernoulli reward noise) must be
smoothed alike, so the estimate does not depend on row order and the exact finite-n engine
(which enumerates multisets in a fixed row order) agrees with Monte Carlo.
Domination: one weight holding all the mass is the least reliable case, never a light tail.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import tokis.estimators as est
from tokis import exact
from tokis.envs import Policy, TokenMDP, sample
from tokis.estimators._psis import psis_smooth, psis_tail_length

N = 21  # smallest n with a smoothed tail (M = 5)
P_HIGH = 0.25  # mu of token 1; pi is uniform, so the two weights are 2 and 2/3


@pytest.fixture(scope="module")
def bernoulli_case():
    mdp = TokenMDP([[0, 1], [0, 1]], horizon=1, terminal_reward=[0.5, 0.5], start=0, reward_noise="bernoulli")
    pi = Policy(np.zeros((2, 2)))
    mu = Policy(np.log(np.array([[1 - P_HIGH, P_HIGH], [1 - P_HIGH, P_HIGH]])))
    return mdp, pi, mu


def test_exact_psis_mean_is_the_symmetric_value(bernoulli_case):
    # the reward is Bernoulli(1/2) independently of the token, so swapping rewards 0 <-> 1
    # maps the estimate v to 1 - v with the same probability: E = 1/2 exactly
    res = exact.moments(*bernoulli_case, "psis", n=N)
    assert res.mean == pytest.approx(0.5, abs=1e-12)


def test_exact_psis_moments_match_monte_carlo(bernoulli_case):
    mdp, pi, mu = bernoulli_case
    res = exact.moments(mdp, pi, mu, "psis", n=N)
    lr_hi, lr_lo = math.log(0.5 / P_HIGH), math.log(0.5 / (1 - P_HIGH))
    # the direct draws below follow what tokis.envs.sample produces for this MDP
    ro = sample(mdp, mu, n=N, target=pi, seed=3)
    assert set(np.round(ro.log_ratio.ravel(), 12)) <= {round(lr_hi, 12), round(lr_lo, 12)}
    assert set(np.asarray(ro.rewards).ravel()) <= {0.0, 1.0}

    R = 40_000
    rng = np.random.default_rng(20240611)
    high = rng.uniform(size=(R, N)) < P_HIGH
    rewards = (rng.uniform(size=(R, N)) < 0.5).astype(np.float64)
    log_ratio = np.where(high, lr_hi, lr_lo)[:, :, None]
    values = np.array([est.psis(log_ratio[r], rewards[r]).value for r in range(R)])
    se = res.estimate_std / math.sqrt(R)  # exact standard error of the MC mean
    assert abs(values.mean() - res.mean) < 4 * se
    # the MC variance agrees with the exact Var(estimate) (relative sd of a sample variance is
    # about sqrt((kurtosis - 1) / R); the estimate is bounded in [0, 1], kurtosis < 6)
    assert values.var() == pytest.approx(res.estimate_variance, rel=4 * math.sqrt(5 / R))


def _tied_batch(rng, n):
    """Heavy-tailed log-weights rounded to a coarse grid (many ties, also in the tail)."""
    lw = np.round(2.0 * rng.standard_t(2.0, size=n)) / 2.0 + 30.0 * rng.integers(-1, 2)
    g = rng.integers(0, 3, size=n).astype(np.float64)  # tied rows carry different returns
    return lw, g


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("n", [21, 60, 400])
def test_psis_is_invariant_to_row_order_under_ties(seed, n):
    rng = np.random.default_rng(1000 * n + seed)
    lw, g = _tied_batch(rng, n)
    perm = rng.permutation(n)
    s0, k0, t0 = psis_smooth(lw)
    s1, k1, t1 = psis_smooth(lw[perm])
    assert (k0 == k1 or (math.isnan(k0) and math.isnan(k1))) and t0 == t1
    np.testing.assert_allclose(s1, s0[perm], rtol=0, atol=1e-12)
    # equal log-weights receive equal smoothed log-weights
    for v in np.unique(lw):
        assert np.ptp(s0[lw == v]) == 0.0
    for sn in (True, False):
        a = est.psis(lw[:, None], g, self_normalized=sn)
        b = est.psis(lw[perm][:, None], g[perm], self_normalized=sn)
        assert b.value == pytest.approx(a.value, rel=1e-12, abs=1e-12)
        assert b.ess == pytest.approx(a.ess, rel=1e-12)
        assert b.diagnostics == a.diagnostics


def test_tied_tail_group_gets_the_mean_of_its_order_statistics():
    # n = 21, M = 5: five rows tied at weight 2 over sixteen at 2/3 -- a tail of five equal values
    lw = np.log(np.r_[np.full(16, 2.0 / 3.0), np.full(5, 2.0)])
    s, khat, tail = psis_smooth(lw)
    assert tail == 5 and math.isfinite(khat)
    np.testing.assert_allclose(s[:16], lw[:16], rtol=0, atol=1e-15)
    assert np.ptp(s[16:]) == 0.0 and s[16] <= lw[16]
    # rewards split among the tied rows: any order gives the same estimate
    g = np.r_[np.zeros(16), 1.0, 1.0, 0.0, 0.0, 1.0]
    vals = {est.psis(lw[p][:, None], g[p]).value for p in (np.arange(21), np.arange(21)[::-1])}
    assert max(vals) - min(vals) < 1e-12


@pytest.mark.parametrize("noise", [0.0, 0.1])
@pytest.mark.parametrize("gap", [800.0, 50.0])
def test_one_dominating_weight_is_unreliable(gap, noise):
    # gap 800: every other weight underflows relative to the top one (exp(-800) = 0); gap 50
    # without noise: one row above a tie group. Both are unfittable and reported as inf.
    # gap 50 with noise: the tail is fitted and k-hat is large.
    n = 100
    rng = np.random.default_rng(7)
    lw = np.r_[gap, noise * rng.standard_normal(n - 1)]
    g = rng.uniform(size=n)
    _, khat, tail = psis_smooth(lw)
    fitted = gap < 700 and noise > 0
    if not fitted:
        assert khat == math.inf and tail == 0
    assert khat > 1.0
    for perm in (np.arange(n), rng.permutation(n)):
        e = est.psis(lw[perm][:, None], g[perm])
        assert not (math.isfinite(e.diagnostics["khat"]) and e.diagnostics["khat"] <= e.diagnostics["khat_threshold"])
        assert e.diagnostics["khat"] == khat
        assert e.diagnostics["reliable"] is False
        if not fitted:  # nothing smoothed: the dominating row's return
            assert e.value == pytest.approx(g[0], rel=1e-9)
    assert est.diagnose(lw[:, None]).khat == khat


def test_early_return_conventions():
    n = 100
    assert psis_tail_length(n) == 20
    # M + 1 largest tied at the maximum: bounded tail
    assert psis_smooth(np.zeros(n))[1] == -math.inf
    lw = np.r_[np.zeros(21), -np.arange(1.0, n - 20)]
    s, khat, tail = psis_smooth(lw)
    assert khat == -math.inf and tail == 0 and np.array_equal(s, lw)
    assert est.psis(lw[:, None], np.ones(n)).diagnostics["reliable"]
    # 1..4 weights above a tie group: too few distinct tail values to fit, unassessable
    for above in (1, 4):
        lw = np.r_[np.arange(above, 0, -1.0), np.zeros(n - above)]
        s, khat, tail = psis_smooth(lw)
        assert khat == math.inf and tail == 0 and np.array_equal(s, lw)
        assert not est.psis(lw[:, None], np.ones(n)).diagnostics["reliable"]
    # n < 21 (M < 5) and all-zero weights: inf
    assert psis_smooth(np.arange(20.0))[1] == math.inf
    assert psis_smooth(np.full(n, -np.inf))[1] == math.inf
    # five or more distinct values above the threshold are fitted
    k = psis_smooth(np.r_[np.arange(5, 0, -1.0), np.zeros(n - 5)])[1]
    assert math.isfinite(k)
