"""The reference sampler: exact frequencies, reproducibility, padding conventions, errors."""

import numpy as np
import pytest
from _cases import random_cases, random_mdp, random_policy_pair
from _reference import enumerate_sequences

from tokis.envs import Policy, TokenMDP, sample
from tokis._core._rng import uniforms
from tokis.envs._sample import _sample_numpy, sample_ratios, sampling_tables

Z = 5.0  # tolerance in exact standard errors; with ~100 cells per test the false-alarm rate is < 1e-4


def _cell_probs(e, mdp):
    """Exact P(step t, context c, token a) under mu from the enumeration."""
    T, S, V = mdp.horizon, mdp.num_contexts, mdp.vocab_size
    p = np.zeros((T, S, V))
    for i in range(len(e.lengths)):
        for t in range(e.lengths[i]):
            p[t, e.contexts[i, t], e.tokens[i, t]] += e.prob["mu"][i]
    return p


@pytest.mark.parametrize("case", list(random_cases(11, 12)), ids=lambda c: c[3])
def test_frequencies_and_mean_return_match_exact(case):
    mdp, pi, mu, _ = case
    n = 20000
    r = sample(mdp, mu, n, target=pi, seed=3)
    e = enumerate_sequences(mdp, pi=pi, mu=mu)
    p = _cell_probs(e, mdp)
    counts = np.zeros_like(p)
    t_idx = np.broadcast_to(np.arange(mdp.horizon), r.tokens.shape)
    np.add.at(counts, (t_idx[r.mask], r.contexts[r.mask], r.tokens[r.mask]), 1.0)
    sd = np.sqrt(n * p * (1 - p))
    live = p > 0
    assert np.all(counts[~live] == 0)
    z = np.abs(counts[live] - n * p[live]) / sd[live]
    assert z.max() < Z, z.max()
    # mean return against J(mu), with the exact variance of G (Bernoulli noise included)
    pr = e.prob["mu"]
    mean = pr @ e.returns
    var = pr @ (e.returns - mean) ** 2
    if mdp.reward_noise == "bernoulli":
        var += pr @ (e.terminal * (1 - e.terminal))
    assert abs(r.returns.mean() - mean) <= Z * np.sqrt(var / n) + 1e-12  # floor: constant returns


def test_rollout_fields_are_consistent(rng):
    mdp = random_mdp(rng, S=4, V=3, T=6, eos=True, step_reward=True, multi_start=True)
    pi, mu = random_policy_pair(rng, mdp, time_dependent=True)
    r = sample(mdp, mu, 500, target=pi, seed=9)
    assert r.tokens.shape == (500, 6) and r.n == 500 and r.horizon == 6
    np.testing.assert_array_equal(r.mask, r.tokens >= 0)
    np.testing.assert_array_equal(r.lengths, r.mask.sum(1))
    # masks are prefixes; eos ends a sequence; nothing after the end
    assert np.all(np.diff(r.mask.astype(int), axis=1) <= 0)
    last = r.tokens[np.arange(500), r.lengths - 1]
    assert np.all((last == mdp.eos) | (r.lengths == 6))
    assert not np.any((r.tokens[:, :-1] == mdp.eos) & r.mask[:, 1:])
    assert np.all(r.contexts[~r.mask] == -1)
    # contexts follow the automaton
    for i in range(50):
        for t in range(1, r.lengths[i]):
            assert r.contexts[i, t] == mdp.next_context[r.contexts[i, t - 1], r.tokens[i, t - 1]]
        assert r.final_contexts[i] == mdp.next_context[r.contexts[i, r.lengths[i] - 1], last[i]]
    # log-probabilities, log-ratio and rewards
    t_idx = np.broadcast_to(np.arange(6), r.tokens.shape)
    lp = np.where(r.mask, mu.log_probs[t_idx, np.maximum(r.contexts, 0), np.maximum(r.tokens, 0)], 0.0)
    np.testing.assert_array_equal(r.logp_behavior, lp)
    lt = np.where(r.mask, pi.log_probs[t_idx, np.maximum(r.contexts, 0), np.maximum(r.tokens, 0)], 0.0)
    np.testing.assert_array_equal(r.logp_target, lt)
    np.testing.assert_allclose(r.log_ratio, lt - lp)
    assert np.all(r.log_ratio[~r.mask] == 0)
    steps = np.where(r.mask, mdp.step_reward[np.maximum(r.contexts, 0), np.maximum(r.tokens, 0)], 0.0)
    expected = steps.copy()
    expected[np.arange(500), r.lengths - 1] += mdp.terminal_reward[r.final_contexts]
    np.testing.assert_allclose(r.rewards, expected)
    np.testing.assert_allclose(r.returns, expected.sum(1))


