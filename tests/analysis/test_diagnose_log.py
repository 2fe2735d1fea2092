"""``tokis diagnose`` against exact truth: files tokis writes from token MDPs, read back in every format.

The exact values come from dynamic programming on the MDP (``tokis.exact``): per-token and sequence
KL(mu||pi), token and sequence chi2(pi||mu), the population ESS fraction E[W]^2/E[W^2]. Their
standard errors at n come from exact moments of one-off estimator declarations on the same MDP with
reward 1 (``exact.moments`` of a TokenSum or TokenProduct form): a ratio over tokens sum_i A_i /
sum_i L_i is linearised as sum_t (a_t - value), a function of sequence moments by the delta method.
Every comparison allows 5 exact standard errors.
"""

import math

import numpy as np
import pytest

from tokis import envs, exact
from tokis import estimators as est
from tokis.analysis import Behavior
from tokis.analysis.diagnose import (
    diagnose_file,
    diagnose_log,
    fit_variance_growth,
    length_buckets,
    load_log,
    write_log,
)

N = 4000
Z = 5.0


def _constant_reward(mdp):
    return envs.TokenMDP(mdp.next_context, horizon=mdp.horizon, terminal_reward=np.ones(mdp.num_contexts),
                         eos=mdp.eos, start=mdp.start)


def _moments(mdp, pi, mu, form, **params):
    m = exact.moments(mdp, pi, mu, est.define("truth", form, params=params or None))
    return m.mean, m.variance


def _truth(mdp, pi, mu, n):
    """{diagnostic: (exact value, exact standard error at n)} for a batch of n sequences from mu."""
    one = _constant_reward(mdp)
    d = exact.divergences(one, pi, mu)
    EL = d.expected_length_behavior
    K = exact.token_divergence(one, mu, pi, kind="kl", under="target")  # KL(mu||pi) per token under d^mu
    Kseq = exact.sequence_kl(one, mu, pi)
    X = d.token_chi2_behavior
    out = {}
    # per-token ratios over all tokens: sum_i sum_t a_it / sum_i L_i, linearised as sum_t (a_t - value)
    for key, value, token in (
        ("kl_k1", K, lambda l, v: -l - v),
        ("kl_k3", K, lambda l, v: np.expm1(l) - l - v),
        ("token_chi2", X, lambda l, v: np.expm1(2.0 * l) - v),
    ):
        mean, var = _moments(one, pi, mu, est.TokenSum(token, offset=0.0), v=value)
        assert abs(mean) < 1e-10 * max(1.0, EL)  # the exact value is what the linearisation centres on
        out[key] = (value, math.sqrt(var / n) / EL)
    for key, token in (("kl_k1_seq", lambda l: -l), ("kl_k3_seq", lambda l: np.expm1(l) - l)):
        mean, var = _moments(one, pi, mu, est.TokenSum(token, offset=0.0))
        assert mean == pytest.approx(Kseq, rel=1e-9, abs=1e-14)
        out[key] = (Kseq, math.sqrt(var / n))
    m1, v1 = _moments(one, pi, mu, est.TokenProduct(lambda l: l))
    m2, v2 = _moments(one, pi, mu, est.TokenProduct(lambda l: 2.0 * l))  # v2 = E[W^4] - E[W^2]^2
    m3, _ = _moments(one, pi, mu, est.TokenProduct(lambda l: 3.0 * l))
    assert m2 == pytest.approx(math.exp(d.log_second_moment), rel=1e-9)
    out["seq_chi2"] = (m2 - 1.0, math.sqrt(v2 / n))
    # Kish ESS / n = (mean W)^2 / mean W^2 -> m1^2 / m2 (delta method in (mean W, mean W^2))
    grad = np.array([2 * m1 / m2, -m1 * m1 / (m2 * m2)])
    cov = np.array([[v1, m3 - m1 * m2], [m3 - m1 * m2, v2]])
    assert m1 * m1 / m2 == pytest.approx(d.population_ess_fraction, rel=1e-9)
    out["ess_fraction"] = (d.population_ess_fraction, math.sqrt(grad @ cov @ grad / n))
    return out


def _case(behavior):
    mdp = envs.ngram(8, 1, 24, eos=7, seed=0)
    pi = envs.random_policy(mdp, scale=1.0, seed=1)
    mu = behavior.apply(pi)
    r = envs.sample(mdp, mu, N, target=pi, seed=11, backend="numpy")
    return mdp, pi, mu, r, _truth(mdp, pi, mu, N)


