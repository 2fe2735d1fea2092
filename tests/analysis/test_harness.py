"""Monte Carlo harness: table layout, statistics against exact moments, heavy-tail flag, errors."""

import math
import os

import numpy as np
import pytest
from scipy import stats

from tokis import envs
from tokis.analysis import monte_carlo, replication_seeds
from tokis.analysis._harness import COLUMNS, summarise
from tokis import exact

from _reference import enumerate_sequences

FULL = os.environ.get("TOKIS_FULL") == "1"


def _case(kind, T, seed=0):
    """Small MDPs of several kinds with a policy pair at a moderate per-token divergence."""
    if kind == "iid":
        mdp = envs.iid(4, T, reward=envs.count_automaton(4, 1, 2))
    elif kind == "ngram_eos":
        mdp = envs.ngram(4, 1, T, eos=3, seed=seed)
    elif kind == "prefix_tree":
        mdp = envs.prefix_tree(3, T, seed=seed)
    else:
        mdp = envs.ngram(5, 2, T, reward=envs.parity_automaton(5, 0))
    pi = envs.random_policy(mdp, seed=seed + 1)
    mu = envs.perturb(pi, kl=0.05, seed=seed + 2)
    return mdp, pi, mu


def test_columns_and_labels():
    mdp, pi, mu = _case("ngram_eos", 4)
    table = monte_carlo(mdp, pi, mu, ["seq", ("clip_tok", {"c": 1.5}), "mask_tok:lo=0.8,hi=1.25"], n=16,
                        replications=5, seed=3)
    assert list(table.columns) == list(COLUMNS)
    assert list(table["estimator"]) == ["seq", "clip_tok(c=1.5)", "mask_tok(hi=1.25,lo=0.8)"]
    assert list(table["name"]) == ["seq", "clip_tok", "mask_tok"]
    assert (table["n"] == 16).all() and (table["replications"] == 5).all()
    J = exact.value(mdp, pi)
    assert np.allclose(table["target_value"], J, rtol=0, atol=1e-15)
    # bias columns are mean columns shifted by J, with the same interval
    for a, b in (("mc_bias", "mc_mean"), ("mc_bias_lo", "mc_mean_lo"), ("mc_bias_hi", "mc_mean_hi")):
        np.testing.assert_allclose(table[a], table[b] - J, atol=1e-14)
    np.testing.assert_allclose(table["exact_bias"], table["exact_mean"] - J, atol=1e-14)
    np.testing.assert_allclose(table["exact_mse"], table["exact_bias"] ** 2 + table["exact_std"] ** 2, rtol=1e-9)
    assert (table["mc_std_lo"] < table["mc_std"]).all() and (table["mc_std"] < table["mc_std_hi"]).all()


def test_summary_formulas_by_hand():
    v = np.array([1.0, 2.0, 4.0, 7.0])
    ex = dict(exact_mean=3.0, exact_std=2.0)
    ess = np.array([3.0, 4.0, 5.0, 6.0])
    s = summarise(v, ess, ex, target_value=2.5)
    R, mean, sd = 4, v.mean(), v.std(ddof=1)
    z975 = stats.norm.ppf(0.975)
    assert s["mc_mean"] == pytest.approx(mean)
    assert s["mc_mean_hi"] - s["mc_mean"] == pytest.approx(z975 * sd / math.sqrt(R))
    assert s["mc_bias"] == pytest.approx(mean - 2.5)
    assert s["mc_std"] == pytest.approx(sd)
    assert s["mc_std_lo"] == pytest.approx(sd * math.sqrt((R - 1) / stats.chi2.ppf(0.975, R - 1)))
    assert s["mc_std_hi"] == pytest.approx(sd * math.sqrt((R - 1) / stats.chi2.ppf(0.025, R - 1)))
    assert s["mc_mse"] == pytest.approx(np.mean((v - 2.5) ** 2))
    assert s["mean_ess"] == pytest.approx(ess.mean())
    assert s["z"] == pytest.approx((mean - 3.0) / (2.0 / math.sqrt(R)))
    assert s["std_underestimated"] is False
    # non-finite estimates are counted and left out
    s2 = summarise(np.array([1.0, np.inf, 2.0, np.nan, 4.0, 7.0]), np.ones(6), ex, target_value=2.5)
    assert s2["mc_nonfinite"] == 2 and s2["mc_mean"] == pytest.approx(mean)
    # flag: upper end of the std interval below half the exact std
    assert summarise(v, np.ones(4), dict(exact_mean=3.0, exact_std=100.0), 2.5)["std_underestimated"] is True
    # no exact mean: z is NaN, never filled in by sampling
    assert math.isnan(summarise(v, np.ones(4), dict(exact_mean=math.nan, exact_std=math.nan), 2.5)["z"])
    # deterministic estimate (exact std 0): z = 0 when equal
    assert summarise(np.full(4, 3.0), np.ones(4), dict(exact_mean=3.0, exact_std=0.0), 3.0)["z"] == 0.0


