"""Estimate.ci: every interval method's formula, the log_scale round trip, reproducibility, every error path."""

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from tokis import envs
from tokis import estimators as E
from tokis.estimators import Estimate
from tokis.estimators import get_estimator
from tokis.estimators._intervals import METHODS, NotApplicableError


def statistic_upper_bound(name, params=None, *, horizon, return_max):
    return get_estimator(name).statistic_bound(horizon, return_max, params)


def _mean_estimate(x, log_scale=0.0, name="seq"):
    x = np.asarray(x, dtype=float)
    n = x.size
    v = float(np.mean(x)) * math.exp(log_scale) if log_scale < 700 else math.inf
    se = float(np.std(x, ddof=1) / math.sqrt(n)) * math.exp(log_scale) if n > 1 and log_scale < 700 else math.nan
    return Estimate(value=v, stderr=se, n=n, ess=float(n), samples=x, log_scale=log_scale, estimator=name)


@pytest.fixture(scope="module")
def batch():
    mdp = envs.ngram(8, 1, 8)
    pi = envs.random_policy(mdp, seed=1)
    mu = envs.perturb(pi, kl=0.05)
    return envs.sample(mdp, mu, 64, target=pi, seed=3)


def _run(name, ro, **kw):
    return getattr(E, name)(ro.log_ratio, ro.rewards, mask=ro.mask, **kw)


def test_normal_is_the_default_and_unchanged():
    est = _mean_estimate([0.0, 1.0, 2.0, 5.0])
    z = stats.norm.ppf(0.975)
    assert est.ci() == est.ci(0.95, method="normal")
    assert est.ci() == pytest.approx((est.value - z * est.stderr, est.value + z * est.stderr))


@pytest.mark.parametrize("n", [2, 5, 30, 1000])
def test_t_uses_n_minus_1_df_and_is_wider_than_normal(n, rng):
    est = _mean_estimate(rng.exponential(size=n))
    lo, hi = est.ci(0.9, method="t")
    q = stats.t.ppf(0.95, n - 1)
    assert (lo, hi) == pytest.approx((est.value - q * est.stderr, est.value + q * est.stderr))
    nlo, nhi = est.ci(0.9, method="normal")
    assert hi - lo >= nhi - nlo


def test_t_wider_than_normal_on_every_estimator(batch):
    for name in ("seq", "pdis", "tok", "snis", "wpdis", "clip_tok", "clip_prod", "psis"):
        est = _run(name, batch)
        lo, hi = est.ci(method="t")
        nlo, nhi = est.ci(method="normal")
        assert hi - lo >= nhi - nlo


def test_bca_reproducible_with_seed(batch):
    for name in ("seq", "snis", "wpdis", "clip_tok"):
        est = _run(name, batch)
        a = est.ci(method="bca", rng=7, n_resamples=499)
        b = est.ci(method="bca", rng=7, n_resamples=499)
        c = est.ci(method="bca", rng=np.random.default_rng(7), n_resamples=499)
        assert a == b == c
        assert a[0] < est.value < a[1]
        assert est.ci(method="bca", rng=8, n_resamples=499) != a


def test_bca_mean_matches_scipy_on_the_true_scale(rng):
    x = rng.lognormal(size=50)
    est = _mean_estimate(x)
    res = stats.bootstrap((x,), np.mean, method="BCa", n_resamples=999, random_state=np.random.default_rng(3))
    assert est.ci(method="bca", rng=3, n_resamples=999) == pytest.approx(
        (res.confidence_interval.low, res.confidence_interval.high))


def test_bca_constant_samples_give_a_point():
    est = _mean_estimate([2.0] * 10)
    assert est.ci(method="bca", rng=0) == (2.0, 2.0)