@pytest.fixture(scope="module")
def perturbed():
    """mu = perturb(pi, kl=0.03): per-token KL 0.03, sequences 1 to 24 tokens (eos)."""
    return _case(Behavior(kl=0.03, seed=2))


@pytest.fixture(scope="module")
def bf16():
    """mu = pi with its logits rounded to bfloat16: a real floating-point mismatch (per-token KL ~ 1e-6)."""
    return _case(Behavior(round="bf16"))


def _check_against_truth(report, truth):
    o = report.overall.iloc[0]
    for key, (value, se) in truth.items():
        assert se > 0, key
        assert abs(o[key] - value) < Z * se, (key, o[key], value, se)


# (format, preset, ragged): every reader, each framework's names, ragged lists and padded arrays
FILES = [("parquet", "verl", True), ("parquet", "trl", False), ("jsonl", "slime", True), ("jsonl", "verl", False),
         ("npz", "verl", False), ("pt", "verl", True), ("pt", "trl", False)]


@pytest.mark.parametrize("fmt,preset,ragged", FILES)
@pytest.mark.parametrize("case", ["perturbed", "bf16"])
def test_file_round_trip_reports_the_exact_divergences(fmt, preset, ragged, case, request, tmp_path):
    if fmt == "pt":
        pytest.importorskip("torch")
    mdp, pi, mu, r, truth = request.getfixturevalue(case)
    path = write_log(tmp_path / f"log.{fmt}", r.logp_target, r.logp_behavior, r.mask, r.returns,
                     preset=preset, ragged=ragged)
    batch = load_log(path)  # the preset is recognised from the column names
    assert batch.preset == preset
    W = batch.mask.shape[1]  # ragged rows are padded to the longest one
    assert batch.n == N and W <= r.mask.shape[1] and not r.mask[:, W:].any()
    np.testing.assert_array_equal(batch.mask, r.mask[:, :W])
    np.testing.assert_array_equal(batch.log_ratio, r.log_ratio[:, :W])
    report = diagnose_file(path, estimators=["seq", "tok"])
    _check_against_truth(report, truth)
    # the estimators see the same rewards: seq against J(pi), with its exact standard error at N
    m = exact.moments(mdp, pi, mu, "seq", n=N)
    row = report.estimators.set_index("estimator").loc["seq"]
    assert abs(row["value"] - exact.value(mdp, pi)) < Z * m.estimate_std


def test_bf16_mismatch_is_real_but_small(bf16):
    _, _, _, r, truth = bf16
    kl = truth["kl_k1"][0]
    assert 1e-8 < kl < 1e-4  # rounding the logits to 8 significant bits moves the policy a little
    assert 0 < np.abs(r.log_ratio[r.mask]).max() < 0.05


def test_token_fraction_outside_the_ppo_band_matches_the_exact_probability(perturbed):
    """tokens_outside of PPO eps=0.2 estimates E[#tokens with r outside [0.8, 1.2]] / E[L] under mu."""
    mdp, pi, mu, r, _ = perturbed
    one = _constant_reward(mdp)
    EL = exact.divergences(one, pi, mu).expected_length_behavior
    lo, hi = math.log(0.8), math.log(1.2)
    count, _ = _moments(one, pi, mu, est.TokenSum(lambda l, a, b: np.where((l < a) | (l > b), 1.0, 0.0), offset=0.0),
                        a=lo, b=hi)
    p = count / EL
    _, var = _moments(one, pi, mu, est.TokenSum(lambda l, a, b, p: np.where((l < a) | (l > b), 1.0, 0.0) - p,
                                                offset=0.0), a=lo, b=hi, p=p)
    report = diagnose_log(r.logp_target, r.logp_behavior, r.mask)
    t = report.thresholds.set_index("rule")
    assert abs(t.loc["PPO eps=0.2", "tokens_outside"] - p) < Z * math.sqrt(var / N) / EL
    # the other columns count what they say, directly from the arrays
    lw = np.where(r.mask, r.log_ratio, 0.0).sum(axis=1)
    geo = lw / np.maximum(r.mask.sum(axis=1), 1)
    assert t.loc["mask [0.5, 2]", "sequences_outside"] == np.mean((lw < math.log(0.5)) | (lw > math.log(2)))
    assert t.loc["TIS C=2", "tokens_outside"] == np.sum(r.mask & (r.log_ratio > math.log(2))) / r.mask.sum()
    assert t.loc["GSPO eps=3e-4/4e-4", "geo_outside"] == np.mean((geo < math.log(1 - 3e-4)) | (geo > math.log(1 + 4e-4)))
    assert report.estimators is None and report.groups is None


