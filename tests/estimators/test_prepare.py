"""Inputs validated once: ``tokis.estimators.prepare`` gives every estimator the raw call's numbers.

One prepared batch is handed to every registered estimator in turn (as the harness does with
a chunk of replications); each result must equal the raw-array call field for field with ``==``
(not approx), on both CPU backends, with and without leading batch dimensions, for terminal and
per-step rewards. Any estimator that wrote into the shared arrays would break the later ones.
"""

import dataclasses

import numpy as np
import pytest
from _estimates import assert_same_estimate, batch_inputs

import tokis.estimators as est
from tokis._backends import _chunks
from tokis.estimators import REGISTRY, TokenSum, define

SPECS = list(REGISTRY.values())
# a non-default parameter value for the estimators that take one (exercises the maps' arguments)
OTHER = {"trunc_seq": {"c": 1.5}, "clip_prod": {"c": 1.2}, "clip_tok": {"c": 1.3}, "mask_seq": {"lo": 0.5, "hi": 2.0},
         "mask_tok": {"lo": 0.6, "hi": 1.8}, "psis": {"self_normalized": False}}


def _calls():
    """(spec, params) for every registered estimator at its defaults and, where it has any, other values."""
    out = [(s, {}) for s in SPECS]
    out += [(REGISTRY[name], p) for name, p in OTHER.items() if name in REGISTRY]
    return out


@pytest.mark.parametrize("lead", [(), (3,), (2, 2)], ids=["unbatched", "R=3", "2x2"])
@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "per-step"])
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_every_estimator_on_one_prepared_batch_equals_the_raw_call(rng, backend, terminal, lead):
    lr, rew, mask = batch_inputs(rng, lead, terminal=terminal)
    batch = est.prepare(lr, rew, mask=mask, backend=backend)
    assert batch.backend == backend and batch.shape == lr.shape
    calls = _calls()
    got = [spec(batch, **p) for spec, p in calls]  # all on the same batch, one after the other
    for (spec, p), g in zip(calls, got):
        want = spec(lr, rew, mask=mask, backend=backend, **p)
        assert g.batch_shape == lead
        assert_same_estimate(g, want, f"{spec.name}{p}")
    # and again, in reverse order: no call changed what the batch holds
    for (spec, p), g in zip(calls[::-1], got[::-1]):
        assert_same_estimate(spec(batch, backend=backend, **p), g, f"{spec.name}{p} again")


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "per-step"])
def test_auto_backend_and_threads(rng, terminal, monkeypatch):
    # auto resolves once, at prepare; a parallel (every thread) validation gives the same bits
    lr, rew, mask = batch_inputs(rng, (4,), n=40, T=9, terminal=terminal)
    auto = est.prepare(lr, rew, mask=mask)
    assert auto.backend == "numba" and "backend='numba'" in repr(auto)
    monkeypatch.setattr(_chunks, "ESTIMATOR_PARALLEL_MIN", 0)
    par = est.prepare(lr, rew, mask=mask, backend="numba")
    assert par.threads == _chunks.threads_for(lr.size, 0)
    for spec in SPECS:
        want = spec(lr, rew, mask=mask)
        assert_same_estimate(spec(par), want, f"{spec.name} parallel")
        monkeypatch.setattr(_chunks, "ESTIMATOR_PARALLEL_MIN", 1 << 62)
        assert_same_estimate(spec(auto, backend="numba"), spec(lr, rew, mask=mask), f"{spec.name} auto")
        monkeypatch.setattr(_chunks, "ESTIMATOR_PARALLEL_MIN", 0)


def test_clean_input_without_mask(rng):
    # float64 input with nothing masked: the prepared batch holds the caller's arrays (no copy)
    lr = rng.normal(scale=0.3, size=(3, 50, 6))
    rew = rng.uniform(size=(3, 50))
    batch = est.prepare(lr, rew, backend="numba")
    assert np.shares_memory(batch.batch.log_ratio, lr)
    for spec in SPECS:
        assert_same_estimate(spec(batch), spec(lr, rew, backend="numba"), spec.name)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_user_definition_takes_a_prepared_batch(rng, backend):
    clip2 = define("clip2_prepared", TokenSum(lambda l, eps: np.clip(np.exp(l), 1 - eps, 1 + eps) - 1.0),
                   params={"eps": 0.2}, token_flags={"far": lambda l, eps: np.abs(l) > eps})
    lr, rew, mask = batch_inputs(rng, (4,), terminal=False)
    assert_same_estimate(clip2(est.prepare(lr, rew, mask=mask, backend=backend), eps=0.3),
                   clip2(lr, rew, mask=mask, backend=backend, eps=0.3), "clip2")


