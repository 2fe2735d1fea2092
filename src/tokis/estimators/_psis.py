"""Pareto-smoothed importance sampling (PSIS): generalized Pareto fit and tail smoothing.

References
----------
Vehtari, Simpson, Gelman, Yao, Gabry (2024). Pareto smoothed importance sampling.
JMLR 25(72). (arXiv:1507.02646, 2015.)
Zhang, Stephens (2009). A new and efficient estimation method for the generalized Pareto
distribution. Technometrics 51(3), 316-325.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["gpd_fit", "gpd_quantile", "psis_tail_length", "psis_smooth", "khat_threshold"]

#: Weakly informative prior of Vehtari et al.: k shrunk towards 0.5 with weight 10.
_PRIOR_K = 0.5
_PRIOR_WEIGHT = 10.0


def gpd_fit(x: np.ndarray) -> tuple[float, float]:
    """Fit a generalized Pareto distribution to positive exceedances.

    Zhang & Stephens (2009) empirical Bayes estimate: with ``theta = -k / sigma`` on the grid
    ``theta_j = 1/x_(n) + (1 - sqrt(m / (j - 1/2))) / (3 x_(q))``, ``j = 1..m``,
    ``m = 30 + floor(sqrt(n))``, ``x_(q)`` the first sample quartile, the profile estimate
    ``k(theta) = mean_i log(1 - theta x_i)`` and profile log-likelihood
    ``l(theta) = n (log(-theta / k(theta)) - k(theta) - 1)``, take the posterior mean
    ``theta_hat = sum_j theta_j exp(l_j) / sum_j exp(l_j)``, then ``k = k(theta_hat)`` and
    ``sigma = -k / theta_hat``. Finally ``k`` is shrunk with the weakly informative prior of
    Vehtari et al.: ``k <- (n k + 10 * 0.5) / (n + 10)``.

    Parameters
    ----------
    x : float64 (n,)
        Exceedances over the threshold, positive and sorted ascending, ``n >= 5``.

    Returns
    -------
    k, sigma : float
        Shape (``k > 0`` is a heavy tail; moments of order ``>= 1/k`` are infinite) and scale.
    """
    n = x.shape[0]
    m = 30 + int(math.sqrt(n))
    j = np.arange(1, m + 1, dtype=np.float64)
    quartile = x[int(n / 4.0 + 0.5) - 1]
    theta = 1.0 / x[-1] + (1.0 - np.sqrt(m / (j - 0.5))) / (3.0 * quartile)
    k_theta = np.log1p(-theta[:, None] * x[None, :]).mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        loglik = n * (np.log(-theta / k_theta) - k_theta - 1.0)
    ok = np.isfinite(loglik)
    if not ok.any():
        return math.nan, math.nan
    ll = loglik[ok]
    post = np.exp(ll - ll.max())
    post /= post.sum()
    theta_hat = float(np.dot(theta[ok], post))
    k = float(np.log1p(-theta_hat * x).mean())
    sigma = -k / theta_hat
    k = (n * k + _PRIOR_WEIGHT * _PRIOR_K) / (n + _PRIOR_WEIGHT)
    return k, sigma


def gpd_quantile(p: np.ndarray, k: float, sigma: float) -> np.ndarray:
    """Quantile of the generalized Pareto: ``sigma ((1 - p)^(-k) - 1) / k`` (``-sigma log(1-p)`` at k=0)."""
    if k == 0.0:
        return -sigma * np.log1p(-p)
    return sigma * np.expm1(-k * np.log1p(-p)) / k


def psis_tail_length(n: int) -> int:
    """Tail length ``M = ceil(min(0.2 n, 3 sqrt(n)))`` of Vehtari et al."""
    return int(math.ceil(min(0.2 * n, 3.0 * math.sqrt(n))))


def khat_threshold(n: int) -> float:
    """Sample-size dependent reliability threshold ``min(1 - 1/log10(n), 0.7)`` for k-hat."""
    if n <= 1:
        return -math.inf
    return min(1.0 - 1.0 / math.log10(n), 0.7)


def psis_smooth(log_w: np.ndarray) -> tuple[np.ndarray, float, int]:
    """Pareto-smooth importance log-weights.

    The largest ``M`` weights (:func:`psis_tail_length`) are replaced by the expected order
    statistics ``u + F^{-1}((z - 1/2) / M)``, ``z = 1..M``, of a generalized Pareto fitted
    (:func:`gpd_fit`) to their exceedances over the threshold ``u`` (the ``(M+1)``-th largest
    weight), then truncated at the largest raw weight. Everything is relative to the largest
    weight, so log-weights of any magnitude work.

    The result depends only on the multiset of log-weights, never on the order of the rows:

    * Tail membership is decided by value. The tail is every weight strictly above ``u``
      (and above the smallest normal float times the largest weight, below which the
      exceedance underflows); a group of weights tied with ``u`` stays wholly outside it, so
      the tail may hold fewer than ``M`` weights.
    * Tied weights get equal smoothed weights. The expected order statistics are computed
      in sorted order and then every group of equal log-weights in the tail receives the
      arithmetic mean, in weight space (relative to the largest weight, so every term is in
      ``(0, 1]``), of the values its members were given. Without this the ``z``-th order
      statistic would go to whichever tied row the sort placed ``z``-th, which matters as
      soon as tied rows carry different returns.

    Parameters
    ----------
    log_w : float64 (n,)
        Log importance weights (``-inf`` allowed).

    Returns
    -------
    smoothed : float64 (n,)
        Smoothed log-weights (a copy; equal to ``log_w`` when nothing was smoothed).
    khat : float
        Estimated Pareto shape, with these conventions where no fit is made (nothing is then
        smoothed, ``tail = 0``):

        * ``inf`` when ``M < 5`` (``n < 21``: too few draws to assess the tail, the
          convention of the ``loo`` package) or when every weight is zero;
        * ``-inf`` when no weight exceeds the threshold, i.e. the ``M + 1`` largest weights
          are all tied at the maximum: a bounded tail (the largest weight's share is at most
          ``1 / (M + 1)``), nothing to smooth;
        * ``inf`` when between 1 and 4 weights exceed the threshold: too few distinct tail
          values to fit, typically because a handful of rows hold essentially all the
          weight -- in the extreme one log-weight exceeds every other by about 709 or more,
          so that every other weight underflows relative to it. This is the least reliable
          case, so it is reported as unassessable (``inf``, above any threshold), never as a
          light tail;
        * ``inf`` when the fit itself fails (non-finite profile likelihood everywhere).
    tail : int
        Number of weights replaced.
    """
    log_w = np.array(log_w, dtype=np.float64)
    n = log_w.shape[0]
    M = psis_tail_length(n)
    finite = np.isfinite(log_w)
    if M < 5 or not finite.any():
        return log_w, math.inf, 0
    top = float(log_w[finite].max())
    x = log_w - top
    order = np.argsort(x, kind="stable")
    # threshold u = the (M+1)-th largest value; tail = every value strictly above it (by
    # value: a tie group at u is wholly outside), floored where exp(x) would be subnormal
    cutoff = max(float(x[order[n - M - 1]]), math.log(np.finfo(np.float64).tiny))
    tail_idx = order[n - M :]
    tail_idx = tail_idx[x[tail_idx] > cutoff]
    exceed = np.exp(x[tail_idx]) - math.exp(cutoff)
    keep = exceed > 0
    tail_idx, exceed = tail_idx[keep], exceed[keep]
    size = exceed.shape[0]
    if size == 0:  # the M + 1 largest weights are tied: bounded tail
        return log_w, -math.inf, 0
    if size < 5:  # a few rows above a tie group or above underflow: cannot assess
        return log_w, math.inf, 0
    k, sigma = gpd_fit(exceed)
    if not math.isfinite(k):
        return log_w, math.inf, 0
    p = (np.arange(1, size + 1, dtype=np.float64) - 0.5) / size
    smoothed = np.minimum(math.exp(cutoff) + gpd_quantile(p, k, sigma), 1.0)
    # tied log-weights (contiguous in sorted order) share the mean of their smoothed weights
    vals = x[tail_idx]
    starts = np.flatnonzero(np.r_[True, vals[1:] != vals[:-1]])
    if starts.shape[0] < size:
        counts = np.diff(np.r_[starts, size])
        smoothed = np.repeat(np.add.reduceat(smoothed, starts) / counts, counts)
    x[tail_idx] = np.log(smoothed)
    return x + top, k, size
