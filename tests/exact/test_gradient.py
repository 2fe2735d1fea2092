"""Exact policy gradient (exact.gradient) against finite differences and brute-force enumeration.

The references: central finite differences of exact.value (every logit, random small MDPs with
eos, step rewards, time-dependent logits, several starts and Bernoulli noise), and the
REINFORCE sum over every sequence, E_pi[G sum_t grad log pi(y_t | c_t)], from
tests/_reference.py. Then the structural facts: rows sum to zero, a constant reward has no
gradient, time-dependent logits tied across steps give the stationary gradient, long horizons
stay finite, and the numba kernel agrees with its numpy twin.
"""

import numpy as np
import pytest
from _cases import random_cases, random_mdp, random_policy_pair
from _reference import enumerate_sequences

from tokis.envs import Policy, TokenMDP, ngram, random_policy
from tokis.exact import gradient, value
from tokis.exact._gradient import _gradient_numpy

EPS = np.finfo(float).eps


def reward_scale(mdp):
    """A bound on |G|: the largest terminal reward plus T times the largest step reward."""
    return float(np.abs(mdp.terminal_reward).max() + mdp.horizon * np.abs(mdp.step_reward).max())


def finite_differences(mdp, pol, h):
    """Central differences of exact.value in every logit (``-inf`` logits stay ``-inf``: 0)."""
    theta = np.array(pol.logits)
    out = np.zeros_like(theta)
    for idx in np.ndindex(theta.shape):
        if not np.isfinite(theta[idx]):
            continue
        up, down = theta.copy(), theta.copy()
        up[idx] += h
        down[idx] -= h
        out[idx] = (value(mdp, Policy(up)) - value(mdp, Policy(down))) / (2 * h)
    return out


def fd_tolerance(mdp, h):
    """Truncation h^2 |J'''| / 6 plus rounding ~eps |J| / h.

    A logit enters J through at most T factors of pi (stationary logits are shared by every
    step), and each derivative of a softmax probability is bounded by 1 in absolute value, so
    |J'''| <= T^3 * scale with scale = reward_scale; rounding of value() is a few ulps of scale.
    """
    R = reward_scale(mdp)
    return (h**2 * mdp.horizon**3 / 6 + 16 * EPS / h) * R


def reinforce(mdp, pol):
    """E_pi[G sum_t grad log pi(y_t | c_t)] by enumeration; also the scale sum_y pi(y) |G(y)| L(y)."""
    e = enumerate_sequences(mdp, pi=pol)
    weight = e.prob["pi"] * e.returns
    probs = pol.expand_probs(mdp.horizon)
    g = np.zeros((mdp.horizon,) + pol.logits.shape[-2:])
    for t in range(mdp.horizon):
        on = e.mask[:, t]
        c, y, w = e.contexts[on, t], e.tokens[on, t], weight[on]
        np.add.at(g[t], (c, y), w)  # 1{a' = y_t}
        np.add.at(g[t], c, -w[:, None] * probs[t][c])  # - pi(a' | c_t)
    scale = float((e.prob["pi"] * np.abs(e.returns) * e.lengths).sum())
    return (g if pol.time_dependent else g.sum(axis=0)), scale


# ---------------------------------------------------------------------------------------------
# against references
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_against_finite_differences(seed):
    h = 1e-5
    worst = 0.0
    for mdp, pi, mu, desc in random_cases(300 + seed, 16):
        for pol in (pi, mu):
            g = gradient(mdp, pol)
            assert g.shape == pol.logits.shape, desc
            fd = finite_differences(mdp, pol, h)
            tol = fd_tolerance(mdp, h)
            err = np.abs(g - fd).max()
            worst = max(worst, err / reward_scale(mdp))
            assert err <= tol, (desc, err, tol)
    assert worst < 1e-7


def test_finite_differences_with_zero_probability_tokens(rng):
    h = 1e-5
    for timedep in (False, True):
        mdp = random_mdp(rng, S=3, V=3, T=4, eos=True, step_reward=True, multi_start=True, noise=False)
        pi, _ = random_policy_pair(rng, mdp, time_dependent=timedep)
        logits = np.array(pi.logits)
        logits[..., 0, 1] = logits[..., 2, 0] = -np.inf
        pol = Policy(logits)
        g = gradient(mdp, pol)
        assert np.all(g[..., 0, 1] == 0.0) and np.all(g[..., 2, 0] == 0.0)
        assert np.all(np.isfinite(g))
        np.testing.assert_allclose(g, finite_differences(mdp, pol, h), rtol=0, atol=fd_tolerance(mdp, h))


@pytest.mark.parametrize("seed", range(4))
def test_against_enumeration(seed):
    for mdp, pi, mu, desc in random_cases(400 + seed, 32):
        for pol in (pi, mu):
            ref, scale = reinforce(mdp, pol)
            g = gradient(mdp, pol)
            np.testing.assert_allclose(g, ref, rtol=1e-12, atol=1e-12 * scale, err_msg=desc)


@pytest.mark.parametrize("timedep", [False, True])
def test_larger_mdps_against_enumeration(rng, timedep):
    for eos in (False, True):
        mdp = random_mdp(rng, S=5, V=3, T=6, eos=eos, step_reward=True, multi_start=True, noise=True)
        pi, _ = random_policy_pair(rng, mdp, time_dependent=timedep, scale=2.0)
        ref, scale = reinforce(mdp, pi)
        np.testing.assert_allclose(gradient(mdp, pi), ref, rtol=1e-12, atol=1e-12 * scale)


