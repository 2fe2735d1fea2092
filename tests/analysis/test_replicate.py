"""Replication chunks on a pool of threads: the rule, and results equal to one thread bit for bit."""

import threading

import numpy as np
import pandas as pd
import pytest

from tokis import envs
from tokis._backends import _chunks
from tokis.analysis import _replicate
from tokis.analysis._config import parse_estimators
from tokis.analysis._coverage import _compute_point
from tokis.analysis._harness import monte_carlo, replication_seeds
from tokis.analysis._memory import BYTES_PER_TOKEN, CHUNK_BUDGET


_PLAN = _replicate.plan_chunks


def _per_chunk(n, T, budget):
    return budget // (n * T * BYTES_PER_TOKEN)


def test_plan_chunks_rule():
    plan = _replicate.plan_chunks
    # the default table's largest cell: the budget is shared by two threads, chunks of 25 replications
    assert plan(1024, 64, 1000, "auto", threads=2) == (_per_chunk(1024, 64, CHUNK_BUDGET // 2), 2)
    assert _per_chunk(1024, 64, CHUNK_BUDGET // 2) == 25
    # one thread, or a backend that is not numba on the CPU: whole-budget chunks, no pool
    whole = _per_chunk(1024, 64, CHUNK_BUDGET)
    assert plan(1024, 64, 1000, "auto", threads=1) == (whole, 1)
    for backend in ("numpy", "cupy"):
        assert plan(1024, 64, 1000, backend, threads=2) == (whole, 1)
    # everything fits in one chunk and is too small to be worth threads: one call
    assert plan(64, 8, 100, "numba", threads=2) == (100, 1)
    # big enough: at least one chunk per thread even when one chunk would fit the budget
    assert plan(1024, 2, 1000, "auto", threads=2) == (500, 2)
    assert plan(1024, 2, 1000, "auto", threads=4) == (250, 4)
    # one replication as large as the parallel threshold: its calls take the threads themselves
    n = _chunks.ESTIMATOR_PARALLEL_MIN // 64
    assert plan(n, 64, 8, "auto", threads=2)[1] == 1


def _setup(T=8):
    mdp = envs.ngram(4, 1, T, reward=envs.count_automaton(4, 0, 2), seed=3)
    pi = envs.random_policy(mdp, seed=1)
    return mdp, pi, envs.perturb(pi, kl=0.05, seed=2)


def _force(monkeypatch, threads, budget):
    # tiny thresholds and budget so that a small job runs in several chunks on `threads` threads
    monkeypatch.setattr(_chunks, "SAMPLE_PARALLEL_MIN", 1)
    monkeypatch.setattr(_replicate, "CHUNK_BUDGET", budget)
    monkeypatch.setattr(_replicate, "plan_chunks", lambda n, T, R, backend, _t=None: _PLAN(n, T, R, backend, threads))


def test_replication_map_runs_chunks_on_the_pool_in_order(monkeypatch):
    mdp, pi, mu = _setup()
    seeds = replication_seeds(5, 12)
    _force(monkeypatch, 2, 32 * 8 * BYTES_PER_TOKEN * 3)  # 3 replications of n = 32 per thread-chunk
    names = set()

    def work(lo, batch):
        names.add(threading.current_thread().name)
        return batch.shape, float(np.asarray(batch.batch.log_ratio).sum())

    got = list(_replicate.replication_map(mdp, pi, mu, 32, seeds, "auto", work))
    los = [lo for lo, _, _ in got]
    assert los == sorted(los) and los[0] == 0 and sum(c for _, c, _ in got) == 12  # every replication once, in order
    assert len(got) >= 2 and all(r[0] == (c, 32, 8) for _, c, r in got)
    assert names and all(name.startswith("tokis") for name in names)  # drawn on the pool, not the caller
    # each chunk equals the same replications drawn alone
    from tokis.envs._sample import sample_ratios
    for lo, count, (_, total) in got:
        lr, _, _ = sample_ratios(mdp, mu, pi, 32, seeds[lo:lo + count], "numba")
        assert total == float(lr.sum())


@pytest.mark.parametrize("threads", [2, 3])
def test_monte_carlo_on_a_pool_equals_one_thread(monkeypatch, threads):
    mdp, pi, mu = _setup()
    ests = ["seq", "pdis", "tok", "snis", "trunc_seq", "clip_tok:c=2", "geo", "psis"]
    _force(monkeypatch, 1, 1 << 40)
    one = monte_carlo(mdp, pi, mu, ests, n=64, replications=40, seed=9)
    _force(monkeypatch, threads, 64 * 8 * BYTES_PER_TOKEN * 2 * threads)  # chunks of 2 replications
    pool = monte_carlo(mdp, pi, mu, ests, n=64, replications=40, seed=9)
    pd.testing.assert_frame_equal(one, pool, check_exact=True)


def test_coverage_on_a_pool_equals_one_thread(monkeypatch):
    mdp, pi, mu = _setup()
    specs = parse_estimators(["seq", "snis", "tok"])
    todo = [["normal", "t", "bca", "hoeffding", "bernstein"]] * len(specs)  # tok: lower bounds not applicable
    args = (mdp, pi, mu, specs, todo, 32, 20, 4, 0.9, 50, "auto")
    _force(monkeypatch, 1, 1 << 40)
    one = _compute_point(*args)
    _force(monkeypatch, 2, 32 * 8 * BYTES_PER_TOKEN * 4)
    pool = _compute_point(*args)
    assert pd.DataFrame([r for rows in one for r in rows]).equals(pd.DataFrame([r for rows in pool for r in rows]))
    assert any(not r["applicable"] for rows in one for r in rows)  # a failure reason merged from the chunks


def test_an_error_in_a_chunk_reaches_the_caller(monkeypatch):
    mdp, pi, mu = _setup()
    _force(monkeypatch, 2, 32 * 8 * BYTES_PER_TOKEN)

    def work(lo, batch):
        if lo == 3:
            raise ValueError("chunk 3 failed")
        return lo

    with pytest.raises(ValueError, match="chunk 3 failed"):
        list(_replicate.replication_map(mdp, pi, mu, 32, replication_seeds(1, 6), "auto", work))
