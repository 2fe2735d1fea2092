"""The numba moment kernels against their numpy twins (tokis.exact._recursions).

Each engine (additive, multiplicative, pdis, wpdis_stats) has a numba implementation (the one
``moments`` runs) and a numpy reference ``_*_numpy``; both are checked against brute-force
enumeration through ``moments`` in test_moments.py. Here the two implementations are compared
directly, to 1e-12 relative, on random small MDPs covering eos, step rewards, time-dependent
logits, several start contexts, Bernoulli noise and zero-probability tokens, and on long
horizons where the per-step log scales carry numbers far outside the float range.

Tolerances: the engines return sums of many signed terms, so a result ``a`` is compared with
``|a - b| <= RTOL * max(|b|, bound)`` where ``bound`` is a Cauchy-Schwarz bound on the sum of
absolute values computed from the reference's own second moments (e.g. ``E|f| <= sqrt(E[f^2])``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from _cases import random_cases, random_mdp, random_policy_pair

from tokis.envs import Policy, TokenMDP
from tokis.exact import _moment_kernels as kernels
from tokis.exact import _recursions as rec

RTOL = 1e-12


def close(a: float, b: float, bound: float = 0.0) -> bool:
    return abs(a - b) <= RTOL * max(abs(b), bound)


def close_log(va, sa, vb, sb, bound_log=-math.inf) -> bool:
    """``va e^sa`` against ``vb e^sb`` with magnitude bound ``e^bound_log`` (no overflow)."""
    if vb == 0 and va == 0:
        return True
    ref_log = (math.log(abs(vb)) + sb) if vb != 0 else -math.inf
    m = max(ref_log, bound_log, (math.log(abs(va)) + sa) if va != 0 else -math.inf)
    da = va * math.exp(sa - m) if va != 0 else 0.0
    db = vb * math.exp(sb - m) if vb != 0 else 0.0
    mag = max(math.exp(ref_log - m) if vb != 0 else 0.0, math.exp(bound_log - m) if bound_log > -math.inf else 0.0)
    return abs(da - db) <= RTOL * mag


def _log_abs(v, s):
    return math.log(abs(v)) + s if v != 0 else -math.inf


def with_zeros(rng, pi: Policy, mu: Policy):
    """Copies of (pi, mu) with a few -inf logits (zero probabilities), at least one finite per row."""
    out = []
    for p in (pi, mu):
        logits = np.array(p.logits, dtype=float)
        hole = rng.uniform(size=logits.shape) < 0.25
        hole[..., 0] = False
        logits[hole] = -np.inf
        out.append(Policy(logits))
    return out[0], out[1]


def cases(seed, count, zeros=False, **over):
    rng = np.random.default_rng(seed + 1000)
    for mdp, pi, mu, desc in random_cases(seed, count, **over):
        if zeros:
            pi, mu = with_zeros(rng, pi, mu)
        yield mdp, pi, mu, desc


CASES = list(cases(11, 48)) + list(cases(12, 16, zeros=True)) + list(cases(13, 8, S=6, V=4, T=6))


# --------------------------------------------------------------------------- engine comparisons


def check_additive(pair, x, a0, per_length, desc):
    m_nb, s_nb = rec.additive(pair, x, a0, per_length)
    m_np, s_np = rec._additive_numpy(pair, x, a0, per_length)
    assert close(s_nb, s_np), (desc, s_nb, s_np)
    assert close(m_nb, m_np, math.sqrt(max(s_np, 0.0))), (desc, m_nb, m_np)


def check_mult(pair, log_h, desc, **kw):
    a = rec.multiplicative(pair, log_h, **kw)
    b = rec._multiplicative_numpy(pair, log_h, **kw)
    for k in range(a.first.shape[0]):
        # E[H^2 G'^2] >= 0 bounds the rest: |E[H^2 G']| <= sqrt(E[H^2] E[H^2 G'^2]), |E[H G']| <= sqrt(E[H^2 G'^2])
        h2, h2g2 = _log_abs(b.second[k, 0], b.scale2[k]), _log_abs(b.second[k, 2], b.scale2[k])
        assert close_log(a.second[k, 0], a.scale2[k], b.second[k, 0], b.scale2[k]), (desc, k)
        assert close_log(a.second[k, 2], a.scale2[k], b.second[k, 2], b.scale2[k]), (desc, k)
        assert close_log(a.second[k, 1], a.scale2[k], b.second[k, 1], b.scale2[k], 0.5 * (h2 + h2g2)), (desc, k)
        assert close_log(a.first[k, 0], a.scale1[k], b.first[k, 0], b.scale1[k]), (desc, k)
        assert close_log(a.first[k, 1], a.scale1[k], b.first[k, 1], b.scale1[k], 0.5 * h2g2), (desc, k)


def check_pdis(pair, desc, *args, **kw):
    (v1, s1), (v2, s2) = rec.pdis(pair, *args, **kw)
    (w1, t1), (w2, t2) = rec._pdis_numpy(pair, *args, **kw)
    assert close_log(v2, s2, w2, t2), (desc, v2, s2, w2, t2)
    assert close_log(v1, s1, w1, t1, 0.5 * _log_abs(w2, t2)), (desc, v1, s1, w1, t1)


def check_wpdis(pair, desc):
    b, theta, cv, cs = rec.wpdis_stats(pair)
    b0, theta0, cv0, cs0 = rec._wpdis_stats_numpy(pair)
    # |rew_t| <= rmax bounds theta_t; c_t sums at most S V running terms X^2 (rew - theta) with
    # X^2 e^{-scale} <= 1 (max-normalised state times a shifted kernel <= 1), plus the ended part
    rmax = float(np.abs(pair.mdp.step_reward).max() + np.abs(pair.m_next).max())
    for t in range(pair.T):
        assert close(b[t], b0[t]), (desc, t)
        assert close(theta[t], theta0[t], rmax), (desc, t)
        bound = cs0[t] + math.log(pair.S * pair.V * (rmax + abs(theta0[t])) + abs(theta0[t]) + 1e-300)
        assert close_log(cv[t], cs[t], cv0[t], cs0[t], bound), (desc, t)


@pytest.mark.parametrize("k", range(len(CASES)))
def test_engines_match_numpy(k):
    mdp, pi, mu, desc = CASES[k]
    pair = rec.prepare(mdp, pi, mu)
    T = mdp.horizon
    rng = np.random.default_rng(k)
    with np.errstate(over="ignore"):
        r = np.exp(rec.steps(pair.log_r, T))
    # additive: tok, tok_mean, clip_tok and an arbitrary time-dependent increment
    check_additive(pair, r - 1.0, 1.0, False, desc)
    check_additive(pair, r, 0.0, True, desc)
    check_additive(pair, np.minimum(r, 1.1) - 1.0, 1.0, False, desc)
    check_additive(pair, rng.normal(size=(T, mdp.num_contexts, mdp.vocab_size)), 0.5, False, desc)
    # multiplicative: seq, clip_prod, shifted G, geo (one batch per final length)
    check_mult(pair, pair.log_r, desc)
    check_mult(pair, np.minimum(rec.steps(pair.log_r, T), math.log(1.2)), desc)
    check_mult(pair, pair.log_r, desc, shift=0.37)
    lengths = np.arange(1, T + 1) if mdp.eos is not None else np.array([T])
    check_mult(pair, pair.log_r, desc, lengths=lengths, root=True)
    # pdis, and the wpdis influence function's affine per-step reward
    check_pdis(pair, desc, mdp.step_reward, np.ones(T), np.zeros(T))
    shift, div = rng.normal(size=T), rng.uniform(0.5, 2.0, size=T)
    check_pdis(pair, desc, mdp.step_reward, rng.normal(size=T), rng.normal(size=T), u_shift=shift, u_div=div)
    check_pdis(pair, desc, rng.normal(size=(T, mdp.num_contexts, mdp.vocab_size)), np.ones(T), np.zeros(T))
    check_wpdis(pair, desc)


# --------------------------------------------------------------------------- long horizons


def long_case(T, *, eos, step_reward, time_dependent=False, seed=5):
    """Small MDP with policies far apart: E[W^2] overflows by hundreds of orders of magnitude."""
    rng = np.random.default_rng(seed)
    mdp = random_mdp(rng, S=5, V=3, T=T, eos=eos, step_reward=step_reward, multi_start=True, noise=True)
    if eos:  # keep long sequences likely: eos is rare under both policies
        pi, mu = random_policy_pair(rng, mdp, time_dependent=time_dependent, scale=1.0, shift=1.5)
        lp, lm = np.array(pi.logits), np.array(mu.logits)
        lp[..., mdp.eos] -= 4.0
        lm[..., mdp.eos] -= 4.0
        pi, mu = Policy(lp), Policy(lm)
    else:
        pi, mu = random_policy_pair(rng, mdp, time_dependent=time_dependent, scale=1.0, shift=1.5)
    return mdp, pi, mu


@pytest.mark.parametrize(
    "eos,step_reward,time_dependent",
    [(False, False, False), (True, True, False), (True, False, True), (False, True, True)],
)
def test_long_horizon_log_scales(eos, step_reward, time_dependent):
    T = 2000
    mdp, pi, mu = long_case(T, eos=eos, step_reward=step_reward, time_dependent=time_dependent)
    pair = rec.prepare(mdp, pi, mu)
    desc = f"T={T} eos={eos} step={step_reward} tdep={time_dependent}"
    res = rec.multiplicative(pair, pair.log_r)
    assert res.scale2[0] > 800.0, "the case must overflow E[W^2] for the log scales to matter"
    check_mult(pair, pair.log_r, desc)
    check_mult(pair, pair.log_r, desc, shift=0.5)
    check_pdis(pair, desc, mdp.step_reward, np.ones(T), np.zeros(T))
    check_wpdis(pair, desc)
    with np.errstate(over="ignore"):
        r = np.exp(rec.steps(pair.log_r, T))
    check_additive(pair, np.minimum(r, 2.0) - 1.0, 1.0, False, desc)


def test_long_horizon_geo_with_eos():
    T = 400  # one batch per final length: T (T + 1) / 2 steps
    mdp, pi, mu = long_case(T, eos=True, step_reward=True, seed=6)
    pair = rec.prepare(mdp, pi, mu)
    check_mult(pair, pair.log_r, "geo", lengths=np.arange(1, T + 1), root=True)


# --------------------------------------------------------------------------- structure


def test_results_do_not_depend_on_chunks():
    """Per-target pulls and per-context partial sums added in context order: bit-for-bit equal."""
    rng = np.random.default_rng(3)
    mdp = random_mdp(rng, S=64, V=8, T=30, eos=True, step_reward=True, multi_start=True)
    pi, mu = random_policy_pair(rng, mdp, time_dependent=True)
    pair = rec.prepare(mdp, pi, mu)
    T = mdp.horizon
    r = np.exp(rec.steps(pair.log_r, T))
    for nch in (2, 5):
        assert rec.additive(pair, r - 1.0, 1.0, nch=nch) == rec.additive(pair, r - 1.0, 1.0, nch=1)
        a, b = rec.multiplicative(pair, pair.log_r, nch=nch), rec.multiplicative(pair, pair.log_r, nch=1)
        for f in ("first", "scale1", "second", "scale2"):
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
        args = (mdp.step_reward, np.ones(T), np.zeros(T))
        assert rec.pdis(pair, *args, nch=nch) == rec.pdis(pair, *args, nch=1)
        for x, y in zip(rec.wpdis_stats(pair, nch=nch), rec.wpdis_stats(pair, nch=1)):
            np.testing.assert_array_equal(x, y)


def test_incoming_lists_every_continuing_flow_once_by_target():
    rng = np.random.default_rng(4)
    nxt = rng.integers(0, 7, size=(7, 5))
    for eos in (-1, 2):
        indptr, src, tok = kernels.incoming(nxt, eos)
        keep = [(c, a) for c in range(7) for a in range(5) if a != eos]
        assert indptr[-1] == len(src) == len(keep)
        for cp in range(7):
            got = list(zip(src[indptr[cp] : indptr[cp + 1]], tok[indptr[cp] : indptr[cp + 1]]))
            assert got == [(c, a) for c, a in keep if nxt[c, a] == cp]


def test_stationary_pair_is_not_expanded():
    rng = np.random.default_rng(5)
    mdp = random_mdp(rng, S=4, V=3, T=50)
    pi, mu = random_policy_pair(rng, mdp)
    pair = rec.prepare(mdp, pi, mu)
    for a in (pair.mu, pair.log_mu, pair.pi, pair.log_r):
        assert a.shape == (50, 4, 3) and a.strides[0] == 0
        assert rec.steps(a, 50).shape == (1, 4, 3)
    pi_t, _ = random_policy_pair(rng, mdp, time_dependent=True)
    pair = rec.prepare(mdp, pi_t, mu)
    assert pair.mu.strides[0] == 0 and rec.steps(pair.log_r, 50).shape == (50, 4, 3)
    np.testing.assert_allclose(pair.log_r[7], pi_t.log_probs[7] - mu.log_probs, rtol=0, atol=1e-15)


def test_one_compiled_signature_per_kernel():
    """Stationary, time-dependent and mixed policies reach the kernels with the same argument types."""
    rng = np.random.default_rng(6)
    mdp = random_mdp(rng, S=3, V=2, T=4, eos=True, step_reward=True)
    pis, mus = random_policy_pair(rng, mdp)
    pit, mut = random_policy_pair(rng, mdp, time_dependent=True)
    for pi, mu in ((pis, mus), (pit, mut), (pis, mut), (pit, mus)):
        pair = rec.prepare(mdp, pi, mu)
        T = mdp.horizon
        rec.additive(pair, np.exp(rec.steps(pair.log_r, T)), 0.0)
        rec.multiplicative(pair, pair.log_r, lengths=np.arange(1, T + 1), root=True)
        rec.multiplicative(pair, np.minimum(rec.steps(pair.log_r, T), 0.1))
        rec.pdis(pair, mdp.step_reward, np.ones(T), np.zeros(T))
        rec.wpdis_stats(pair)
    for k in (kernels.additive_kernel, kernels.multiplicative_kernel, kernels.pdis_kernel, kernels.wpdis_kernel):
        assert len(k.signatures) == 1, (k, k.signatures)


# --------------------------------------------------------------------------- errors


def test_steps_rejects_bad_shapes():
    with pytest.raises(ValueError, match="per-step array must have shape"):
        rec.steps(np.zeros((3, 2, 2)), 5)
    with pytest.raises(ValueError, match="per-step array must have shape"):
        rec.steps(np.zeros(4), 5)


def test_wpdis_undefined_raises_in_both():
    # the target only emits a token the behaviour never emits: E_mu[W_<=0] = 0
    mdp = TokenMDP(np.zeros((1, 2), dtype=int), horizon=3, terminal_reward=np.ones(1))
    pi = Policy(np.array([[0.0, -np.inf]]))
    mu = Policy(np.array([[-np.inf, 0.0]]))
    pair = rec.prepare(mdp, pi, mu)
    with pytest.raises(ValueError, match=r"wpdis is undefined: E_mu\[W_<=t\] = 0 at step t=0"):
        rec.wpdis_stats(pair)
    with pytest.raises(ValueError, match=r"wpdis is undefined: E_mu\[W_<=t\] = 0 at step t=0"):
        rec._wpdis_stats_numpy(pair)
