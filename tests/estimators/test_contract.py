"""One contract over the registry (DESIGN section 9)."""

import inspect
import math

import numpy as np
import pytest

import tokis.estimators as est
from tokis.estimators import REGISTRY

SPECS = list(REGISTRY.values())
IDS = [s.name for s in SPECS]
N, T = 40, 5


@pytest.fixture
def data(rng):
    lr = rng.normal(scale=0.4, size=(N, T))
    lengths = rng.integers(1, T + 1, size=N)
    mask = np.arange(T)[None, :] < lengths[:, None]
    terminal = rng.uniform(-1.0, 2.0, size=N)
    step = np.where(mask, rng.normal(size=(N, T)), 0.0)
    return lr, mask, terminal, step


def close(a, b, rel=1e-12, abs=1e-14):
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == pytest.approx(b, rel=rel, abs=abs)


def finite(e):
    """The reference Estimate is a number (else ``close`` would let NaN == NaN pass)."""
    return math.isfinite(e.value) and math.isfinite(e.stderr) and math.isfinite(e.ess)


def test_registry_lists_every_estimator_in_design_order():
    assert est.list_estimators() == (
        "seq", "tok", "tok_sum", "tok_mean", "pdis", "wpdis", "snis", "trunc_seq",
        "clip_prod", "clip_tok", "geo", "mask_seq", "mask_tok", "psis",
    )
    assert {n for n, s in REGISTRY.items() if s.unbiased} == {"seq", "pdis"}
    assert {n for n, s in REGISTRY.items() if s.self_normalized} == {"snis", "wpdis", "psis"}
    assert {n for n, s in REGISTRY.items() if s.exact_moments == "asymptotic"} == {"snis", "wpdis"}
    assert {n for n, s in REGISTRY.items() if s.exact_moments == "enumeration"} == {"trunc_seq", "mask_seq", "psis"}
    for name, spec in REGISTRY.items():
        assert est.get_estimator(name) is spec
        assert getattr(est, name) is spec
        assert spec.description and spec.reference and spec.level in ("sequence", "token")


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_params_are_the_signature_defaults(spec):
    sig = inspect.signature(spec)
    keyword = {k: p.default for k, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY}
    assert keyword.pop("mask") is None
    assert keyword.pop("backend") == "auto"
    assert keyword == dict(spec.params)
    assert spec.__doc__ and "References" in spec.__doc__ and "{common}" not in spec.__doc__


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@pytest.mark.parametrize("a", [3.5, -2.0])
@pytest.mark.parametrize("kind", ["terminal", "step"])
def test_scaling_rewards_scales_the_estimate(spec, a, kind, data):
    lr, mask, terminal, step = data
    g = terminal if kind == "terminal" else step
    e0 = spec(lr, g, mask=mask)
    e1 = spec(lr, a * g, mask=mask)
    assert finite(e0)
    assert close(e1.value, a * e0.value)
    assert close(e1.stderr, abs(a) * e0.stderr)
    assert close(e1.ess, e0.ess)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@pytest.mark.parametrize("kind", ["terminal", "step"])
def test_equal_policies_give_the_mean_return(spec, kind, data):
    _, _, terminal, _ = data
    rng = np.random.default_rng(5)
    lr = np.zeros((N, T))
    g = terminal if kind == "terminal" else rng.normal(size=(N, T))
    G = g if kind == "terminal" else g.sum(axis=1)
    e = spec(lr, g)
    expected = T * G if spec.name == "tok_sum" else G
    assert close(e.value, float(np.mean(expected)), rel=1e-12, abs=1e-13)
    assert close(e.stderr, float(np.std(expected, ddof=1) / math.sqrt(N)), rel=1e-10, abs=1e-13)
    assert e.ess == pytest.approx(N, rel=1e-12)
    d = est.diagnose(lr)
    assert d.ess == pytest.approx(N) and d.max_weight_share == pytest.approx(1 / N)
    assert d.log_seq_second_moment == 0.0 and d.seq_chi2 == 0.0


