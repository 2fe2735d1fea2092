"""Array libraries at the boundary, dtypes, and the pinned public API."""

import math

import numpy as np
import pytest

import tokis.estimators as est
from tokis.estimators import REGISTRY

SPECS = list(REGISTRY.values())
IDS = [s.name for s in SPECS]


def data(rng, n=30, T=4):
    lr = rng.normal(scale=0.3, size=(n, T))
    mask = np.arange(T)[None, :] < rng.integers(1, T + 1, size=n)[:, None]
    return lr, mask, rng.normal(size=(n, T))


def same(a, b):
    return (a.value == pytest.approx(b.value, rel=1e-12, abs=1e-15)) and (
        a.stderr == pytest.approx(b.stderr, rel=1e-12, abs=1e-15)
    )


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_numpy_in_numpy_out(spec, rng):
    lr, mask, rew = data(rng)
    e = spec(lr, rew, mask=mask)
    assert type(e.value) is float and type(e.stderr) is float and type(e.ess) is float and type(e.n) is int
    # mean estimators return per-sample statistics, ratio estimators a numerator and a denominator
    present = (e.numerator, e.denominator) if spec.self_normalized else (e.samples,)
    absent = (e.samples,) if spec.self_normalized else (e.numerator, e.denominator)
    assert all(type(arr) is np.ndarray for arr in present)
    assert all(arr is None for arr in absent)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_float32_and_lists_are_accepted(spec, rng):
    lr, mask, rew = data(rng)
    lr32, rew32 = lr.astype(np.float32), rew.astype(np.float32)
    ref = spec(lr32.astype(np.float64), rew32.astype(np.float64), mask=mask)
    assert same(spec(lr32, rew32, mask=mask), ref)
    assert same(spec(lr32.tolist(), rew32.tolist(), mask=mask.tolist()), ref)
    assert same(spec(lr32, rew32, mask=mask, backend="numpy"), ref)


def test_torch_tensors_are_accepted(rng):
    torch = pytest.importorskip("torch")
    lr, mask, rew = data(rng)
    for spec in SPECS:
        ref = spec(lr, rew, mask=mask)
        e = spec(torch.tensor(lr), torch.tensor(rew), mask=torch.tensor(mask))
        assert same(e, ref)
        per_sample = e.numerator if spec.self_normalized else e.samples
        assert type(per_sample) is np.ndarray, spec.name  # torch CPU input: numpy arrays back
    d = est.diagnose(torch.tensor(lr), torch.tensor(mask))
    assert d.ess == pytest.approx(est.diagnose(lr, mask).ess)


@pytest.mark.gpu
def test_cupy_in_cupy_out(rng):
    cp = pytest.importorskip("cupy")
    lr, mask, rew = data(rng)
    for spec in SPECS:
        ref = spec(lr, rew, mask=mask)
        e = spec(cp.asarray(lr), cp.asarray(rew), mask=cp.asarray(mask))
        assert same(e, ref)
        for arr in (e.samples, e.numerator, e.denominator):
            assert arr is None or isinstance(arr, cp.ndarray)
    assert est.diagnose(cp.asarray(lr), cp.asarray(mask)).ess == pytest.approx(est.diagnose(lr, mask).ess)
    with pytest.raises(TypeError, match="must come from one array library"):
        est.seq(cp.asarray(lr), rew)


def test_results_do_not_alias_inputs(rng):
    lr, mask, rew = data(rng)
    lr0, rew0 = lr.copy(), rew.copy()
    for spec in SPECS:
        spec(lr, rew, mask=mask)
    assert np.array_equal(lr, lr0) and np.array_equal(rew, rew0)


def test_estimate_repr_and_ci_on_infinite_value():
    e = est.seq(np.full((2, 2), 500.0), np.array([1.0, 1.0]))
    assert e.value == math.inf and "seq" in repr(e)
    assert e.log_scale == pytest.approx(1000.0)
