"""The one-pass numba validation gives the reference ``prepare``'s Batch, and its errors."""

import math

import numpy as np
import pytest

from tokis._backends import _chunks
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tokis._backends._numba_prepare import prepare_numba
from tokis._core._batch import prepare

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SPECIAL = st.sampled_from([math.nan, math.inf, -math.inf])


@st.composite
def inputs(draw):
    n = draw(st.integers(1, 9))
    T = draw(st.integers(1, 9))
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    values = st.one_of(st.floats(-30, 30, width=32), SPECIAL) if draw(st.booleans()) else st.floats(-30, 30, width=32)
    lr = draw(arrays(dtype, (n, T), elements=values))
    mask = draw(st.one_of(st.none(), arrays(np.bool_, (n, T))))
    terminal = draw(st.booleans())
    rdtype = draw(st.sampled_from([np.float64, np.float32]))
    rvalues = st.one_of(st.floats(-5, 5, width=32), SPECIAL) if draw(st.booleans()) else st.floats(-5, 5, width=32)
    rew = draw(arrays(rdtype, (n,) if terminal else (n, T), elements=rvalues))
    return lr, rew, mask


def _same_batch(a, b):
    for field in ("log_ratio", "mask", "lengths"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
        assert getattr(a, field).dtype == getattr(b, field).dtype, field
    np.testing.assert_array_equal(a.rewards, b.rewards)
    assert a.rewards.dtype == np.float64
    scale = np.abs(b.rewards).sum(axis=1) + 1.0
    assert np.all(np.abs(a.returns - b.returns) <= 8 * np.finfo(float).eps * scale)
    assert (a.terminal_only, a.library, a.n) == (b.terminal_only, b.library, b.n)


def _outcome(f, *args):
    try:
        return f(*args), None
    except (ValueError, TypeError) as exc:
        return None, (type(exc), str(exc))


@SETTINGS
@given(data=inputs())
def test_same_batch_or_same_error(data):
    lr, rew, mask = data
    got, got_err = _outcome(prepare_numba, lr, rew, mask)
    want, want_err = _outcome(prepare, lr, rew, mask)
    assert got_err == want_err
    if want is not None:
        _same_batch(got, want)


def test_parallel_sizes_and_masked_garbage(rng, monkeypatch):
    n, T = 300, 250
    lr = rng.normal(size=(n, T))
    mask = rng.random((n, T)) < 0.8
    lr[~mask] = np.where(rng.random((~mask).sum()) < 0.5, np.nan, np.inf)  # ignored where masked
    rew = rng.normal(size=(n, T))
    rew[~mask] = np.nan
    monkeypatch.setattr(_chunks, "PARALLEL_MIN_ELEMENTS", 0)
    for r in (rew, rng.normal(size=n)):
        _same_batch(prepare_numba(lr, r, mask), prepare(lr, r, mask))


@pytest.mark.parametrize(
    "args, exc, match",
    [
        ((np.array([[np.nan, 0.0]]), np.ones(1), None), ValueError, "log_ratio contains NaN"),
        ((np.array([[np.inf, 0.0]]), np.ones(1), None), ValueError, r"log_ratio contains \+inf"),
        ((np.zeros((1, 2)), np.array([np.inf]), None), ValueError, "rewards contains NaN or inf"),
        ((np.zeros((1, 2)), np.array([[0.0, np.nan]]), None), ValueError, "rewards contains NaN or inf"),
        ((np.zeros((2, 2)), np.ones(3), None), ValueError, "rewards must have shape"),
        ((np.zeros((2, 2)), np.ones(2), np.ones((2, 2))), ValueError, "mask must be a boolean array"),
        ((np.zeros((2, 2)), None, None), TypeError, "rewards must be an array"),
        ((np.zeros((0, 2)), np.ones(0), None), ValueError, "at least one row"),
    ],
)
def test_errors_name_the_argument(args, exc, match):
    with pytest.raises(exc, match=match):
        prepare_numba(*args)


def test_non_contiguous_and_lists_fall_back():
    lr = np.arange(12.0).reshape(3, 4)[:, ::2] / 10
    _same_batch(prepare_numba(lr, [1.0, 2.0, 3.0]), prepare(lr, [1.0, 2.0, 3.0]))
    _same_batch(prepare_numba(lr.tolist(), np.ones(3)), prepare(lr.tolist(), np.ones(3)))
