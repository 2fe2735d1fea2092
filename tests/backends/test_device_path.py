"""cupy input stays on the device: validation, forms and reductions, with CuPy simulated on the CPU.

``_fake_cupy`` stands in for CuPy (numpy memory posing as device arrays, as strict as CuPy
about mixing host arrays in and counting every device-to-host copy), so the whole cupy-input
path -- library detection, ``"auto"`` resolution, validation in the array namespace, every
declared form evaluated with its token map rebound to the array's namespace, the reductions
and the results -- runs here without a GPU. The same comparisons on a real GPU are the
``gpu``-marked tests of ``test_estimator_backends.py`` and ``tests/estimators/test_namespace.py``.
"""

import math
import sys

import numpy as np
import pytest
from _fake_cupy import DeviceArray, FakeCupy

import tokis.estimators as est
from tokis._core._batch import prepare, prepare_log_ratio
from tokis.estimators import REGISTRY
from tokis.estimators._evaluate import resolve_backend

SPECS = list(REGISTRY.values())
IDS = [s.name for s in SPECS]
ARRAY_FIELDS = ("samples", "numerator", "denominator")


@pytest.fixture
def cupy_sim(monkeypatch):
    """Install the fake CuPy as ``cupy``."""
    fake = FakeCupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    yield fake
    fake.detach()


def _data(rng, terminal, n=6, T=9):
    lr = rng.normal(scale=0.5, size=(n, T))
    lr[rng.random((n, T)) < 0.05] = -np.inf
    mask = rng.random((n, T)) < 0.85
    mask[1] = False  # an empty row
    lr[~mask] = np.nan  # ignored where masked
    rew = rng.normal(size=n) if terminal else np.where(mask, rng.normal(size=(n, T)), np.inf)
    return lr, rew, mask


def _host(x):
    return None if x is None else np.array(x.view(np.ndarray))


def _same(a, b):
    """``a`` (device run) equals ``b`` (numpy backend) to rounding; arrays compared on b's scale."""
    for field in ("value", "stderr", "ess"):
        x, y = getattr(a, field), getattr(b, field)
        assert type(x) is float, field
        assert x == pytest.approx(y, rel=1e-11, abs=1e-13) or (math.isnan(x) and math.isnan(y)), (field, x, y)
    assert (a.n, a.estimator) == (b.n, b.estimator)
    for field in ARRAY_FIELDS:
        x, y = _host(getattr(a, field)), getattr(b, field)
        assert (x is None) == (y is None), field
        if y is not None:
            if a.estimator != "wpdis":
                x = x * math.exp(a.log_scale - b.log_scale)
            np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-13 * max(1.0, float(np.max(np.abs(y)))),
                                       err_msg=field)
    assert a.diagnostics.keys() == b.diagnostics.keys()
    for key, y in b.diagnostics.items():
        x = a.diagnostics[key]
        if isinstance(y, np.ndarray):
            assert isinstance(x, DeviceArray), key
            np.testing.assert_allclose(_host(x), y, rtol=1e-10, atol=1e-13, err_msg=key)
        elif isinstance(y, float):
            assert x == pytest.approx(y, rel=1e-10, abs=1e-13) or (math.isnan(x) and math.isnan(y)), key
        elif key != "backend":  # counts and flags (psis: tail_length, reliable, self_normalized)
            assert x == y, (key, x, y)


def test_the_fake_is_as_strict_as_cupy(cupy_sim):
    # the checks below mean something only if host arrays and numpy functions are refused
    x = cupy_sim.asarray(np.arange(6.0).reshape(2, 3))
    with pytest.raises(TypeError, match="host numpy array"):
        x + np.ones(3)
    with pytest.raises(TypeError, match="host numpy array"):
        cupy_sim.where(x > 1, x, np.zeros(3))
    with pytest.raises(TypeError, match="numpy.where was called on a device array"):
        np.where(x > 1, x, 0.0)
    with pytest.raises(TypeError, match="host numpy array"):
        x[np.array([0])]
    assert type(x.sum()) is DeviceArray and cupy_sim.to_host == []
    assert isinstance(x.get(), np.ndarray) and not isinstance(x.get(), DeviceArray)
    assert cupy_sim.to_host == [6, 6]


