"""CuPy estimator kernels against the numpy kernel table.

Without a GPU the CUDA source runs on the CPU through the emulation harness (the host C++
compiler with warp intrinsics emulated by 32 threads per warp), so indexing, scans, warp
reductions and argument types are all checked here; with a GPU the same comparisons run on
the device (``gpu`` marker). Tolerances: rounding (eps = 2.2e-16) times the summed
magnitudes, with slack for a different order of addition (lanes, warp scans).
"""

import math

import numpy as np
import pytest
from _cuda_emulation import compiler, emulate

from tokis._backends import _cupy_estimators as ck
from tokis.estimators import _weights as ref

EPS = np.finfo(np.float64).eps
SLACK = 256.0
# T = 1, one partial warp, exactly a warp, several chunks of the warp scan with a tail
SHAPES = [(3, 1), (5, 7), (4, 32), (6, 70)]


def _batch(rng, n, T, scale):
    lr = rng.normal(scale=scale, size=(n, T))
    lr[rng.random((n, T)) < 0.05] = -np.inf
    mask = rng.random((n, T)) < 0.85
    mask[0] = False  # an empty row
    lr = np.where(mask, lr, 0.0)
    rew = np.where(mask & (rng.random((n, T)) < 0.5), rng.normal(size=(n, T)), 0.0)
    return lr, mask, rew


def _close(got, want, magnitude, name):
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    assert got.shape == want.shape, name
    inf = ~np.isfinite(want)
    np.testing.assert_array_equal(got[inf], want[inf], err_msg=name)
    tol = SLACK * EPS * np.broadcast_to(np.asarray(magnitude, dtype=float), want.shape)[~inf] + 1e-300
    err = np.abs(got[~inf] - want[~inf])
    assert np.all(err <= tol), (name, float(np.max(err - tol)))


def _scaled_equal(b, h, rb, rh, mag, name):
    """``exp(b) h`` equals ``exp(rb) rh`` (b may differ by rounding when it comes from a scan)."""
    _close(np.exp(np.asarray(b) - rb), np.ones_like(rb), 1.0 + np.abs(rb), name + ".b")
    _close(np.asarray(h) * np.exp(np.asarray(b) - rb), rh, mag, name + ".h")


def check_table(table, rng, to_numpy=np.asarray, wrap=lambda a: a, scales=(0.01, 3.0, 300.0), cs=(0.5, 2.0, math.inf)):
    """Compare every kernel of ``table`` with numpy on random batches (inputs passed through ``wrap``)."""
    for n, T in SHAPES:
        for scale in scales:
            lr, mask, rew = _batch(rng, n, T, scale)
            L = mask.sum(axis=1)
            X, M, R = wrap(lr), wrap(mask), wrap(rew)
            absum = np.where(np.isfinite(lr), np.abs(lr), 0.0).sum(axis=1)
            _close(to_numpy(table.log_weight(X)), ref.log_weight(lr), absum, "log_weight")
            _close(to_numpy(table.geo_log_weight(X, wrap(L))), ref.geo_log_weight(lr, L), absum, "geo")
            cabs = np.where(np.isfinite(lr), np.cumsum(np.where(np.isfinite(lr), np.abs(lr), 0.0), axis=1), 0.0)
            _close(to_numpy(table.prefix_log_weight(X)), ref.prefix_log_weight(lr), cabs, "prefix")
            for c in cs:
                lc = math.log(c)
                _close(to_numpy(table.clipped_log_weight(X, M, lc)), ref.clipped_log_weight(lr, mask, lc),
                       absum + abs(lc) * T if c < math.inf else absum, "clipped")
                assert table.count_above(X, M, lc) == ref.count_above(lr, mask, lc)
                for lo, hi in ((0.0, math.inf), (0.5, 2.0)):
                    for offset in (True, False):
                        kw = dict(log_c=lc, log_lo=math.log(lo) if lo > 0 else -math.inf, log_hi=math.log(hi),
                                  offset=offset)
                        b, h, k = (to_numpy(v) for v in table.token_linear(X, M, **kw))
                        rb, rh, rk = ref.token_linear(lr, mask, **kw)
                        np.testing.assert_array_equal(b, rb)
                        np.testing.assert_array_equal(k, rk)
                        band = mask & (lr >= kw["log_lo"]) & (lr <= kw["log_hi"])
                        mag = np.exp(np.where(band, np.minimum(lr, lc) - rb[:, None], -np.inf)).sum(axis=1)
                        _close(h, rh, mag + np.abs(1.0 - rk) * np.exp(-rb), "token_linear")
            b, h = (to_numpy(v) for v in table.per_decision(X, R))
            rb, rh = ref.per_decision(lr, rew)
            clw = np.cumsum(lr, axis=1)
            act = rew != 0
            mag = np.where(act, np.exp(np.where(act, clw - rb[:, None], -np.inf)) * np.abs(rew), 0.0).sum(axis=1)
            _scaled_equal(b, h, rb, rh, mag * (1.0 + cabs.max(axis=1)), "per_decision")
            num, den, m = (to_numpy(v) for v in table.per_decision_columns(X, R))
            rnum, rden, rm = ref.per_decision_columns(lr, rew)
            # the column shift may differ by rounding; compare the shifted arrays on a common scale
            shift = np.exp(m - rm)
            _close(den * shift, rden, rden * (1.0 + cabs.max()), "den")
            _close(num * shift, rnum, np.abs(rnum) * (1.0 + cabs.max()), "num")