def test_length_buckets_partition_the_batch_and_match_diagnose_on_each(perturbed):
    _, _, _, r, _ = perturbed
    report = diagnose_log(r.logp_target, r.logp_behavior, r.mask, buckets=4)
    b = report.by_length
    assert b["n"].sum() == N and b["num_tokens"].sum() == r.mask.sum()
    assert (b["length_min"].to_numpy()[1:] > b["length_max"].to_numpy()[:-1]).all()
    L = r.mask.sum(axis=1)
    for row in b.itertuples():
        sel = (L >= row.length_min) & (L <= row.length_max)
        d = est.diagnose(r.log_ratio[sel], r.mask[sel])
        assert row.n == sel.sum() and row.ess == pytest.approx(float(d.ess), rel=1e-12)
        assert row.khat == pytest.approx(d.khat, rel=1e-12) and row.seq_chi2 == pytest.approx(d.seq_chi2, rel=1e-12)
    # about equal counts with ties kept together
    idx = length_buckets(L, 4)
    assert idx.max() == 3 and np.bincount(idx).min() > N / 8
    for j in range(idx.max() + 1):
        assert not np.isin(L[idx == j], L[idx != j]).any()


def _iid_eos_case(n, seed):
    mdp = envs.iid(6, 64, eos=5, seed=0)
    logits = np.array(envs.random_policy(mdp, scale=1.0, seed=3).logits)
    logits[:, 5] += 1.0  # eos likely enough that no sequence reaches the horizon
    pi = envs.Policy(logits)
    mu = envs.perturb(pi, kl=0.05, seed=4)
    return mdp, pi, mu, envs.sample(mdp, mu, n, target=pi, seed=seed, backend="numpy")


def test_variance_growth_rate_against_the_exact_per_token_variance():
    """One context and an eos token: given L, log W = (L - 1) iid non-eos log-ratios + the eos log-ratio,
    so Var(log W | L) = (L - 1) s2 exactly (s2 the variance of l under mu given a != eos), and
    E[log W | L] = (L - 1) m + l_eos. The OLS slopes' exact standard errors given the lengths follow
    from the central moments of a sum of L - 1 iid terms: Var(e^2 | L) = (L - 1) k4 + 2 (L - 1)^2 s2^2."""
    n = 6000
    mdp, pi, mu, r = _iid_eos_case(n, seed=5)
    q = mu.probs[0, :5] / mu.probs[0, :5].sum()
    lq = (pi.log_probs[0] - mu.log_probs[0])[:5]
    m = q @ lq
    s2 = q @ (lq - m) ** 2
    k4 = q @ (lq - m) ** 4 - 3 * s2 * s2
    assert (1 - mu.probs[0, 5]) ** 63 < 1e-4  # sequences that hit the horizon (no eos) are negligible
    L = r.mask.sum(axis=1).astype(float)
    lw = np.where(r.mask, r.log_ratio, 0.0).sum(axis=1)
    fit = fit_variance_growth(lw, L)
    x = L - L.mean()
    sxx = x @ x
    se_rate = math.sqrt(np.sum(x * x * ((L - 1) * k4 + 2 * (L - 1) ** 2 * s2 * s2))) / sxx
    se_drift = math.sqrt(np.sum(x * x * (L - 1) * s2)) / sxx
    assert fit.fitted and abs(fit.rate - s2) < Z * se_rate
    assert abs(fit.drift - m) < Z * se_drift
    assert 0.6 < fit.rate_se / se_rate < 1.67  # the HC1 standard error is of the exact one's size
    assert fit.rate_lo < fit.rate < fit.rate_hi
    imp = fit.implied
    np.testing.assert_allclose(imp["ess_fraction_fit"], np.exp(-fit.rate * imp["length"]))
    assert list(imp["length"]) == sorted(set(np.quantile(L, [0, 0.5, 0.9, 1], method="inverted_cdf").astype(int)))