def test_auto_follows_the_input_library():
    assert resolve_backend("auto", "numpy") == "numba"
    assert resolve_backend("auto", "torch") == "numba"
    assert resolve_backend("auto") == "numba"
    assert resolve_backend("auto", "cupy") == "cupy"
    assert resolve_backend("numba", "cupy") == "numba"


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "per-step"])
@pytest.mark.parametrize("with_mask", [True, False], ids=["mask", "no-mask"])
def test_device_validation_gives_the_host_batch(cupy_sim, rng, terminal, with_mask):
    lr, rew, mask = _data(rng, terminal)
    if not with_mask:
        lr, rew, mask = np.nan_to_num(lr, nan=0.3), np.nan_to_num(rew, posinf=0.7), None
    dev = [None if x is None else cupy_sim.asarray(x) for x in (lr, rew, mask)]
    got = prepare(*dev, device=True)
    want = prepare(lr, rew, mask)
    assert got.xp is cupy_sim and got.library == "cupy" and want.xp is np
    assert cupy_sim.to_host == []  # validated where the data lives
    for field in ("log_ratio", "mask", "lengths", "returns", "rewards"):
        x, y = getattr(got, field), getattr(want, field)
        assert isinstance(x, DeviceArray), field
        assert x.dtype == y.dtype, field
        np.testing.assert_array_equal(_host(x), y, err_msg=field)
    assert got.terminal_only == want.terminal_only == terminal
    d = prepare_log_ratio(dev[0], dev[2], device=True)
    assert isinstance(d.log_ratio, DeviceArray) and d.returns is None and d.rewards is None
    np.testing.assert_array_equal(_host(d.log_ratio), want.log_ratio)
    assert cupy_sim.to_host == []
    # without device=True cupy input is copied to the host (the numba and numpy backends)
    host = prepare(*dev)
    assert host.xp is np and type(host.log_ratio) is np.ndarray and host.library == "cupy"


BAD = [
    (lambda lr, g, m: (np.where(m, np.nan, lr), g, m), ValueError, "log_ratio contains NaN at an unmasked"),
    (lambda lr, g, m: (np.where(m, np.inf, lr), g, m), ValueError, r"log_ratio contains \+inf at an unmasked"),
    (lambda lr, g, m: (lr, np.full_like(g, np.inf), m), ValueError, "rewards contains NaN or inf"),
    (lambda lr, g, m: (lr, np.where(m, np.nan, 0.0), m), ValueError, "rewards contains NaN or inf at an unmasked"),
    (lambda lr, g, m: (lr, g[:-1], m), ValueError, r"rewards must have shape \(6,\) or \(6, 9\)"),
    (lambda lr, g, m: (lr, g[None, :], m), ValueError, r"rewards must have shape \(6,\) or \(6, 9\)"),
    (lambda lr, g, m: (lr, g, m.astype(np.int8)), ValueError, "mask must be a boolean array"),
    (lambda lr, g, m: (lr, g, m[:, :-1]), ValueError, "mask must have the shape of log_ratio"),
    (lambda lr, g, m: (lr[0], g, m), ValueError, "log_ratio must be 2-dimensional"),
    (lambda lr, g, m: (lr[:0], g[:0], m[:0]), ValueError, r"at least one row \(n >= 1\)"),
    (lambda lr, g, m: (lr[:, :0], g, m[:, :0]), ValueError, r"at least one column \(T >= 1\)"),
    (lambda lr, g, m: (lr.astype(complex), g, m), TypeError, "log_ratio must be real"),
    (lambda lr, g, m: (lr, np.ones((6, 9, 1)), m), ValueError, "rewards must be 1 or 2-dimensional"),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_device_validation_raises_the_host_errors(cupy_sim, rng, case):
    make, exc, match = BAD[case]
    lr, g, m = _data(rng, True)
    args = make(np.nan_to_num(lr, nan=0.0), g, m)
    with pytest.raises(exc, match=match) as host_error:
        prepare(*args)
    with pytest.raises(exc, match=match) as device_error:
        prepare(*(cupy_sim.asarray(a) for a in args), device=True)
    assert str(device_error.value) == str(host_error.value)
    with pytest.raises(TypeError, match="rewards must be an array"):
        prepare(cupy_sim.asarray(lr), None, device=True)


def test_mixed_libraries_are_refused(cupy_sim, rng):
    lr, g, m = _data(rng, True)
    with pytest.raises(TypeError, match="must come from one array library"):
        est.seq(cupy_sim.asarray(lr), g, mask=cupy_sim.asarray(m))
    with pytest.raises(TypeError, match="must come from one array library"):
        est.diagnose(cupy_sim.asarray(lr), m)


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "per-step"])
@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_estimators_on_device_input_stay_on_the_device(cupy_sim, rng, spec, terminal):
    lr, rew, mask = _data(rng, terminal)
    dev = [cupy_sim.asarray(x) for x in (lr, rew, mask)]
    e = spec(dev[0], dev[1], mask=dev[2], **spec.params)  # backend="auto"
    assert e.diagnostics["backend"] == "cupy"
    # only O(1) scalars came back, except the n log-weights a batch transform (psis, trunc_seq)
    # reads on the host
    assert cupy_sim.to_host == ([lr.shape[0]] if isinstance(spec.reduce, est.BatchTransform) else [])
    for field in ARRAY_FIELDS:
        x = getattr(e, field)
        assert x is None or isinstance(x, DeviceArray), field
    _same(e, spec(lr, rew, mask=mask, backend="numpy", **spec.params))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_host_backends_return_device_arrays_for_device_input(cupy_sim, rng, spec, backend):
    lr, rew, mask = _data(rng, False)
    e = spec(*(cupy_sim.asarray(x) for x in (lr, rew)), mask=cupy_sim.asarray(mask), backend=backend,
                  **spec.params)
    assert e.diagnostics["backend"] == backend
    for field in ARRAY_FIELDS:
        x = getattr(e, field)
        assert x is None or isinstance(x, DeviceArray), field
    _same(e, spec(lr, rew, mask=mask, backend="numpy", **spec.params))