def test_prepared_batch_is_frozen(rng):
    lr, rew, mask = batch_inputs(rng, ())
    batch = est.prepare(lr, rew, mask=mask)
    with pytest.raises(dataclasses.FrozenInstanceError):
        batch.backend = "numpy"


def test_passing_rewards_or_mask_again_is_a_type_error(rng):
    lr, rew, mask = batch_inputs(rng, (2,))
    batch = est.prepare(lr, rew, mask=mask)
    with pytest.raises(TypeError, match="rewards must be omitted when log_ratio is a prepared batch"):
        est.seq(batch, rew)
    with pytest.raises(TypeError, match="rewards must be omitted"):
        est.seq(batch, rewards=rew)
    with pytest.raises(TypeError, match="mask must be omitted when log_ratio is a prepared batch"):
        est.tok(batch, mask=mask)
    with pytest.raises(TypeError, match="unexpected keyword argument 'c'"):
        est.seq(batch, c=2.0)  # parameters are still checked


def test_another_backend_than_prepared_is_a_value_error(rng):
    lr, rew, mask = batch_inputs(rng, ())
    batch = est.prepare(lr, rew, mask=mask, backend="numpy")
    est.seq(batch, backend="numpy")
    with pytest.raises(ValueError, match=r"backend must be 'auto' or 'numpy' \(the backend the batch was prepared"):
        est.seq(batch, backend="numba")
    with pytest.raises(ValueError, match="backend must be one of"):
        est.seq(batch, backend="gpu")
    with pytest.raises(ValueError, match="backend must be one of"):
        est.prepare(lr, rew, mask=mask, backend="gpu")


def test_raw_call_without_rewards_is_still_a_type_error(rng):
    lr, _, mask = batch_inputs(rng, ())
    for backend in ("numpy", "numba"):
        with pytest.raises(TypeError, match="rewards must be an array"):
            est.seq(lr, mask=mask, backend=backend)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_prepare_raises_what_the_estimators_raise(rng, backend):
    lr, rew, mask = batch_inputs(rng, (2,))
    bad = lr.copy()
    bad[0, 3, 2], mask[0, 3, 2] = np.nan, True
    cases = [
        ((bad, rew), dict(mask=mask), ValueError),
        ((lr, rew[..., :-1]), dict(mask=mask), ValueError),
        ((lr, np.where(np.isfinite(rew), np.inf, 0.0)), dict(mask=mask), ValueError),
        ((lr, rew), dict(mask=mask.astype(int)), ValueError),
        ((lr, None), dict(mask=mask), TypeError),
    ]
    for args, kw, exc in cases:
        with pytest.raises(exc) as raw:
            est.seq(*args, backend=backend, **kw)
        with pytest.raises(exc) as prep:
            est.prepare(*args, backend=backend, **kw)
        assert str(prep.value) == str(raw.value)


@pytest.mark.gpu
@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "per-step"])
def test_cupy_prepared_batch_equals_the_cupy_call(rng, terminal):
    # cupy input stays on the device (backend auto: "cupy"); numpy input with backend="cupy" is moved there
    cp = pytest.importorskip("cupy")
    lr, rew, mask = batch_inputs(rng, (3,), terminal=terminal)
    on_device = est.prepare(cp.asarray(lr), cp.asarray(rew), mask=cp.asarray(mask))
    assert on_device.backend == "cupy"
    moved = est.prepare(lr, rew, mask=mask, backend="cupy")
    for spec in SPECS:
        assert_same_estimate(spec(on_device), spec(cp.asarray(lr), cp.asarray(rew), mask=cp.asarray(mask)), spec.name)
        assert_same_estimate(spec(moved, backend="cupy"), spec(lr, rew, mask=mask, backend="cupy"), spec.name)
