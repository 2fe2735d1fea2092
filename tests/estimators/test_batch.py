"""The validated Batch: terminal-only rewards stay (n,) until a per-step estimator asks for (n, T)."""

import numpy as np
import pytest

from tokis._backends._numba_prepare import prepare_numba
from tokis._core import _batch as _input
from tokis.estimators import REGISTRY
from tokis._core._batch import prepare, terminal_steps

SPECS = list(REGISTRY.values())
IDS = [s.name for s in SPECS]


def _holey(rng, n=40, T=11):
    """Masks with holes (not prefixes), an empty row, and a full row."""
    mask = rng.random((n, T)) < 0.6
    mask[0] = False
    mask[1] = True
    return rng.normal(scale=0.3, size=(n, T)), rng.normal(size=n), mask


def _by_definition(g, mask):
    """Zeros, with G_i at the last real step of row i (column 0 for an empty row), in a loop."""
    n, T = mask.shape
    out = np.zeros((n, T))
    for i in range(n):
        real = [t for t in range(T) if mask[i, t]]
        out[i, real[-1] if real else 0] = g[i]
    return out


@pytest.mark.parametrize("validate", [prepare, prepare_numba], ids=["numpy", "numba"])
def test_terminal_rewards_are_placed_at_the_last_real_step(rng, validate):
    lr, g, mask = _holey(rng)
    batch = validate(lr, g, mask)
    assert batch.terminal_only and batch.step_rewards is None
    assert "rewards" not in vars(batch)  # not built by validation
    np.testing.assert_array_equal(batch.returns, g)
    np.testing.assert_array_equal(batch.rewards, _by_definition(g, mask))
    assert batch.rewards is batch.rewards  # built once
    np.testing.assert_array_equal(terminal_steps(g, mask), _by_definition(g, mask))


def test_numba_validation_records_the_last_steps(rng):
    lr, g, mask = _holey(rng)
    batch = prepare_numba(lr, g, mask)
    last = np.array([max(np.flatnonzero(row), default=0) for row in mask])
    np.testing.assert_array_equal(batch.last_step, last)
    assert prepare(lr, g, mask).last_step is None  # the reference finds them from the mask when needed


def test_per_step_rewards_are_the_batch_rewards(rng):
    lr, _, mask = _holey(rng)
    rew = rng.normal(size=mask.shape)
    for validate in (prepare, prepare_numba):
        batch = validate(lr, rew, mask)
        assert not batch.terminal_only
        assert batch.rewards is batch.step_rewards
        np.testing.assert_array_equal(batch.rewards, np.where(mask, rew, 0.0))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_only_wpdis_builds_per_step_rewards_from_terminal_ones(monkeypatch, rng, spec, backend):
    built = []
    real = _input.terminal_steps

    def spy(*args):
        built.append(args[1].shape)
        return real(*args)

    monkeypatch.setattr(_input, "terminal_steps", spy)
    lr, g, mask = _holey(rng)
    mask[0, 3] = True  # no empty row: there the (n, T) form would mask the reward away
    e = spec(lr, g, mask=mask, backend=backend, **spec.params)
    assert built == ([mask.shape] if spec.name == "wpdis" else [])
    # and the value is the one the (n, T) form of the same rewards gives
    ref = spec(lr, _by_definition(g, mask), mask=mask, backend="numpy", **spec.params)
    assert e.value == pytest.approx(ref.value, rel=1e-12, abs=1e-15)
