r"""Exact finite-``n`` distribution of batch estimators by enumerating multisets.

A batch of ``n`` iid samples over ``N`` distinct outcomes (probabilities ``p``) is, up to
order, a multiset: a count vector ``k`` with ``sum k = n`` and multinomial probability
``n! / prod k_j! * prod p_j^{k_j}``. Every batch estimator used here is symmetric in its
samples, so summing over the ``C(N + n - 1, n)`` count vectors gives the exact mean and
variance of the estimate at ``n``. Self-normalised estimators (``reduce="ratio"``) are evaluated
vectorised from their declaration's per-outcome log-weights (one ratio, or one per step for a
PerDecision form); any other batch estimator (a batch transform: psis, trunc_seq with
``c = "ionides"``) is evaluated by calling the estimator itself on each multiset's arrays.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import gammaln

from .._core._batch import prepare
from ..estimators import PerDecision
from ._enumerate import Outcomes
from ._errors import NoExactMethodError

__all__ = ["count_multisets", "multisets", "finite_n_moments"]


def count_multisets(N: int, n: int) -> int:
    """Number of multisets of size ``n`` from ``N`` kinds, ``C(N + n - 1, n)``."""
    return math.comb(N + n - 1, n)


def multisets(N: int, n: int) -> np.ndarray:
    """All count vectors ``k`` (M, N) with non-negative entries summing to ``n``."""
    # table[s] = all compositions of s into the parts seen so far
    table = [np.array([[s]], dtype=np.int64) for s in range(n + 1)]
    for _ in range(1, N):
        new = []
        for s in range(n + 1):
            blocks = [np.column_stack([table[s - k], np.full(len(table[s - k]), k, dtype=np.int64)]) for k in range(s + 1)]
            new.append(np.concatenate(blocks))
        table = new
    return table[n]


def _ratio(num, den, undefined=0.0):
    """``num / den`` with ``undefined`` where ``den = 0``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), undefined)


def _scaled(log_w):
    """``exp(log_w - max)`` (all zeros when every weight is zero)."""
    finite = np.isfinite(log_w)
    return np.exp(log_w - log_w[finite].max()) if finite.any() else np.zeros_like(log_w)


def _vectorised_ratio(spec, K, o: Outcomes, params):
    """Every multiset's estimate of a self-normalised declaration, from per-outcome weights."""
    batch = prepare(o.log_ratio, o.rewards, o.mask)
    form = spec.form
    if isinstance(form, PerDecision):
        prefix = form.prefix_log_weights(np, batch, params)  # an ended row keeps its weight
        out = np.zeros(K.shape[0])
        for t in range(prefix.shape[1]):
            w = _scaled(prefix[:, t])
            # a step counts when some row of the multiset has a reward there; such a step with
            # zero total weight makes the estimate undefined (nan), as the estimator says
            active = (K @ (o.rewards[:, t] != 0)) > 0
            out += np.where(active, _ratio(K @ (w * o.rewards[:, t]), K @ w, undefined=np.nan), 0.0)
        return out
    w = _scaled(form.log_weights(np, batch, params))
    return _ratio(K @ (w * batch.returns), K @ w, undefined=np.nan)  # every weight zero: undefined


def _by_estimator(spec, K, o: Outcomes, params):
    out = np.empty(K.shape[0])
    idx = np.arange(K.shape[1])
    for m in range(K.shape[0]):
        rows = np.repeat(idx, K[m])
        e = spec(o.log_ratio[rows], o.rewards[rows], mask=o.mask[rows], backend="numpy", **params)
        out[m] = float(e.value)
    return out


def finite_n_moments(spec, o: Outcomes, n: int, params, max_multisets: int, use_estimator: bool = False):
    """Exact ``(E[estimate], Var(estimate))`` of batch estimator ``spec`` at sample size ``n``.

    Parameters
    ----------
    spec : EstimatorSpec
    o : Outcomes
    n : int
    params : mapping
        Checked estimator parameters.
    max_multisets : int
        Refuse (NoExactMethodError) when ``C(N + n - 1, n)`` exceeds this.
    use_estimator : bool
        Call the estimator on every multiset even where the vectorised ratio applies.
    """
    N = o.size
    M = count_multisets(N, n)
    if M > max_multisets:
        raise NoExactMethodError(
            f"exact finite-n moments of {spec.name!r} at n={n} need all C(N+n-1, n) = {M} multisets of the "
            f"N={N} distinct outcomes, more than max_multisets={max_multisets}: use a smaller n or MDP, "
            "or raise max_multisets"
        )
    K = multisets(N, n)
    logp = gammaln(n + 1) - gammaln(K + 1).sum(axis=1) + K @ np.log(o.prob)
    prob = np.exp(logp)
    prob /= prob.sum()
    if use_estimator or spec.reduce != "ratio":
        est = _by_estimator(spec, K, o, params)
    else:
        est = _vectorised_ratio(spec, K, o, params)
    bad = np.isnan(est)
    if bad.any():
        raise NoExactMethodError(
            f"{spec.name} at n={n} is undefined (e.g. every weight zero, where pi = 0 on tokens mu emits) with "
            f"probability {float(prob[bad].sum()):.3g}, so its exact finite-n moments do not exist"
        )
    mean = float(prob @ est)
    var = float(prob @ (est - mean) ** 2)
    return mean, var