def test_replication_seeds_are_stable_and_distinct():
    a = replication_seeds(7, 10)
    assert a == replication_seeds(7, 10)
    assert replication_seeds(7, 12)[:10] == a  # more replications never change earlier ones
    assert len(set(a)) == 10 and a != replication_seeds(8, 10)


def test_reproducible_and_common_random_numbers():
    mdp, pi, mu = _case("iid", 3)
    t1 = monte_carlo(mdp, pi, mu, ["seq", "pdis", "tok"], n=32, replications=6, seed=11)
    t2 = monte_carlo(mdp, pi, mu, ["tok"], n=32, replications=6, seed=11)
    assert t1.loc[2, "mc_mean"] == t2.loc[0, "mc_mean"]
    # pdis = seq for terminal-only rewards, and both ran on the same rollouts
    assert t1.loc[0, "mc_mean"] == pytest.approx(t1.loc[1, "mc_mean"], rel=1e-12)
    t3 = monte_carlo(mdp, pi, mu, ["tok"], n=32, replications=6, seed=12)
    assert t3.loc[0, "mc_mean"] != t2.loc[0, "mc_mean"]


def _seq_central_moments(mdp, pi, mu):
    """Variance and excess kurtosis of f = W G under mu, by brute-force enumeration."""
    en = enumerate_sequences(mdp, pi=pi, mu=mu)
    p = en.prob["mu"]
    f = np.exp(en.log_ratio().sum(axis=1)) * en.returns
    d = f - p @ f
    m2, m4 = p @ d**2, p @ d**4
    return m2, m4 / m2**2 - 3.0


@pytest.mark.parametrize("kind", ["iid", "ngram_eos", "prefix_tree", "ngram_parity"])
def test_unbiased_z_scores_and_variance(kind):
    """seq and pdis: |z| small, and the MC variance agrees with the exact variance (finite 4th moment)."""
    T = 3 if kind == "prefix_tree" else 5
    mdp, pi, mu = _case(kind, T)
    n, R = (64, 400) if FULL else (32, 120)
    table = monte_carlo(mdp, pi, mu, ["seq", "pdis", "tok", "snis"], n=n, replications=R, seed=5)
    var_f, kurt_f = _seq_central_moments(mdp, pi, mu)
    for name in ("seq", "pdis"):
        row = table[table["estimator"] == name].iloc[0]
        assert row["method"] == "exact"
        assert abs(row["exact_bias"]) < 1e-12
        assert row["exact_std"] ** 2 == pytest.approx(var_f / n, rel=1e-9)
        assert abs(row["z"]) < 5, (kind, name, row["z"])
        # s^2 of R estimates, each a mean of n samples (excess kurtosis kurt_f / n):
        # Var(s^2) = sigma^4 (2 / (R - 1) + kurt_f / (n R))
        var_ex, var_mc = row["exact_std"] ** 2, row["mc_std"] ** 2
        se = var_ex * math.sqrt(2.0 / (R - 1) + kurt_f / (n * R))
        assert abs(var_mc - var_ex) < 5 * se, (kind, name, var_mc, var_ex, se)
        assert not row["std_underestimated"]
    # biased estimators: z measures against their own exact mean, so it is small too
    for name in ("tok", "snis"):
        row = table[table["estimator"] == name].iloc[0]
        assert abs(row["z"]) < 5, (kind, name, row["z"])


