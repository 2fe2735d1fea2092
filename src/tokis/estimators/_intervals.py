r"""Confidence intervals and high-confidence lower bounds of an :class:`~tokis.estimators.Estimate`.

:meth:`Estimate.ci` dispatches here. Every method works on the per-sample arrays the estimate
keeps (``samples``, or ``numerator``/``denominator`` for ratio estimators), which are stored
times ``exp(-log_scale)``: the interval is computed on the stored scale and multiplied back by
``exp(log_scale)`` at the end (in log space, so a bound beyond float64 reads ``inf`` instead of
overflowing in between). Every method is equivariant under that positive rescaling, so the
result is the interval of the true-scale statistics.

A batched Estimate (leading batch dimensions) gets every batch's own interval, as two arrays of
the batch shape: ``"normal"`` elementwise on the arrays, every other method batch by batch on
``est[i]`` (the bootstrap and the bounds are per-batch computations). ``"bca"`` with an integer
``rng`` resamples every batch with that seed, exactly as ``est[i].ci(method="bca", rng=seed)``;
with a Generator (or None) one stream is drawn from batch after batch.

Two-sided intervals ``(lo, hi)``
--------------------------------
``"normal"``
    ``value -/+ z * stderr``, ``z`` the ``(1 + level) / 2`` standard normal quantile (the CLT;
    for ratio estimators ``stderr`` is the delta method).
``"t"``
    ``value -/+ t * stderr``, ``t`` the ``(1 + level) / 2`` quantile of Student's t with
    ``n - 1`` degrees of freedom (``n >= 2``): wider than ``"normal"`` at every ``n``.
``"bca"``
    Bias-corrected and accelerated bootstrap (:func:`scipy.stats.bootstrap`, ``method="BCa"``)
    of the mean of the per-sample statistics; for ratio estimators of the paired statistic
    ``sum N / sum D`` (rows resampled together; for ``wpdis`` the sum over steps of the per-step
    ratios). ``n_resamples`` resamples (default 9999), reproducible with ``rng`` (a seed or a
    ``numpy.random.Generator``). A batch whose statistics are all equal gives ``(value, value)``.

One-sided lower bounds ``(lo, inf)`` for non-negative statistics
----------------------------------------------------------------
``"bernstein"``
    Truncated empirical Bernstein bound of Thomas, Theocharous & Ghavamzadeh (2015), "High
    confidence off-policy evaluation" (AAAI), with Maurer & Pontil's (2009) empirical Bernstein
    inequality. Truncation choice: the first ``n_pre = max(2, round(n / 5))`` samples (the batch
    is i.i.d., so any fixed split is a random split) are held out; the truncation level ``c`` is
    the value among the held-out samples (and their maximum) that maximises the bound predicted
    for the remaining ``m = n - n_pre`` samples from the held-out mean and variance; the bound
    is then computed on the ``m`` samples only, ``Y_i = min(f_i, c)``:

    .. math::
        \mathrm{lo} = \bar Y - \sqrt{2 s_Y^2 \ln(2/\delta)/m} - \frac{7 c \ln(2/\delta)}{3(m-1)},
        \qquad \delta = 1 - \mathrm{level}.

    It holds with probability ``>= level`` for :math:`E[\min(f, c)]`, and since
    :math:`\min(f, c) \le f` for :math:`E[f]` too (truncation only lowers the mean): a valid
    lower bound of the mean, conservative by the truncated mass. ``c`` is independent of the
    ``m`` samples, as the inequality requires. A caller's own level ``truncation=c`` (chosen
    without looking at this batch) uses all ``n`` samples instead. The bound is clipped at 0
    (the statistic is non-negative). Needs ``n >= 4`` (``m >= 2``).
``"hoeffding"``
    Hoeffding's inequality for statistics in ``[0, upper]``:
    ``lo = mean - upper * sqrt(ln(1/delta) / (2 n))``, clipped at 0. The caller passes
    ``upper`` (a bound that holds for every possible sample, not the batch maximum);
    :meth:`tokis.estimators.EstimatorSpec.statistic_bound` gives one for the clipped and masked
    estimators (from their declarations) for the horizon and the largest return.

Methods that do not apply raise :class:`NotApplicableError` (a :class:`ValueError`) naming the
method and the reason: no
per-sample arrays, ``n`` too small, a batch transform (``diagnostics['batch_transform']``: ``psis``
smooths, ``trunc_seq`` may truncate at a level computed from the whole batch; their values are
not a mean or ratio of independent terms), negative statistics or a ratio estimator for the lower bounds, samples above
``upper`` for Hoeffding.
"""