def test_one_length_says_so_and_the_renyi_reading_is_exact():
    """No eos: every response has T tokens. No regression is fitted (the report says why); with one
    context chi2 is the same everywhere, so log E[W^2] = T log(1 + chi2) exactly, and the Rényi
    column at T matches the exact log second moment within the error of the token chi2 estimate."""
    T, n = 16, 4000
    mdp = envs.iid(6, T, seed=0)
    pi = envs.random_policy(mdp, scale=1.0, seed=3)
    mu = envs.perturb(pi, chi2=0.02, seed=4)
    r = envs.sample(mdp, mu, n, target=pi, seed=6, backend="numpy")
    report = diagnose_log(r.logp_target, r.logp_behavior)
    assert not report.growth.fitted and "same length (16 tokens)" in report.growth.reason
    assert any("same length" in note for note in report.notes)
    assert len(report.by_length) == 1 and report.by_length["n"].iloc[0] == n
    imp = report.growth.implied
    assert list(imp["length"]) == [T] and math.isnan(imp["log_second_moment_fit"].iloc[0])
    truth = _truth(mdp, pi, mu, n)
    chi2, se = truth["token_chi2"]
    assert math.log1p(chi2) * T == pytest.approx(exact.log_second_moment(mdp, pi, mu), rel=1e-10)
    assert abs(imp["log_second_moment_renyi"].iloc[0] - T * math.log1p(chi2)) < Z * T * se / (1 + chi2)


def test_ragged_lists_equal_padded_arrays(perturbed):
    _, _, _, r, _ = perturbed
    rows = slice(0, 300)
    L = r.mask[rows].sum(axis=1)
    tgt = [r.logp_target[i, :L[i]] for i in range(300)]
    beh = [r.logp_behavior[i, :L[i]] for i in range(300)]
    a = diagnose_log(tgt, beh, rewards=r.returns[rows], estimators="seq,snis")
    b = diagnose_log(r.logp_target[rows], r.logp_behavior[rows], r.mask[rows], r.returns[rows], estimators="seq,snis")
    for col in ("ess", "khat", "kl_k3", "token_chi2", "seq_chi2"):
        assert a.overall[col].iloc[0] == pytest.approx(b.overall[col].iloc[0], rel=1e-12)
    np.testing.assert_allclose(a.estimators["value"], b.estimators["value"], rtol=1e-12)


def test_per_token_rewards_equal_their_sums_for_sequence_estimators(perturbed):
    _, _, _, r, _ = perturbed
    a = diagnose_log(r.logp_target, r.logp_behavior, r.mask, r.rewards, estimators="seq,snis,tok")
    b = diagnose_log(r.logp_target, r.logp_behavior, r.mask, r.returns, estimators="seq,snis,tok")
    np.testing.assert_allclose(a.estimators["value"], b.estimators["value"], rtol=1e-12)
    assert a.behavior_mean_reward == pytest.approx(r.returns.mean())


def test_cluster_standard_errors(perturbed):
    """Singleton groups give the i.i.d. standard error; k copies of every response in one group give
    the standard error of the original batch again (the copies add no information), while the
    i.i.d. standard error wrongly shrinks by about sqrt(k)."""
    _, _, _, r, _ = perturbed
    rows, k = slice(0, 500), 4
    args = (r.logp_target[rows], r.logp_behavior[rows], r.mask[rows], r.returns[rows])
    base = diagnose_log(*args, groups=np.arange(500), estimators="seq,tok,snis,wpdis")
    e = base.estimators.set_index("estimator")
    np.testing.assert_allclose(e.loc[["seq", "tok", "snis"], "stderr_cluster"], e.loc[["seq", "tok", "snis"], "stderr"],
                               rtol=1e-10)
    assert math.isnan(e.loc["wpdis", "stderr_cluster"])  # per-step ratios: no per-sample linearisation
    rep = [np.repeat(a, k, axis=0) for a in args]
    copies = diagnose_log(*rep, groups=np.repeat(np.arange(500), k), estimators="seq,tok,snis").estimators
    c = copies.set_index("estimator")
    for name in ("seq", "tok", "snis"):
        assert c.loc[name, "value"] == pytest.approx(e.loc[name, "value"], rel=1e-10)
        assert c.loc[name, "stderr_cluster"] == pytest.approx(e.loc[name, "stderr"], rel=1e-9)
        assert c.loc[name, "stderr"] < 0.6 * e.loc[name, "stderr"]
    # the groups table of the copies: every group holds k identical weights
    gt = diagnose_log(*rep, groups=np.repeat(np.arange(500), k), estimators="seq").groups.iloc[0]
    assert gt["groups"] == 500 and gt["size_min"] == gt["size_max"] == k
    assert gt["ess_fraction_min"] == pytest.approx(1.0) and gt["max_weight_share_max"] == pytest.approx(1 / k)
