"""Optimal value (exact.optimal_value) against exhaustive search and brute-force enumeration.

References: the best of every deterministic Markov policy (tiny MDPs, all V^(T*S) of them),
and, since transitions are deterministic given the tokens, the start-weighted best return of
a single sequence per start context (every sequence enumerated: a bound over all
history-dependent policies). Then: J* dominates random policies, the returned policy attains
J*, ties go to the smallest token, a stationary optimum need not exist, long horizons stay
finite, and the numba kernel agrees with its numpy twin.
"""

import itertools

import numpy as np
import pytest
from _cases import random_cases, random_mdp, random_policy_pair
from _reference import enumerate_sequences

from tokis.envs import Policy, TokenMDP, ngram, random_policy
from tokis.exact import optimal_value, value
from tokis.exact._optimal import _greedy_logits, _optimal_kernel, _optimal_numpy

EPS = np.finfo(float).eps


def reward_scale(mdp):
    """A bound on |G|: the largest terminal reward plus T times the largest step reward."""
    return float(np.abs(mdp.terminal_reward).max() + mdp.horizon * np.abs(mdp.step_reward).max())


def best_sequence_value(mdp):
    """sum_c0 start(c0) max_y G(c0, y) over every enumerated sequence y."""
    e = enumerate_sequences(mdp)
    best = np.full(mdp.num_contexts, -np.inf)
    np.maximum.at(best, e.start_context, e.returns)
    on = mdp.start > 0
    return float(mdp.start[on] @ best[on])


def check_optimal_policy(mdp, J, pol):
    T, S, V = mdp.horizon, mdp.num_contexts, mdp.vocab_size
    assert isinstance(J, float)
    assert isinstance(pol, Policy) and pol.logits.shape == (T, S, V)
    assert np.all((pol.logits == 0.0) | (pol.logits == -np.inf))
    assert np.all((pol.logits == 0.0).sum(axis=-1) == 1)
    assert abs(value(mdp, pol) - J) <= 1e-12 * max(1.0, abs(J))


# ---------------------------------------------------------------------------------------------
# against references
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_against_the_best_sequence_per_start(seed):
    for mdp, pi, mu, desc in random_cases(600 + seed, 32):
        J, pol = optimal_value(mdp)
        check_optimal_policy(mdp, J, pol)
        ref = best_sequence_value(mdp)
        assert abs(J - ref) <= 1e-12 * reward_scale(mdp), (desc, J, ref)


def test_against_every_deterministic_markov_policy(rng):
    cases = 0
    sizes = [(S, 2, T) for S in (1, 2) for T in (1, 2, 3)] + [(2, 3, 1), (2, 3, 2)]  # up to 3^4 policies
    for S, V, T in sizes:
        for eos, step, multi, noise in itertools.product((False, True), repeat=4):
            mdp = random_mdp(rng, S=S, V=V, T=T, eos=eos, step_reward=step, multi_start=multi, noise=noise)
            J, pol = optimal_value(mdp)
            best = -np.inf
            for choice in itertools.product(range(V), repeat=T * S):
                det = Policy(_greedy_logits(np.array(choice).reshape(T, S), V))
                best = max(best, value(mdp, det))
            assert abs(J - best) <= 1e-12 * reward_scale(mdp), (S, V, T, eos, step, multi, noise, J, best)
            check_optimal_policy(mdp, J, pol)
            cases += 1
    assert cases == len(sizes) * 16


def test_dominates_random_policies(rng):
    for mdp, pi, mu, desc in random_cases(700, 32):
        J, _ = optimal_value(mdp)
        slack = 16 * EPS * reward_scale(mdp)  # value() of a policy whose tokens tie with the optimum
        for _ in range(20):
            timedep = bool(rng.integers(2))
            p, _ = random_policy_pair(rng, mdp, time_dependent=timedep, scale=float(rng.uniform(0.1, 5.0)))
            assert value(mdp, p) <= J + slack, desc


def test_larger_mdps(rng):
    for eos in (False, True):
        mdp = random_mdp(rng, S=6, V=3, T=6, eos=eos, step_reward=True, multi_start=True, noise=True)
        J, pol = optimal_value(mdp)
        check_optimal_policy(mdp, J, pol)
        assert abs(J - best_sequence_value(mdp)) <= 1e-12 * reward_scale(mdp)


def test_numba_kernel_matches_numpy_twin(rng):
    for eos in (False, True):
        mdp = random_mdp(rng, S=40, V=7, T=25, eos=eos, step_reward=True, multi_start=True)
        v, best = _optimal_kernel(mdp.next_context, np.ascontiguousarray(mdp.step_reward),
                                  np.ascontiguousarray(mdp.terminal_reward), -1 if mdp.eos is None else mdp.eos,
                                  mdp.horizon)
        v_np, best_np = _optimal_numpy(mdp)
        np.testing.assert_array_equal(best, best_np)
        np.testing.assert_allclose(v, v_np, rtol=1e-14, atol=0)


