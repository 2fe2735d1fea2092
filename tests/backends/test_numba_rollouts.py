"""The fused numba ``sample()``: every Rollouts field equals the numpy reference's, bit for bit.

The reference is ``sample(..., backend="numpy")``: the vectorised token sampler, then
``_assemble``'s numpy gathers. The numba backend samples and assembles in one parallel pass
(:func:`tokis._backends._numba_sample.rollouts_numba`); both must give the same arrays, the
same dtypes and the same bits (``-0.0`` and ``0.0`` differ here), on MDPs with eos, step
rewards, time-dependent policies, several start contexts and Bernoulli reward noise.
"""

import numba
import numpy as np
import pytest

from tokis._backends import _chunks
from _cases import random_cases, random_mdp, random_policy_pair

from tokis.envs import Policy, TokenMDP, sample
from tokis._core._rng import STREAM_REWARD, uniforms

FIELDS = ("tokens", "mask", "contexts", "logp_behavior", "logp_target", "rewards", "returns", "log_ratio",
          "lengths", "final_contexts")
SEEDS = (0, 7, 2**64 - 1)
SIZES = (1, 17, 300)


def assert_same_rollouts(a, b):
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if y is None:
            continue
        assert type(x) is np.ndarray and x.dtype == y.dtype and x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name)
        np.testing.assert_array_equal(x.view(np.uint8), y.view(np.uint8), err_msg=f"{name} (bits)")


@pytest.mark.parametrize("case", list(random_cases(21, 32)), ids=lambda c: c[3])
def test_every_field_equals_the_numpy_reference(case):
    mdp, pi, mu, _ = case
    for seed in SEEDS:
        for n in SIZES:
            for target in (pi, None):
                ref = sample(mdp, mu, n, target=target, seed=seed, backend="numpy")
                assert_same_rollouts(sample(mdp, mu, n, target=target, seed=seed, backend="numba"), ref)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("noise", [False, True], ids=["no-noise", "bernoulli"])
def test_parallel_pass_equals_the_reference(rng, monkeypatch, threads, noise):
    # the parallel driver at small n, with work items not a multiple of the block sizes
    mdp = random_mdp(rng, S=6, V=9, T=13, eos=True, step_reward=True, multi_start=True, noise=noise)
    pi, mu = random_policy_pair(rng, mdp, time_dependent=True)
    monkeypatch.setattr(_chunks, "PARALLEL_MIN_ELEMENTS", 0)
    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        for seed in SEEDS:
            ref = sample(mdp, mu, 777, target=pi, seed=seed, backend="numpy")
            assert_same_rollouts(sample(mdp, mu, 777, target=pi, seed=seed, backend="numba"), ref)
    finally:
        numba.set_num_threads(before)


def test_mixed_time_dependence_and_impossible_target_tokens(rng):
    # stationary behaviour with a time-dependent target (and the reverse); the target gives
    # probability 0 to some sampled tokens (log-ratio -inf)
    mdp = random_mdp(rng, S=4, V=5, T=7, eos=True, step_reward=True, multi_start=True)
    stationary = Policy(rng.normal(size=(4, 5)))
    logits = rng.normal(size=(7, 4, 5))
    logits[:, :, 1] = -np.inf
    timedep = Policy(logits)
    runs = []
    for mu, pi in ((stationary, timedep), (Policy(rng.normal(size=(7, 4, 5))), stationary)):
        ref = sample(mdp, mu, 500, target=pi, seed=3, backend="numpy")
        runs.append(sample(mdp, mu, 500, target=pi, seed=3, backend="numba"))
        assert_same_rollouts(runs[-1], ref)
    impossible = runs[0].mask & (runs[0].tokens == 1)
    assert impossible.any()
    assert np.all(np.isneginf(runs[0].log_ratio[impossible]))
    assert np.all(np.isfinite(runs[0].log_ratio[~impossible]))


def test_terminal_reward_and_bernoulli_draw_by_definition(rng):
    # G_i = sum of step rewards + observed terminal reward, the terminal one drawn as
    # u(seed, reward stream, i, 0) < terminal_reward[final context]
    mdp = random_mdp(rng, S=5, V=4, T=6, eos=True, step_reward=True, multi_start=True, noise=True)
    _, mu = random_policy_pair(rng, mdp)
    ro = sample(mdp, mu, 400, seed=11, backend="numba")
    rows = np.arange(400)
    last = ro.lengths - 1
    final = mdp.next_context[ro.contexts[rows, last], ro.tokens[rows, last]]
    np.testing.assert_array_equal(ro.final_contexts, final)
    observed = (uniforms(11, STREAM_REWARD, rows, 0) < mdp.terminal_reward[final]).astype(float)
    steps = np.where(ro.mask, mdp.step_reward[np.maximum(ro.contexts, 0), np.maximum(ro.tokens, 0)], 0.0)
    np.testing.assert_array_equal(ro.rewards[rows, last], steps[rows, last] + observed)
    assert 0 < observed.sum() < 400
    np.testing.assert_allclose(ro.returns, steps.sum(axis=1) + observed, rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(ro.mask, np.arange(6)[None, :] < ro.lengths[:, None])


def test_zero_step_rewards_take_the_return_from_the_kernel(rng):
    # without step rewards each row holds one non-zero reward, so the return is that entry
    mdp = TokenMDP(rng.integers(0, 3, size=(3, 4)), horizon=40, terminal_reward=np.array([0.0, -0.5, 2.0]),
                   step_reward=np.zeros((3, 4)), eos=2)
    mu = Policy(rng.normal(size=(3, 4)))
    got = sample(mdp, mu, 3000, seed=5, backend="numba")
    assert_same_rollouts(got, sample(mdp, mu, 3000, seed=5, backend="numpy"))
    np.testing.assert_array_equal(got.returns, got.rewards.sum(axis=1))
    # a -0.0 step reward makes numpy's sum the reference again (and the result still agrees)
    step = np.zeros((3, 4))
    step[0, 0] = -0.0
    mdp2 = TokenMDP(mdp.next_context, horizon=40, terminal_reward=mdp.terminal_reward, step_reward=step, eos=2)
    assert_same_rollouts(sample(mdp2, mu, 3000, seed=5, backend="numba"), sample(mdp2, mu, 3000, seed=5,
                                                                                 backend="numpy"))
