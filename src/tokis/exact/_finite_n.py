r"""Exact finite-``n`` distribution of batch estimators by enumerating multisets.

A batch of ``n`` iid samples over ``N`` distinct outcomes (probabilities ``p``) is, up to
order, a multiset: a count vector ``k`` with ``sum k = n`` and multinomial probability
``n! / prod k_j! * prod p_j^{k_j}``. Every batch estimator used here is symmetric in its
samples, so summing over the ``C(N + n - 1, n)`` count vectors gives the exact mean and
variance of the estimate at ``n``. snis, wpdis and trunc_seq with ``c = "ionides"`` are
evaluated vectorised from their definitions; any other batch estimator (psis) is evaluated by
calling its ``tokis.estimators`` function on each multiset's arrays.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import gammaln

from ._enumerate import Outcomes

__all__ = ["count_multisets", "multisets", "finite_n_moments", "VECTORISED"]


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


def _snis(K, o: Outcomes, n, params):
    lw = o.log_ratio.sum(axis=1)
    w = np.exp(lw - lw[np.isfinite(lw)].max()) if np.isfinite(lw).any() else np.zeros_like(lw)
    G = o.rewards.sum(axis=1)
    return _ratio(K @ (w * G), K @ w, undefined=np.nan)  # every weight zero: undefined


def _wpdis(K, o: Outcomes, n, params):
    lwt = np.cumsum(o.log_ratio, axis=1)  # padding has log-ratio 0: ended rows keep W
    out = np.zeros(K.shape[0])
    for t in range(lwt.shape[1]):
        col = lwt[:, t]
        w = np.exp(col - col[np.isfinite(col)].max()) if np.isfinite(col).any() else np.zeros_like(col)
        # as tokis.estimators.wpdis: a step counts when some row of the batch has a reward there,
        # and such a step with zero total weight makes the estimate undefined (nan)
        active = (K @ (o.rewards[:, t] != 0)) > 0
        out += np.where(active, _ratio(K @ (w * o.rewards[:, t]), K @ w, undefined=np.nan), 0.0)
    return out


def _trunc_ionides(K, o: Outcomes, n, params):
    W = np.exp(o.log_ratio.sum(axis=1))
    G = o.rewards.sum(axis=1)
    c = (K @ W) / n * math.sqrt(n)
    return (K * (np.minimum(W[None, :], c[:, None]) * G[None, :])).sum(axis=1) / n


#: Batch estimators evaluated from their definitions, as ``tokis.estimators`` defines them: snis
#: is undefined (nan) when every weight is zero; so is wpdis when a step with a reward has zero weight.
VECTORISED = {"snis": _snis, "wpdis": _wpdis, "trunc_seq": _trunc_ionides}


def _by_estimator(name, K, o: Outcomes, params):
    try:
        import tokis.estimators as est
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ValueError(f"exact finite-n moments of {name!r} call tokis.estimators.{name}, which is not importable") from exc
    func = getattr(est, name, None)
    if func is None:
        raise ValueError(f"exact finite-n moments of {name!r} call tokis.estimators.{name}, which does not exist")
    out = np.empty(K.shape[0])
    idx = np.arange(K.shape[1])
    for m in range(K.shape[0]):
        rows = np.repeat(idx, K[m])
        e = func(o.log_ratio[rows], o.rewards[rows], mask=o.mask[rows], **params)
        out[m] = float(e.value)
    return out


def finite_n_moments(name: str, o: Outcomes, n: int, params, max_multisets: int, use_estimator: bool = False):
    """Exact ``(E[estimate], Var(estimate))`` of batch estimator ``name`` at sample size ``n``.

    Parameters
    ----------
    name : str
    o : Outcomes
    n : int
    params : mapping
        Estimator parameters (passed to the estimator function when it is called).
    max_multisets : int
        Refuse (ValueError) when ``C(N + n - 1, n)`` exceeds this.
    use_estimator : bool
        Call ``tokis.estimators.<name>`` even where a vectorised definition exists.
    """
    N = o.size
    M = count_multisets(N, n)
    if M > max_multisets:
        raise ValueError(
            f"exact finite-n moments of {name!r} at n={n} need all C(N+n-1, n) = {M} multisets of the "
            f"N={N} distinct outcomes, more than max_multisets={max_multisets}: use a smaller n or MDP, "
            "or raise max_multisets"
        )
    K = multisets(N, n)
    logp = gammaln(n + 1) - gammaln(K + 1).sum(axis=1) + K @ np.log(o.prob)
    prob = np.exp(logp)
    prob /= prob.sum()
    if use_estimator or name not in VECTORISED:
        est = _by_estimator(name, K, o, params)
    else:
        est = VECTORISED[name](K, o, n, params)
    bad = np.isnan(est)
    if bad.any():
        raise ValueError(
            f"{name} at n={n} is undefined (e.g. every weight zero, where pi = 0 on tokens mu emits) with "
            f"probability {float(prob[bad].sum()):.3g}, so its exact finite-n moments do not exist"
        )
    mean = float(prob @ est)
    var = float(prob @ (est - mean) ** 2)
    return mean, var
