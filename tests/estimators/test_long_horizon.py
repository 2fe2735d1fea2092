"""T = 10 000 tokens: every estimator against an independent high-precision reference.

Per-token log-ratios have standard deviation 1, so ``log W`` has standard deviation 100. Extra
scenarios shift every row's ``log W`` so that some ``W`` overflow float64 while the mean is
still representable, so that the weights are tiny, and so that the mean itself overflows.
The reference computes ``log W`` with ``math.fsum`` and everything after that with
``decimal.Decimal`` (40 digits, unbounded exponent): it never overflows, and Python's
``float(Decimal)`` rounds to the nearest float (``inf`` beyond the float range).
"""

import decimal
import math

import numpy as np
import pytest

import tokis.estimators as est

T, N = 10_000, 32
D = decimal.Context(prec=40, Emax=10**9, Emin=-(10**9))
REWARD_COLUMNS = (0, 999, 4999, 9998, 9999)


def _dec(x):
    return D.create_decimal_from_float(float(x))


def _dexp(x):
    return D.exp(_dec(x)) if x > -math.inf else decimal.Decimal(0)


def _scenario(name, rng):
    lr = rng.normal(size=(N, T))
    if name != "plain":
        lo_hi = {"overflowing_rows": (600.0, 712.0), "tiny": (-720.0, -650.0), "huge": (700.0, 800.0)}[name]
        target = rng.uniform(*lo_hi, size=N)
        target[0] = lo_hi[1]
        lr += ((target - lr.sum(axis=1)) / T)[:, None]
    signed = name == "plain"
    g = rng.normal(0.3, 1.0, size=N) if signed else rng.uniform(0.5, 1.5, size=N)
    step = np.zeros((N, T))
    step[:, list(REWARD_COLUMNS)] = rng.normal(0.2, 1.0, size=(N, len(REWARD_COLUMNS))) if signed else rng.uniform(
        0.1, 1.0, size=(N, len(REWARD_COLUMNS)))
    return lr, g, step


SCENARIOS = ["plain", "overflowing_rows", "tiny", "huge"]


@pytest.fixture(scope="module", params=SCENARIOS)
def scenario(request):
    lr, g, step = _scenario(request.param, np.random.default_rng(100 + SCENARIOS.index(request.param)))
    logw = [math.fsum(row) for row in lr]
    return request.param, lr, g, step, logw


def _mean_and_stderr(f):
    n = len(f)
    mean = D.divide(sum(f, decimal.Decimal(0)), n)
    var = D.divide(sum((D.power(x - mean, 2) for x in f), decimal.Decimal(0)), n - 1)
    return mean, D.sqrt(D.divide(var, n)), D.divide(sum((abs(x) for x in f), decimal.Decimal(0)), n)


def _ratio(w, g):
    den = sum(w, decimal.Decimal(0))
    value = D.divide(sum((wi * _dec(gi) for wi, gi in zip(w, g)), decimal.Decimal(0)), den)
    mean_w = D.divide(den, len(w))
    z = [D.divide(wi * (_dec(gi) - value), mean_w) for wi, gi in zip(w, g)]
    _, se, _ = _mean_and_stderr(z)
    return value, se


def _token_weight(name, row):
    r = np.exp(row)
    if name == "tok":
        return 1 - T + math.fsum(r)
    if name == "tok_sum":
        return math.fsum(r)
    if name == "tok_mean":
        return math.fsum(r) / T
    if name == "clip_tok":
        return 1 - T + math.fsum(np.minimum(r, 2.0))
    if name == "mask_tok":
        keep = (r >= 0.5) & (r <= 2.0)
        return 1 - int(keep.sum()) + math.fsum(r[keep])
    raise KeyError(name)


