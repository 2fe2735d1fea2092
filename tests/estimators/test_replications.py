"""Replications as an array axis: a batched call equals the call on every slice, bit for bit.

``log_ratio`` (..., n, T), ``rewards`` (..., n) or (..., n, T), ``mask`` (..., n, T): every
registered estimator (and a user's ``define``), ``diagnose`` and ``Estimate.ci`` treat the
leading dimensions as independent batches. These tests loop over the registry and both CPU
backends and compare every field with ``==`` (not approx): the batched numbers must be the
unbatched ones, whatever the thread count.
"""

import math

import numpy as np
import pytest
from _estimates import ARRAYS, assert_equal, assert_same_estimate, batch_inputs

import tokis.estimators as est
from tokis._backends import _chunks
from tokis.estimators import REGISTRY, TokenSum, define

SPECS = list(REGISTRY.values())
IDS = [s.name for s in SPECS]


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "per-step"])
@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_batched_call_equals_every_slice(rng, spec, backend, terminal):
    lr, rew, mask = batch_inputs(rng, (2, 3), terminal=terminal)
    e = spec(lr, rew, mask=mask, backend=backend, **spec.params)
    assert e.batch_shape == (2, 3) and e.n == 23
    assert e.value.shape == e.stderr.shape == e.ess.shape == np.shape(e.log_scale) == (2, 3)
    assert not e.value.flags.writeable
    for field in ARRAYS:
        x = getattr(e, field)
        if x is not None:
            assert x.shape[:3] == (2, 3, 23), field
    for idx in np.ndindex(2, 3):
        one = spec(lr[idx], rew[idx], mask=mask[idx], backend=backend, **spec.params)
        assert one.batch_shape == () and type(one.value) is float
        assert_same_estimate(e[idx], one, f"{spec.name}{idx}")


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_threads_do_not_change_a_batch(rng, spec, monkeypatch):
    # the batched call on every thread (parallel validation, kernels, reductions), each slice alone
    # on the calling thread: the same bits
    lr, rew, mask = batch_inputs(rng, (5,), n=40, T=9, terminal=False)
    monkeypatch.setattr(_chunks, "ESTIMATOR_PARALLEL_MIN", 0)
    batched = spec(lr, rew, mask=mask, backend="numba", **spec.params)
    monkeypatch.setattr(_chunks, "ESTIMATOR_PARALLEL_MIN", 1 << 62)
    for r in range(5):
        assert_same_estimate(batched[r], spec(lr[r], rew[r], mask=mask[r], backend="numba", **spec.params), f"{spec.name}[{r}]")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_user_definition_batches_too(rng, backend):
    clip2 = define("clip2_batched", TokenSum(lambda l, eps: np.clip(np.exp(l), 1 - eps, 1 + eps) - 1.0),
                   params={"eps": 0.2}, token_flags={"far": lambda l, eps: np.abs(l) > eps})
    lr, rew, mask = batch_inputs(rng, (4,))
    e = clip2(lr, rew, mask=mask, backend=backend, eps=0.3)
    assert e.diagnostics["far"].shape == (4,) and e.diagnostics["eps"] == 0.3
    for r in range(4):
        assert_same_estimate(e[r], clip2(lr[r], rew[r], mask=mask[r], backend=backend, eps=0.3), f"clip2[{r}]")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("name", ["seq", "snis", "tok"])
def test_long_batches_reduce_like_alone(rng, name, backend):
    # n above numpy's 8192-element blocks: row reductions of an (R, n) array equal the 1-d ones
    lr = rng.normal(scale=0.3, size=(2, 10_000, 3))
    g = rng.uniform(size=(2, 10_000))
    f = REGISTRY[name]
    e = f(lr, g, backend=backend)
    for r in range(2):
        assert_same_estimate(e[r], f(lr[r], g[r], backend=backend), f"{name}[{r}]")


def test_edge_batches(rng):
    # n = 1 (no standard error), a batch whose every weight is 0 (snis undefined), and one normal batch
    lr = np.array([[[0.3, -0.2]], [[-np.inf, 0.1]], [[0.1, 0.0]]])
    g = np.array([[1.0], [2.0], [3.0]])
    for backend in ("numpy", "numba"):
        for name in ("seq", "snis", "tok", "psis", "trunc_seq"):
            e = REGISTRY[name](lr, g, backend=backend)
            for r in range(3):
                assert_same_estimate(e[r], REGISTRY[name](lr[r], g[r], backend=backend), f"{name}[{r}] {backend}")
        assert math.isnan(est.snis(lr, g, backend=backend).value[1])
        assert np.isnan(est.seq(lr, g, backend=backend).stderr).all()


def test_an_estimate_indexes_like_its_batch_axes(rng):
    lr, rew, mask = batch_inputs(rng, (2, 3))
    e = est.wpdis(lr, np.where(mask, 1.0, 0.0), mask=mask)
    part = e[1]
    assert part.batch_shape == (3,) and part.numerator.shape == (3, 23, 7)
    assert part.diagnostics["column_log_scale"].shape == (3, 7)
    assert_same_estimate(part[2], e[1, 2], "wpdis[1][2]")
    assert e[:, 0].batch_shape == (2,)
    with pytest.raises(IndexError):
        e[2]
    with pytest.raises(TypeError, match="one batch"):
        e[0, 0][0]
    assert "batch_shape=(2, 3)" in repr(e)


