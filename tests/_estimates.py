"""Batched estimator inputs and exact comparison of Estimates (tests only).

Shared by the tests of replications as an array axis and of prepared batches: both demand
results equal to the raw per-slice call with ``==`` (not approx).
"""

from __future__ import annotations

import math

import numpy as np

from tokis._core._xp import to_host

#: Per-sample array fields of an Estimate.
ARRAYS = ("samples", "numerator", "denominator")


def batch_inputs(rng, lead, n=23, T=7, terminal=True):
    """``(log_ratio, rewards, mask)`` with leading dims ``lead``: -inf log-ratios, masked NaNs, an empty row per batch."""
    shape = tuple(lead) + (n, T)
    lr = rng.normal(scale=0.6, size=shape)
    lr[rng.random(shape) < 0.03] = -np.inf  # target probability 0 at a few real tokens
    mask = rng.random(shape) < 0.85
    mask[..., 0, :] = False  # an empty row in every batch
    lr[~mask] = np.nan  # ignored where masked
    rew = rng.normal(size=shape[:-1]) if terminal else np.where(mask, rng.normal(size=shape), 0.0)
    return lr, rew, mask


def assert_equal(a, b, where=""):
    """Exactly equal (NaN equals NaN), same type for scalars; device arrays are compared on the host."""
    if isinstance(b, np.ndarray) or isinstance(a, np.ndarray) or hasattr(b, "__cuda_array_interface__"):
        np.testing.assert_array_equal(to_host(a), to_host(b), err_msg=where)
        return
    assert type(a) is type(b), (where, type(a), type(b))
    assert a == b or (isinstance(b, float) and math.isnan(a) and math.isnan(b)), (where, a, b)


def assert_same_estimate(a, b, where):
    """Every field, per-sample array and diagnostic of two Estimates exactly equal."""
    for field in ("value", "stderr", "ess", "log_scale"):
        assert_equal(getattr(a, field), getattr(b, field), f"{where}.{field}")
    assert (a.n, a.estimator) == (b.n, b.estimator)
    for field in ARRAYS:
        x, y = getattr(a, field), getattr(b, field)
        assert (x is None) == (y is None), (where, field)
        if y is not None:
            assert_equal(x, y, f"{where}.{field}")
    assert a.diagnostics.keys() == b.diagnostics.keys(), where
    for key, y in b.diagnostics.items():
        assert_equal(a.diagnostics[key], y, f"{where}.diagnostics[{key}]")
