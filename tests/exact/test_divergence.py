"""Divergences between policies against brute-force enumeration and closed forms.

Sequence-level identities used on the enumeration side (r_t = pi/mu of the emitted token):
E_pi[sum_t log r_t] = sum d^pi KL, E_mu[sum_t r_t log r_t] = sum d^mu KL,
E_pi[sum_t (r_t - 1)] = sum d^pi chi2, E_mu[sum_t (r_t^2 - 1)] = sum d^mu chi2,
E_mu[W^2] = sum_y pi(y)^2 / mu(y).
"""

import itertools

import numpy as np
import pytest
from _cases import random_cases, random_mdp, random_policy_pair
from _reference import enumerate_sequences

from tokis.envs import Policy, TokenMDP
from tokis.exact import (
    Divergences,
    divergences,
    log_second_moment,
    occupancy,
    sequence_kl,
    support_mismatch,
    token_divergence,
)

TOL = dict(rtol=1e-12, atol=1e-12)


def logsumexp(x):
    m = np.max(x)
    return m + np.log(np.exp(x - m).sum()) if np.isfinite(m) else m


def row_renyi2(pi, mu, T):
    """Rényi-2 per (t, c) by explicit loops over the probability tables."""
    P, M = pi.expand_probs(T), mu.expand_probs(T)
    out = np.zeros(P.shape[:2])
    for t, c in itertools.product(range(P.shape[0]), range(P.shape[1])):
        out[t, c] = np.log(sum(P[t, c, a] ** 2 / M[t, c, a] for a in range(P.shape[2])))
    return out


def enumerated_divergences(mdp, pi, mu):
    """Every field of Divergences from the list of all sequences (full-support policies)."""
    e = enumerate_sequences(mdp, pi=pi, mu=mu)
    p, m = e.prob["pi"], e.prob["mu"]
    lr = e.log_ratio("pi", "mu")
    r = np.where(e.mask, np.exp(lr), 0.0)
    len_pi, len_mu = (p * e.lengths).sum(), (m * e.lengths).sum()
    seq_kl = (p * lr.sum(1)).sum()
    ren = row_renyi2(pi, mu, mdp.horizon)
    ren_seq = np.where(e.mask, ren[np.arange(mdp.horizon)[None, :], np.maximum(e.contexts, 0)], 0.0).sum(1)
    keep = (m > 0) & (p > 0)
    lsm = logsumexp(2 * np.log(p[keep]) - np.log(m[keep]))
    return dict(
        token_kl_target=seq_kl / len_pi,
        token_kl_behavior=(m * (r * lr).sum(1)).sum() / len_mu,
        token_chi2_target=(p * (r - e.mask).sum(1)).sum() / len_pi,
        token_chi2_behavior=(m * (r**2 - e.mask).sum(1)).sum() / len_mu,
        token_renyi2_target=(p * ren_seq).sum() / len_pi,
        token_renyi2_behavior=(m * ren_seq).sum() / len_mu,
        sequence_kl=seq_kl,
        log_second_moment=lsm,
        population_ess_fraction=np.exp(-lsm),
        missing_mass=0.0,
        expected_length_target=len_pi,
        expected_length_behavior=len_mu,
    )


def check_divergences(mdp, pi, mu, desc=""):
    want = enumerated_divergences(mdp, pi, mu)
    got = divergences(mdp, pi, mu)
    assert isinstance(got, Divergences)
    for name, w in want.items():
        np.testing.assert_allclose(getattr(got, name), w, err_msg=f"{name} {desc}", **TOL)
    # the single-quantity functions agree with the bundle
    for kind in ("kl", "chi2", "renyi2"):
        for under in ("target", "behavior"):
            assert token_divergence(mdp, pi, mu, kind=kind, under=under) == pytest.approx(
                getattr(got, f"token_{kind}_{under}"), rel=1e-14, abs=1e-15
            )
    assert sequence_kl(mdp, pi, mu) == pytest.approx(got.sequence_kl, rel=1e-14, abs=1e-15)
    assert log_second_moment(mdp, pi, mu) == pytest.approx(got.log_second_moment, rel=1e-14, abs=1e-15)
    assert support_mismatch(mdp, pi, mu) == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_random_cases_against_enumeration(seed):
    for mdp, pi, mu, desc in random_cases(200 + seed, 32):
        check_divergences(mdp, pi, mu, desc)