def test_without_target_has_no_ratio(rng):
    mdp = random_mdp(rng)
    r = sample(mdp, Policy(np.zeros((3, 3))), 4)
    assert r.logp_target is None and r.log_ratio is None


def test_reproducible_and_chunk_independent(rng):
    mdp = random_mdp(rng, S=3, V=4, T=5, eos=True)
    _, mu = random_policy_pair(rng, mdp)
    a = sample(mdp, mu, 1000, seed=5)
    b = sample(mdp, mu, 1000, seed=5)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    c = sample(mdp, mu, 1000, seed=6)
    assert not np.array_equal(a.tokens, c.tokens)
    # a different chunking draws the same tokens: uniforms depend only on (seed, i, t)
    tok, _ = _sample_numpy(mdp, sampling_tables(mu), 1000, 5, chunk=7)
    np.testing.assert_array_equal(tok, a.tokens)
    # a prefix of a larger batch is the smaller batch
    d = sample(mdp, mu, 1500, seed=5)
    np.testing.assert_array_equal(d.tokens[:1000], a.tokens)


def test_token_is_inverse_cdf_of_counter_uniform():
    mdp = TokenMDP(np.zeros((1, 4), dtype=int), horizon=3)
    mu = Policy(np.log(np.array([[0.1, 0.2, 0.3, 0.4]])))
    r = sample(mdp, mu, 64, seed=123)
    u = uniforms(123, 0, np.arange(64)[:, None], np.arange(3)[None, :])
    expected = np.searchsorted(np.array([0.1, 0.3, 0.6]), u, side="right")
    np.testing.assert_array_equal(r.tokens, expected)


def test_zero_probability_tokens_never_drawn():
    mdp = TokenMDP(np.zeros((1, 5), dtype=int), horizon=4)
    mu = Policy(np.array([[-np.inf, 0.0, -np.inf, 0.0, -np.inf]]))
    r = sample(mdp, mu, 5000, seed=1)
    assert set(np.unique(r.tokens)) == {1, 3}


def test_target_with_zero_probability_gives_minus_inf_ratio():
    mdp = TokenMDP(np.zeros((1, 2), dtype=int), horizon=2)
    r = sample(mdp, Policy(np.zeros((1, 2))), 200, target=Policy(np.array([[0.0, -np.inf]])), seed=2)
    assert np.all(np.isneginf(r.log_ratio[r.tokens == 1]))
    np.testing.assert_allclose(r.log_ratio[r.tokens == 0], np.log(2.0))


def test_bernoulli_rewards_are_binary_with_exact_mean():
    mdp = TokenMDP(np.array([[0, 1], [1, 1]]), horizon=3, terminal_reward=[0.2, 0.7], reward_noise="bernoulli")
    mu = Policy(np.zeros((2, 2)))
    n = 40000
    r = sample(mdp, mu, n, seed=4)
    assert set(np.unique(r.returns)) <= {0.0, 1.0}
    p1 = 1 - 0.5**3  # probability that token 1 appears, moving to context 1
    m = 0.2 * (1 - p1) + 0.7 * p1
    assert abs(r.returns.mean() - m) < Z * np.sqrt(m * (1 - m) / n)


def test_start_distribution_is_respected():
    mdp = TokenMDP(np.array([[0], [1], [2]]), horizon=1, start=[0.2, 0.5, 0.3])
    n = 30000
    r = sample(mdp, Policy(np.zeros((3, 1))), n, seed=8)
    counts = np.bincount(r.contexts[:, 0], minlength=3)
    p = np.array([0.2, 0.5, 0.3])
    assert np.all(np.abs(counts - n * p) < Z * np.sqrt(n * p * (1 - p)))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(n=0), ValueError, "n must be >= 1"),
        (dict(n=2.0), TypeError, "n must be an integer"),
        (dict(seed=-1), ValueError, r"seed must be in \[0, 2\*\*64\)"),
        (dict(backend="torch"), ValueError, "backend must be one of"),
        (dict(behavior=Policy(np.zeros((2, 3)))), ValueError, "behavior logits have shape"),
        (dict(target=Policy(np.zeros((3, 2)))), ValueError, "target logits have shape"),
        (dict(behavior="uniform"), TypeError, "behavior must be a tokis.envs.Policy"),
        (dict(mdp=np.zeros((2, 2))), TypeError, "mdp must be a TokenMDP"),
    ],
)
def test_sample_errors(kwargs, exc, match):
    args = dict(mdp=TokenMDP(np.array([[0, 1], [1, 0]]), horizon=2), behavior=Policy(np.zeros((2, 2))), n=3)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        sample(args.pop("mdp"), args.pop("behavior"), args.pop("n"), **args)


