"""Every input error raises ValueError/TypeError naming the argument."""

import importlib.util
import math

import numpy as np
import pytest

import tokis.estimators as est
from tokis.estimators import REGISTRY

SPECS = list(REGISTRY.values())
IDS = [s.name for s in SPECS]


def good():
    lr = np.array([[0.1, -0.2, 0.0], [0.3, 0.1, -0.4]])
    return lr, np.array([1.0, 2.0]), np.array([[True, True, False], [True, True, True]])


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@pytest.mark.parametrize(
    "bad, exc, match",
    [
        (np.zeros(3), ValueError, "log_ratio must be 2-dimensional"),
        (np.zeros((2, 3, 1)), ValueError, "log_ratio must be 2-dimensional"),
        (np.zeros((0, 3)), ValueError, r"log_ratio must have at least one row \(n >= 1\)"),
        (np.zeros((2, 0)), ValueError, "log_ratio must have at least one column"),
        (np.array([["a", "b", "c"], ["d", "e", "f"]]), TypeError, "log_ratio must be numeric"),
        (np.array([[np.nan, 0, 0], [0, 0, 0]]), ValueError, "log_ratio contains NaN at an unmasked position"),
        (np.array([[np.inf, 0, 0], [0, 0, 0]]), ValueError, r"log_ratio contains \+inf at an unmasked position"),
    ],
)
def test_bad_log_ratio(spec, bad, exc, match):
    g = np.ones(bad.shape[0] if bad.ndim else 1)
    with pytest.raises(exc, match=match):
        spec(bad, g)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@pytest.mark.parametrize(
    "bad, exc, match",
    [
        (np.ones(3), ValueError, r"rewards must have shape \(2,\) or \(2, 3\)"),
        (np.ones((2, 4)), ValueError, r"rewards must have shape \(2,\) or \(2, 3\)"),
        (np.ones((2, 3, 1)), ValueError, "rewards must be 1 or 2-dimensional"),
        (np.array([1.0, np.nan]), ValueError, "rewards contains NaN or inf"),
        (np.array([1.0, -np.inf]), ValueError, "rewards contains NaN or inf"),
        (np.array([[1.0, np.nan, 0], [0, 0, 0]]), ValueError, "rewards contains NaN or inf at an unmasked position"),
        (np.array(["x", "y"]), TypeError, "rewards must be numeric"),
        (None, TypeError, "rewards must be an array"),
    ],
)
def test_bad_rewards(spec, bad, exc, match):
    lr, _, _ = good()
    with pytest.raises(exc, match=match):
        spec(lr, bad)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@pytest.mark.parametrize(
    "bad, match",
    [
        (np.ones((2, 3), dtype=int), "mask must be a boolean array"),
        (np.ones((2, 3)), "mask must be a boolean array"),
        (np.ones((2, 2), dtype=bool), r"mask must have the shape of log_ratio \(2, 3\)"),
    ],
)
def test_bad_mask(spec, bad, match):
    lr, g, _ = good()
    with pytest.raises(ValueError, match=match):
        spec(lr, g, mask=bad)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_garbage_at_masked_positions_is_fine(spec):
    lr, g, mask = good()
    rew = np.ones((2, 3))
    clean = spec(lr, rew, mask=mask)
    lr[0, 2] = np.nan
    rew[0, 2] = np.inf
    dirty = spec(lr, rew, mask=mask)
    assert math.isfinite(clean.value)
    assert (dirty.value, dirty.stderr, dirty.ess) == (clean.value, clean.stderr, clean.ess)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@pytest.mark.parametrize(
    "backend, exc, match",
    [
        ("cupy", ValueError, r"backend='cupy' needs CuPy \(pip install 'tokis\[cupy\]'\)"),
        ("gpu", ValueError, "backend must be one of"),
        (3, TypeError, "backend must be one of"),
    ],
)
def test_bad_backend(spec, backend, exc, match):
    if backend == "cupy" and importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here")
    lr, g, _ = good()
    with pytest.raises(exc, match=match):
        spec(lr, g, backend=backend)


@pytest.mark.parametrize("name", ["clip_prod", "clip_tok", "trunc_seq"])
@pytest.mark.parametrize(
    "c, exc, match",
    [
        (0.0, ValueError, "c must be > 0"),
        (-1.5, ValueError, "c must be > 0"),
        (-math.inf, ValueError, "c must be > 0"),
        (math.nan, ValueError, "c must not be NaN"),
        (True, TypeError, "c must be a real number"),
        ([2.0], TypeError, "c must be a real number"),
    ],
)
def test_bad_c(name, c, exc, match):
    lr, g, _ = good()
    with pytest.raises(exc, match=match):
        REGISTRY[name](lr, g, c=c)