from __future__ import annotations

import math

import numpy as np


__all__ = ["interval", "NotApplicableError", "METHODS", "TWO_SIDED", "LOWER_BOUNDS",
           "BCA_RESAMPLES"]

#: Two-sided methods.
TWO_SIDED = ("normal", "t", "bca")
#: One-sided lower-bound methods (the interval is ``(lo, inf)``).
LOWER_BOUNDS = ("bernstein", "hoeffding")
#: Every method of :meth:`Estimate.ci`.
METHODS = TWO_SIDED + LOWER_BOUNDS
#: Default number of bootstrap resamples.
BCA_RESAMPLES = 9999
#: Built-in estimators declared with a BatchTransform reduction (their value is not a mean or ratio of
#: independent terms). A name list, not a registry lookup: the registry's module imports this one's
#: importer (Estimate), so reading it here would make an import cycle; and the Estimate does not record
#: whether trunc_seq's c was fixed (per-sample) or the batch's Ionides level, so every trunc_seq is refused.


class NotApplicableError(ValueError):
    """An interval method that does not apply to this estimate (the message names the method and why)."""


def _host(a):
    """A numpy float64 copy of a per-sample array (cupy arrays are brought to the host)."""
    if a is None:
        return None
    if hasattr(a, "get") and not isinstance(a, np.ndarray):
        a = a.get()
    return np.asarray(a, dtype=np.float64)


def _rescale(x: float, log_scale: float) -> float:
    """``x * exp(log_scale)`` without overflow in between (``+-inf`` past float64)."""
    if not math.isfinite(x) or x == 0.0 or log_scale == 0.0:
        return float(x)
    e = math.log(abs(x)) + log_scale
    return math.copysign(math.inf if e > 709.78 else math.exp(e), x)


def _fail(method: str, reason: str):
    raise NotApplicableError(f"ci method {method!r} does not apply: {reason}")


def _check_batch(est, method):
    if est.diagnostics.get("batch_transform", False):
        name = est.estimator or "this estimator"
        _fail(method, f"{name} is a batch transform (its weights are transformed with statistics of the whole "
                      "batch: psis smooths the largest weights, trunc_seq with c='ionides' truncates at "
                      "c = mean(W) sqrt(n)), so its value is not a mean or ratio of independent per-sample terms "
                      "and resampling or concentration bounds on them are not valid")


def _mean_samples(est, method):
    _check_batch(est, method)
    s = _host(est.samples)
    if s is None:
        if est.numerator is not None:
            _fail(method, f"{est.estimator or 'this estimator'} is a ratio estimator (sum N / sum D), not a mean of "
                          "independent non-negative terms; the lower bounds need per-sample statistics")
        _fail(method, "the estimate keeps no per-sample statistics")
    if s.ndim != 1 or s.size == 0:
        _fail(method, "the estimate keeps no per-sample statistics")
    if not np.isfinite(s).all():
        _fail(method, "some per-sample statistics are not finite")
    return s


def _z_interval(est, q: float):
    return (est.value - q * est.stderr, est.value + q * est.stderr)


def _t(est, level):
    from scipy import stats

    if est.n < 2:
        _fail("t", f"Student's t needs n >= 2 samples (n - 1 degrees of freedom), got n = {est.n}")
    if not math.isfinite(est.stderr):
        _fail("t", f"the standard error is not finite ({est.stderr})")
    return _z_interval(est, float(stats.t.ppf(0.5 + level / 2.0, est.n - 1)))


