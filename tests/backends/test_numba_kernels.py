"""Numba estimator kernels against the numpy kernel table, on hypothesis-generated batches.

Tolerances come from rounding: the kernels add in another order (vector lanes) and use an
exp within one ulp of numpy's, so each result may differ from numpy's by a few units of
float64 rounding (eps = 2.2e-16) times the sum of the magnitudes that were added. Quantities
found by comparisons only (maxima, counts) must agree exactly.
"""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tokis._backends import _numba_estimators as nb
from tokis._backends._numba_math import exp as fast_exp
from tokis.estimators import _weights as ref

EPS = np.finfo(np.float64).eps
SLACK = 64.0  # units of rounding allowed per unit of summed magnitude (sums of up to ~50 terms)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def prepared(draw, max_n=40, max_T=24):
    """Validated kernel inputs: log-ratios of a drawn magnitude (with -inf), mask, rewards."""
    n = draw(st.integers(1, max_n))
    T = draw(st.integers(1, max_T))
    scale = draw(st.sampled_from([1e-3, 1.0, 30.0, 400.0]))
    elements = st.one_of(st.floats(-scale, scale, allow_nan=False, allow_infinity=False), st.just(-math.inf))
    lr = draw(arrays(np.float64, (n, T), elements=elements))
    mask = draw(arrays(np.bool_, (n, T)))
    rew = draw(arrays(np.float64, (n, T), elements=st.one_of(st.just(0.0), st.floats(-5.0, 5.0))))
    lr = np.where(mask, lr, 0.0)
    rew = np.where(mask, rew, 0.0)
    return lr, mask, rew


def _close(got, want, magnitude, name):
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    assert got.shape == want.shape, name
    inf = ~np.isfinite(want)
    np.testing.assert_array_equal(got[inf], want[inf], err_msg=name)
    assert np.all(np.isfinite(got[~inf])), name
    tol = SLACK * EPS * np.broadcast_to(magnitude, want.shape)[~inf]
    assert np.all(np.abs(got[~inf] - want[~inf]) <= tol), (name, np.max(np.abs(got[~inf] - want[~inf]) - tol))


def test_fast_exp_within_an_ulp_of_numpy():
    x = np.concatenate(
        [np.linspace(-745.5, 709.78, 200001), np.random.default_rng(0).normal(scale=3.0, size=100000), [0.0, -0.0]]
    )
    got = np.array([fast_exp(v) for v in x[:2000]])  # the scalar entry point as compiled
    want = np.exp(x[:2000])
    np.testing.assert_allclose(got, want, rtol=2 * EPS, atol=5e-324)
    vec = np.empty_like(x)
    _exp_into(x, vec)
    normal = np.exp(x) >= np.finfo(np.float64).tiny
    np.testing.assert_allclose(vec[normal], np.exp(x[normal]), rtol=1.1 * EPS, atol=0)
    assert np.all(np.abs(vec[~normal] - np.exp(x[~normal])) <= 5e-324)
    assert fast_exp(-math.inf) == 0.0 and fast_exp(710.0) == math.inf and fast_exp(0.0) == 1.0


def _exp_into(x, out):
    import numba

    @numba.njit
    def run(x, out):
        for i in range(x.shape[0]):
            out[i] = fast_exp(x[i])

    run(x, out)


@SETTINGS
@given(batch=prepared())
def test_log_weights(batch):
    lr, mask, _ = batch
    mag = np.where(np.isfinite(lr), np.abs(lr), 0.0).sum(axis=1)
    _close(nb.log_weight(lr), ref.log_weight(lr), mag, "log_weight")
    lengths = mask.sum(axis=1)
    _close(nb.geo_log_weight(lr, lengths), ref.geo_log_weight(lr, lengths), mag / np.maximum(lengths, 1), "geo")
    np.testing.assert_array_equal(nb.prefix_log_weight(lr), ref.prefix_log_weight(lr))  # sequential: exact