def test_c_strings():
    lr, g, _ = good()
    with pytest.raises(ValueError, match="c must be a positive number or 'ionides'"):
        est.trunc_seq(lr, g, c="ionide")
    with pytest.raises(TypeError, match="c must be a positive number"):
        est.clip_prod(lr, g, c="ionides")
    assert est.trunc_seq(lr, g, c=np.float32(2.0)).diagnostics["c"] == 2.0
    assert est.clip_tok(lr, g, c=np.array(2.0)).diagnostics["c"] == 2.0


@pytest.mark.parametrize("name", ["mask_seq", "mask_tok"])
@pytest.mark.parametrize(
    "lo, hi, exc, match",
    [
        (2.0, 1.0, ValueError, r"lo must be <= hi, got lo=2.0 > hi=1.0"),
        (-0.1, 1.0, ValueError, "lo must be a finite number >= 0"),
        (math.inf, math.inf, ValueError, "lo must be a finite number >= 0"),
        (math.nan, 1.0, ValueError, "lo must not be NaN"),
        (0.5, math.nan, ValueError, "hi must not be NaN"),
        ("a", 1.0, TypeError, "lo must be a real number"),
        (0.5, None, TypeError, "hi must be a real number"),
    ],
)
def test_bad_band(name, lo, hi, exc, match):
    lr, g, _ = good()
    with pytest.raises(exc, match=match):
        REGISTRY[name](lr, g, lo=lo, hi=hi)


def test_bad_self_normalized():
    lr, g, _ = good()
    with pytest.raises(TypeError, match="self_normalized must be True or False"):
        est.psis(lr, g, self_normalized="yes")


def test_unknown_parameter_is_a_type_error():
    lr, g, _ = good()
    with pytest.raises(TypeError, match="unexpected keyword argument 'c'"):
        est.seq(lr, g, c=2.0)


def test_unknown_estimator():
    with pytest.raises(ValueError, match="estimator must be one of seq, tok, .*psis; got 'nope'"):
        est.get_estimator("nope")
    with pytest.raises(ValueError, match="estimator must be one of"):
        est.get_estimator(3)


def test_registry_is_read_only():
    with pytest.raises(TypeError):
        est.REGISTRY["x"] = None
    with pytest.raises(TypeError):
        est.REGISTRY["clip_prod"].params["c"] = 3.0


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"c": []}, ValueError, "c must hold at least one threshold"),
        ({"c": (2.0, -1.0)}, ValueError, "c must be > 0"),
        ({"c": "x"}, TypeError, "c must be a positive number"),
        ({"lo": 3.0}, ValueError, "lo must be <= hi"),
        ({"lo": -1.0}, ValueError, "lo must be a finite number >= 0"),
    ],
)
def test_bad_diagnose_thresholds(kwargs, exc, match):
    lr, _, _ = good()
    with pytest.raises(exc, match=match):
        est.diagnose(lr, **kwargs)


@pytest.mark.parametrize(
    "lr, mask, exc, match",
    [
        (np.zeros(3), None, ValueError, "log_ratio must be 2-dimensional"),
        (np.zeros((0, 2)), None, ValueError, "log_ratio must have at least one row"),
        (np.array([[np.nan]]), None, ValueError, "log_ratio contains NaN"),
        (np.zeros((2, 2)), np.ones((2, 2), dtype=np.int8), ValueError, "mask must be a boolean array"),
        (np.zeros((2, 2)), np.ones((2, 3), dtype=bool), ValueError, "mask must have the shape of log_ratio"),
    ],
)
def test_bad_diagnose_inputs(lr, mask, exc, match):
    with pytest.raises(exc, match=match):
        est.diagnose(lr, mask)


@pytest.mark.parametrize("level, exc", [(1.0, ValueError), (0.0, ValueError), (1.5, ValueError), (math.nan, ValueError), ("x", TypeError)])
def test_bad_ci_level(level, exc):
    e = est.seq(np.zeros((2, 1)), np.array([1.0, 2.0]))
    with pytest.raises(exc, match="level must"):
        e.ci(level)