@pytest.mark.parametrize("timedep", [False, True])
def test_larger_mdps_and_mixed_time_dependence(rng, timedep):
    for eos in (False, True):
        mdp = random_mdp(rng, S=5, V=3, T=6, eos=eos, step_reward=True, multi_start=True)
        pi, mu = random_policy_pair(rng, mdp, time_dependent=timedep, scale=1.5, shift=1.0)
        check_divergences(mdp, pi, mu)
        # one stationary, one time-dependent
        mu_t = Policy(rng.normal(size=(mdp.horizon, 5, 3)))
        check_divergences(mdp, pi, mu_t)
        check_divergences(mdp, mu_t, pi)


def test_ngram_and_prefix_tree_automata(rng):
    V, T = 2, 4
    # bigram: context = last token (plus a start context)
    bigram = TokenMDP([[1, 2], [1, 2], [1, 2]], horizon=T, terminal_reward=[0.0, 0.3, 1.0], eos=None)
    states = [s for n in range(T + 1) for s in itertools.product(range(V), repeat=n)]
    index = {s: i for i, s in enumerate(states)}
    tree = TokenMDP(
        [[index.get(s + (a,), index[s]) for a in range(V)] for s in states], horizon=T, eos=1,
        terminal_reward=rng.uniform(size=len(states)),
    )
    for mdp in (bigram, tree):
        pi, mu = random_policy_pair(rng, mdp, shift=1.0)
        check_divergences(mdp, pi, mu)


def test_equal_policies(rng):
    mdp = random_mdp(rng, S=4, V=3, T=5, eos=True)
    pi, _ = random_policy_pair(rng, mdp)
    got = divergences(mdp, pi, pi)
    for name in ("token_kl_target", "token_chi2_behavior", "token_renyi2_target", "sequence_kl",
                 "log_second_moment", "missing_mass"):
        assert abs(getattr(got, name)) < 1e-14, name
    assert got.population_ess_fraction == pytest.approx(1.0, abs=1e-14)
    assert got.expected_length_target == got.expected_length_behavior == pytest.approx(occupancy(mdp, pi).sum())


# ---------------------------------------------------------------------------------------------
# support mismatch
# ---------------------------------------------------------------------------------------------


def truncate(rng, logits, frac=0.3):
    """Set a random fraction of logits to -inf, keeping at least one finite entry per row."""
    lg = np.array(logits, dtype=float)
    cut = rng.uniform(size=lg.shape) < frac
    keep = np.argmax(rng.uniform(size=lg.shape), axis=-1)
    np.put_along_axis(cut, keep[..., None], False, axis=-1)
    lg[cut] = -np.inf
    return lg


def test_support_mismatch_against_enumeration(rng):
    hits = 0
    for mdp, pi, mu, desc in random_cases(300, 48):
        mu = Policy(truncate(rng, mu.logits))
        e = enumerate_sequences(mdp, pi=pi, mu=mu)
        p, m = e.prob["pi"], e.prob["mu"]
        outside = (e.mask & (e.logp["mu"] == -np.inf)).any(1)
        missing = support_mismatch(mdp, pi, mu)
        np.testing.assert_allclose(missing, p[outside].sum(), err_msg=desc, **TOL)
        # E_mu[W] = 1 - missing
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.where(m > 0, p / m, 0.0)
        np.testing.assert_allclose((m * w).sum(), 1.0 - missing, err_msg=desc, **TOL)
        # log E_mu[W^2] over mu's support
        keep = m > 0
        np.testing.assert_allclose(
            log_second_moment(mdp, pi, mu), logsumexp(2 * np.log(p[keep]) - np.log(m[keep])), err_msg=desc, **TOL
        )
        got = divergences(mdp, pi, mu)
        values = np.array([getattr(got, f) for f in Divergences.__dataclass_fields__])
        assert not np.isnan(values).any(), desc
        assert got.missing_mass == missing
        if missing > 0:
            hits += 1
            for name in ("token_kl_target", "token_chi2_target", "token_renyi2_target", "sequence_kl"):
                assert getattr(got, name) == np.inf, (name, desc)
            # mu reaches the mismatching context too (same automaton, full-support mu rows elsewhere)
            assert np.isfinite(got.log_second_moment)
        else:
            assert np.isfinite(got.sequence_kl)
    assert hits > 10