@SETTINGS
@given(batch=prepared(), c=st.sampled_from([0.3, 1.0, 2.0, math.inf]))
def test_clipped_log_weight_and_count(batch, c):
    lr, mask, _ = batch
    log_c = math.log(c)
    mag = np.where(mask & np.isfinite(lr), np.abs(np.minimum(lr, log_c)), 0.0).sum(axis=1)
    _close(nb.clipped_log_weight(lr, mask, log_c), ref.clipped_log_weight(lr, mask, log_c), mag, "clipped")
    assert nb.count_above(lr, mask, log_c) == ref.count_above(lr, mask, log_c)


@SETTINGS
@given(
    batch=prepared(),
    c=st.sampled_from([0.5, 2.0, math.inf]),
    band=st.sampled_from([(0.0, math.inf), (0.5, 2.0), (1.0, 1.0), (0.0, 0.9)]),
    offset=st.booleans(),
)
def test_token_linear(batch, c, band, offset):
    lr, mask, _ = batch
    kw = dict(log_c=math.log(c), log_lo=math.log(band[0]) if band[0] > 0 else -math.inf, log_hi=math.log(band[1]),
              offset=offset)
    b, h, k = nb.token_linear(lr, mask, **kw)
    rb, rh, rk = ref.token_linear(lr, mask, **kw)
    np.testing.assert_array_equal(b, rb)
    np.testing.assert_array_equal(k, rk)
    inband = mask & (lr >= kw["log_lo"]) & (lr <= kw["log_hi"])
    terms = np.where(inband, np.exp(np.minimum(lr, kw["log_c"]) - rb[:, None]), 0.0).sum(axis=1)
    mag = terms + (np.abs(1.0 - rk) * np.exp(-rb) if offset else 0.0)
    _close(h, rh, mag, "h")


@SETTINGS
@given(batch=prepared())
def test_per_decision(batch):
    lr, _, rew = batch
    b, h = nb.per_decision(lr, rew)
    rb, rh = ref.per_decision(lr, rew)
    np.testing.assert_array_equal(b, rb)
    clw = np.cumsum(lr, axis=1)
    active = rew != 0
    mag = np.where(active, np.exp(np.where(active, clw - rb[:, None], -np.inf)) * np.abs(rew), 0.0).sum(axis=1)
    _close(h, rh, mag, "h")


@SETTINGS
@given(batch=prepared())
def test_per_decision_columns(batch):
    lr, _, rew = batch
    num, den, m = nb.per_decision_columns(lr, rew)
    rnum, rden, rm = ref.per_decision_columns(lr, rew)
    np.testing.assert_array_equal(m, rm)
    _close(den, rden, rden, "den")
    _close(num, rnum, np.abs(rnum), "num")


def test_kernel_table_has_every_numpy_kernel():
    assert set(nb.NUMBA_KERNELS) == set(ref.NUMPY_KERNELS)


def _all_kernels(lr, mask, rew):
    return (
        nb.log_weight(lr),
        nb.prefix_log_weight(lr),
        nb.clipped_log_weight(lr, mask, 0.3),
        nb.count_above(lr, mask, 0.3),
        *nb.token_linear(lr, mask, log_c=0.5, log_lo=-1.0, log_hi=2.0),
        *nb.per_decision(lr, rew),
        *nb.per_decision_columns(lr, rew),
    )


@pytest.mark.parametrize("threads", [1, 2])
def test_parallel_drivers_equal_the_serial_kernels(rng, monkeypatch, threads):
    import numba

    n, T = 203, 37
    lr = np.where(rng.random((n, T)) < 0.95, rng.normal(scale=2.0, size=(n, T)), -np.inf)
    mask = rng.random((n, T)) < 0.9
    lr = np.where(mask, lr, 0.0)
    rew = np.where(mask, rng.normal(size=(n, T)), 0.0)
    serial = _all_kernels(lr, mask, rew)  # below the threshold: the calling thread only
    monkeypatch.setattr(nb, "PARALLEL_MIN_ELEMENTS", 0)
    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        chunked = _all_kernels(lr, mask, rew)
    finally:
        numba.set_num_threads(before)
    # the same rows, the same per-row arithmetic: identical bits whatever the chunking
    for a, b in zip(serial, chunked):
        np.testing.assert_array_equal(a, b)
