"""Exact expected gradients of every objective: the DP against brute-force enumeration, and the truths.

The enumeration reference is written here from the definitions (per sequence: the coefficient of every
token from the objective's declared function, the aggregation, the softmax score), independent of the
engine's dynamic programs; the engine's own enumeration path is checked against it too.
"""

import math

import numpy as np
import pytest
from _cases import random_cases
from _reference import enumerate_sequences

from tokis import exact, objectives
from tokis.envs import Policy, TokenMDP, perturb
from tokis.exact import NoExactMethodError

CASES = list(random_cases(41, 24))

SETUPS = [
    ("tok", {}),
    ("seq", {}),
    ("ppo_clip", {}),
    ("ppo_clip", {"eps_low": 0.05, "eps_high": 0.08, "dual_clip": 1.5}),
    ("cispo", {}),
    ("cispo", {"eps_low": 0.1, "eps_high": 0.1}),
    ("gspo", {"eps_low": 0.02, "eps_high": 0.02}),
    ("tok", {"aggregation": "seq_mean_token_mean"}),
    ("tok", {"aggregation": "token_mean", "normalize_std": True}),
    ("seq", {"aggregation": "constant"}),
    ("ppo_clip", {"advantage": "critic"}),
    ("seq", {"advantage": "critic"}),
    ("tok", {"correction": "tis", "c": 1.05}),
    ("ppo_clip", {"correction": "mis", "lo": 0.9, "hi": 1.1}),
    ("tok", {"correction": "tis", "c": 1.05, "correction_level": "sequence"}),
    ("tok", {"baseline": 0.3}),
]


def _old_and_anchor(mdp, pi, mu, k):
    """Three policies: pi_theta = pi, anchor pi_old (a perturbation of mu) for odd cases, sampler mu."""
    return perturb(mu, kl=0.02, seed=k) if k % 2 else None


def reference(mdp, pi, mu, anchor, objective, **params):
    """E_mu[g_hat] by enumerating every sequence (and each Bernoulli outcome) from the definitions."""
    spec = objectives.get_objective(objective)
    st = spec.settings(**params)
    e = enumerate_sequences(mdp, pi=pi, mu=mu, **({} if anchor is None else {"old": anchor}))
    keep = e.prob["mu"] > 0
    T = mdp.horizon
    old = "mu" if anchor is None else "old"
    with np.errstate(invalid="ignore"):
        l = np.where(e.mask, e.logp["pi"] - e.logp[old], 0.0)[keep]
        l_rho = np.where(e.mask, e.logp[old] - e.logp["mu"], 0.0)[keep]
    mask, tokens, contexts = e.mask[keep], e.tokens[keep], e.contexts[keep]
    p = e.prob["mu"][keep]
    steps, m = e.step_rewards[keep], e.terminal[keep]
    if mdp.reward_noise == "bernoulli":  # split each sequence into its two observed terminal rewards
        idx = np.concatenate([np.arange(p.size)] * 2)
        z = np.concatenate([np.ones(p.size), np.zeros(p.size)])
        pz = np.concatenate([m, 1 - m])
        l, l_rho, mask, tokens, contexts, steps = (a[idx] for a in (l, l_rho, mask, tokens, contexts, steps))
        p = p[idx] * pz
    else:
        z = m
    G = steps.sum(axis=1) + z
    J_mu = exact.value(mdp, mu)
    if st.advantage == "critic":
        q = exact.q_values(mdp, mu)
        v = exact.state_values(mdp, mu)
        A = np.zeros(mask.shape)
        for t in range(T):
            c, y = np.where(mask[:, t], contexts[:, t], 0), np.where(mask[:, t], tokens[:, t], 0)
            A[:, t] = np.where(mask[:, t], q[t, c, y] - v[t, c], 0.0)
    else:
        b = J_mu if st.baseline is None else st.baseline
        var, second = float(p @ (G - float(p @ G)) ** 2), float(p @ G**2)
        sd = math.sqrt(var) if st.normalize_std else 1.0
        # a constant return has no spread: every advantage is 0 (the engine's convention)
        A = ((G - b) / sd)[:, None] if sd > 0 and var > 1e-12 * second else np.zeros((G.size, 1))
        if not st.normalize_std:
            A = (G - b)[:, None]
    w = objectives.coefficients(spec, st, l, A, l_rho, mask)
    L = mask.sum(axis=1)
    EL = float(e.prob["mu"][keep] @ e.lengths[keep])
    norm = {"seq_mean_token_sum": np.ones_like(L, dtype=float), "seq_mean_token_mean": np.maximum(L, 1),
            "constant": np.full(L.shape, float(T)), "token_mean": np.full(L.shape, EL)}[st.aggregation]
    w = w / norm[:, None]
    probs = pi.expand_probs(T)
    g = np.zeros(pi.logits.shape)
    for i in range(p.size):
        for t in range(T):
            if mask[i, t]:
                c, y = contexts[i, t], tokens[i, t]
                score = -probs[t, c].copy()
                score[y] += 1.0
                if pi.logits.ndim == 3:
                    g[t, c] += p[i] * w[i, t] * score
                else:
                    g[c] += p[i] * w[i, t] * score
    return g


