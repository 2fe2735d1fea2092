"""Replications as an array axis on the device path, with CuPy simulated on the CPU.

The cupy backend runs the array path on (R * n, T) rows and reduces every batch along the last
axis on the device; only the (R,) results come to the host. ``_fake_cupy`` (numpy memory posing
as device arrays, strict about host arrays, counting every device-to-host copy) checks that
contract without a GPU: a batched call equals every slice's own call bit for bit, per-sample
arrays stay on the device, and the copies to the host are O(R) (plus each batch's n
log-weights for the batch transforms, which run on the host as in a plain call).
"""

import math
import sys

import numpy as np
import pytest
from _fake_cupy import DeviceArray, FakeCupy

import tokis.estimators as est
from tokis.estimators import REGISTRY

SPECS = list(REGISTRY.values())
IDS = [s.name for s in SPECS]
R, N, T = 3, 9, 6


@pytest.fixture
def cupy_sim(monkeypatch):
    fake = FakeCupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    yield fake
    fake.detach()


def _data(rng, terminal):
    lr = rng.normal(scale=0.5, size=(R, N, T))
    lr[rng.random(lr.shape) < 0.05] = -np.inf
    mask = rng.random(lr.shape) < 0.85
    mask[:, 1] = False  # an empty row in every batch
    lr[~mask] = np.nan
    rew = rng.normal(size=(R, N)) if terminal else np.where(mask, rng.normal(size=(R, N, T)), np.inf)
    return lr, rew, mask


def _host(x):
    return np.array(x.view(np.ndarray)) if isinstance(x, DeviceArray) else x


def _equal(a, b, where):
    a, b = _host(a), _host(b)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=where)
    else:
        assert a == b or (isinstance(b, float) and math.isnan(a) and math.isnan(b)), (where, a, b)


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "per-step"])
@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_batched_device_call_equals_every_slice(cupy_sim, rng, spec, terminal):
    lr, rew, mask = _data(rng, terminal)
    dev = [cupy_sim.asarray(x) for x in (lr, rew, mask)]
    e = spec(dev[0], dev[1], mask=dev[2], **spec.params)  # auto: cupy for cupy input
    assert e.diagnostics["backend"] == "cupy" and e.batch_shape == (R,)
    assert type(e.value) is np.ndarray and e.value.shape == (R,)
    for field in ("samples", "numerator", "denominator"):
        x = getattr(e, field)
        assert x is None or (isinstance(x, DeviceArray) and x.shape[:2] == (R, N)), field
    # every copy to the host is an (R,) result -- or a batch's N log-weights for a batch transform
    batch_transform = isinstance(spec.reduce, est.BatchTransform)
    assert all(k <= R for k in cupy_sim.to_host) or batch_transform
    if batch_transform:
        assert cupy_sim.to_host.count(R * N) == 1
    for r in range(R):
        one = spec(dev[0][r], dev[1][r], mask=dev[2][r], **spec.params)
        part = e[r]
        for field in ("value", "stderr", "ess", "log_scale"):
            _equal(getattr(part, field), getattr(one, field), f"{spec.name}[{r}].{field}")
        for field in ("samples", "numerator", "denominator"):
            x, y = getattr(part, field), getattr(one, field)
            assert (x is None) == (y is None)
            if y is not None:
                _equal(x, y, f"{spec.name}[{r}].{field}")
        assert part.diagnostics.keys() == one.diagnostics.keys()
        for key, y in one.diagnostics.items():
            _equal(part.diagnostics[key], y, f"{spec.name}[{r}].{key}")
        # and the device path agrees with the numpy backend on the host
        ref = spec(lr[r], rew[r], mask=mask[r], backend="numpy", **spec.params)
        assert part.value == pytest.approx(ref.value, rel=1e-12, abs=1e-14) or (
            math.isnan(part.value) and math.isnan(ref.value))


def test_batched_diagnose_on_the_device(cupy_sim, rng):
    lr, _, mask = _data(rng, True)
    got = est.diagnose(cupy_sim.asarray(lr), cupy_sim.asarray(mask))
    for r in range(R):
        want = est.diagnose(cupy_sim.asarray(lr[r]), cupy_sim.asarray(mask[r])).as_dict()
        for key, y in want.items():
            x = getattr(got, key)
            if key in ("n", "clip_c", "lo", "hi"):
                assert x == y, key
            elif isinstance(y, tuple):
                for xj, yj in zip(x, y):
                    _equal(xj[r].item(), yj, key)
            else:
                _equal(x[r].item(), y, key)