@pytest.mark.parametrize(
    "name, params, plain",
    [
        ("trunc_seq", {"c": math.inf}, "seq"),
        ("clip_prod", {"c": math.inf}, "seq"),
        ("clip_tok", {"c": math.inf}, "tok"),
        ("mask_seq", {"lo": 0.0, "hi": math.inf}, "seq"),
        ("mask_tok", {"lo": 0.0, "hi": math.inf}, "tok"),
    ],
)
@pytest.mark.parametrize("kind", ["terminal", "step"])
def test_no_truncation_is_plain_is(name, params, plain, kind, data):
    lr, mask, terminal, step = data
    lr = lr * 4.0  # make the truncation matter at the default parameters
    g = terminal if kind == "terminal" else step
    e = REGISTRY[name](lr, g, mask=mask, **params)
    ref = REGISTRY[plain](lr, g, mask=mask)
    assert finite(ref)
    assert close(e.value, ref.value) and close(e.stderr, ref.stderr) and close(e.ess, ref.ess)
    default = REGISTRY[name](lr, g, mask=mask)
    assert not close(default.value, ref.value, rel=1e-6)


def test_pdis_equals_seq_for_terminal_rewards(data):
    lr, mask, terminal, _ = data
    a, b = est.pdis(lr, terminal, mask=mask), est.seq(lr, terminal, mask=mask)
    assert (a.value, a.stderr, a.ess) == (b.value, b.stderr, b.ess)
    # The same rewards given per step (at the last real token) agree to rounding.
    lengths = mask.sum(axis=1)
    step = np.zeros((N, T))
    step[np.arange(N), lengths - 1] = terminal
    c = est.pdis(lr, step, mask=mask)
    assert close(c.value, b.value, rel=1e-12) and close(c.stderr, b.stderr, rel=1e-12)


def test_wpdis_equals_snis_for_terminal_rewards_on_full_rows(data):
    lr, _, terminal, _ = data
    a, b = est.wpdis(lr, terminal), est.snis(lr, terminal)
    assert finite(b) and close(a.value, b.value) and close(a.stderr, b.stderr)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@pytest.mark.parametrize("kind", ["terminal", "step"])
def test_masking_a_padded_tail_changes_nothing(spec, kind, data):
    lr, mask, terminal, step = data
    g = terminal if kind == "terminal" else step
    e = spec(lr, g, mask=mask)
    assert finite(e)
    pad = 3
    lr2 = np.concatenate([lr, np.full((N, pad), np.nan)], axis=1)
    lr2[::2, T:] = np.inf
    mask2 = np.concatenate([mask, np.zeros((N, pad), dtype=bool)], axis=1)
    g2 = g if kind == "terminal" else np.concatenate([step, np.full((N, pad), np.nan)], axis=1)
    e2 = spec(lr2, g2, mask=mask2)
    assert close(e2.value, e.value) and close(e2.stderr, e.stderr) and close(e2.ess, e.ess)
    # Garbage inside the original padding is ignored too.
    lr3 = np.where(mask, lr, -1e300)
    g3 = g if kind == "terminal" else np.where(mask, step, np.nan)
    e3 = spec(lr3, g3, mask=mask)
    assert close(e3.value, e.value) and close(e3.stderr, e.stderr)


@pytest.mark.parametrize("spec", [s for s in SPECS if s.self_normalized], ids=lambda s: s.name)
@pytest.mark.parametrize("scale", [0.5, 3.0, 30.0])
def test_self_normalised_estimates_lie_within_the_returns(spec, scale, data, rng):
    lr, mask, terminal, _ = data
    big = rng.normal(scale=scale, size=(200, T))
    g = rng.uniform(-1.0, 2.0, size=200)
    e = spec(big, g)
    assert g.min() - 1e-12 <= e.value <= g.max() + 1e-12


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_per_sample_arrays_reproduce_the_value(spec, data):
    lr, mask, terminal, step = data
    e = spec(lr * 2, step, mask=mask)
    assert finite(e)
    if spec.self_normalized:
        assert e.samples is None
        num, den = np.asarray(e.numerator), np.asarray(e.denominator)
        if num.ndim == 1:
            assert close(e.value, float(num.sum() / den.sum()))
        else:
            active = (num != 0).any(axis=0)
            assert close(e.value, float((num.sum(0)[active] / den.sum(0)[active]).sum()))
    else:
        assert e.numerator is None and e.denominator is None
        assert close(e.value, math.exp(e.log_scale) * float(np.mean(e.samples)))
        assert np.abs(e.samples).max() == pytest.approx(1.0)