def test_support_mismatch_on_unreachable_context_is_harmless(rng):
    # context 1 is never reached; mu excludes a token there only
    mdp = TokenMDP([[0, 0], [1, 1]], horizon=3, terminal_reward=[1.0, 0.0])
    pi = Policy(np.zeros((2, 2)))
    mu = Policy([[0.3, -0.2], [0.0, -np.inf]])
    got = divergences(mdp, pi, mu)
    assert got.missing_mass == 0.0
    kl_row = np.sum(pi.probs[0] * (pi.log_probs[0] - mu.log_probs[0]))
    np.testing.assert_allclose(got.sequence_kl, 3 * kl_row, **TOL)
    np.testing.assert_allclose(got.token_kl_behavior, kl_row, **TOL)


def test_target_zero_where_behavior_positive_is_finite(rng):
    mdp = random_mdp(rng, S=3, V=3, T=4, eos=True, multi_start=True)
    pi_logits = rng.normal(size=(3, 3))
    pi_logits[:, 2] = -np.inf
    pi, mu = Policy(pi_logits), Policy(rng.normal(size=(3, 3)))
    e = enumerate_sequences(mdp, pi=pi, mu=mu)
    p, m = e.prob["pi"], e.prob["mu"]
    got = divergences(mdp, pi, mu)
    assert got.missing_mass == 0.0
    live = p > 0
    np.testing.assert_allclose(got.sequence_kl, (p[live] * (np.log(p[live]) - np.log(m[live]))).sum(), **TOL)
    np.testing.assert_allclose(got.log_second_moment, logsumexp(2 * np.log(p[live]) - np.log(m[live])), **TOL)
    # chi2 per row = sum pi^2/mu - 1 includes the mu mass pi cannot reach
    np.testing.assert_allclose(got.token_chi2_target, (p * ((e.mask * np.exp(e.log_ratio())).sum(1) - e.lengths)).sum()
                               / (p * e.lengths).sum(), **TOL)


def test_disjoint_supports():
    mdp = TokenMDP([[0, 0]], horizon=2)
    pi, mu = Policy([[0.0, -np.inf]]), Policy([[-np.inf, 0.0]])
    got = divergences(mdp, pi, mu)
    assert got.missing_mass == 1.0
    assert got.log_second_moment == -np.inf
    assert got.sequence_kl == got.token_chi2_behavior == np.inf


# ---------------------------------------------------------------------------------------------
# closed forms and long horizons
# ---------------------------------------------------------------------------------------------


def behavior_with_chi2(p, eps):
    """For V = 2 rows pi = (p, 1-p), the mu = (q, 1-q) with (p-q)^2 / (q(1-q)) = eps (the root q < p)."""
    disc = np.sqrt(eps**2 + 4 * eps * p * (1 - p))
    q = (2 * p + eps - disc) / (2 * (1 + eps))
    return np.stack([np.log(q), np.log1p(-q)], axis=-1)


@pytest.mark.parametrize("eps", [0.01, 0.3])
def test_fixed_chi2_gives_power_law(rng, eps):
    S = 4
    nc = rng.integers(0, S, size=(S, 2))
    p = rng.uniform(0.2, 0.8, size=S)
    pi = Policy(np.stack([np.log(p), np.log1p(-p)], axis=-1))
    mu = Policy(behavior_with_chi2(p, eps))
    np.testing.assert_allclose((pi.probs**2 / mu.probs).sum(1) - 1.0, eps, rtol=1e-13)
    for T in (1, 3, 6):
        mdp = TokenMDP(nc, horizon=T, terminal_reward=np.ones(S), start=rng.dirichlet(np.ones(S)))
        e = enumerate_sequences(mdp, pi=pi, mu=mu)
        lsm = log_second_moment(mdp, pi, mu)
        np.testing.assert_allclose(np.exp(lsm), (1 + eps) ** T, rtol=1e-12)
        np.testing.assert_allclose(lsm, logsumexp(2 * np.log(e.prob["pi"]) - np.log(e.prob["mu"])), **TOL)
        for under in ("target", "behavior"):
            assert token_divergence(mdp, pi, mu, kind="chi2", under=under) == pytest.approx(eps, rel=1e-12)
            assert token_divergence(mdp, pi, mu, kind="renyi2", under=under) == pytest.approx(np.log1p(eps), rel=1e-12)
    # T = 5000: E[W^2] = (1 + eps)^5000 overflows for eps = 0.3 but its log is exact
    long = TokenMDP(nc, horizon=5000, start=int(rng.integers(S)))
    lsm = log_second_moment(long, pi, mu)
    assert np.isfinite(lsm)
    np.testing.assert_allclose(lsm, 5000 * np.log1p(eps), rtol=1e-12)
    got = divergences(long, pi, mu)
    assert got.population_ess_fraction == pytest.approx(np.exp(-5000 * np.log1p(eps)), rel=1e-9)


