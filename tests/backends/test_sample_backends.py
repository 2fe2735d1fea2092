"""Compiled samplers against the numpy reference: the same tokens bit for bit for the same seed."""

import numba
import numpy as np
import pytest

from tokis._backends import _chunks
from _cases import random_cases, random_mdp, random_policy_pair
from _cuda_emulation import compiler, emulate

from tokis.envs import Policy, TokenMDP, sample
from tokis._core._rng import STREAM_TOKEN, run_key, uniforms
from tokis.envs._sample import _sample_numpy, sampling_tables
from tokis._backends._cupy_sample import SAMPLE_SOURCE, launch_plan
from tokis._backends._numba_rng import row_key, uniform_at
from tokis._backends._numba_sample import sample_numba, search_sorted_right
from tokis._backends._tables import start_table

SEEDS = (0, 1, 12345, 2**63 + 7, 2**64 - 1)
# n not a multiple of the numba block (16) or work item (256) or the CUDA block (256 / 32)
SIZES = (1, 15, 17, 33, 300)

ROLLOUT_FIELDS = (
    "tokens",
    "mask",
    "contexts",
    "logp_behavior",
    "logp_target",
    "rewards",
    "returns",
    "log_ratio",
    "lengths",
    "final_contexts",
)


def _same_rollouts(a, b):
    for name in ROLLOUT_FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)


def test_numba_uniforms_are_the_reference_bits():
    seeds = np.array([0, 3, 2**64 - 1], dtype=np.uint64)
    for seed in seeds:
        key = run_key(int(seed), STREAM_TOKEN)
        for i in (0, 1, 999, 2**40 + 3):
            rk = np.uint64(row_key(key, i))  # a Python int on return: retype as in the kernels
            for t in (0, 1, 7, 1023):
                assert uniform_at(rk, t) == uniforms(int(seed), STREAM_TOKEN, i, t)


def test_binary_search_is_the_reference_count(rng):
    # rows with ties (zero-probability tokens) and uniforms exactly on table entries
    for V in (1, 2, 3, 5, 16, 17, 64, 100):
        p = rng.dirichlet(np.ones(V)) * (rng.random(V) < 0.7)
        if p.sum() == 0:
            p[rng.integers(V)] = 1.0
        with np.errstate(divide="ignore"):
            table = sampling_tables(Policy(np.log(p)[None, :]))[0]
        us = np.concatenate([rng.random(50), table[table < 1.0], [0.0, np.nextafter(1.0, 0.0)]])
        for u in us:
            assert search_sorted_right(table, 0, V, u) == np.count_nonzero(table <= u)


@pytest.mark.parametrize("case", list(random_cases(5, 16)), ids=lambda c: c[3])
def test_numba_tokens_equal_numpy(case):
    mdp, _, mu, _ = case
    cdf = sampling_tables(mu)
    for seed in SEEDS[:3]:
        for n in SIZES:
            ref = _sample_numpy(mdp, cdf, n, seed)
            got = sample_numba(mdp, cdf, n, seed)
            np.testing.assert_array_equal(got[0], ref[0])
            np.testing.assert_array_equal(got[1], ref[1])


@pytest.mark.parametrize("threads", [1, 2])
def test_numba_tokens_do_not_depend_on_thread_count(rng, monkeypatch, threads):
    mdp = random_mdp(rng, S=5, V=7, T=9, eos=True, multi_start=True)
    _, mu = random_policy_pair(rng, mdp, time_dependent=True)
    cdf = sampling_tables(mu)
    monkeypatch.setattr(_chunks, "PARALLEL_MIN_ELEMENTS", 0)  # the parallel driver, small n
    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        for seed in SEEDS:
            ref = _sample_numpy(mdp, cdf, 600, seed, chunk=77)
            got = sample_numba(mdp, cdf, 600, seed)
            np.testing.assert_array_equal(got[0], ref[0])
            np.testing.assert_array_equal(got[1], ref[1])
    finally:
        numba.set_num_threads(before)