# --------------------------------------------------------------------------- replications


def _same_rollouts(a, b, where):
    import dataclasses

    for f in dataclasses.fields(b):
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert (x is None) == (y is None), (where, f.name)
        if y is not None:
            assert x.dtype == y.dtype and x.shape == y.shape, (where, f.name)
            np.testing.assert_array_equal(x, y, err_msg=f"{where}.{f.name}")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("case", list(random_cases(21, 6)), ids=lambda c: c[3])
def test_a_sequence_of_seeds_is_every_seed_alone(case, backend):
    mdp, pi, mu, _ = case
    seeds = [3, 2**64 - 1, 0, 3]
    r = sample(mdp, mu, 37, target=pi, seed=seeds, backend=backend)
    assert r.batch_shape == (4,) and r.n == 37 and r.horizon == mdp.horizon
    assert r.tokens.shape == (4, 37, mdp.horizon) and r.returns.shape == r.lengths.shape == (4, 37)
    for k, s in enumerate(seeds):
        _same_rollouts(r[k], sample(mdp, mu, 37, target=pi, seed=s, backend=backend), f"seed[{k}]")
    np.testing.assert_array_equal(r.tokens[0], r.tokens[3])  # same seed, same batch
    # numpy seeds and 1-d arrays work the same; one seed in a list keeps the axis
    _same_rollouts(sample(mdp, mu, 37, target=pi, seed=np.array(seeds, dtype=np.uint64), backend=backend), r,
                   "array of seeds")
    assert sample(mdp, mu, 5, seed=[7], backend=backend).tokens.shape == (1, 5, mdp.horizon)


def test_replications_on_every_thread_equal_the_serial_draws(rng, monkeypatch):
    from tokis._backends import _chunks

    mdp = random_mdp(rng, S=4, V=5, T=9, eos=True, step_reward=True, multi_start=True)
    mdp = TokenMDP(mdp.next_context, horizon=9, terminal_reward=rng.uniform(size=4), step_reward=mdp.step_reward,
                   start=mdp.start, eos=mdp.eos, reward_noise="bernoulli")
    pi, mu = random_policy_pair(rng, mdp, time_dependent=True)
    seeds = [11, 12, 13]
    monkeypatch.setattr(_chunks, "SAMPLE_PARALLEL_MIN", 0)  # the parallel pass, 256-row work items
    par = sample(mdp, mu, 700, target=pi, seed=seeds, backend="numba")
    monkeypatch.setattr(_chunks, "SAMPLE_PARALLEL_MIN", 1 << 62)
    for k, s in enumerate(seeds):
        _same_rollouts(par[k], sample(mdp, mu, 700, target=pi, seed=s, backend="numpy"), f"seed[{k}]")


@pytest.mark.parametrize(
    "seed, exc, match",
    [
        ([], ValueError, "non-empty sequence"),
        ([1, -1], ValueError, r"seed\[1\]: seed must be in \[0, 2\*\*64\)"),
        ([1, 2.5], TypeError, r"seed\[1\]: seed must be an integer"),
        ((0, 2**64), ValueError, r"seed\[1\]"),
    ],
)
def test_bad_seed_sequences_name_the_entry(seed, exc, match):
    mdp = TokenMDP(np.array([[0, 1], [1, 0]]), horizon=2)
    with pytest.raises(exc, match=match):
        sample(mdp, Policy(np.zeros((2, 2))), 3, seed=seed)


def test_one_seed_has_no_replication_axis(rng):
    r = sample(random_mdp(rng), Policy(np.zeros((3, 3))), 4, seed=1)
    assert r.batch_shape == ()
    with pytest.raises(TypeError, match="one seed"):
        r[0]


# --------------------------------------------------------------------------- lean sampling for estimates


def _same_fields(got, ro, where):
    for name, x in zip(("log_ratio", "rewards", "mask"), got):
        y = getattr(ro, name)
        assert x.dtype == y.dtype and x.shape == y.shape, (where, name)
        np.testing.assert_array_equal(x, y, err_msg=f"{where}.{name}")


@pytest.mark.parametrize("backend", ["numpy", "numba", "auto"])
@pytest.mark.parametrize("case", list(random_cases(31, 16)), ids=lambda c: c[3])
def test_sample_ratios_are_the_fields_of_sample(case, backend):
    # eos, step rewards, several starts, Bernoulli reward noise and time-dependent policies
    # (random_cases cycles through them): bit for bit the numpy reference's fields
    mdp, pi, mu, _ = case
    seeds = [5, 2**64 - 1, 5]
    got = sample_ratios(mdp, mu, pi, 41, seeds, backend)
    assert got[0].shape == (3, 41, mdp.horizon)
    _same_fields(got, sample(mdp, mu, 41, target=pi, seed=seeds, backend="numpy"), "seeds")
    _same_fields(sample_ratios(mdp, mu, pi, 41, 9, backend), sample(mdp, mu, 41, target=pi, seed=9, backend="numpy"),
                 "one seed")