def test_kernel_table_has_every_numpy_kernel():
    assert set(ck.CUPY_KERNELS) == set(ref.NUMPY_KERNELS)


@pytest.mark.skipif(compiler() is None, reason="no host C++20 compiler to emulate the CUDA source")
def test_cuda_source_emulated_on_cpu(rng, monkeypatch):
    def launch(name, rows, args):
        emulate(ck.ESTIMATOR_SOURCE, name, (rows,), (32,), args)

    engine = ck.Engine(xp=np, launch=launch, to_device=np.ascontiguousarray, to_host=lambda a: a)
    monkeypatch.setattr(ck, "_ENGINE", [engine])
    check_table(ck, rng, scales=(0.01, 300.0), cs=(0.5, math.inf))  # each emulated warp is 32 OS threads


def test_without_cupy_the_engine_raises(monkeypatch):
    try:
        import cupy  # noqa: F401

        pytest.skip("CuPy is installed")
    except ImportError:
        pass
    monkeypatch.setattr(ck, "_ENGINE", [])
    with pytest.raises(ValueError, match="backend='cupy' needs CuPy"):
        ck.log_weight(np.zeros((2, 3)))


@pytest.mark.gpu
def test_cupy_kernels_on_device_arrays(rng):
    cp = pytest.importorskip("cupy")
    check_table(ck, rng, to_numpy=lambda a: cp.asnumpy(a) if isinstance(a, cp.ndarray) else np.asarray(a),
                wrap=cp.asarray)
    out = ck.log_weight(cp.zeros((3, 4)))
    assert isinstance(out, cp.ndarray)


@pytest.mark.gpu
def test_cupy_kernels_on_host_arrays_return_host_arrays(rng):
    pytest.importorskip("cupy")
    check_table(ck, rng)
    assert isinstance(ck.log_weight(np.zeros((3, 4))), np.ndarray)


@pytest.mark.gpu
def test_cupy_kernels_at_scale(rng):
    cp = pytest.importorskip("cupy")
    lr = rng.normal(scale=0.5, size=(5000, 777))
    mask = np.ones(lr.shape, dtype=bool)
    got = cp.asnumpy(ck.log_weight(cp.asarray(lr)))
    _close(got, ref.log_weight(lr), np.abs(lr).sum(axis=1), "log_weight")
    b, h, k = (cp.asnumpy(v) for v in ck.token_linear(cp.asarray(lr), cp.asarray(mask)))
    rb, rh, rk = ref.token_linear(lr, mask)
    np.testing.assert_array_equal(b, rb)
    _close(h, rh, rh, "token_linear")