def test_heavy_tails_flag_seq_at_long_horizon():
    """chi2 = 1 per token at T = 40: E[W^2] = 2^40, the empirical std is far below the exact one."""
    mdp = envs.iid(4, 40)
    pi = envs.random_policy(mdp, seed=1)
    mu = envs.perturb(pi, chi2=1.0, seed=2)
    assert exact.log_second_moment(mdp, pi, mu) == pytest.approx(40 * math.log(2.0), rel=1e-9)
    table = monte_carlo(mdp, pi, mu, ["seq", "geo"], n=64, replications=30, seed=0)
    seq = table[table["estimator"] == "seq"].iloc[0]
    assert seq["std_underestimated"]
    assert seq["mc_std_hi"] < seq["exact_std"] / 2
    assert seq["mean_ess"] < 64
    geo = table[table["estimator"] == "geo"].iloc[0]
    assert not geo["std_underestimated"]


def test_no_exact_method_gives_nan_and_method_none():
    mdp = envs.ngram(6, 1, 12, seed=0)  # 6^12 sequences: no enumeration
    pi = envs.random_policy(mdp, seed=1)
    mu = envs.perturb(pi, kl=0.02, seed=2)
    table = monte_carlo(mdp, pi, mu, ["trunc_seq", "seq"], n=16, replications=4, seed=0)
    row = table.iloc[0]
    assert row["method"] == "none"
    for c in ("exact_mean", "exact_bias", "exact_std", "exact_mse", "z"):
        assert math.isnan(row[c])
    assert row["exact_note"]
    assert np.isfinite(row["mc_mean"]) and np.isfinite(row["mc_std"])
    assert table.iloc[1]["method"] == "exact" and table.iloc[1]["exact_note"] == ""


def test_errors():
    mdp, pi, mu = _case("iid", 2)
    with pytest.raises(ValueError, match="unknown estimator 'nope'"):
        monte_carlo(mdp, pi, mu, ["nope"], n=4, replications=3)
    with pytest.raises(ValueError, match="has no parameter 'q'"):
        monte_carlo(mdp, pi, mu, ["clip_tok:q=2"], n=4, replications=3)
    with pytest.raises(ValueError, match="replications must be >= 2"):
        monte_carlo(mdp, pi, mu, ["seq"], n=4, replications=1)
    with pytest.raises(ValueError, match="n must be >= 1"):
        monte_carlo(mdp, pi, mu, ["seq"], n=0, replications=3)
    with pytest.raises(TypeError, match="replications must be an integer"):
        monte_carlo(mdp, pi, mu, ["seq"], n=4, replications=2.5)
    with pytest.raises(ValueError, match="seed"):
        monte_carlo(mdp, pi, mu, ["seq"], n=4, replications=3, seed=-1)
    with pytest.raises(ValueError, match="no estimator given"):
        monte_carlo(mdp, pi, mu, [], n=4, replications=3)


@pytest.mark.slow
def test_z_scores_are_standard_normal_across_seeds():
    """Over independent seeds, z of seq and tok (exact moments) follows N(0, 1) (KS test)."""
    mdp, pi, mu = _case("ngram_eos", 4)
    seeds = range(300) if FULL else range(25)
    z = {"seq": [], "tok": []}
    for s in seeds:
        t = monte_carlo(mdp, pi, mu, ["seq", "tok"], n=32, replications=30, seed=s)
        for name in z:
            z[name].append(t.loc[t["estimator"] == name, "z"].item())
    for name, values in z.items():
        assert stats.kstest(values, "norm").pvalue > 1e-3, (name, np.mean(values), np.std(values))