def _bca(est, level, rng, n_resamples):
    from scipy import stats

    _check_batch(est, "bca")
    n_resamples = BCA_RESAMPLES if n_resamples is None else int(n_resamples)
    if n_resamples < 2:
        raise ValueError(f"n_resamples must be >= 2, got {n_resamples}")
    rng = np.random.default_rng(rng)
    if est.samples is not None:
        s = _host(est.samples)
        if s.ndim != 1 or s.size < 2:
            _fail("bca", f"the bootstrap needs at least 2 per-sample statistics, got {s.size}")
        if not np.isfinite(s).all():
            _fail("bca", "some per-sample statistics are not finite")
        if np.all(s == s[0]):
            return (est.value, est.value)
        res = stats.bootstrap((s,), np.mean, confidence_level=level, n_resamples=n_resamples, method="BCa",
                              random_state=rng, vectorized=True, axis=-1)
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        return (_rescale(lo, est.log_scale), _rescale(hi, est.log_scale))
    num, den = _host(est.numerator), _host(est.denominator)
    if num is None or den is None:
        _fail("bca", "the estimate keeps no per-sample statistics (samples or numerator/denominator)")
    n = num.shape[0]
    if n < 2:
        _fail("bca", f"the bootstrap needs at least 2 per-sample pairs, got {n}")
    if not (np.isfinite(num).all() and np.isfinite(den).all()):
        _fail("bca", "some per-sample numerators or denominators are not finite")
    if not math.isfinite(est.value):
        _fail("bca", f"the ratio estimate itself is not finite ({est.value}): every weight is zero")
    N2 = num.reshape(n, -1)
    D2 = den.reshape(n, -1)

    def ratio(idx, axis=-1):
        idx = np.asarray(idx).astype(np.intp)
        sN = N2[idx].sum(axis=-2)  # (..., columns)
        sD = D2[idx].sum(axis=-2)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(sD > 0, sN / np.where(sD > 0, sD, 1.0), 0.0)
        return r.sum(axis=-1)

    idx = np.arange(n, dtype=float)
    full = ratio(np.arange(n))
    jack = ratio(np.array([np.delete(np.arange(n), i) for i in range(n)]))
    if np.all(jack == full):
        return (est.value, est.value)
    res = stats.bootstrap((idx,), ratio, confidence_level=level, n_resamples=n_resamples, method="BCa",
                          random_state=rng, vectorized=True, axis=-1)
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def _nonnegative(s, method):
    if (s < 0).any():
        _fail(method, f"it is a lower bound for non-negative statistics, and {int((s < 0).sum())} of the "
                      f"{s.size} per-sample statistics are negative (min {float(s.min()):.3g})")


def _bernstein_bound(y, c, log_term):
    m = y.size
    return float(y.mean() - math.sqrt(2.0 * float(y.var(ddof=1)) * log_term / m) - 7.0 * c * log_term / (3.0 * (m - 1)))


def _bernstein(est, level, truncation):
    s = _mean_samples(est, "bernstein")
    _nonnegative(s, "bernstein")
    delta = 1.0 - level
    log_term = math.log(2.0 / delta)
    if truncation is not None:
        c_true = float(truncation)
        if not (c_true > 0) or math.isnan(c_true):
            raise ValueError(f"truncation must be > 0, got {truncation!r}")
        if s.size < 2:
            _fail("bernstein", f"the empirical Bernstein bound needs n >= 2 samples, got {s.size}")
        # c on the stored scale: c * exp(-log_scale), in log space
        e = math.log(c_true) - est.log_scale
        c = math.inf if e > 709.78 else math.exp(e)
        post = s
    else:
        n = s.size
        if n < 4:
            _fail("bernstein", f"the held-out split needs n >= 4 samples (2 to choose c, 2 for the bound), got {n}")
        n_pre = max(2, int(round(n / 5)))
        n_pre = min(n_pre, n - 2)
        pre, post = s[:n_pre], s[n_pre:]
        m = post.size
        candidates = np.unique(np.concatenate([pre, [pre.max()]]))
        candidates = candidates[candidates > 0]
        if candidates.size == 0:  # every held-out value is 0: any c gives the same bound shape; take the post max
            c = float(post.max()) if post.max() > 0 else 1.0
        else:
            best, c = -math.inf, float(candidates[-1])
            for cand in candidates:
                y = np.minimum(pre, cand)
                pred = (y.mean() - math.sqrt(2.0 * float(y.var(ddof=1)) * log_term / m)
                        - 7.0 * cand * log_term / (3.0 * (m - 1)))
                if pred > best:
                    best, c = pred, float(cand)
    y = np.minimum(post, c)
    if not math.isfinite(c):
        _fail("bernstein", "the truncation level is not finite on the stored scale")
    lo = max(0.0, _bernstein_bound(y, c, log_term))
    return (_rescale(lo, est.log_scale), math.inf)


