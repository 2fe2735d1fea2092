"""TokenMDP and Policy: construction, attributes and every input error."""

import numpy as np
import pytest

from tokis.envs import Policy, TokenMDP


def _nc():
    return np.array([[0, 1], [1, 0]])


def test_attributes_and_defaults():
    m = TokenMDP(_nc(), horizon=4)
    assert (m.num_contexts, m.vocab_size, m.horizon) == (2, 2, 4)
    np.testing.assert_array_equal(m.start, [1.0, 0.0])
    np.testing.assert_array_equal(m.terminal_reward, [0.0, 0.0])
    np.testing.assert_array_equal(m.step_reward, np.zeros((2, 2)))
    assert not m.has_step_reward and m.eos is None and m.reward_noise == "none"
    with pytest.raises(ValueError):
        m.next_context[0, 0] = 1  # read-only


def test_start_distribution_and_with_horizon():
    m = TokenMDP(_nc(), horizon=2, start=[0.25, 0.75], terminal_reward=[0.0, 1.0], eos=1)
    np.testing.assert_allclose(m.start, [0.25, 0.75])
    m2 = m.with_horizon(7)
    assert m2.horizon == 7 and m2.eos == 1
    np.testing.assert_array_equal(m2.start, m.start)
    assert m2.fingerprint() != m.fingerprint()
    assert m.with_horizon(2).fingerprint() == m.fingerprint()


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(next_context=[[0, 2], [1, 0]]), ValueError, "next_context entries must be contexts in"),
        (dict(next_context=[[0, -1], [1, 0]]), ValueError, "next_context entries"),
        (dict(next_context=[0, 1]), ValueError, "next_context must be 2-dimensional"),
        (dict(next_context=[[0.5, 1], [1, 0]]), TypeError, "next_context must hold integers"),
        (dict(horizon=0), ValueError, "horizon must be >= 1"),
        (dict(horizon=2.5), TypeError, "horizon must be an integer"),
        (dict(terminal_reward=[1.0, 2.0, 3.0]), ValueError, r"terminal_reward must have shape \(2,\)"),
        (dict(terminal_reward=[1.0, np.nan]), ValueError, "terminal_reward contains NaN"),
        (dict(terminal_reward=[1.0, np.inf]), ValueError, "terminal_reward contains inf"),
        (dict(step_reward=np.zeros((2, 3))), ValueError, r"step_reward must have shape \(2, 2\)"),
        (dict(step_reward=[[0.0, np.inf], [0.0, 0.0]]), ValueError, "step_reward contains inf"),
        (dict(start=5), ValueError, r"start must be a context in \[0, 2\)"),
        (dict(start=[0.5, 0.6]), ValueError, "start must sum to 1"),
        (dict(start=[1.5, -0.5]), ValueError, "start must be non-negative"),
        (dict(start=[1.0]), ValueError, r"start must have shape \(2,\)"),
        (dict(eos=2), ValueError, r"eos must be a token in \[0, 2\)"),
        (dict(eos=-1), ValueError, "eos must be a token"),
        (dict(reward_noise="gaussian"), ValueError, "reward_noise must be one of"),
        (dict(reward_noise="bernoulli", terminal_reward=[0.0, 2.0]), ValueError, r"terminal_reward must lie in \[0, 1\]"),
    ],
)
def test_mdp_errors(kwargs, exc, match):
    args = dict(next_context=_nc(), horizon=3)
    args.update(kwargs)
    nc = args.pop("next_context")
    with pytest.raises(exc, match=match):
        TokenMDP(nc, **args)


def test_policy_probabilities():
    logits = np.array([[0.0, np.log(3.0)], [1.0, -np.inf]])
    p = Policy(logits)
    np.testing.assert_allclose(p.probs, [[0.25, 0.75], [1.0, 0.0]])
    np.testing.assert_allclose(np.exp(p.log_probs), p.probs)
    assert p.log_probs[1, 1] == -np.inf
    assert not p.time_dependent
    assert p.expand_probs(5).shape == (5, 2, 2)


def test_policy_large_logits_are_stable():
    p = Policy(np.array([[1000.0, 1000.0 + np.log(3.0)]]))
    np.testing.assert_allclose(p.probs, [[0.25, 0.75]])


def test_time_dependent_policy():
    lg = np.zeros((3, 2, 2))
    lg[1, 0, 1] = np.log(3.0)
    p = Policy(lg)
    assert p.time_dependent
    np.testing.assert_allclose(p.probs_at(1)[0], [0.25, 0.75])
    np.testing.assert_allclose(p.probs_at(0)[0], [0.5, 0.5])
    m = TokenMDP(_nc(), horizon=3)
    p.check_compatible(m)
    with pytest.raises(ValueError, match="time-dependent with 3 steps but the MDP horizon is 4"):
        p.check_compatible(m.with_horizon(4))


@pytest.mark.parametrize(
    "logits, exc, match",
    [
        (np.array([[0.0, np.nan]]), ValueError, "logits contains NaN"),
        (np.array([[0.0, np.inf]]), ValueError, r"logits contains \+inf"),
        (np.array([[-np.inf, -np.inf]]), ValueError, "logits has a row with no finite entry"),
        (np.zeros(3), ValueError, "logits must be 2 or 3-dimensional"),
        (np.array([["a", "b"]]), TypeError, "logits must be numeric"),
    ],
)
def test_policy_errors(logits, exc, match):
    with pytest.raises(exc, match=match):
        Policy(logits)


def test_policy_incompatible_with_mdp():
    m = TokenMDP(_nc(), horizon=3)
    with pytest.raises(ValueError, match=r"behavior logits have shape \(2, 3\), expected \(\.\.\., 2, 2\)"):
        Policy(np.zeros((2, 3))).check_compatible(m, "behavior")


def test_extreme_logits_give_exact_zeros_without_warnings():
    import warnings

    import tokis

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        P = tokis.envs.Policy(np.array([[1e308, -1e308, 0.0], [-1e308, -1e308, 1e308]]))
    assert P.probs.tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