def test_builders_and_perturb(rng):
    """tokis.envs.ngram / prefix_tree / random_policy / perturb: enumeration and (1+eps)^T."""
    import tokis.envs as envs

    mdps = [envs.ngram(3, 2, 4, seed=1), envs.prefix_tree(2, 4, eos=1, seed=2), envs.ngram(3, 1, 4, eos=2, seed=3)]
    pi = envs.random_policy(mdps[0], seed=4)
    mu = envs.perturb(pi, chi2=0.2, seed=5)
    for mdp in mdps:
        a, b = random_policy_pair(rng, mdp, shift=0.7)
        check_divergences(mdp, a, b)
    # perturb is only as exact as its root-finder: compare at 1e-9
    for under in ("target", "behavior"):
        assert token_divergence(mdps[0], pi, mu, kind="chi2", under=under) == pytest.approx(0.2, rel=1e-9)
    lsm = log_second_moment(mdps[0].with_horizon(3000), pi, mu)
    np.testing.assert_allclose(lsm, 3000 * np.log1p(0.2), rtol=1e-9)


def test_iid_long_horizon(rng):
    V, T = 5, 5000
    pi, mu = Policy(rng.normal(size=(1, V))), Policy(rng.normal(size=(1, V)))
    mdp = TokenMDP(np.zeros((1, V), dtype=int), horizon=T)
    per_step = np.log((pi.probs**2 / mu.probs).sum())
    np.testing.assert_allclose(log_second_moment(mdp, pi, mu), T * per_step, rtol=1e-12)
    kl = (pi.probs * (pi.log_probs - mu.log_probs)).sum()
    np.testing.assert_allclose(sequence_kl(mdp, pi, mu), T * kl, rtol=1e-12)


def test_long_horizon_with_eos_matches_linear_pass_and_numpy_twin(rng):
    from tokis.exact import _dp

    mdp = random_mdp(rng, S=6, V=4, T=300, eos=True, multi_start=True)
    pi, mu = random_policy_pair(rng, mdp, shift=0.4)
    lk = 2 * pi.log_probs - mu.log_probs
    _, fin = _dp._forward(mdp, np.exp(lk))  # representable at this horizon
    np.testing.assert_allclose(log_second_moment(mdp, pi, mu), np.log(fin.sum()), rtol=1e-12)
    long = mdp.with_horizon(5000)
    pi_big = Policy(pi.logits * 3)  # large weights: E[W^2] overflows, its log does not
    lsm = log_second_moment(long, pi_big, mu)
    assert np.isfinite(lsm) and lsm > 709
    np.testing.assert_allclose(lsm, logsumexp(_dp._log_forward_numpy(long, 2 * pi_big.log_probs - mu.log_probs)),
                               rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


def _setup():
    mdp = TokenMDP([[0, 1], [1, 0]], horizon=3)
    return mdp, Policy(np.zeros((2, 2))), Policy(np.ones((2, 2)))


@pytest.mark.parametrize(
    "fn",
    [token_divergence, sequence_kl, log_second_moment, support_mismatch, divergences],
)
def test_errors_common(fn):
    mdp, pi, mu = _setup()
    with pytest.raises(TypeError, match="mdp must be a TokenMDP"):
        fn(None, pi, mu)
    with pytest.raises(TypeError, match="target must be a tokis.envs.Policy"):
        fn(mdp, "pi", mu)
    with pytest.raises(TypeError, match="behavior must be a tokis.envs.Policy"):
        fn(mdp, pi, 3.0)
    with pytest.raises(ValueError, match=r"behavior logits have shape \(3, 2\)"):
        fn(mdp, pi, Policy(np.zeros((3, 2))))
    with pytest.raises(ValueError, match="target is time-dependent with 2 steps but the MDP horizon is 3"):
        fn(mdp, Policy(np.zeros((2, 2, 2))), mu)


def test_errors_kind_and_under():
    mdp, pi, mu = _setup()
    with pytest.raises(ValueError, match=r"kind must be one of \('kl', 'chi2', 'renyi2'\), got 'tv'"):
        token_divergence(mdp, pi, mu, kind="tv")
    with pytest.raises(ValueError, match="kind must be one of"):
        token_divergence(mdp, pi, mu, kind=None)
    with pytest.raises(ValueError, match=r"under must be one of \('target', 'behavior'\), got 'mu'"):
        token_divergence(mdp, pi, mu, under="mu")
