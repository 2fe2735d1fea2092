"""Every estimator through its public function: numba (and cupy) against the numpy backend.

The backends differ only in the (n, T) kernels, which agree to rounding, so every field of
the Estimate agrees to ~1e-12 relative; absolute slack comes from the size of the terms
summed (largest weight times largest return times T).
"""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tokis import estimators as est
from tokis.estimators import REGISTRY

SPECS = list(REGISTRY.values())
IDS = [s.name for s in SPECS]
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RTOL = 1e-11


@st.composite
def batches(draw, max_n=12, max_T=10):
    n = draw(st.integers(1, max_n))
    T = draw(st.integers(1, max_T))
    scale = draw(st.sampled_from([1e-3, 0.5, 5.0, 60.0]))
    lr = draw(arrays(np.float64, (n, T), elements=st.one_of(st.floats(-scale, scale), st.just(-math.inf))))
    mask = draw(arrays(np.bool_, (n, T)))
    terminal = draw(st.booleans())
    rew = draw(arrays(np.float64, (n,) if terminal else (n, T), elements=st.floats(-5.0, 5.0)))
    return lr, rew, mask


def _scale(lr, rew, mask):
    """Size of the largest term: max weight (capped) * max |reward| * T."""
    lw = np.where(mask, lr, 0.0).sum(axis=1)
    top = float(np.max(lw[np.isfinite(lw)], initial=0.0))
    return math.exp(min(max(top, 0.0), 700.0)) * max(1.0, float(np.max(np.abs(rew)))) * lr.shape[1]


def _same(a, b, big, name):
    for field in ("value", "stderr", "ess"):
        x, y = getattr(a, field), getattr(b, field)
        if math.isnan(y) or math.isinf(y):
            assert (math.isnan(x) and math.isnan(y)) or x == y, (name, field, x, y)
        else:
            tol = big * a.n if field == "stderr" else (big if field == "value" else 1.0)
            assert x == pytest.approx(y, rel=RTOL, abs=1e-12 * tol), (name, field, x, y)
    assert a.n == b.n and a.estimator == b.estimator
    for field in ("samples", "numerator", "denominator"):
        x, y = getattr(a, field), getattr(b, field)
        assert (x is None) == (y is None), (name, field)
        if y is not None:
            # per-sample arrays are scaled by exp(-log_scale); compare on the numpy scale
            x = np.asarray(x) * math.exp(a.log_scale - b.log_scale) if field == "samples" else np.asarray(x)
            if field != "samples" and a.estimator != "wpdis":
                x = x * math.exp(a.log_scale - b.log_scale)
            np.testing.assert_allclose(x, np.asarray(y), rtol=1e-10, atol=1e-12 * max(1.0, np.max(np.abs(y))),
                                       err_msg=f"{name}.{field}")
    assert a.diagnostics.keys() == b.diagnostics.keys(), name
    for key, y in b.diagnostics.items():
        x = a.diagnostics[key]
        if key == "backend":
            continue
        if isinstance(y, float):
            assert x == pytest.approx(y, rel=1e-10, abs=1e-12) or (math.isnan(x) and math.isnan(y)), (name, key)
        elif isinstance(y, np.ndarray):  # wpdis: per-column log scales and per-step ratios
            np.testing.assert_allclose(np.asarray(x), y, rtol=RTOL, atol=1e-12 * big, err_msg=f"{name}.{key}")
        else:  # counts and flags (psis: tail_length, reliable, self_normalized)
            assert x == y, (name, key, x, y)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@SETTINGS
@given(batch=batches())
def test_numba_equals_numpy(spec, batch):
    lr, rew, mask = batch
    params = dict(spec.params)
    a = spec(lr, rew, mask=mask, backend="numba", **params)
    b = spec(lr, rew, mask=mask, backend="numpy", **params)
    assert a.diagnostics["backend"] == "numba" and b.diagnostics["backend"] == "numpy"
    _same(a, b, _scale(lr, rew, mask), spec.name)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_auto_is_numba_and_float32_is_accepted(spec, rng):
    lr = rng.normal(scale=0.3, size=(50, 20)).astype(np.float32)
    g = rng.uniform(size=50).astype(np.float32)
    mask = rng.random((50, 20)) < 0.9
    a = spec(lr, g, mask=mask)
    assert a.diagnostics["backend"] == "numba"
    b = spec(lr.astype(np.float64), g.astype(np.float64), mask=mask, backend="numpy")
    _same(a, b, _scale(lr.astype(np.float64), g, mask), spec.name)


@pytest.mark.parametrize("name", ["seq", "tok", "clip_tok", "pdis", "wpdis", "mask_tok"])
def test_numba_at_parallel_sizes(name, rng):
    # large enough for the parallel drivers (n * T >= PARALLEL_MIN_ELEMENTS)
    n, T = 600, 130
    lengths = rng.integers(1, T + 1, size=n)
    mask = np.arange(T)[None, :] < lengths[:, None]
    lr = np.where(mask, rng.normal(scale=0.05, size=(n, T)), 0.0)
    rew = np.where(mask, rng.normal(size=(n, T)), 0.0)
    f = getattr(est, name)
    _same(f(lr, rew, mask=mask, backend="numba"), f(lr, rew, mask=mask, backend="numpy"), _scale(lr, rew, mask), name)


def test_long_horizon_stays_finite():
    # T = 10^4, sd 1 per token: weights far outside float64, answers still finite and equal
    rng = np.random.default_rng(5)
    lr = rng.normal(size=(40, 10_000))
    g = rng.uniform(size=40)
    for name in ("seq", "snis", "clip_prod", "tok", "geo"):
        f = getattr(est, name)
        a, b = f(lr, g, backend="numba"), f(lr, g, backend="numpy")
        assert math.isfinite(a.value) or math.isinf(b.value)
        assert a.value == pytest.approx(b.value, rel=1e-9), name


@pytest.mark.gpu
@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_cupy_equals_numpy_on_device_input(spec, rng):
    cp = pytest.importorskip("cupy")
    n, T = 300, 70
    lr = rng.normal(scale=0.4, size=(n, T))
    mask = rng.random((n, T)) < 0.9
    rew = rng.normal(size=(n, T))
    a = spec(cp.asarray(lr), cp.asarray(rew), mask=cp.asarray(mask), backend="cupy", **spec.params)
    b = spec(lr, rew, mask=mask, backend="numpy", **spec.params)
    for field in ("samples", "numerator", "denominator"):
        x = getattr(a, field)
        assert x is None or isinstance(x, cp.ndarray)
    host = type(a)(**{**{f: getattr(a, f) for f in ("value", "stderr", "n", "ess", "log_scale", "estimator")},
                      "diagnostics": {k: cp.asnumpy(v) if isinstance(v, cp.ndarray) else v
                                      for k, v in a.diagnostics.items()},
                      **{f: (None if getattr(a, f) is None else cp.asnumpy(getattr(a, f)))
                         for f in ("samples", "numerator", "denominator")}})
    _same(host, b, _scale(lr, rew, mask), spec.name)