@pytest.mark.parametrize("objective, params", SETUPS, ids=[f"{o}-{i}" for i, (o, _) in enumerate(SETUPS)])
def test_expected_gradient_equals_enumeration(objective, params):
    checked = 0
    for k, (mdp, pi, mu, desc) in enumerate(CASES):
        anchor = _old_and_anchor(mdp, pi, mu, k)
        if objective == "seq" and anchor is not None and params.get("advantage") != "critic":
            pass
        try:
            res = exact.objective_gradient(mdp, pi, mu, objective, anchor=anchor, **params)
        except NoExactMethodError:
            continue
        ref = reference(mdp, pi, mu, anchor, objective, **params)
        scale = max(1.0, float(np.abs(ref).max()))
        np.testing.assert_allclose(res.mean, ref, rtol=1e-10, atol=1e-12 * scale, err_msg=f"{desc} {res.method}")
        checked += 1
        # the engine's own enumeration agrees with its DP (and with the reference)
        alt = exact.objective_gradient(mdp, pi, mu, objective, anchor=anchor, method="enumeration", **params)
        np.testing.assert_allclose(alt.mean, ref, rtol=1e-10, atol=1e-12 * scale, err_msg=desc)
        v = max(alt.variance_along, 1e-300)
        assert res.variance_along == pytest.approx(alt.variance_along, rel=1e-8, abs=1e-12 * max(1.0, v)), desc
        if math.isfinite(res.trace) and math.isfinite(alt.trace):
            assert res.trace == pytest.approx(alt.trace, rel=1e-8, abs=1e-12), desc
    assert checked >= len(CASES) // 2


@pytest.mark.parametrize("k", range(0, len(CASES), 2))
def test_seq_is_unbiased_and_tok_bias_splits_exactly(k):
    mdp, pi, mu, desc = CASES[k]
    s = exact.objective_gradient(mdp, pi, mu, "seq")
    assert s.method == "exact"
    np.testing.assert_allclose(s.mean, exact.gradient(mdp, pi), rtol=1e-10, atol=1e-13)
    assert s.relative_bias < 1e-9 or np.abs(s.true).max() < 1e-13
    t = exact.objective_gradient(mdp, pi, mu, "tok")
    total = t.state_mismatch + t.value_mismatch + t.support_mismatch
    np.testing.assert_allclose(total, t.bias, atol=1e-13)
    np.testing.assert_allclose(t.support_mismatch, 0.0, atol=1e-12)  # full support in these cases
    # on-policy, the token-level gradient is the true gradient
    on = exact.objective_gradient(mdp, pi, pi, "tok")
    np.testing.assert_allclose(on.mean, exact.gradient(mdp, pi), rtol=1e-10, atol=1e-13)
    assert np.abs(on.state_mismatch).max() < 1e-13 and np.abs(on.value_mismatch).max() < 1e-13


def test_clipping_removes_the_gradient_outside_the_trust_region():
    mdp, pi, mu, _ = CASES[0]  # no step rewards: clipping by the sign of A is exact
    wide = exact.objective_gradient(mdp, pi, mu, "ppo_clip", eps_low=1.0, eps_high=1e9)
    tok = exact.objective_gradient(mdp, pi, mu, "tok", aggregation="token_mean")
    np.testing.assert_allclose(wide.mean, tok.mean, rtol=1e-12, atol=1e-15)
    assert wide.clip_probability == 0.0 and wide.clip_mass == pytest.approx(0.0, abs=1e-12)
    tight = exact.objective_gradient(mdp, pi, mu, "ppo_clip", eps_low=1e-6, eps_high=1e-6)
    assert tight.clip_probability > 0.2 and tight.clip_mass > 0.2
    assert tight.clip_probability > wide.clip_probability