@pytest.mark.parametrize("with_mask", [True, False])
def test_diagnose_per_batch(rng, with_mask):
    lr, _, mask = batch_inputs(rng, (3, 2), n=30)
    if not with_mask:
        lr, mask = np.where(np.isnan(lr), 0.2, lr), None
    d = est.diagnose(lr, mask, c=(1.5, 3.0))
    assert d.n == 30 and d.ess.shape == (3, 2) and d.clip_c == (1.5, 3.0)
    for idx in np.ndindex(3, 2):
        one = est.diagnose(lr[idx], None if mask is None else mask[idx], c=(1.5, 3.0)).as_dict()
        for key, y in one.items():
            x = getattr(d, key)
            if key in ("n", "clip_c", "lo", "hi"):
                assert x == y, key
            elif isinstance(y, tuple):
                for xj, yj in zip(x, y):
                    assert_equal(xj[idx].item(), yj, key)
            else:
                assert_equal(x[idx].item(), y, key)


@pytest.mark.parametrize("method, kwargs", [("normal", {}), ("t", {}), ("bca", {"rng": 7, "n_resamples": 200}),
                                            ("bernstein", {}), ("hoeffding", {"upper": 8.0})])
def test_intervals_of_a_batched_estimate_are_each_batch_own(rng, method, kwargs):
    lr = rng.normal(scale=0.2, size=(2, 3, 40, 4))
    g = rng.uniform(size=(2, 3, 40))
    e = est.clip_prod(lr, g, c=2.0)
    lo, hi = e.ci(0.9, method=method, **kwargs)
    assert lo.shape == hi.shape == (2, 3)
    for idx in np.ndindex(2, 3):
        want = est.clip_prod(lr[idx], g[idx], c=2.0).ci(0.9, method=method, **kwargs)
        assert_equal(lo[idx].item(), want[0], method)
        assert_equal(hi[idx].item(), want[1], method)


def test_batched_ratio_estimators_bootstrap_per_batch(rng):
    lr = rng.normal(scale=0.3, size=(3, 30, 4))
    g = rng.uniform(size=(3, 30))
    e = est.snis(lr, g)
    lo, hi = e.ci(method="bca", rng=3, n_resamples=150)
    for r in range(3):
        assert (lo[r], hi[r]) == e[r].ci(method="bca", rng=3, n_resamples=150)


@pytest.mark.parametrize(
    "lr_shape, rew_shape, mask_shape, exc, match",
    [
        ((2, 3, 4), (3,), None, ValueError, r"log_ratio must be 2-dimensional to go with rewards of shape \(3,\)"),
        ((2, 2, 3, 4), (3, 4), None, ValueError, "log_ratio must be 2 or 3-dimensional"),
        ((2, 3, 4), (2, 4), None, ValueError, r"rewards must have shape \(2, 3\) or \(2, 3, 4\), got \(2, 4\)"),
        ((2, 3, 4), (2, 3, 4, 1), None, ValueError, "rewards must be 2 or 3-dimensional"),
        ((2, 3, 4), (2, 3), (3, 4), ValueError, r"mask must have the shape of log_ratio \(2, 3, 4\)"),
        ((0, 3, 4), (0, 3), None, ValueError, "at least one batch along each leading dimension"),
        ((2, 0, 4), (2, 0), None, ValueError, r"at least one row \(n >= 1\)"),
    ],
)
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_batched_shape_errors_name_the_argument(lr_shape, rew_shape, mask_shape, exc, match, backend):
    mask = None if mask_shape is None else np.ones(mask_shape, dtype=bool)
    with pytest.raises(exc, match=match):
        est.seq(np.zeros(lr_shape), np.ones(rew_shape), mask=mask, backend=backend)


def test_nan_in_any_batch_is_refused(rng):
    lr, rew, mask = batch_inputs(rng, (3,))
    lr = np.where(mask, lr, 0.0)
    lr[2, 5, 1], mask[2, 5, 1] = np.nan, True
    for backend in ("numpy", "numba"):
        with pytest.raises(ValueError, match="log_ratio contains NaN at an unmasked position"):
            est.tok(lr, rew, mask=mask, backend=backend)


@pytest.mark.parametrize("name", ["seq", "tok_sum", "mask_seq", "snis"])
def test_subnormal_returns_stay_finite(name):
    # the per-batch max-shift divides by a subnormal maximum (its reciprocal would overflow)
    lr = np.zeros((2, 2, 1))
    g = np.full((2, 2), 2.22507386e-311)
    f = REGISTRY[name]
    a, b = f(lr, g, backend="numba"), f(lr, g, backend="numpy")
    assert np.all(np.isfinite(a.value)) and np.all(np.isfinite(a.stderr))
    np.testing.assert_allclose(a.value, b.value, rtol=1e-12)
