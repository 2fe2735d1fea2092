"""Exact DP (occupancy, final distribution, V, Q, J) against brute-force enumeration.

Every quantity is recomputed from the enumeration of all sequences (tests/_reference.py) on
many random small MDPs (eos, step rewards, time-dependent logits, several starts, Bernoulli
noise), on n-gram and prefix-tree automata, and the numba kernels against their numpy twins.
"""

import itertools

import numpy as np
import pytest
from _cases import random_cases, random_mdp, random_policy_pair
from _reference import enumerate_sequences

from tokis.envs import Policy, TokenMDP
from tokis.exact import final_distribution, occupancy, q_values, state_values, value
from tokis.exact import _dp

TOL = dict(rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# automata built here (independent of tokis.envs builders)
# ---------------------------------------------------------------------------------------------


def ngram_automaton(V, k, T, rng, **kw):
    """Context = the last min(t, k) tokens (all tuples of length 0..k are contexts)."""
    states = [s for n in range(k + 1) for s in itertools.product(range(V), repeat=n)]
    index = {s: i for i, s in enumerate(states)}
    nc = np.array([[index[(s + (a,))[-k:] if k else ()] for a in range(V)] for s in states])
    return TokenMDP(nc, horizon=T, terminal_reward=rng.uniform(size=len(states)), start=index[()], **kw)


def prefix_tree_automaton(V, T, rng, **kw):
    """One context per prefix of length 0..T (no aliasing); full prefixes loop to themselves."""
    states = [s for n in range(T + 1) for s in itertools.product(range(V), repeat=n)]
    index = {s: i for i, s in enumerate(states)}
    nc = np.array([[index.get(s + (a,), index[s]) for a in range(V)] for s in states])
    return TokenMDP(nc, horizon=T, terminal_reward=rng.uniform(size=len(states)), start=0, **kw), states


# ---------------------------------------------------------------------------------------------
# enumeration-side quantities
# ---------------------------------------------------------------------------------------------


def enum_occupancy(mdp, e, p):
    d = np.zeros((mdp.horizon, mdp.num_contexts))
    for t in range(mdp.horizon):
        np.add.at(d[t], e.contexts[e.mask[:, t], t], p[e.mask[:, t]])
    return d


def enum_final(mdp, e, p):
    return np.bincount(e.final_context, weights=p, minlength=mdp.num_contexts)


def enum_values(mdp, e, p):
    """V (T, S) and Q (T, S, V) as conditional expected returns-to-go; NaN where unreachable."""
    T, S, V = mdp.horizon, mdp.num_contexts, mdp.vocab_size
    togo = np.cumsum(e.rewards[:, ::-1], axis=1)[:, ::-1]  # return from step t on
    vals = np.full((T, S), np.nan)
    qs = np.full((T, S, V), np.nan)
    for t in range(T):
        for c in range(S):
            sel = e.mask[:, t] & (e.contexts[:, t] == c)
            if p[sel].sum() > 0:
                vals[t, c] = (p[sel] * togo[sel, t]).sum() / p[sel].sum()
            for a in range(V):
                sa = sel & (e.tokens[:, t] == a)
                if p[sa].sum() > 0:
                    qs[t, c, a] = (p[sa] * togo[sa, t]).sum() / p[sa].sum()
    return vals, qs


def check_against_enumeration(mdp, pol):
    e = enumerate_sequences(mdp, pi=pol)
    p = e.prob["pi"]
    np.testing.assert_allclose(p.sum(), 1.0, **TOL)
    d = occupancy(mdp, pol)
    assert d.shape == (mdp.horizon, mdp.num_contexts)
    np.testing.assert_allclose(d, enum_occupancy(mdp, e, p), **TOL)
    np.testing.assert_allclose(d.sum(), (p * e.lengths).sum(), **TOL)
    fin = final_distribution(mdp, pol)
    assert fin.shape == (mdp.num_contexts,)
    np.testing.assert_allclose(fin, enum_final(mdp, e, p), **TOL)

    vals = state_values(mdp, pol)
    qs = q_values(mdp, pol)
    assert vals.shape == (mdp.horizon + 1, mdp.num_contexts)
    assert qs.shape == (mdp.horizon, mdp.num_contexts, mdp.vocab_size)
    np.testing.assert_array_equal(vals[-1], mdp.terminal_reward)
    ev, eq = enum_values(mdp, e, p)
    seen = ~np.isnan(ev)
    assert seen[0].any()
    np.testing.assert_allclose(vals[:-1][seen], ev[seen], **TOL)
    seen_q = ~np.isnan(eq)
    np.testing.assert_allclose(qs[seen_q], eq[seen_q], **TOL)
    # V is the policy average of Q everywhere, reachable or not
    probs = pol.expand_probs(mdp.horizon)
    np.testing.assert_allclose(vals[:-1], (probs * qs).sum(axis=-1), **TOL)

    J = value(mdp, pol)
    assert isinstance(J, float)
    np.testing.assert_allclose(J, (p * e.returns).sum(), **TOL)
    return e


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_random_cases_against_enumeration(seed):
    for mdp, pi, mu, desc in random_cases(100 + seed, 32):
        for pol in (pi, mu):
            try:
                check_against_enumeration(mdp, pol)
            except AssertionError as err:  # pragma: no cover - diagnostic
                raise AssertionError(desc) from err


@pytest.mark.parametrize("eos", [False, True])
@pytest.mark.parametrize("timedep", [False, True])
def test_larger_random_mdps_against_enumeration(rng, eos, timedep):
    for _ in range(3):
        mdp = random_mdp(rng, S=5, V=3, T=6, eos=eos, step_reward=True, multi_start=True)
        pi, _ = random_policy_pair(rng, mdp, time_dependent=timedep, scale=2.0)
        check_against_enumeration(mdp, pi)


def test_policy_with_zero_probability_tokens(rng):
    mdp = random_mdp(rng, S=3, V=3, T=4, eos=True, step_reward=True, multi_start=True)
    logits = rng.normal(size=(3, 3))
    logits[0, 1] = logits[2, 0] = -np.inf
    check_against_enumeration(mdp, Policy(logits))


@pytest.mark.parametrize("eos", [None, 0])
def test_ngram_automaton(rng, eos):
    for k in (1, 2):
        mdp = ngram_automaton(3, k, 4, rng, eos=eos, step_reward=None)
        pi = Policy(rng.normal(size=(mdp.num_contexts, 3)))
        check_against_enumeration(mdp, pi)
        pt = Policy(rng.normal(size=(4, mdp.num_contexts, 3)))
        check_against_enumeration(mdp, pt)


@pytest.mark.parametrize("eos", [None, 1])
def test_prefix_tree_occupancy_is_prefix_probability(rng, eos):
    mdp, states = prefix_tree_automaton(2, 4, rng, eos=eos)
    pol = Policy(rng.normal(size=(mdp.num_contexts, 2)))
    check_against_enumeration(mdp, pol)
    d = occupancy(mdp, pol)
    # d_t(prefix) = product of the policy along the prefix, unless an eos ended it earlier
    for i, s in enumerate(states[:-(2**4)]):
        prob, c = 1.0, 0
        for a in s:
            prob *= pol.probs[c, a] if a != eos else 0.0
            c = mdp.next_context[c, a]
        expected = np.zeros(mdp.horizon)
        expected[len(s)] = prob
        np.testing.assert_allclose(d[:, i], expected, **TOL)


def test_builders_against_enumeration(rng):
    """MDPs from tokis.envs.ngram / prefix_tree, checked the same way."""
    import tokis.envs as envs

    built = [envs.ngram(3, 2, 3, seed=1), envs.prefix_tree(2, 3, seed=1), envs.ngram(3, 1, 4, eos=2, seed=2)]
    for mdp in built:
        pi = Policy(rng.normal(size=(mdp.num_contexts, mdp.vocab_size)))
        check_against_enumeration(mdp, pi)


def test_constant_reward_and_trivial_cases():
    # one context, reward 1 everywhere: V_t = 1 + (T - t) * step; d_t = 1
    mdp = TokenMDP([[0, 0]], horizon=5, terminal_reward=[1.0], step_reward=[[0.5, 0.5]])
    pol = Policy(np.zeros((1, 2)))
    np.testing.assert_allclose(state_values(mdp, pol)[:, 0], 1.0 + 0.5 * np.arange(5, -1, -1), **TOL)
    np.testing.assert_allclose(occupancy(mdp, pol), np.ones((5, 1)), **TOL)
    np.testing.assert_allclose(final_distribution(mdp, pol), [1.0], **TOL)
    assert value(mdp, pol) == pytest.approx(3.5, rel=1e-14)
    # eos with probability q: P(L > t) = (1 - q)^t
    mdp = TokenMDP([[0, 0]], horizon=6, eos=1)
    q = 0.3
    pol = Policy(np.log([[1 - q, q]]))
    np.testing.assert_allclose(occupancy(mdp, pol)[:, 0], (1 - q) ** np.arange(6), **TOL)


def test_numba_kernels_match_numpy_twins(rng):
    for timedep, eos in itertools.product((False, True), (False, True)):
        mdp = random_mdp(rng, S=40, V=7, T=25, eos=eos, step_reward=True, multi_start=True)
        pi, mu = random_policy_pair(rng, mdp, time_dependent=timedep, scale=3.0)
        probs = pi.expand_probs(mdp.horizon)
        d, fin = _dp._forward(mdp, probs)
        d_np, fin_np = _dp._forward_numpy(mdp, probs)
        np.testing.assert_allclose(d, d_np, **TOL)
        np.testing.assert_allclose(fin, fin_np, **TOL)
        v, q = _dp._backward(mdp, probs)
        v_np, q_np = _dp._backward_numpy(mdp, probs)
        np.testing.assert_allclose(v, v_np, **TOL)
        np.testing.assert_allclose(q, q_np, **TOL)
        v2, q2 = _dp._backward(mdp, probs, want_q=False)
        np.testing.assert_array_equal(v2, v)
        assert q2.shape == (0, mdp.num_contexts, mdp.vocab_size)
        lk = 2 * pi.expand_log_probs(mdp.horizon) - mu.expand_log_probs(mdp.horizon)
        np.testing.assert_allclose(_dp._log_forward(mdp, lk), _dp._log_forward_numpy(mdp, lk), **TOL)


def test_forward_accepts_every_step_layout(rng):
    mdp = random_mdp(rng, S=6, V=4, T=5, eos=True)
    p = Policy(rng.normal(size=(6, 4))).probs
    ref = _dp._forward(mdp, np.broadcast_to(p, (5, 6, 4)).copy())
    for layout in (p, p[None], np.broadcast_to(p, (5, 6, 4))):
        got = _dp._forward(mdp, layout)
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_array_equal(got[1], ref[1])
    with pytest.raises(ValueError, match="per-step array must have shape"):
        _dp._forward(mdp, np.ones((3, 6, 4)))


def test_forward_with_a_general_kernel_and_log_forward(rng):
    """_forward sums any product kernel; _log_forward is its log (checked on sequences)."""
    for mdp, pi, mu, desc in random_cases(7, 24):
        e = enumerate_sequences(mdp, pi=pi, mu=mu)
        lk = 2 * pi.expand_log_probs(mdp.horizon) - mu.expand_log_probs(mdp.horizon)
        with np.errstate(divide="ignore"):
            per_seq = np.log(mdp.start[e.start_context]) + np.where(e.mask, 2 * e.logp["pi"] - e.logp["mu"], 0).sum(1)
        by_final = np.bincount(e.final_context, weights=np.exp(per_seq), minlength=mdp.num_contexts)
        _, fin = _dp._forward(mdp, np.exp(lk))
        np.testing.assert_allclose(fin, by_final, err_msg=desc, **TOL)
        with np.errstate(divide="ignore"):
            np.testing.assert_allclose(_dp._log_forward(mdp, lk), np.log(by_final), err_msg=desc, **TOL)


def test_log_forward_handles_zero_rows_and_long_horizons(rng):
    # a kernel row that is all -inf kills the mass through that context: only 0 0 ... 0 a survives
    mdp = TokenMDP([[0, 1], [1, 1]], horizon=3)
    lk = np.log(np.array([[0.5, 0.5], [1.0, 1.0]]))
    lk[1] = -np.inf
    out = _dp._log_forward(mdp, lk)
    np.testing.assert_allclose(np.exp(out), [0.5**3, 0.5**3], **TOL)
    # everything -inf: the total is log 0
    assert np.all(_dp._log_forward(mdp, np.full((2, 2), -np.inf)) == -np.inf)
    # kernel constant 3 on one context: log of 3^T * 2^T without overflow
    long = TokenMDP([[0, 0]], horizon=4000)
    np.testing.assert_allclose(_dp._log_forward(long, np.full((1, 2), np.log(3.0))), [4000 * np.log(6.0)], rtol=1e-13)


@pytest.mark.parametrize("fn", [occupancy, final_distribution, state_values, q_values, value])
def test_errors(fn):
    mdp = TokenMDP([[0, 1], [1, 0]], horizon=3)
    with pytest.raises(TypeError, match="mdp must be a TokenMDP"):
        fn("mdp", Policy(np.zeros((2, 2))))
    with pytest.raises(TypeError, match="policy must be a tokis.envs.Policy"):
        fn(mdp, [[0.0, 0.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match=r"policy logits have shape \(2, 3\)"):
        fn(mdp, Policy(np.zeros((2, 3))))
    with pytest.raises(ValueError, match="policy is time-dependent with 4 steps but the MDP horizon is 3"):
        fn(mdp, Policy(np.zeros((4, 2, 2))))