def test_sample_ratios_on_every_thread_equal_the_reference(rng, monkeypatch):
    # longer sequences ending early (eos: whole blocks end before T), a zero-probability target
    # token (-inf log-ratio), noisy terminal rewards, 256-row work items in parallel
    from tokis._backends import _chunks

    base = random_mdp(rng, S=4, V=5, T=12, eos=True, step_reward=True, multi_start=True)
    mdp = TokenMDP(base.next_context, horizon=12, terminal_reward=rng.uniform(size=4), step_reward=base.step_reward,
                   start=base.start, eos=base.eos, reward_noise="bernoulli")
    pi, mu = random_policy_pair(rng, mdp, time_dependent=True)
    logits = pi.logits.copy()
    logits[:, :, 1] = -np.inf
    pi = Policy(logits)
    seeds = [11, 12, 13]
    monkeypatch.setattr(_chunks, "SAMPLE_PARALLEL_MIN", 0)
    got = sample_ratios(mdp, mu, pi, 700, seeds, "numba")
    ref = sample(mdp, mu, 700, target=pi, seed=seeds, backend="numpy")
    assert np.isneginf(ref.log_ratio).any() and (ref.lengths < 12).any() and (ref.lengths == 12).any()
    _same_fields(got, ref, "parallel")
    monkeypatch.setattr(_chunks, "SAMPLE_PARALLEL_MIN", 1 << 62)
    _same_fields(sample_ratios(mdp, mu, pi, 700, seeds, "numba"), ref, "serial")


def test_sample_ratios_errors():
    mdp = TokenMDP(np.array([[0, 1], [1, 0]]), horizon=2)
    pol = Policy(np.zeros((2, 2)))
    with pytest.raises(TypeError, match="target must be a Policy"):
        sample_ratios(mdp, pol, None, 3, [1])
    with pytest.raises(ValueError, match="n must be >= 1"):
        sample_ratios(mdp, pol, pol, 0, [1])
    with pytest.raises(ValueError, match=r"seed\[1\]"):
        sample_ratios(mdp, pol, pol, 3, [1, -1])
    with pytest.raises(ValueError, match="target logits have shape"):
        sample_ratios(mdp, pol, Policy(np.zeros((3, 2))), 3, [1])
    with pytest.raises(ValueError, match="backend must be one of"):
        sample_ratios(mdp, pol, pol, 3, [1], "torch")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_sample_ratios_write_into_reused_buffers(rng, backend):
    mdp = random_mdp(rng, S=3, V=4, T=6, eos=True, step_reward=True)
    pi, mu = random_policy_pair(rng, mdp)
    shape = (3, 50, 6)
    buffers = (np.full(shape, np.nan), np.full(shape, np.nan), np.ones(shape, dtype=bool))
    for seeds in ([1, 2, 3], [4, 5]):  # a full chunk, then a shorter last one in the same buffers
        out = tuple(b[:len(seeds)] for b in buffers)
        got = sample_ratios(mdp, mu, pi, 50, seeds, backend, out=out)
        assert all(np.shares_memory(g, o) for g, o in zip(got, out))
        _same_fields(got, sample(mdp, mu, 50, target=pi, seed=seeds, backend="numpy"), f"out {seeds}")


def test_sample_ratios_out_errors(rng):
    mdp = random_mdp(rng, S=3, V=4, T=6)
    pi, mu = random_policy_pair(rng, mdp)
    shape = (2, 5, 6)
    good = (np.empty(shape), np.empty(shape), np.empty(shape, dtype=bool))
    with pytest.raises(TypeError, match="out must be a tuple of three arrays"):
        sample_ratios(mdp, mu, pi, 5, [1, 2], out=list(good))
    with pytest.raises(ValueError, match=r"out mask must be a writeable C-contiguous bool array of shape \(2, 5, 6\)"):
        sample_ratios(mdp, mu, pi, 5, [1, 2], out=good[:2] + (np.empty(shape),))
    with pytest.raises(ValueError, match="out log_ratio must be"):
        sample_ratios(mdp, mu, pi, 5, [1, 2, 3], out=good)
    with pytest.raises(ValueError, match="out rewards must be"):
        sample_ratios(mdp, mu, pi, 5, [1, 2], out=(good[0], np.empty((2, 6, 5)).transpose(0, 2, 1), good[2]))