def _hoeffding(est, level, upper):
    if est.samples is None and est.numerator is not None:
        _check_batch(est, "hoeffding")
        _fail("hoeffding", f"{est.estimator or 'this estimator'} is a ratio estimator (sum N / sum D), not a mean "
                           "of independent bounded terms")
    s = _mean_samples(est, "hoeffding")
    if upper is None:
        _fail("hoeffding", "it needs the bound upper >= every possible per-sample statistic (pass upper=...; "
                           "EstimatorSpec.statistic_bound gives one for clipped and masked estimators); the "
                           "statistics of this estimator are not known to be bounded")
    upper = float(upper)
    if not upper > 0 or not math.isfinite(upper):
        raise ValueError(f"upper must be a finite positive bound, got {upper!r}")
    _nonnegative(s, "hoeffding")
    # compare in log space: s * exp(log_scale) <= upper
    smax = float(s.max())
    if smax > 0 and math.log(smax) + est.log_scale > math.log(upper) + 1e-9:
        _fail("hoeffding", f"a per-sample statistic ({_rescale(smax, est.log_scale):.6g}) exceeds upper = {upper:.6g}")
    delta = 1.0 - level
    e = math.log(upper) - est.log_scale
    u = math.inf if e > 709.78 else math.exp(e)
    lo = max(0.0, float(s.mean()) - u * math.sqrt(math.log(1.0 / delta) / (2.0 * s.size)))
    return (_rescale(lo, est.log_scale), math.inf)


def _batched(est, shape, level, method, rng, upper, truncation, n_resamples):
    """Every batch's own interval, as two arrays of the batch shape."""
    from statistics import NormalDist

    if method == "normal":  # elementwise, on the arrays at once
        z = NormalDist().inv_cdf(0.5 + level / 2.0)
        value, stderr = np.asarray(est.value), np.asarray(est.stderr)
        return (value - z * stderr, value + z * stderr)
    if method == "bca" and isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        rng = int(rng)  # each batch is resampled with this seed, as its own call would be
    elif method == "bca":
        rng = np.random.default_rng(rng)  # one stream, drawn from batch after batch
    lo, hi = np.empty(shape), np.empty(shape)
    for idx in np.ndindex(shape):
        lo[idx], hi[idx] = interval(est[idx], level, method=method, rng=rng, upper=upper, truncation=truncation,
                                    n_resamples=n_resamples)
    return lo, hi


def interval(est, level=0.95, *, method="normal", rng=None, upper=None, truncation=None, n_resamples=None):
    """The interval of :meth:`Estimate.ci` (see the module docstring for every method)."""
    from statistics import NormalDist

    if isinstance(level, bool) or not isinstance(level, (int, float, np.floating, np.integer)):
        raise TypeError(f"level must be a number in (0, 1), got {level!r}")
    level = float(level)
    if not 0.0 < level < 1.0 or math.isnan(level):
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"unknown ci method {method!r}; choose from {', '.join(METHODS)}")
    if upper is not None and method != "hoeffding":
        raise ValueError(f"upper= is an option of method 'hoeffding', not of {method!r}")
    if truncation is not None and method != "bernstein":
        raise ValueError(f"truncation= is an option of method 'bernstein', not of {method!r}")
    if n_resamples is not None and method != "bca":
        raise ValueError(f"n_resamples= is an option of method 'bca', not of {method!r}")
    if rng is not None and method != "bca":
        raise ValueError(f"rng= is an option of method 'bca' (the only randomised method), not of {method!r}")
    shape = est.batch_shape
    if shape != ():
        return _batched(est, shape, level, method, rng, upper, truncation, n_resamples)
    if method == "normal":
        z = NormalDist().inv_cdf(0.5 + level / 2.0)
        return _z_interval(est, z)
    if method == "t":
        return _t(est, level)
    if method == "bca":
        return _bca(est, level, rng, n_resamples)
    if method == "bernstein":
        return _bernstein(est, level, truncation)
    return _hoeffding(est, level, upper)