def test_diagnose_on_device_input(cupy_sim, rng):
    lr, _, mask = _data(rng, True, n=40, T=12)
    got = est.diagnose(cupy_sim.asarray(lr), cupy_sim.asarray(mask), c=(1.5, 3.0))
    want = est.diagnose(lr, mask, c=(1.5, 3.0))
    assert cupy_sim.to_host == [40]  # the PSIS fit's n log-weights; everything else is scalars
    for key, y in want.as_dict().items():
        x = getattr(got, key)
        assert type(x) is type(y), key
        if isinstance(y, float):
            assert x == pytest.approx(y, rel=1e-12, abs=1e-15) or (math.isnan(x) and math.isnan(y)), key
        else:
            assert x == pytest.approx(y, rel=1e-12), key


@pytest.mark.gpu
def test_real_cupy_input_is_validated_and_reduced_on_the_device(rng):
    cp = pytest.importorskip("cupy")
    lr, rew, mask = _data(rng, True, n=300, T=40)
    dev = [cp.asarray(x) for x in (lr, rew, mask)]
    batch = prepare(*dev, device=True)
    assert batch.xp is cp and all(isinstance(getattr(batch, f), cp.ndarray)
                                  for f in ("log_ratio", "mask", "lengths", "returns", "rewards"))
    np.testing.assert_array_equal(cp.asnumpy(batch.rewards), prepare(lr, rew, mask).rewards)
    for spec in SPECS:
        e = spec(dev[0], dev[1], mask=dev[2], **spec.params)
        assert e.diagnostics["backend"] == "cupy", spec.name
        for field in ARRAY_FIELDS:
            x = getattr(e, field)
            assert x is None or isinstance(x, cp.ndarray), (spec.name, field)
        ref = spec(lr, rew, mask=mask, backend="numpy", **spec.params)
        assert e.value == pytest.approx(ref.value, rel=1e-10, abs=1e-13), spec.name
    got = est.diagnose(dev[0], dev[2])
    assert got.ess == pytest.approx(est.diagnose(lr, mask).ess, rel=1e-12)
    with pytest.raises(ValueError, match="log_ratio contains NaN at an unmasked position"):
        est.seq(cp.asarray(np.where(mask, np.nan, 0.0)), dev[1], mask=dev[2])