def reference(name, lr, g, step, logw):
    """(value, stderr, scale) as Decimals; ``scale`` = mean |f| for the tolerance."""
    W = [_dexp(x) for x in logw]
    if name == "snis":
        v, s = _ratio(W, g)
        return v, s, abs(v) + 1
    if name == "wpdis":
        # sum over reward columns of ratio_t = sum_i W_{i,<=t} r_{i,t} / sum_i W_{i,<=t}; the delta-method
        # terms z_i = sum_t W_{i,<=t} (r_{i,t} - ratio_t) / mean_i W_{i,<=t} give the standard error
        value = decimal.Decimal(0)
        z = [decimal.Decimal(0)] * len(lr)
        for t in REWARD_COLUMNS:
            pw = [_dexp(math.fsum(row[: t + 1])) for row in lr]
            den = sum(pw, decimal.Decimal(0))
            ratio = D.divide(sum((w * _dec(r) for w, r in zip(pw, step[:, t])), decimal.Decimal(0)), den)
            value += ratio
            mean_w = D.divide(den, len(lr))
            z = [zi + D.divide(w * (_dec(r) - ratio), mean_w) for zi, w, r in zip(z, pw, step[:, t])]
        return value, _mean_and_stderr(z)[1], abs(value) + 1
    if name == "pdis":
        f = []
        for i, row in enumerate(lr):
            f.append(sum((_dexp(math.fsum(row[: t + 1])) * _dec(step[i, t]) for t in REWARD_COLUMNS), decimal.Decimal(0)))
        return _mean_and_stderr(f)
    if name == "seq":
        w = W
    elif name == "trunc_seq":
        c = D.multiply(D.divide(sum(W, decimal.Decimal(0)), len(W)), D.sqrt(decimal.Decimal(len(W))))
        w = [min(x, c) for x in W]
    elif name == "clip_prod":
        w = [_dexp(math.fsum(np.minimum(row, math.log(2.0)))) for row in lr]
    elif name == "geo":
        w = [_dexp(x / T) for x in logw]
    elif name == "mask_seq":
        w = [x if decimal.Decimal("0.5") <= x <= 2 else decimal.Decimal(0) for x in W]
    else:
        w = [_dec(_token_weight(name, row)) for row in lr]
    return _mean_and_stderr([wi * _dec(gi) for wi, gi in zip(w, g)])


def _agrees(got, ref, scale, rtol):
    """float ``got`` equals the Decimal ``ref`` up to ``rtol * scale``; inf where not representable."""
    ref_f = float(ref)
    if math.isinf(ref_f):
        return got == ref_f
    tol = rtol * float(scale) if not math.isinf(float(scale)) else math.inf
    return math.isfinite(got) and abs(got - ref_f) <= tol + 1e-300


NAMES = [n for n in est.list_estimators() if n != "psis"]


@pytest.mark.parametrize("name", NAMES)
def test_long_horizon_matches_the_reference(name, scenario):
    label, lr, g, step, logw = scenario
    rewards = step if name in ("pdis", "wpdis") else g
    e = est.REGISTRY[name](lr, rewards)
    value, stderr, scale = reference(name, lr, g, step, logw)
    assert _agrees(e.value, value, scale, 1e-9), (label, e.value, float(value))
    if stderr is not None:
        # A ratio's linearised terms w_i (g_i - R) cancel to float64 rounding of g (about 1e-16 |g|)
        # when one weight dominates; that absolute floor is part of the tolerance.
        returns = step if name == "wpdis" else g
        floor = decimal.Decimal(1e-5 * float(np.abs(returns).max())) if name in ("snis", "wpdis") else 0
        assert _agrees(e.stderr, stderr, abs(stderr) + floor, 1e-8), (label, e.stderr, float(stderr))
    assert not math.isnan(e.value) and not math.isnan(e.stderr)
    assert 0.0 <= e.ess <= N + 1e-9


def test_scenarios_reach_the_float_limits(scenario):
    label, lr, g, step, logw = scenario
    top = max(logw)
    if label == "plain":
        # log W is a sum of T unit-variance terms: standard deviation sqrt(T) = 100; the sample sd of
        # N draws has standard error about 100 / sqrt(2 (N - 1)). Every W is still a float64 here.
        sd = float(np.std(logw, ddof=1))
        assert abs(sd - math.sqrt(T)) < 5 * math.sqrt(T) / math.sqrt(2 * (N - 1)), sd
        assert top < math.log(np.finfo(float).max) and np.all(np.isfinite(np.exp(lr.sum(axis=1))))
    if label == "overflowing_rows":
        assert top > math.log(np.finfo(float).max) and math.isfinite(est.seq(lr, g).value)
        with np.errstate(over="ignore"):
            assert math.isinf(float(np.exp(lr.sum(axis=1)).max()))
    if label == "huge":
        assert math.isinf(est.seq(lr, g).value)
    if label == "tiny":
        assert 0.0 < est.seq(lr, g).value < 1e-280


def test_long_horizon_psis_is_scale_free():
    lr, g, _ = _scenario("plain", np.random.default_rng(100))
    delta = 400.0
    shifted = lr.copy()
    shifted[:, 0] += delta
    sn0, sn1 = est.psis(lr, g), est.psis(shifted, g)
    assert math.isfinite(sn0.value) and sn1.value == pytest.approx(sn0.value, rel=1e-9)
    assert g.min() <= sn0.value <= g.max()
    assert sn1.diagnostics["khat"] == pytest.approx(sn0.diagnostics["khat"], rel=1e-9)
    p0 = est.psis(lr, g, self_normalized=False)
    p1 = est.psis(shifted, g, self_normalized=False)
    assert math.isfinite(p1.value) and p1.log_scale == pytest.approx(p0.log_scale + delta, rel=1e-12)
    assert math.log(abs(p1.value)) - math.log(abs(p0.value)) == pytest.approx(delta, rel=1e-10)
