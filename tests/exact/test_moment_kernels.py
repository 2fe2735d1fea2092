"""The moment engines of tokis.exact._recursions against brute-force enumeration.

Each engine (additive, multiplicative, pdis, wpdis_stats) is a numba kernel. Here every one is
checked against an explicit sum over all outcomes of small random MDPs (eos, step rewards,
time-dependent logits, several start contexts, Bernoulli reward noise, zero-probability
tokens), with the per-sample statistic written out in the test, to ``RTOL = 1e-12``:

- a mean ``E[f]`` to ``RTOL * E|f|`` (the condition number of the sum),
- a variance ``Var f`` to ``RTOL * Var f`` (relative: the engines never form
  ``E[f^2] - E[f]^2``, see test_cancellation.py), up to ``1e-28 E[f^2]`` (the rounding of the
  reference itself when ``f`` is constant),
- a raw moment ``E[g]`` to ``RTOL * E|g|``.

Statistics that are functions of the log-ratios and rewards use
:func:`tokis.exact._enumerate.enumerate_outcomes`; those with arbitrary per-(step, context,
token) tables use the sequence enumeration of tests/_reference.py (which also returns contexts
and tokens), split by the terminal-reward outcome under Bernoulli noise. On long horizons
(T = 2000), where nothing can be enumerated, the engines must stay finite and agree with each
other and with the independent dynamic programs of tokis.exact (value, log_second_moment).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from _cases import random_cases, random_mdp, random_policy_pair
from _reference import enumerate_sequences

from tokis.envs import Policy, TokenMDP
from tokis.exact import log_second_moment, value
from tokis.exact import _moment_kernels as kernels
from tokis.exact import _recursions as rec
from tokis.exact._enumerate import enumerate_outcomes

RTOL = 1e-12


def scaled(v: float, s: float) -> float:
    """``v e^s`` (small MDPs only: no overflow)."""
    return 0.0 if v == 0 else v * math.exp(s)


def check_mean(got: float, f: np.ndarray, p: np.ndarray, what):
    ref = float(p @ f)
    assert abs(got - ref) <= RTOL * float(p @ np.abs(f)), (what, got, ref)


def check_var(got: float, f: np.ndarray, p: np.ndarray, what):
    """Relative accuracy, up to the rounding of the reference itself (``(eps f)^2``: constant ``f``)."""
    mean = float(p @ f) / float(p.sum())
    ref = float(p @ (f - mean) ** 2)
    assert got >= 0.0, (what, got)
    assert abs(got - ref) <= RTOL * ref + 1e-28 * float(p @ (f * f)), (what, got, ref)


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


# --------------------------------------------------------------------------- enumeration


@dataclass(frozen=True)
class Outcomes:
    """Every outcome with positive behaviour probability, with contexts and tokens.

    ``step`` (N, T) are the step rewards (0 at padding) and ``z`` (N,) the observed terminal
    reward (both values under Bernoulli noise, each with its probability in ``p``).
    """

    p: np.ndarray
    mask: np.ndarray
    lengths: np.ndarray
    contexts: np.ndarray
    tokens: np.ndarray
    log_ratio: np.ndarray
    step: np.ndarray
    z: np.ndarray

    def table(self, tab, T: int) -> np.ndarray:
        """``tab[t, c_t, a_t]`` per outcome and step, 0 at padding (``tab`` as for the engines)."""
        tab = rec.steps(tab, T)
        t = np.broadcast_to(np.arange(T), self.mask.shape)
        tt = t if tab.shape[0] > 1 else np.zeros_like(t)
        c = np.where(self.mask, self.contexts, 0)
        a = np.where(self.mask, self.tokens, 0)
        return np.where(self.mask, tab[tt, c, a], 0.0)


def sequences(mdp, pi, mu) -> Outcomes:
    en = enumerate_sequences(mdp, pi=pi, mu=mu)
    rows = np.flatnonzero(en.prob["mu"] > 0)
    m = mdp.terminal_reward[en.final_context[rows]]
    if mdp.reward_noise == "bernoulli":
        rows = np.concatenate([rows, rows])
        z = np.concatenate([np.ones_like(m), np.zeros_like(m)])
        p = en.prob["mu"][rows] * np.concatenate([m, 1.0 - m])
    else:
        z = m
        p = en.prob["mu"][rows]
    mask = en.mask[rows]
    with np.errstate(invalid="ignore"):
        lr = np.where(mask, en.logp["pi"][rows] - en.logp["mu"][rows], 0.0)
    return Outcomes(p=p, mask=mask, lengths=en.lengths[rows], contexts=en.contexts[rows], tokens=en.tokens[rows],
                    log_ratio=lr, step=en.step_rewards[rows], z=z)


def returns(o: Outcomes) -> np.ndarray:
    return o.step.sum(axis=1) + o.z


# --------------------------------------------------------------------------- engine checks


def check_additive(pair, x, a0, per_length, f, p, what):
    mean, var = rec.additive(pair, x, a0, per_length)
    assert isinstance(mean, float) and isinstance(var, float)
    check_mean(mean, f, p, what)
    check_var(var, f, p, what)


def check_mult(pair, log_h, H, Gp, p, what, **kw):
    """``H`` (N,) the product of ``h`` per outcome (its own root for geo), ``Gp = G - shift``."""
    res = rec.multiplicative(pair, log_h, **kw)
    f = H * Gp
    (v1, s1), (vv, sv) = res.total()
    check_mean(scaled(v1, s1), f, p, what)
    check_var(scaled(vv, sv), f, p, what)
    # raw moments, summed over the batches
    got = lambda arr, sc, k: sum(scaled(arr[b, k], sc[b]) for b in range(arr.shape[0]))  # noqa: E731
    for k, g in enumerate((H, f)):
        check_mean(got(res.first, res.scale1, k), g, p, (what, "first", k))
    for k, g in enumerate((H * H, H * H * Gp, f * f)):
        check_mean(got(res.second, res.scale2, k), g, p, (what, "second", k))
    return res


def check_batches(res, lengths, n_len, f, p, what):
    """Each geo batch (one final length) against the outcomes of that length."""
    for b, L in enumerate(lengths):
        sel = n_len == L
        pb = float(p[sel].sum())
        if pb == 0:
            assert res.log_mass[b] == -np.inf, (what, b)
            continue
        assert abs(math.exp(res.log_mass[b]) - pb) <= RTOL * pb, (what, b)
        fb, qb = f[sel], p[sel] / pb
        check_mean(scaled(res.mean[b], res.mean_scale[b]), fb, qb, (what, b))
        check_var(scaled(res.var[b], res.var_scale[b]), fb, qb, (what, b))


def check_pdis(pair, f, p, what, *args, **kw):
    res = rec.pdis(pair, *args, **kw)
    check_mean(scaled(*res.first), f, p, what)
    check_mean(scaled(*res.second), f * f, p, what)
    check_var(scaled(*res.variance), f, p, what)
    (v1, s1), (v2, s2) = res  # still unpacks as the pair (first, second)
    assert (v1, s1) == res.first and (v2, s2) == res.second


def check_wpdis(pair, o, what):
    """b_t, theta_t and c_t of wpdis_stats from the outcomes (an ended sequence keeps W, reward 0)."""
    T = pair.T
    b, theta, cv, cs = rec.wpdis_stats(pair)
    with np.errstate(over="ignore"):
        X = np.exp(np.cumsum(o.log_ratio, axis=1))  # padding has log-ratio 0: ended sequences keep W
    rew = o.step.copy()
    rew[np.arange(o.p.size), o.lengths - 1] += o.z
    for t in range(T):
        check_mean(b[t], X[:, t], o.p, (what, "b", t))
        th = float(o.p @ (X[:, t] * rew[:, t])) / float(o.p @ X[:, t])
        bound = float(o.p @ (X[:, t] * np.abs(rew[:, t]))) / float(o.p @ X[:, t])
        assert abs(theta[t] - th) <= RTOL * bound, (what, "theta", t)
        check_mean(scaled(cv[t], cs[t]), X[:, t] ** 2 * (rew[:, t] - theta[t]), o.p, (what, "c", t))


@pytest.mark.parametrize("k", range(len(CASES)))
def test_engines_match_enumeration(k):
    mdp, pi, mu, desc = CASES[k]
    pair = rec.prepare(mdp, pi, mu)
    T, S, V = mdp.horizon, mdp.num_contexts, mdp.vocab_size
    rng = np.random.default_rng(k)

    # statistics of the log-ratios and rewards: enumerate_outcomes
    out = enumerate_outcomes(pair, 10**6)
    p, mask, L = out.prob, out.mask, out.lengths
    with np.errstate(over="ignore"):
        r = np.where(mask, np.exp(out.log_ratio), 0.0)
    G = out.rewards.sum(axis=1)
    tab_r = np.exp(rec.steps(pair.log_r, T))
    # tok, tok_sum, tok_mean, clip_tok, mask_tok
    check_additive(pair, tab_r - 1.0, 1.0, False, (1.0 + np.where(mask, r - 1.0, 0.0).sum(axis=1)) * G, p,
                   (desc, "tok"))
    check_additive(pair, tab_r, 0.0, False, r.sum(axis=1) * G, p, (desc, "tok_sum"))
    check_additive(pair, tab_r, 0.0, True, r.sum(axis=1) / L * G, p, (desc, "tok_mean"))
    check_additive(pair, np.minimum(tab_r, 1.1) - 1.0, 1.0, False,
                   (1.0 + np.where(mask, np.minimum(r, 1.1) - 1.0, 0.0).sum(axis=1)) * G, p, (desc, "clip_tok"))
    inside = lambda v: (v >= 0.8) & (v <= 1.25)  # noqa: E731
    check_additive(pair, np.where(inside(tab_r), tab_r - 1.0, 0.0), 1.0, False,
                   (1.0 + np.where(mask & inside(r), r - 1.0, 0.0).sum(axis=1)) * G, p, (desc, "mask_tok"))
    # seq, clip_prod, seq with shifted return, geo
    lw = out.log_ratio.sum(axis=1)
    with np.errstate(over="ignore"):
        W = np.exp(lw)
    check_mult(pair, pair.log_r, W, G, p, (desc, "seq"))
    lc = math.log(1.2)
    check_mult(pair, np.minimum(rec.steps(pair.log_r, T), lc), np.exp(np.minimum(out.log_ratio, lc).sum(axis=1)), G, p,
               (desc, "clip_prod"))
    check_mult(pair, pair.log_r, W, G - 0.37, p, (desc, "shift"), shift=0.37)
    lengths = np.arange(1, T + 1) if mdp.eos is not None else np.array([T])
    res = check_mult(pair, pair.log_r, np.exp(lw / L), G, p, (desc, "geo"), lengths=lengths, root=True)
    check_batches(res, lengths, L, np.exp(lw / L) * G, p, (desc, "geo"))
    # pdis
    with np.errstate(over="ignore"):
        X = np.exp(np.cumsum(out.log_ratio, axis=1))
    check_pdis(pair, (X * out.rewards).sum(axis=1), p, (desc, "pdis"), mdp.step_reward, np.ones(T), np.zeros(T))

    # arbitrary per-(step, context, token) tables: sequence enumeration with contexts and tokens
    o = sequences(mdp, pi, mu)
    G = returns(o)
    L = o.lengths
    last = np.arange(o.p.size), L - 1
    x = rng.normal(size=(T, S, V))
    check_additive(pair, x, 0.5, False, (0.5 + o.table(x, T).sum(axis=1)) * G, o.p, (desc, "additive table"))
    check_additive(pair, x[:1], -0.3, True, (-0.3 + o.table(x[:1], T).sum(axis=1)) / L * G, o.p,
                   (desc, "additive stationary table, per length"))
    with np.errstate(over="ignore"):
        X = np.exp(np.cumsum(o.log_ratio, axis=1))
    XL = X[last]
    # wpdis influence function: u_t = (rho - shift_t) / div_t, terminal alpha_t Z + beta_t
    shift, div = rng.normal(size=T), rng.uniform(0.5, 2.0, size=T)
    alpha, beta = rng.normal(size=T), rng.normal(size=T)
    u = np.where(o.mask, (o.step - shift) / div, 0.0)
    f = (X * u).sum(axis=1) + XL * (alpha[L - 1] * o.z + beta[L - 1])
    check_pdis(pair, f, o.p, (desc, "pdis affine"), mdp.step_reward, alpha, beta, u_shift=shift, u_div=div)
    ut = rng.normal(size=(T, S, V))
    f = (X * o.table(ut, T)).sum(axis=1) + XL * o.z
    check_pdis(pair, f, o.p, (desc, "pdis table"), ut, np.ones(T), np.zeros(T))
    check_wpdis(pair, o, desc)


# --------------------------------------------------------------------------- long horizons


def long_case(T, *, eos, step_reward, time_dependent=False, seed=5):
    """Small MDP with policies far apart: E[W^2] overflows by hundreds of orders of magnitude."""
    rng = np.random.default_rng(seed)
    mdp = random_mdp(rng, S=5, V=3, T=T, eos=eos, step_reward=step_reward, multi_start=True, noise=True)
    pi, mu = random_policy_pair(rng, mdp, time_dependent=time_dependent, scale=1.0, shift=1.5)
    if eos:  # keep long sequences likely: eos is rare under both policies
        lp, lm = np.array(pi.logits), np.array(mu.logits)
        lp[..., mdp.eos] -= 4.0
        lm[..., mdp.eos] -= 4.0
        pi, mu = Policy(lp), Policy(lm)
    return mdp, pi, mu


def log_of(v: float, s: float) -> float:
    return s + math.log(v)


@pytest.mark.parametrize(
    "eos,step_reward,time_dependent",
    [(False, False, False), (True, True, False), (True, False, True), (False, True, True)],
)
def test_long_horizon_log_scales(eos, step_reward, time_dependent):
    T = 2000
    mdp, pi, mu = long_case(T, eos=eos, step_reward=step_reward, time_dependent=time_dependent)
    pair = rec.prepare(mdp, pi, mu)
    desc = f"T={T} eos={eos} step={step_reward} tdep={time_dependent}"
    J = value(mdp, pi)
    # seq: E[W^2] overflows; log E[W^2] agrees with the independent log-space DP, E[W G] = J(pi)
    res = rec.multiplicative(pair, pair.log_r)
    assert res.scale2[0] > 800.0, "the case must overflow E[W^2] for the log scales to matter"
    assert np.isfinite(res.first).all() and np.isfinite(res.second).all() and np.isfinite(res.scale1).all()
    assert abs(log_of(res.second[0, 0], res.scale2[0]) - log_second_moment(mdp, pi, mu)) <= 1e-9 * res.scale2[0], desc
    (v1, s1), (vv, sv) = res.total()
    assert abs(scaled(v1, s1) - J) <= 1e-9 * abs(J), (desc, scaled(v1, s1), J)
    assert abs(scaled(res.first[0, 1], res.scale1[0]) - J) <= 1e-9 * abs(J), desc
    assert vv > 0 and np.isfinite(sv) and sv > 800.0, desc
    # the raw second moment and the merged variance describe the same statistic
    assert abs(log_of(res.second[0, 2], res.scale2[0]) - log_of(vv, sv)) <= 1e-9 * sv, desc
    # shifted return: E[W (G - c)] = J - c E[W]
    sh = rec.multiplicative(pair, pair.log_r, shift=0.5)
    (w1, t1), (wv, wsv) = sh.total()
    ew = scaled(res.first[0, 0], res.scale1[0])
    assert abs(scaled(w1, t1) - (J - 0.5 * ew)) <= 1e-9 * (abs(J) + 0.5 * ew), desc
    assert wv > 0 and np.isfinite(wsv), desc
    # pdis: E[f] = J(pi); with terminal-only reward it is seq, computed by another kernel
    pd = rec.pdis(pair, mdp.step_reward, np.ones(T), np.zeros(T))
    assert abs(scaled(*pd.first) - J) <= 1e-9 * abs(J), (desc, scaled(*pd.first), J)
    assert pd.variance[0] > 0 and np.isfinite(pd.variance[1]) and np.isfinite(pd.second[1]), desc
    if not step_reward:
        assert abs(pd.first[1] + math.log(abs(pd.first[0])) - (s1 + math.log(abs(v1)))) <= 1e-9, desc
        assert abs(log_of(*pd.variance) - log_of(vv, sv)) <= 1e-9 * sv, desc
    b, theta, cv, cs = rec.wpdis_stats(pair)
    assert np.isfinite(b).all() and np.isfinite(theta).all() and np.isfinite(cv).all(), desc
    # additive on bounded increments: finite, variance >= 0
    with np.errstate(over="ignore"):
        r = np.exp(rec.steps(pair.log_r, T))
    mean, var = rec.additive(pair, np.minimum(r, 2.0) - 1.0, 1.0)
    assert np.isfinite(mean) and np.isfinite(var) and var > 0, desc


def test_long_horizon_geo_with_eos():
    T = 400  # one batch per final length: T (T + 1) / 2 steps
    mdp, pi, mu = long_case(T, eos=True, step_reward=True, seed=6)
    pair = rec.prepare(mdp, pi, mu)
    res = rec.multiplicative(pair, pair.log_r, lengths=np.arange(1, T + 1), root=True)
    for name in ("first", "scale1", "second", "scale2", "mean", "var"):
        assert np.isfinite(getattr(res, name)).all(), name
    assert (res.var >= 0).all()
    # the batches partition the sequences by length: their masses sum to 1
    assert abs(np.exp(res.log_mass).sum() - 1.0) <= 1e-12
    (v1, s1), (vv, sv) = res.total()
    assert np.isfinite([v1, s1, vv, sv]).all() and vv > 0
    # E[f^2] = sum of the batches' raw second moments = Var f + E[f]^2
    e2 = sum(scaled(res.second[b, 2], res.scale2[b]) for b in range(T))
    assert abs(e2 - (scaled(vv, sv) + scaled(v1, s1) ** 2)) <= 1e-12 * e2


# --------------------------------------------------------------------------- structure


def test_results_do_not_depend_on_chunks():
    """Per-target pulls and per-context partial sums added in context order: bit-for-bit equal."""
    rng = np.random.default_rng(3)
    for eos, step in ((True, True), (False, False), (True, False), (False, True)):
        mdp = random_mdp(rng, S=64, V=8, T=30, eos=eos, step_reward=step, multi_start=True, noise=True)
        pi, mu = random_policy_pair(rng, mdp, time_dependent=True)
        pair = rec.prepare(mdp, pi, mu)
        T = mdp.horizon
        r = np.exp(rec.steps(pair.log_r, T))
        for nch in (2, 3, 5):
            assert rec.additive(pair, r - 1.0, 1.0, nch=nch) == rec.additive(pair, r - 1.0, 1.0, nch=1)
            for kw in ({}, {"lengths": np.arange(1, T + 1), "root": True}):
                a = rec.multiplicative(pair, pair.log_r, nch=nch, **kw)
                b = rec.multiplicative(pair, pair.log_r, nch=1, **kw)
                for f in ("first", "scale1", "second", "scale2", "log_mass", "mean", "mean_scale", "var", "var_scale"):
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


def test_wpdis_undefined_raises():
    # the target only emits a token the behaviour never emits: E_mu[W_<=0] = 0
    mdp = TokenMDP(np.zeros((1, 2), dtype=int), horizon=3, terminal_reward=np.ones(1))
    pi = Policy(np.array([[0.0, -np.inf]]))
    mu = Policy(np.array([[-np.inf, 0.0]]))
    pair = rec.prepare(mdp, pi, mu)
    with pytest.raises(ValueError, match=r"wpdis is undefined: E_mu\[W_<=t\] = 0 at step t=0"):
        rec.wpdis_stats(pair)
