"""What ``backend="auto"`` runs, checked without timing anything.

The timings behind the rule are in ``benchmarks/run.py`` (section "auto") and
``benchmarks/RESULTS.md``; these tests pin the rule itself -- numba for numpy input at every
size, one thread below the documented threshold, every thread above -- and that a call really
runs the way the rule says (the kernels see one thread, so no parallel region is entered).
The shapes are the ones where ``auto`` used to lose to numpy (threads woken for 2-4 token
rows, 20000 x 256).
"""

import numba
import numpy as np
import pytest

import tokis.estimators as est
from tokis import envs
from tokis._backends import _chunks, _numba_forms, _numba_prepare, _numba_ratio, _numba_reduce, _numba_sample
from tokis.estimators._plan import NUMPY_MAX_ELEMENTS, plan

SMALL = [(32768, 2), (16384, 4), (20000, 256), (4096, 256), (50, 20), (1, 1)]


@pytest.mark.parametrize("n, T", SMALL)
def test_auto_runs_numba_on_one_thread_below_the_threshold(n, T):
    assert n * T < _chunks.ESTIMATOR_PARALLEL_MIN
    assert plan("auto", "numpy", n * T) == ("numba", 1)
    assert plan("auto", "torch", n * T) == ("numba", 1)
    assert plan("numba", "numpy", n * T) == ("numba", 1)  # an explicit numba follows the same thread rule


def test_auto_uses_every_thread_above_the_threshold():
    big = _chunks.ESTIMATOR_PARALLEL_MIN
    assert plan("auto", "numpy", big) == ("numba", numba.get_num_threads())
    assert plan("auto", "numpy", big - 1) == ("numba", 1)
    assert _chunks.ESTIMATOR_PARALLEL_MIN == 1 << 24  # the documented value (tokis._backends._chunks)
    assert NUMPY_MAX_ELEMENTS == 0  # numpy never won in the measurements: auto never picks it for numpy input


def test_other_backends_and_device_input():
    assert plan("auto", "cupy", 10) == ("cupy", 1)
    assert plan("numpy", "numpy", 1 << 30) == ("numpy", 1)
    assert plan("cupy", "numpy", 10) == ("cupy", 1)


def _spy_threads(monkeypatch):
    """Record the threads every estimator pass is given (kernels, validation, reductions)."""
    seen = []
    real = _chunks.chunks_for

    def spy(rows, threads, per_thread=4):
        seen.append(threads)
        return real(rows, threads, per_thread)

    for mod in (_numba_forms, _numba_prepare, _chunks):
        monkeypatch.setattr(mod, "chunks_for", spy, raising=False)
    real_mean, real_ratio = _numba_reduce.mean_batches, _numba_ratio.ratio_batches

    def mean(*a, threads=1, **k):
        seen.append(threads)
        return real_mean(*a, threads=threads, **k)

    def ratio(lw, g, R, threads=1):
        seen.append(threads)
        return real_ratio(lw, g, R, threads)

    monkeypatch.setattr(_numba_reduce, "mean_batches", mean)
    monkeypatch.setattr(_numba_ratio, "ratio_batches", ratio)
    return seen


@pytest.mark.parametrize("name", ["seq", "tok", "snis", "clip_tok"])
@pytest.mark.parametrize("n, T", [(32768, 2), (16384, 4)])
def test_small_calls_never_enter_a_parallel_region(monkeypatch, rng, name, n, T):
    seen = _spy_threads(monkeypatch)
    lr = rng.normal(scale=0.1, size=(n, T))
    e = est.REGISTRY[name](lr, rng.uniform(size=n), mask=np.ones((n, T), dtype=bool))
    assert e.diagnostics["backend"] == "numba"
    assert seen and set(seen) == {1}, seen


def test_replications_count_towards_the_threshold(monkeypatch, rng):
    # R batches are one call: the threshold applies to R * n * T
    monkeypatch.setattr(_chunks, "ESTIMATOR_PARALLEL_MIN", 3 * 100 * 8)
    seen = _spy_threads(monkeypatch)
    lr = rng.normal(scale=0.1, size=(3, 100, 8))
    est.seq(lr, rng.uniform(size=(3, 100)))
    assert set(seen) == {numba.get_num_threads()}
    seen.clear()
    est.seq(lr[:2], rng.uniform(size=(2, 100)))
    assert set(seen) == {1}


def test_sampling_threads_follow_the_documented_threshold():
    assert _chunks.SAMPLE_PARALLEL_MIN == 1 << 20
    assert _numba_sample.sample_threads(4096, 64) == 1
    assert _numba_sample.sample_threads(16384, 64) == numba.get_num_threads()  # the benchmark's first case
    # auto sampling is the compiled sampler (faster than numpy at every size measured)
    mdp = envs.ngram(3, 1, 4, seed=0)
    mu = envs.random_policy(mdp, seed=1)
    a, b = envs.sample(mdp, mu, 50, seed=2), envs.sample(mdp, mu, 50, seed=2, backend="numpy")
    np.testing.assert_array_equal(a.tokens, b.tokens)