def test_clip_probability_against_enumeration():
    # P(token clipped) = E_mu[sum_t 1{clipped}] / E_mu[L], with clipping depending on sign(A)
    for k, (mdp, pi, mu, desc) in enumerate(CASES[:12]):
        if mdp.has_step_reward:
            continue
        res = exact.objective_gradient(mdp, pi, mu, "ppo_clip", eps_low=0.05, eps_high=0.05)
        e = enumerate_sequences(mdp, pi=pi, mu=mu)
        keep = e.prob["mu"] > 0
        with np.errstate(invalid="ignore"):
            l = np.where(e.mask, e.logp["pi"] - e.logp["mu"], 0.0)[keep]
        J_mu = exact.value(mdp, mu)
        p, mask, m = e.prob["mu"][keep], e.mask[keep], e.terminal[keep]
        outcomes = [(p * m, np.ones_like(m)), (p * (1 - m), np.zeros_like(m))] if mdp.reward_noise == "bernoulli" \
            else [(p, m)]
        count = 0.0
        for prob, z in outcomes:
            A = (z - J_mu)[:, None]
            clipped = mask & (((A > 0) & (l > np.log1p(0.05))) | ((A < 0) & (l < np.log1p(-0.05))))
            count += float(prob @ clipped.sum(axis=1))
        EL = float(e.prob["mu"][keep] @ e.lengths[keep])
        assert res.clip_probability == pytest.approx(count / EL, rel=1e-10, abs=1e-14), desc


def test_no_exact_method_is_a_clear_error():
    mdp = TokenMDP(np.zeros((1, 4), dtype=int), horizon=12, terminal_reward=[1.0],
                   step_reward=np.full((1, 4), 0.1))
    rng = np.random.default_rng(0)
    pi, mu = Policy(rng.normal(size=(1, 4))), Policy(rng.normal(size=(1, 4)))
    with pytest.raises(NoExactMethodError, match="max_sequences"):
        exact.objective_gradient(mdp, pi, mu, "gspo")
    with pytest.raises(NoExactMethodError, match="no exact recursion"):
        exact.objective_gradient(mdp, pi, mu, "ppo_clip", method="exact")
    assert exact.objective_gradient(mdp, pi, mu, "tok").method == "exact"


def test_bad_input():
    mdp, pi, mu, _ = CASES[0]
    with pytest.raises(ValueError, match="objective must be one of"):
        exact.objective_gradient(mdp, pi, mu, "nope")
    with pytest.raises(TypeError, match="unexpected keyword argument 'c'"):
        exact.objective_gradient(mdp, pi, mu, "tok", c=2.0)
    with pytest.raises(ValueError, match="aggregation must be one of"):
        exact.objective_gradient(mdp, pi, mu, "tok", aggregation="mean")
    with pytest.raises(ValueError, match="eps_low must be >= 0"):
        exact.objective_gradient(mdp, pi, mu, "ppo_clip", eps_low=-0.1)
    with pytest.raises(ValueError, match="correction must be one of"):
        exact.objective_gradient(mdp, pi, mu, "tok", correction="is")
    with pytest.raises(ValueError, match="lo must be <= hi"):
        exact.objective_gradient(mdp, pi, mu, "tok", correction="mis", lo=2.0, hi=1.0)
    with pytest.raises(TypeError, match="anchor must be a tokis.envs.Policy"):
        exact.objective_gradient(mdp, pi, mu, "tok", anchor="mu")
    with pytest.raises(ValueError, match="n must be >= 1"):
        exact.objective_gradient(mdp, pi, mu, "tok", n=0)


def test_snr_and_fields():
    mdp, pi, mu, _ = CASES[6]
    r = exact.objective_gradient(mdp, pi, mu, "tok", n=64)
    assert r.variance_along > 0
    u = r.true / np.linalg.norm(r.true)
    along = float((r.mean * u).sum())
    assert r.snr == pytest.approx(along / math.sqrt(r.variance_along / 64))
    assert r.ascent == pytest.approx(along / np.linalg.norm(r.true))
    assert -1.0 <= r.cosine <= 1.0 and r.baseline == pytest.approx(exact.value(mdp, mu))
    assert not r.mean.flags.writeable