# ---------------------------------------------------------------------------------------------
# structure
# ---------------------------------------------------------------------------------------------


def test_ties_go_to_the_smallest_token():
    # every token gives the same return: token 0 everywhere
    mdp = TokenMDP([[0, 1, 0], [1, 0, 1]], horizon=3, terminal_reward=[0.5, 0.5])
    J, pol = optimal_value(mdp)
    assert J == 0.5
    assert np.all(pol.logits[..., 0] == 0.0) and np.all(pol.logits[..., 1:] == -np.inf)
    # tokens 1 and 2 tie for the best step reward, token 0 is worse: token 1
    mdp = TokenMDP([[0, 0, 0]], horizon=2, step_reward=[[0.25, 1.0, 1.0]])
    J, pol = optimal_value(mdp)
    assert J == 2.0
    np.testing.assert_array_equal(pol.logits[:, 0], [[-np.inf, 0.0, -np.inf]] * 2)
    # the same MDP with the tokens reversed: token 0 (again the smaller of the two tied)
    mdp = TokenMDP([[0, 0, 0]], horizon=2, step_reward=[[1.0, 1.0, 0.25]])
    np.testing.assert_array_equal(optimal_value(mdp)[1].logits[:, 0], [[0.0, -np.inf, -np.inf]] * 2)
    # deterministic: the same answer every call
    a, b = optimal_value(mdp)[1].logits, optimal_value(mdp)[1].logits
    np.testing.assert_array_equal(a, b)


def test_the_optimum_is_not_stationary():
    """Context = last token; token 0 pays 0.5 per step, ending on token 1 pays 1: emit 0 and
    switch to 1 at the last step, in the same context, which no stationary policy can do."""
    mdp = TokenMDP([[0, 1], [0, 1]], horizon=3, terminal_reward=[0.0, 1.0], step_reward=[[0.5, 0.0], [0.5, 0.0]])
    J, pol = optimal_value(mdp)
    assert J == 2.0
    assert pol.logits[0, 0, 0] == 0.0 and pol.logits[2, 0, 1] == 0.0
    best_stationary = max(
        value(mdp, Policy(_greedy_logits(np.array(choice), 2)))  # stationary logits (S, V)
        for choice in itertools.product(range(2), repeat=2)
    )
    assert best_stationary == 1.5 < J


def test_bernoulli_noise_uses_the_mean_reward(rng):
    mdp = random_mdp(rng, S=4, V=3, T=4, eos=True, step_reward=True, multi_start=True, noise=True)
    quiet = TokenMDP(mdp.next_context, horizon=mdp.horizon, terminal_reward=mdp.terminal_reward,
                     step_reward=mdp.step_reward, start=mdp.start, eos=mdp.eos)
    J, pol = optimal_value(mdp)
    Jq, polq = optimal_value(quiet)
    assert J == Jq
    np.testing.assert_array_equal(pol.logits, polq.logits)


def test_closed_form_long_horizon():
    # one context, step rewards 0.3 and 0.7: J* = 0.7 T, always token 1
    T = 2000
    mdp = TokenMDP([[0, 0]], horizon=T, step_reward=[[0.3, 0.7]], terminal_reward=[0.0])
    J, pol = optimal_value(mdp)
    assert J == pytest.approx(0.7 * T, rel=1e-13)
    assert np.all(pol.logits[:, 0, 1] == 0.0)


@pytest.mark.parametrize("eos", [None, 3])
def test_long_horizon_is_finite(rng, eos):
    S, V = 8, 5
    mdp = TokenMDP(rng.integers(0, S, size=(S, V)), horizon=2000, terminal_reward=rng.uniform(size=S),
                   step_reward=rng.normal(size=(S, V)), eos=eos)
    J, pol = optimal_value(mdp)
    assert np.isfinite(J)
    check_optimal_policy(mdp, J, pol)
    assert J >= value(mdp, random_policy(mdp, seed=1))
    J2, pol2 = optimal_value(ngram(3, 2, 2000, eos=2, seed=5))
    assert np.isfinite(J2) and pol2.logits.shape == (2000, 13, 3)


def test_errors_name_the_argument():
    with pytest.raises(TypeError, match="mdp must be a TokenMDP, got str"):
        optimal_value("mdp")
    with pytest.raises(TypeError, match="mdp must be a TokenMDP, got Policy"):
        optimal_value(Policy(np.zeros((2, 2))))