def test_numba_kernel_matches_numpy_twin(rng):
    for timedep in (False, True):
        for eos in (False, True):
            mdp = random_mdp(rng, S=40, V=7, T=25, eos=eos, step_reward=True, multi_start=True)
            pi, _ = random_policy_pair(rng, mdp, time_dependent=timedep, scale=3.0)
            np.testing.assert_allclose(gradient(mdp, pi), _gradient_numpy(mdp, pi), rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# structure
# ---------------------------------------------------------------------------------------------


def test_rows_sum_to_zero_and_constant_reward_has_no_gradient():
    for mdp, pi, mu, desc in random_cases(500, 32):
        g = gradient(mdp, pi)
        np.testing.assert_allclose(g.sum(axis=-1), 0.0, atol=64 * EPS * reward_scale(mdp), err_msg=desc)
        # a constant terminal reward and no step reward: G is the same for every sequence
        flat = TokenMDP(
            mdp.next_context, horizon=mdp.horizon, terminal_reward=np.full(mdp.num_contexts, 0.7),
            start=mdp.start, eos=mdp.eos, reward_noise=mdp.reward_noise,
        )
        assert np.abs(gradient(flat, pi)).max() <= 16 * EPS, desc


def test_tied_time_dependent_logits_sum_to_the_stationary_gradient(rng):
    """Chain rule: theta_t = theta for every t, so grad_theta = sum_t grad_theta_t."""
    mdp = random_mdp(rng, S=6, V=4, T=7, eos=True, step_reward=True, multi_start=True)
    pi, _ = random_policy_pair(rng, mdp)
    tied = Policy(np.broadcast_to(pi.logits, (mdp.horizon,) + pi.logits.shape))
    np.testing.assert_allclose(gradient(mdp, tied).sum(axis=0), gradient(mdp, pi), rtol=1e-12, atol=1e-15)


def test_gradient_of_a_bandit_in_closed_form():
    """T = 1, one context: dJ/dtheta_a = pi_a (r_a - sum_b pi_b r_b)."""
    r = np.array([0.2, -1.0, 3.0])
    mdp = TokenMDP([[0, 0, 0]], horizon=1, step_reward=[r])
    theta = np.array([[0.3, -0.5, 1.1]])
    p = np.exp(theta) / np.exp(theta).sum()
    np.testing.assert_allclose(gradient(mdp, Policy(theta)), p * (r - p @ r.T), rtol=1e-14, atol=1e-15)


def test_accepts_raw_logits_and_returns_a_new_array(rng):
    mdp = random_mdp(rng, S=3, V=2, T=3)
    logits = rng.normal(size=(3, 2))
    g = gradient(mdp, logits)
    np.testing.assert_array_equal(g, gradient(mdp, Policy(logits)))
    assert g.dtype == np.float64 and g.flags.writeable


def directional_derivative(mdp, pol, u, h):
    """Central difference of exact.value along the logit direction ``u``."""
    return (value(mdp, Policy(pol.logits + h * u)) - value(mdp, Policy(pol.logits - h * u))) / (2 * h)


@pytest.mark.parametrize("eos", [None, 0])
@pytest.mark.parametrize("timedep", [False, True])
def test_long_horizon_is_finite_and_matches_a_directional_derivative(rng, timedep, eos):
    """T = 2000 with step rewards (and an eos that makes length matter): finite, rows sum to 0,
    and <grad, u> equals the directional derivative of J along a random u."""
    S, V = 8, 5
    mdp = TokenMDP(rng.integers(0, S, size=(S, V)), horizon=2000, terminal_reward=rng.uniform(size=S),
                   step_reward=rng.normal(size=(S, V)), eos=eos)
    pol = random_policy(mdp, scale=2.0, seed=4, time_dependent=timedep)
    g = gradient(mdp, pol)
    assert g.shape == pol.logits.shape
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 1e-3
    R = reward_scale(mdp)
    np.testing.assert_allclose(g.sum(axis=-1), 0.0, atol=1e3 * EPS * R)
    u = rng.normal(size=pol.logits.shape)
    np.testing.assert_allclose((g * u).sum(), directional_derivative(mdp, pol, u, 1e-5), rtol=1e-6, atol=1e-9 * R)


def test_long_horizon_ngram_is_finite():
    mdp = ngram(4, 2, 2000, eos=3, seed=3)
    for timedep in (False, True):
        g = gradient(mdp, random_policy(mdp, seed=4, time_dependent=timedep))
        assert np.all(np.isfinite(g))


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


def test_errors_name_the_argument():
    mdp = TokenMDP([[0, 1], [1, 0]], horizon=3)
    with pytest.raises(TypeError, match="mdp must be a TokenMDP"):
        gradient("mdp", Policy(np.zeros((2, 2))))
    with pytest.raises(TypeError, match="policy must be a tokis.envs.Policy"):
        gradient(mdp, [[0.0, 0.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match=r"policy logits have shape \(2, 3\)"):
        gradient(mdp, Policy(np.zeros((2, 3))))
    with pytest.raises(ValueError, match="policy is time-dependent with 4 steps but the MDP horizon is 3"):
        gradient(mdp, Policy(np.zeros((4, 2, 2))))
