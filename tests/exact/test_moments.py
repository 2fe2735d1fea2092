"""Exact moments of estimators' per-sample statistics against brute-force enumeration.

The reference statistics are written here from their definitions on the enumerated sequences
(tests/_reference.py), independently of the library's recursions and of its own enumerator.
Every sequence's statistic is affine in the observed terminal reward Z, f = f(m) + b (Z - m),
with b the multiplier of G (the weight W for pdis); Bernoulli noise adds b^2 m (1 - m) to
E[f^2].
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from _cases import random_cases, random_mdp, random_policy_pair
from _reference import enumerate_sequences

import tokis.estimators as estimators
from tokis.envs import Policy, TokenMDP
from tokis.exact import (
    Moments,
    TokBiasDecomposition,
    moments,
    population_ess,
    tok_bias_decomposition,
)

RTOL = 1e-10
PARAMS = {
    "clip_prod": {"c": 1.2},
    "clip_tok": {"c": 1.15},
    "mask_tok": {"lo": 0.7, "hi": 1.3},
    "mask_seq": {"lo": 0.5, "hi": 1.6},
    "trunc_seq": {"c": 1.4},
}
RECURSIONS = ("seq", "tok", "tok_sum", "tok_mean", "pdis", "clip_prod", "clip_tok", "geo", "mask_tok")
ENUMERATED = ("trunc_seq", "mask_seq")


# --------------------------------------------------------------------------- reference


def reference(mdp, pi, mu):
    """Per-sequence data restricted to sequences with positive behaviour probability."""
    e = enumerate_sequences(mdp, pi=pi, mu=mu)
    keep = e.prob["mu"] > 0
    with np.errstate(invalid="ignore"):
        lr = np.where(e.mask, e.logp["pi"] - e.logp["mu"], 0.0)[keep]
    mask = e.mask[keep]
    return dict(
        p=e.prob["mu"][keep],
        lr=lr,
        mask=mask,
        r=np.where(mask, np.exp(lr), 1.0),
        W=np.exp(lr.sum(axis=1)),
        G=e.returns[keep],
        L=e.lengths[keep],
        rew=e.rewards[keep],
        m=e.terminal[keep],
        J=float(e.prob["pi"] @ e.returns),
        e=e,
    )


def ref_statistic(name, d, **params):
    """(f at the mean terminal reward, multiplier of Z) for each sequence."""
    r, mask, G, W, L = d["r"], d["mask"], d["G"], d["W"], d["L"]
    if name == "seq":
        y = W
    elif name == "tok":
        y = 1.0 + np.where(mask, r - 1.0, 0.0).sum(axis=1)
    elif name == "tok_sum":
        y = np.where(mask, r, 0.0).sum(axis=1)
    elif name == "tok_mean":
        y = np.where(mask, r, 0.0).sum(axis=1) / L
    elif name == "clip_prod":
        y = np.prod(np.where(mask, np.minimum(r, params["c"]), 1.0), axis=1)
    elif name == "clip_tok":
        y = 1.0 + np.where(mask, np.minimum(r, params["c"]) - 1.0, 0.0).sum(axis=1)
    elif name == "geo":
        y = W ** (1.0 / L)
    elif name == "mask_tok":
        inside = mask & (r >= params["lo"]) & (r <= params["hi"])
        y = 1.0 + np.where(inside, r - 1.0, 0.0).sum(axis=1)
    elif name == "mask_seq":
        y = W * ((W >= params["lo"]) & (W <= params["hi"]))
    elif name == "trunc_seq":
        y = np.minimum(W, params["c"])
    elif name == "pdis":
        prefix = np.exp(np.cumsum(d["lr"], axis=1))
        return (prefix * d["rew"]).sum(axis=1), W
    else:
        raise KeyError(name)
    return y * G, y


def ref_moments(name, mdp, d, **params):
    f, b = ref_statistic(name, d, **params)
    p, m = d["p"], d["m"]
    mean = float(p @ f)
    noise = b * b * m * (1.0 - m) if mdp.reward_noise == "bernoulli" else 0.0
    second = float(p @ (f * f + noise))
    var = float(p @ ((f - mean) ** 2 + noise))
    return mean, var, second


def close(a, b, rtol=RTOL):
    return abs(a - b) <= rtol * max(1.0, abs(b))


def with_support_mismatch(rng, mdp, pi, mu):
    """Zero out one token of mu in some rows and one token of pi in others (V >= 2)."""
    lp, lm = np.array(pi.logits), np.array(mu.logits)
    V = mdp.vocab_size
    rows_p = rng.random(lp.shape[:-1]) < 0.5
    rows_m = rng.random(lm.shape[:-1]) < 0.5
    lm[rows_m, int(rng.integers(V))] = -np.inf
    lp[rows_p, int(rng.integers(V))] = -np.inf
    return Policy(lp), Policy(lm)


def all_cases():
    yield from random_cases(11, 48)
    rng = np.random.default_rng(5)
    for mdp, pi, mu, desc in random_cases(12, 16):
        pi2, mu2 = with_support_mismatch(rng, mdp, pi, mu)
        yield mdp, pi2, mu2, desc + ":support-mismatch"


CASES = list(all_cases())


# --------------------------------------------------------------------------- recursions vs enumeration


@pytest.mark.parametrize("k", range(len(CASES)))
def test_recursions_match_enumeration(k):
    mdp, pi, mu, desc = CASES[k]
    d = reference(mdp, pi, mu)
    for name in RECURSIONS + ENUMERATED:
        params = PARAMS.get(name, {})
        res = moments(mdp, pi, mu, name, **params)
        mean, var, second = ref_moments(name, mdp, d, **params)
        assert res.method == ("exact" if name in RECURSIONS else "enumeration"), name
        assert close(res.mean, mean), (desc, name, res.mean, mean)
        assert close(res.variance, var), (desc, name, res.variance, var)
        assert close(res.target_value, d["J"]), (desc, name)
        assert close(res.bias, mean - d["J"]), (desc, name)
        if second > 0:
            assert abs(res.log_second_moment - math.log(second)) <= RTOL * max(1.0, abs(math.log(second))), (desc, name)


@pytest.mark.parametrize("k", range(0, len(CASES), 4))
def test_forced_enumeration_equals_recursion(k):
    mdp, pi, mu, desc = CASES[k]
    for name in RECURSIONS:
        params = PARAMS.get(name, {})
        a = moments(mdp, pi, mu, name, **params)
        b = moments(mdp, pi, mu, name, method="enumeration", **params)
        assert b.method == "enumeration"
        assert close(a.mean, b.mean) and close(a.variance, b.variance), (desc, name)


def test_pdis_equals_seq_for_terminal_reward_and_noise_adds_variance():
    rng = np.random.default_rng(3)
    mdp = random_mdp(rng, S=3, V=3, T=3, eos=True)
    pi, mu = random_policy_pair(rng, mdp)
    a, b = moments(mdp, pi, mu, "pdis"), moments(mdp, pi, mu, "seq")
    assert close(a.mean, b.mean) and close(a.variance, b.variance)
    noisy = TokenMDP(mdp.next_context, horizon=3, terminal_reward=mdp.terminal_reward, start=mdp.start,
                     eos=mdp.eos, reward_noise="bernoulli")
    c = moments(noisy, pi, mu, "seq")
    # Var(W Z) - Var(W m) = E[W^2 m (1 - m)] > 0, mean unchanged
    d = reference(noisy, pi, mu)
    extra = float(d["p"] @ (d["W"] ** 2 * d["m"] * (1 - d["m"])))
    assert close(c.mean, b.mean)
    assert close(c.variance - b.variance, extra)


def test_clip_at_infinity_is_plain_is():
    rng = np.random.default_rng(4)
    mdp = random_mdp(rng, S=3, V=3, T=4, eos=True, step_reward=True)
    pi, mu = random_policy_pair(rng, mdp)
    for clipped, plain in (("clip_prod", "seq"), ("clip_tok", "tok")):
        a, b = moments(mdp, pi, mu, clipped, c=math.inf), moments(mdp, pi, mu, plain)
        assert close(a.mean, b.mean) and close(a.variance, b.variance)
    a = moments(mdp, pi, mu, "trunc_seq", c=math.inf)
    b = moments(mdp, pi, mu, "seq")
    assert close(a.mean, b.mean) and close(a.variance, b.variance)


def test_equal_policies_unbiased_with_return_variance():
    rng = np.random.default_rng(6)
    mdp = random_mdp(rng, S=3, V=3, T=3, eos=True, step_reward=True, noise=False)
    pi, _ = random_policy_pair(rng, mdp)
    d = reference(mdp, pi, pi)
    var_g = float(d["p"] @ (d["G"] - d["J"]) ** 2)
    for name in RECURSIONS:
        res = moments(mdp, pi, pi, name, **PARAMS.get(name, {}))
        if name == "tok_sum":  # (sum_t 1) G = L G
            continue
        assert close(res.mean, d["J"]), name
        assert close(res.variance, var_g), name


# --------------------------------------------------------------------------- n-dependent fields


def test_fields_with_n():
    rng = np.random.default_rng(7)
    mdp = random_mdp(rng, S=2, V=3, T=3, eos=True)
    pi, mu = random_policy_pair(rng, mdp)
    res = moments(mdp, pi, mu, "tok", n=50)
    assert isinstance(res, Moments)
    assert res.n == 50
    assert close(res.estimate_variance, res.variance / 50)
    assert close(res.estimate_std, math.sqrt(res.variance / 50))
    assert res.bias_n == res.bias
    assert close(res.mse, res.bias**2 + res.variance / 50)
    assert res.bias_coef == 0.0
    assert close(res.log_variance, math.log(res.variance))
    bare = moments(mdp, pi, mu, "tok")
    assert bare.n is None and bare.estimate_variance is None and bare.mse is None and bare.bias_n is None
    clip = moments(mdp, pi, mu, "clip_tok", c=2.0)
    assert dict(clip.params) == {"c": 2.0}
    with pytest.raises(TypeError):
        clip.params["c"] = 3.0  # read-only


# --------------------------------------------------------------------------- long horizon


def test_long_horizon_log_moments_closed_form():
    T = 2000
    mdp = TokenMDP(np.zeros((1, 3), dtype=int), horizon=T, terminal_reward=[1.0])
    rng = np.random.default_rng(8)
    pi = Policy(rng.normal(size=(1, 3)))
    mu = Policy(pi.logits + rng.normal(scale=0.7, size=(1, 3)))
    p, q = pi.probs[0], mu.probs[0]
    r = p / q
    seq = moments(mdp, pi, mu, "seq")
    log_m2 = T * math.log(float(np.sum(p * p / q)))
    assert log_m2 > 200  # E[W^2] is huge: the log scale is needed
    assert abs(seq.log_second_moment - log_m2) <= RTOL * abs(log_m2)
    assert close(seq.mean, 1.0)
    assert math.isfinite(seq.log_variance)
    assert abs(seq.log_variance - (log_m2 + math.log(-math.expm1(-log_m2)))) <= RTOL * abs(log_m2)
    assert log_m2 > 745  # 1 / E[W^2] underflows: the log form is needed
    assert population_ess(mdp, pi, mu) == 0.0
    assert abs(population_ess(mdp, pi, mu, log=True) + log_m2) <= RTOL * abs(log_m2)
    c = 1.1
    clip = moments(mdp, pi, mu, "clip_prod", c=c)
    log_m1 = T * math.log(float(np.sum(q * np.minimum(r, c))))
    log_c2 = T * math.log(float(np.sum(q * np.minimum(r, c) ** 2)))
    assert log_m1 < -100  # the mean is tiny but must not underflow to a wrong value
    assert abs(math.log(clip.mean) - log_m1) <= RTOL * abs(log_m1)
    assert abs(clip.log_second_moment - log_c2) <= RTOL * abs(log_c2)


# --------------------------------------------------------------------------- delta method vs exact finite n


def _tiny(seed, **kw):
    rng = np.random.default_rng(seed)
    opts = dict(S=2, V=2, T=2, eos=False, step_reward=True)
    opts.update(kw)
    mdp = random_mdp(rng, **opts)
    pi, mu = random_policy_pair(rng, mdp, shift=0.5)
    return mdp, pi, mu


@pytest.mark.parametrize("name", ["snis", "wpdis"])
@pytest.mark.parametrize("seed,kw", [(3, {}), (9, {"T": 3, "eos": True}), (21, {"T": 1, "S": 1, "noise": True})])
def test_delta_method_converges_to_finite_n(name, seed, kw):
    mdp, pi, mu = _tiny(seed, **kw)
    asym = moments(mdp, pi, mu, name)
    assert asym.method == "asymptotic"
    assert asym.log_second_moment is None
    var_gap, bias_gap = [], []
    for n in (8, 16, 32, 64):
        ex = moments(mdp, pi, mu, name, n=n, method="enumeration")
        assert ex.method == "enumeration" and ex.n == n
        var_gap.append(abs(ex.variance - asym.variance) / asym.variance)
        bias_gap.append(abs(n * ex.bias - n * asym.bias - asym.bias_coef) / abs(asym.bias_coef))
        a_n = moments(mdp, pi, mu, name, n=n)
        assert close(a_n.bias_n, asym.bias + asym.bias_coef / n)
        assert close(a_n.mse, a_n.bias_n**2 + asym.variance / n)
    # n Var(estimate) and n (bias_n - bias) approach the delta-method values with O(1/n) errors:
    # each doubling of n shrinks both gaps, by about half (at least a factor 4 over 8 -> 64)
    for gap in (var_gap, bias_gap):
        assert all(b < a for a, b in zip(gap, gap[1:])), gap
        assert gap[-1] < gap[0] / 4, gap


def test_snis_and_wpdis_limits_are_unbiased_with_full_support():
    for mdp, pi, mu, desc in random_cases(31, 12):
        d = reference(mdp, pi, mu)
        for name in ("snis", "wpdis"):
            res = moments(mdp, pi, mu, name)
            assert close(res.mean, d["J"]), (desc, name)
            assert res.variance >= 0


def test_snis_asymptotic_formulas_against_enumeration():
    for mdp, pi, mu, desc in random_cases(32, 12):
        d = reference(mdp, pi, mu)
        p, W, G, m = d["p"], d["W"], d["G"], d["m"]
        noise = m * (1 - m) if mdp.reward_noise == "bernoulli" else 0.0
        b = p @ W
        theta = (p @ (W * G)) / b
        var = (p @ (W**2 * ((G - theta) ** 2 + noise))) / b**2
        coef = (theta * (p @ W**2) - p @ (W**2 * G)) / b**2
        res = moments(mdp, pi, mu, "snis")
        assert close(res.mean, theta) and close(res.variance, var) and close(res.bias_coef, coef), desc


def test_wpdis_asymptotic_formulas_against_enumeration():
    for mdp, pi, mu, desc in list(random_cases(33, 12)) + [CASES[-1], CASES[-2]]:
        d = reference(mdp, pi, mu)
        p, rew, m = d["p"], d["rew"], d["m"]
        Wt = np.exp(np.cumsum(d["lr"], axis=1))  # padding keeps W
        b = p @ Wt
        theta = (p @ (Wt * rew)) / b
        psi = (Wt * (rew - theta) / b).sum(axis=1)
        # noise: Z enters psi through the last real step with weight W / b_{L-1}
        last = d["L"] - 1
        mult = d["W"] / b[last]
        noise = mult**2 * m * (1 - m) if mdp.reward_noise == "bernoulli" else 0.0
        var = p @ (psi**2 + noise)
        coef = float(np.sum((theta * (p @ Wt**2) - p @ (Wt**2 * rew)) / b**2))
        res = moments(mdp, pi, mu, "wpdis")
        assert close(res.mean, theta.sum()) and close(res.variance, var) and close(res.bias_coef, coef), desc


def test_finite_n_enumeration_against_direct_sums():
    """n = 2 and 3 by explicit sums over ordered tuples of outcomes."""
    mdp, pi, mu = _tiny(41, noise=True)
    d = reference(mdp, pi, mu)
    # outcomes with the observed terminal reward: split each sequence by Z in {0, 1}
    m = d["m"]
    rows = []
    for i in range(len(d["p"])):
        for z, pz in ((1.0, m[i]), (0.0, 1.0 - m[i])):
            rew = d["rew"][i].copy()
            rew[d["L"][i] - 1] += z - m[i]
            rows.append((d["p"][i] * pz, d["lr"][i], rew))
    P = np.array([x[0] for x in rows])
    LR = np.array([x[1] for x in rows])
    REW = np.array([x[2] for x in rows])
    Wt = np.exp(np.cumsum(LR, axis=1))
    W, G = Wt[:, -1], REW.sum(axis=1)

    def snis(idx):
        return np.sum(W[idx] * G[idx]) / np.sum(W[idx])

    def wpdis(idx):
        return float(np.sum(np.sum(Wt[idx] * REW[idx], axis=0) / np.sum(Wt[idx], axis=0)))

    def ionides(idx):
        c = np.mean(W[idx]) * math.sqrt(len(idx))
        return float(np.mean(np.minimum(W[idx], c) * G[idx]))

    import itertools

    for n in (2, 3):
        for name, f, params in (("snis", snis, {}), ("wpdis", wpdis, {}), ("trunc_seq", ionides, {"c": "ionides"})):
            vals, probs = [], []
            for idx in itertools.product(range(len(P)), repeat=n):
                idx = list(idx)
                vals.append(f(idx))
                probs.append(np.prod(P[idx]))
            vals, probs = np.array(vals), np.array(probs)
            mean = probs @ vals
            var = probs @ (vals - mean) ** 2
            res = moments(mdp, pi, mu, name, n=n, method="enumeration", **params)
            assert close(res.mean, mean), (name, n)
            assert close(res.estimate_variance, var), (name, n)
            assert close(res.variance, n * var), (name, n)
            assert res.bias_n == res.bias and close(res.mse, res.bias**2 + var)


# --------------------------------------------------------------------------- bias decomposition and ESS


@pytest.mark.parametrize("k", range(0, len(CASES), 3))
def test_tok_bias_decomposition(k):
    mdp, pi, mu, desc = CASES[k]
    d = reference(mdp, pi, mu)
    dec = tok_bias_decomposition(mdp, pi, mu)
    assert isinstance(dec, TokBiasDecomposition)
    mean, _, _ = ref_moments("tok", mdp, d)
    j_mu = float(d["e"].prob["mu"] @ d["e"].returns)
    assert close(dec.surrogate, mean), desc
    assert close(dec.target_value, d["J"]) and close(dec.behavior_value, j_mu), desc
    assert close(dec.bias, mean - d["J"]), desc
    assert close(dec.value_mismatch + dec.support_mismatch, dec.bias), desc
    assert close(dec.state_mismatch + dec.support_mismatch, dec.bias), desc
    mu_probs = mu.expand_probs(mdp.horizon)
    pi_probs = pi.expand_probs(mdp.horizon)
    if not np.any((mu_probs == 0) & (pi_probs > 0)):
        assert dec.support_mismatch == 0.0


def test_support_mismatch_term_is_visible():
    rng = np.random.default_rng(13)
    mdp = random_mdp(rng, S=2, V=3, T=3, eos=True, step_reward=True)
    pi, mu = random_policy_pair(rng, mdp)
    lm = np.array(mu.logits)
    lm[:, 1] = -np.inf  # mu never emits token 1, pi does
    mu = Policy(lm)
    dec = tok_bias_decomposition(mdp, pi, mu)
    assert dec.support_mismatch != 0.0
    d = reference(mdp, pi, mu)
    mean, _, _ = ref_moments("tok", mdp, d)
    assert close(dec.surrogate, mean)
    assert close(dec.value_mismatch + dec.support_mismatch, mean - d["J"])
    # the seq estimator loses exactly the target mass on sequences mu cannot produce
    seq = moments(mdp, pi, mu, "seq")
    lost = float(d["e"].prob["pi"][d["e"].prob["mu"] == 0] @ d["e"].returns[d["e"].prob["mu"] == 0])
    assert close(seq.bias, -lost)


@pytest.mark.parametrize("k", range(0, len(CASES), 2))
def test_population_ess(k):
    """E_mu[W]^2 / E_mu[W^2] over the enumeration (= 1 / E_mu[W^2] under full support)."""
    mdp, pi, mu, desc = CASES[k]
    d = reference(mdp, pi, mu)
    ess = population_ess(mdp, pi, mu)
    mean_w = float(d["p"] @ d["W"])
    assert close(ess, mean_w**2 / float(d["p"] @ d["W"] ** 2)), desc
    assert 0 < ess <= 1 + 1e-12
    assert close(population_ess(mdp, pi, mu, log=True), math.log(ess)), desc


def test_population_ess_is_inverse_second_moment_under_full_support():
    from tokis.exact import divergences, log_second_moment

    mdp, pi, mu, _ = CASES[5]
    lsm = log_second_moment(mdp, pi, mu)
    assert close(math.log(population_ess(mdp, pi, mu)), -float(lsm))
    assert close(divergences(mdp, pi, mu).population_ess_fraction, population_ess(mdp, pi, mu))


# --------------------------------------------------------------------------- cross-check with tokis.estimators


@pytest.mark.parametrize("name", RECURSIONS + ENUMERATED)
def test_statistic_matches_estimator_samples(name):
    est = estimators
    mdp, pi, mu, _ = CASES[7]
    d = reference(mdp, pi, mu)
    params = PARAMS.get(name, {})
    f, _ = ref_statistic(name, d, **params)
    e = d["e"]
    keep = e.prob["mu"] > 0
    out = getattr(est, name)(d["lr"], e.rewards[keep], mask=e.mask[keep], **params)
    samples = np.asarray(out.samples) * math.exp(out.log_scale)  # stored divided by exp(log_scale)
    np.testing.assert_allclose(samples, f, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,params", [("snis", {}), ("wpdis", {}), ("trunc_seq", {"c": "ionides"})])
@pytest.mark.parametrize("mismatch", [False, True])
def test_finite_n_vectorised_matches_estimator(name, params, mismatch):
    from tokis.exact._enumerate import enumerate_outcomes
    from tokis.exact._finite_n import finite_n_moments
    from tokis.exact._recursions import prepare

    mdp, pi, mu = _tiny(3, noise=True)
    if mismatch:  # pi = 0 on a token mu emits: some weights are 0, some batches all-zero
        lp = np.array(pi.logits)
        lp[..., 0] = -np.inf
        pi = Policy(lp)
    o = enumerate_outcomes(prepare(mdp, pi, mu), 1000)
    spec = estimators.get_estimator(name)
    params = spec.check_params(params)
    if mismatch and name in ("snis", "wpdis"):
        for use in (False, True):
            with pytest.raises(ValueError, match=f"{name} at n=3 is undefined .* with probability"):
                finite_n_moments(spec, o, 3, params, 10_000, use_estimator=use)
        with pytest.raises(ValueError, match=f"{name} at n=3 is undefined"):
            moments(mdp, pi, mu, name, n=3, method="enumeration")
        return
    a = finite_n_moments(spec, o, 3, params, 10_000)
    b = finite_n_moments(spec, o, 3, params, 10_000, use_estimator=True)
    assert close(a[0], b[0]) and close(a[1], b[1])


def test_psis_by_enumeration():
    mdp, pi, mu = _tiny(3)
    res = moments(mdp, pi, mu, "psis", n=4)
    assert res.method == "enumeration" and math.isfinite(res.mean) and res.variance >= 0


# --------------------------------------------------------------------------- errors


@pytest.fixture
def small():
    rng = np.random.default_rng(17)
    mdp = random_mdp(rng, S=2, V=3, T=3, eos=True)
    pi, mu = random_policy_pair(rng, mdp)
    return mdp, pi, mu


def test_unknown_estimator(small):
    with pytest.raises(ValueError, match="estimator must be one of"):
        moments(*small, "nope")


def test_bad_n(small):
    with pytest.raises(ValueError, match="n must be >= 1"):
        moments(*small, "seq", n=0)
    with pytest.raises(TypeError, match="n must be an integer"):
        moments(*small, "seq", n=2.5)


@pytest.mark.parametrize(
    "name,params,match",
    [
        ("clip_prod", {"c": 0.0}, "c must be > 0"),
        ("clip_tok", {"c": -1.0}, "c must be > 0"),
        ("trunc_seq", {"c": -2.0}, "c must be > 0"),
        ("trunc_seq", {"c": "foo"}, "c must be a positive number or 'ionides'"),
        ("clip_prod", {"c": float("nan")}, "c must not be NaN"),
        ("mask_tok", {"lo": 2.0, "hi": 1.0}, "lo must be <= hi"),
        ("mask_seq", {"lo": 2.0, "hi": 1.0}, "lo must be <= hi"),
        ("mask_tok", {"lo": -1.0, "hi": 1.0}, "lo must be a finite number >= 0"),
    ],
)
def test_bad_params(small, name, params, match):
    with pytest.raises(ValueError, match=match):
        moments(*small, name, **params)
    with pytest.raises(ValueError, match=match):  # the same check, the same outcome, as a call
        estimators.get_estimator(name)(np.zeros((2, 2)), np.ones(2), **params)


@pytest.mark.parametrize("name,params,extra", [("seq", {"c": 1.0}, "c"), ("clip_tok", {"c": 1.0, "lo": 0.1}, "lo")])
def test_unknown_params(small, name, params, extra):
    with pytest.raises(TypeError, match=f"unexpected keyword argument '{extra}'"):
        moments(*small, name, **params)


def test_param_type(small):
    with pytest.raises(TypeError, match="c must be a real number"):
        moments(*small, "clip_prod", c=[1.0])


def test_defaults_come_from_the_declaration(small):
    assert moments(*small, "clip_prod").params["c"] == estimators.clip_prod.params["c"] == 2.0
    assert dict(moments(*small, "mask_tok").params) == {"lo": 0.5, "hi": 2.0}


def test_method_errors(small):
    from tokis.exact import NoExactMethodError

    with pytest.raises(NoExactMethodError, match="method='asymptotic' does not apply to 'seq'"):
        moments(*small, "seq", method="asymptotic")
    with pytest.raises(ValueError, match="method must be one of"):
        moments(*small, "seq", method="mc")
    with pytest.raises(ValueError, match="method='asymptotic' does not apply to 'seq'"):
        moments(*small, "seq", method="asymptotic")
    with pytest.raises(ValueError, match="method='exact' does not apply to 'mask_seq'"):
        moments(*small, "mask_seq", method="exact", lo=0.5, hi=2.0)


def test_batch_needs_n(small):
    from tokis.exact import NoExactMethodError

    with pytest.raises(NoExactMethodError, match="trunc_seq is a batch estimator.*pass n"):
        moments(*small, "trunc_seq", c="ionides")
    with pytest.raises(ValueError, match="snis is a batch estimator.*pass n"):
        moments(*small, "snis", method="enumeration")
    with pytest.raises(ValueError, match="psis is a batch estimator.*pass n"):
        moments(*small, "psis")


def test_enumeration_too_large():
    mdp = TokenMDP(np.zeros((1, 4), dtype=int), horizon=12, terminal_reward=[1.0])
    rng = np.random.default_rng(1)
    pi, mu = Policy(rng.normal(size=(1, 4))), Policy(rng.normal(size=(1, 4)))
    with pytest.raises(ValueError, match="trunc_seq has no finite recursion.*max_sequences=200000.*No exact method"):
        moments(mdp, pi, mu, "trunc_seq", c=2.0)
    with pytest.raises(ValueError, match="max_sequences=10"):
        moments(mdp.with_horizon(2), pi, mu, "mask_seq", lo=0.5, hi=2.0, max_sequences=10)
    # the recursions do not care about the size
    assert moments(mdp, pi, mu, "seq").method == "exact"


def test_too_many_multisets(small):
    with pytest.raises(ValueError, match="max_multisets=50"):
        moments(*small, "snis", n=10, method="enumeration", max_multisets=50)


def test_bad_policies(small):
    mdp, pi, mu = small
    with pytest.raises(ValueError, match="behavior logits have shape"):
        moments(mdp, pi, Policy(np.zeros((5, 3))), "seq")
    with pytest.raises(TypeError, match="target must be a tokis.envs.Policy"):
        moments(mdp, "pi", mu, "seq")


def test_undefined_ratio_estimators():
    mdp = TokenMDP(np.zeros((1, 2), dtype=int), horizon=2, terminal_reward=[1.0])
    pi = Policy(np.array([[0.0, -np.inf]]))
    mu = Policy(np.array([[-np.inf, 0.0]]))
    with pytest.raises(ValueError, match="snis is undefined"):
        moments(mdp, pi, mu, "snis")
    with pytest.raises(ValueError, match="wpdis is undefined"):
        moments(mdp, pi, mu, "wpdis")
    with pytest.raises(ValueError, match="population_ess is undefined"):
        population_ess(mdp, pi, mu)
    assert moments(mdp, pi, mu, "seq").mean == 0.0