def test_large_vocabulary_with_zero_probability_tokens(rng):
    # V = 1000 with most tokens impossible: the O(log V) search never draws them
    S, V, T = 3, 1000, 6
    mdp = TokenMDP(rng.integers(0, S, size=(S, V)), horizon=T, start=np.array([0.5, 0.0, 0.5]), eos=V - 1)
    logits = rng.normal(size=(S, V))
    logits[:, rng.random(V) < 0.9] = -np.inf
    logits[:, 0] = 0.0
    mu = Policy(logits)
    cdf = sampling_tables(mu)
    ref = _sample_numpy(mdp, cdf, 257, 4)
    got = sample_numba(mdp, cdf, 257, 4)
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])
    drawn = got[0][got[0] >= 0]
    assert np.all(np.isfinite(logits[got[1][got[0] >= 0], drawn]))
    assert not np.any(got[1][:, 0] == 1)  # start context 1 has probability 0


@pytest.mark.parametrize("case", list(random_cases(8, 8)), ids=lambda c: c[3])
def test_sample_backends_give_identical_rollouts(case):
    mdp, pi, mu, _ = case
    ref = sample(mdp, mu, 41, target=pi, seed=17, backend="numpy")
    for backend in ("numba", "auto"):
        _same_rollouts(sample(mdp, mu, 41, target=pi, seed=17, backend=backend), ref)


def test_start_table_is_the_reference_start_rule(rng):
    start = rng.dirichlet(np.ones(6)) * np.array([1, 0, 1, 1, 0, 0])
    start /= start.sum()
    table = start_table(start)
    assert table[-1] == 2.0 and np.all(np.diff(table) >= 0)
    mdp = TokenMDP(np.zeros((6, 2), dtype=int), horizon=1, start=start)
    ref = _sample_numpy(mdp, sampling_tables(Policy(np.zeros((6, 2)))), 500, 3)
    u0 = uniforms(3, STREAM_TOKEN, np.arange(500), 1)
    np.testing.assert_array_equal(ref[1][:, 0], (table[None, :] <= u0[:, None]).sum(axis=1))
    assert set(np.unique(ref[1][:, 0])) <= {0, 2, 3}


@pytest.mark.skipif(compiler() is None, reason="no host C++20 compiler to emulate the CUDA source")
@pytest.mark.parametrize("case", list(random_cases(9, 8)), ids=lambda c: c[3])
def test_cuda_sampler_source_emulated_on_cpu(case):
    mdp, _, mu, _ = case
    cdf = sampling_tables(mu)
    for seed, n in ((0, 33), (2**64 - 1, 5)):
        grid, block, args, (tokens, contexts) = launch_plan(mdp, cdf, n, seed, np, threads=32)
        emulate(SAMPLE_SOURCE, "tokis_sample", grid, block, args)
        ref = _sample_numpy(mdp, cdf, n, seed)
        np.testing.assert_array_equal(tokens, ref[0])
        np.testing.assert_array_equal(contexts, ref[1])


def test_cupy_backend_without_cupy_raises():
    try:
        import cupy  # noqa: F401

        pytest.skip("CuPy is installed")
    except ImportError:
        pass
    mdp = TokenMDP(np.zeros((1, 2), dtype=int), horizon=2)
    with pytest.raises(ValueError, match="backend='cupy' needs CuPy"):
        sample(mdp, Policy(np.zeros((1, 2))), 3, backend="cupy")


@pytest.mark.gpu
@pytest.mark.parametrize("case", list(random_cases(10, 8)), ids=lambda c: c[3])
def test_cupy_rollouts_equal_numpy(case):
    pytest.importorskip("cupy")
    mdp, pi, mu, _ = case
    for seed, n in ((0, 300), (2**64 - 1, 17)):
        ref = sample(mdp, mu, n, target=pi, seed=seed, backend="numpy")
        _same_rollouts(sample(mdp, mu, n, target=pi, seed=seed, backend="cupy"), ref)


@pytest.mark.gpu
def test_cupy_device_sampler_large_n():
    cp = pytest.importorskip("cupy")
    from tokis._backends._cupy_sample import sample_cupy_device

    rng = np.random.default_rng(3)
    mdp = random_mdp(rng, S=6, V=50, T=12, eos=True, multi_start=True)
    _, mu = random_policy_pair(rng, mdp, time_dependent=True)
    cdf = sampling_tables(mu)
    tokens, contexts = sample_cupy_device(mdp, cdf, 70001, 9)
    assert isinstance(tokens, cp.ndarray)
    ref = sample_numba(mdp, cdf, 70001, 9)
    np.testing.assert_array_equal(cp.asnumpy(tokens), ref[0])
    np.testing.assert_array_equal(cp.asnumpy(contexts), ref[1])