def test_log_scale_round_trip(rng):
    x = rng.exponential(size=40)
    L = 3.0
    scaled = _mean_estimate(x * math.exp(-L), log_scale=L)
    plain = _mean_estimate(x)
    for m, kw in [("normal", {}), ("t", {}), ("bca", dict(rng=1, n_resamples=499)), ("bernstein", {}),
                  ("hoeffding", dict(upper=50.0)), ("bernstein", dict(truncation=2.0))]:
        assert scaled.ci(0.9, method=m, **kw) == pytest.approx(plain.ci(0.9, method=m, **kw), rel=1e-9), m


def test_huge_log_scale_does_not_overflow(rng):
    x = rng.exponential(size=40) + 1.0
    est = _mean_estimate(x, log_scale=800.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lo, hi = est.ci(method="bca", rng=0, n_resamples=199)
        assert lo == math.inf and hi == math.inf
        blo, bhi = est.ci(method="bernstein")
        assert bhi == math.inf and (blo == math.inf or blo == 0.0)


def test_bernstein_formula_with_fixed_truncation(rng):
    x = rng.exponential(size=60)
    c, level = 1.5, 0.9
    y = np.minimum(x, c)
    lt = math.log(2 / 0.1)
    want = y.mean() - math.sqrt(2 * y.var(ddof=1) * lt / 60) - 7 * c * lt / (3 * 59)
    lo, hi = _mean_estimate(x).ci(level, method="bernstein", truncation=c)
    assert hi == math.inf and lo == pytest.approx(max(0.0, want))


def test_bernstein_split_is_a_lower_bound_below_the_mean(rng):
    x = rng.exponential(size=400)
    lo, hi = _mean_estimate(x).ci(method="bernstein")
    assert hi == math.inf and 0.0 < lo < x.mean()


def test_hoeffding_formula(rng):
    x = rng.uniform(0, 2, size=200)
    lo, hi = _mean_estimate(x).ci(0.9, method="hoeffding", upper=2.0)
    assert hi == math.inf
    assert lo == pytest.approx(max(0.0, x.mean() - 2.0 * math.sqrt(math.log(10) / 400)))


def test_statistic_upper_bound_holds_on_samples(batch):
    T = 8
    for name, params in [("clip_prod", {}), ("clip_prod", {"c": 1.5}), ("clip_tok", {}), ("mask_seq", {}),
                         ("mask_tok", {})]:
        est = _run(name, batch, **params)
        up = statistic_upper_bound(name, params, horizon=T, return_max=1.0)
        assert np.max(np.asarray(est.samples) * math.exp(est.log_scale)) <= up + 1e-12
    assert statistic_upper_bound("clip_prod", {"c": 2.0}, horizon=3, return_max=2.0) == 16.0
    for name in ("seq", "pdis", "tok", "snis", "geo", "psis"):
        assert statistic_upper_bound(name, horizon=4, return_max=1.0) is None
    with pytest.raises(ValueError, match="return_max"):
        statistic_upper_bound("clip_prod", horizon=2, return_max=-1.0)
    est = _run("clip_prod", batch)
    up = statistic_upper_bound("clip_prod", horizon=8, return_max=1.0)
    assert est.ci(method="hoeffding", upper=up)[1] == math.inf


# ------------------------------------------------------------------------------------------- errors


def test_errors_level_and_method():
    est = _mean_estimate([1.0, 2.0, 3.0, 4.0])
    for bad in (0.0, 1.0, -0.5, 1.5, float("nan")):
        with pytest.raises(ValueError, match="level"):
            est.ci(bad)
    with pytest.raises(TypeError, match="level"):
        est.ci("0.9")
    with pytest.raises(TypeError, match="level"):
        est.ci(True)
    with pytest.raises(ValueError, match="unknown ci method 'wald'"):
        est.ci(method="wald")
    with pytest.raises(ValueError, match="upper= is an option of method 'hoeffding'"):
        est.ci(method="normal", upper=1.0)
    with pytest.raises(ValueError, match="truncation= is an option of method 'bernstein'"):
        est.ci(method="t", truncation=1.0)
    with pytest.raises(ValueError, match="n_resamples= is an option of method 'bca'"):
        est.ci(method="bernstein", n_resamples=10)
    with pytest.raises(ValueError, match="rng= is an option of method 'bca'"):
        est.ci(method="t", rng=1)
    with pytest.raises(ValueError, match="n_resamples must be >= 2"):
        est.ci(method="bca", n_resamples=1)
    with pytest.raises(ValueError, match="truncation must be > 0"):
        est.ci(method="bernstein", truncation=0.0)


def test_error_t_needs_two_samples():
    with pytest.raises(NotApplicableError, match="'t' does not apply: .*n >= 2"):
        _mean_estimate([1.0]).ci(method="t")


@pytest.mark.parametrize("method", ["bca", "bernstein", "hoeffding"])
def test_error_no_samples(method):
    est = Estimate(value=1.0, stderr=0.1, n=10, ess=10.0)
    kw = dict(upper=2.0) if method == "hoeffding" else {}
    with pytest.raises(ValueError, match=f"'{method}' does not apply: .*no per-sample statistics"):
        est.ci(method=method, **kw)


@pytest.mark.parametrize("method", ["bca", "bernstein", "hoeffding"])
def test_error_batch_transforms(batch, method):
    kw = dict(upper=1e9) if method == "hoeffding" else {}
    for name, params in [("psis", {}), ("psis", {"self_normalized": False}), ("trunc_seq", {})]:
        est = _run(name, batch, **params)
        with pytest.raises(NotApplicableError, match=f"'{method}' does not apply: {name} is a batch transform"):
            est.ci(method=method, **kw)
        est.ci(method="normal"), est.ci(method="t")  # the CLT intervals stay available


@pytest.mark.parametrize("method", ["bernstein", "hoeffding"])
def test_error_lower_bounds_on_ratio_estimators(batch, method):
    for name in ("snis", "wpdis"):
        with pytest.raises(ValueError, match=f"'{method}' does not apply: {name} is a ratio estimator"):
            _run(name, batch).ci(method=method, **(dict(upper=10.0) if method == "hoeffding" else {}))


@pytest.mark.parametrize("method", ["bernstein", "hoeffding"])
def test_error_negative_samples(method):
    est = _mean_estimate([1.0, -0.5, 2.0, 0.3, 0.2])
    kw = dict(upper=3.0) if method == "hoeffding" else {}
    with pytest.raises(ValueError, match=f"'{method}' does not apply: .*non-negative.*1 of the 5"):
        est.ci(method=method, **kw)


def test_error_bernstein_needs_four_samples():
    with pytest.raises(ValueError, match="'bernstein' does not apply: .*n >= 4"):
        _mean_estimate([1.0, 2.0, 3.0]).ci(method="bernstein")


def test_error_hoeffding_bound():
    est = _mean_estimate([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="'hoeffding' does not apply: it needs the bound upper"):
        est.ci(method="hoeffding")
    with pytest.raises(ValueError, match=r"'hoeffding' does not apply: a per-sample statistic \(3\) exceeds"):
        est.ci(method="hoeffding", upper=2.5)
    for bad in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError, match="upper must be a finite positive bound"):
            est.ci(method="hoeffding", upper=bad)


@pytest.mark.parametrize("method", ["bca", "bernstein", "hoeffding"])
def test_error_non_finite_samples(method):
    est = _mean_estimate([1.0, np.nan, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match=f"'{method}' does not apply: .*not finite"):
        est.ci(method=method, **(dict(upper=9.0) if method == "hoeffding" else {}))


def test_error_bca_ratio_with_zero_weights():
    est = Estimate(value=math.nan, stderr=math.nan, n=3, ess=0.0, numerator=np.zeros(3), denominator=np.zeros(3),
                   estimator="snis")
    with pytest.raises(ValueError, match="'bca' does not apply: the ratio estimate itself is not finite"):
        est.ci(method="bca")


def test_methods_listed():
    assert METHODS == ("normal", "t", "bca", "bernstein", "hoeffding")
