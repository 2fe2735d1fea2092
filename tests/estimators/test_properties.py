"""Hypothesis property tests on random shapes, masks and magnitudes."""

import math

import numpy as np
import pytest
from _est_naive import naive_estimate, rows_from_arrays
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import logsumexp

from tokis.estimators import REGISTRY

SPECS = list(REGISTRY.values())
IDS = [s.name for s in SPECS]
SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def batches(draw, scale=3.0, max_n=6, max_T=5, neg_inf=False, positive=False):
    n = draw(st.integers(1, max_n))
    T = draw(st.integers(1, max_T))
    elements = st.floats(-scale, scale, allow_nan=False)
    if neg_inf:
        elements = st.one_of(elements, st.just(-math.inf))
    lr = draw(arrays(np.float64, (n, T), elements=elements))
    mask = draw(arrays(np.bool_, (n, T)))
    terminal = draw(st.booleans())
    lo = 0.1 if positive else -5.0
    rew = draw(arrays(np.float64, (n,) if terminal else (n, T), elements=st.floats(lo, 5.0)))
    return lr, rew, mask


def _nan_equal(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == b


@st.composite
def parameters(draw, spec):
    """The registry defaults, or random valid values (c below 1 included)."""
    params = dict(spec.params)
    if draw(st.booleans()):
        if "c" in params:
            params["c"] = draw(st.floats(0.2, 5.0))
        if "lo" in params:
            params["lo"] = draw(st.floats(0.0, 1.5))
            params["hi"] = params["lo"] + draw(st.floats(0.0, 3.0))
    return params


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@SETTINGS
@given(batch=batches(), data=st.data())
def test_matches_the_plain_formula(spec, batch, data):
    lr, rew, mask = batch
    lrs, rews, G = rows_from_arrays(lr, rew, mask)
    params = data.draw(parameters(spec))
    e = spec(lr, rew, mask=mask, **params)
    params.pop("self_normalized", None)
    value, sd, ess = naive_estimate(spec.name, lrs, rews, G, (lr, rew, mask), **params)
    n = lr.shape[0]
    # Absolute tolerances from the size of the terms summed (rounding is relative to them).
    big = max(1.0, max(abs(g) for g in G)) * max(1.0, max((math.exp(min(sum(r), 700.0)) for r in lrs), default=1.0))
    big *= max(1, lr.shape[1])
    assert e.value == pytest.approx(value, rel=1e-9, abs=1e-11 * big)
    if n == 1:
        assert math.isnan(e.stderr) and math.isnan(sd)
    else:
        assert e.stderr == pytest.approx(sd, rel=1e-7, abs=1e-11 * big * n)
    assert e.ess == pytest.approx(ess, rel=1e-9, abs=1e-9)
    assert -1e-9 <= e.ess <= n + 1e-9


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@SETTINGS
@given(batch=batches(scale=50.0), data=st.data())
def test_values_at_masked_positions_never_matter(spec, batch, data):
    lr, rew, mask = batch
    garbage = data.draw(arrays(np.float64, lr.shape, elements=st.sampled_from([np.nan, np.inf, -np.inf, 1e308, -3.0])))
    lr2 = np.where(mask, lr, garbage)
    rew2 = rew if rew.ndim == 1 else np.where(mask, rew, garbage)
    a, b = spec(lr, rew, mask=mask), spec(lr2, rew2, mask=mask)
    assert _nan_equal(a.value, b.value) and _nan_equal(a.stderr, b.stderr) and a.ess == b.ess


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@SETTINGS
@given(batch=batches(scale=400.0, neg_inf=True))
def test_never_nan_for_mean_estimators_and_ess_in_range(spec, batch):
    lr, rew, mask = batch
    e = spec(lr, rew, mask=mask)
    n = lr.shape[0]
    if not spec.self_normalized:
        assert not math.isnan(e.value)
        assert n == 1 or not math.isnan(e.stderr)
    assert -1e-9 <= e.ess <= n + 1e-9
    assert math.isnan(e.stderr) or e.stderr >= 0


@pytest.mark.parametrize("name", ["seq", "snis", "clip_prod", "trunc_seq", "geo"])
@SETTINGS
@given(batch=batches(scale=400.0, max_n=8, positive=True), shift=st.floats(-300.0, 300.0))
def test_huge_weights_match_a_log_space_reference(name, batch, shift):
    lr, rew, mask = batch
    lr = lr + shift / lr.shape[1]
    lrs, _, G = rows_from_arrays(lr, rew, mask)
    n = len(lrs)
    logw = np.array([math.fsum(r) for r in lrs])
    with np.errstate(divide="ignore"):
        logg = np.log(np.array(G))
    if name == "seq":
        log_ref = logsumexp(logw + logg) - math.log(n)
    elif name == "snis":
        log_ref = logsumexp(logw + logg) - logsumexp(logw)
    elif name == "clip_prod":
        lc = np.array([math.fsum(min(x, math.log(2.0)) for x in r) for r in lrs])
        log_ref = logsumexp(lc + logg) - math.log(n)
    elif name == "geo":
        lg = np.array([math.fsum(r) / len(r) if r else 0.0 for r in lrs])
        log_ref = logsumexp(lg + logg) - math.log(n)
    else:
        log_c = logsumexp(logw) - math.log(n) + 0.5 * math.log(n)
        log_ref = logsumexp(np.minimum(logw, log_c) + logg) - math.log(n)
    value = REGISTRY[name](lr, rew, mask=mask).value
    if log_ref > 709.9:
        assert value == math.inf
    elif log_ref > -700:
        assert math.log(value) == pytest.approx(log_ref, rel=1e-12, abs=1e-9)
    else:
        assert 0.0 <= value < 1e-300
