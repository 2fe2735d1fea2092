"""Plain-Python statement of every estimator's formula (tests only; no log space).

Rows are given as lists: ``lrs[i]`` the real log-ratios of sequence ``i`` (length L_i) and
``rews[i]`` its per-step rewards (same length) — or, for terminal-only rewards, ``G[i]`` with
``rews=None``. Everything is a direct transcription of the DESIGN section 4 table.
"""

from __future__ import annotations

import math
import statistics

__all__ = ["rows_from_arrays", "naive_samples", "naive_estimate", "naive_wpdis", "PER_SAMPLE", "kish"]


def rows_from_arrays(log_ratio, rewards, mask):
    """Lists of real log-ratios and rewards per row; ``rews`` is None for (n,) rewards."""
    n = len(log_ratio)
    lrs = [[float(log_ratio[i][t]) for t in range(len(mask[i])) if mask[i][t]] for i in range(n)]
    if getattr(rewards, "ndim", 1) == 1:
        return lrs, None, [float(g) for g in rewards]
    rews = [[float(rewards[i][t]) for t in range(len(mask[i])) if mask[i][t]] for i in range(n)]
    return lrs, rews, [math.fsum(r) for r in rews]


def _exp(x):
    return math.exp(x) if x > -math.inf else 0.0


def _w(lr):
    return _exp(math.fsum(lr))


def _pdis(lr, rew, g):
    if rew is None:
        return _w(lr) * g
    total, acc = 0.0, 0.0
    for l, r in zip(lr, rew):
        acc += l
        total += _exp(acc) * r
    return total


def _weight(name, lr, c, lo, hi):
    """Sequence-level (effective) weight of the mean estimators."""
    L = len(lr)
    r = [_exp(x) for x in lr]
    if name in ("seq", "pdis", "snis", "wpdis", "psis"):
        return _w(lr)
    if name == "tok":
        return 1 + sum(x - 1 for x in r)
    if name == "tok_sum":
        return sum(r)
    if name == "tok_mean":
        return sum(r) / L if L else 1.0
    if name == "trunc_seq":
        return min(_w(lr), c)
    if name == "clip_prod":
        return math.prod(min(x, c) for x in r)
    if name == "clip_tok":
        return 1 + sum(min(x, c) - 1 for x in r)
    if name == "geo":
        return _exp(math.fsum(lr) / L) if L else 1.0
    if name == "mask_seq":
        w = _w(lr)
        return w if lo <= w <= hi else 0.0
    if name == "mask_tok":
        return 1 + sum((x - 1) for x in r if lo <= x <= hi)
    raise KeyError(name)


PER_SAMPLE = ("seq", "tok", "tok_sum", "tok_mean", "pdis", "trunc_seq", "clip_prod", "clip_tok", "geo", "mask_seq", "mask_tok")


def naive_samples(name, lrs, rews, G, *, c=2.0, lo=0.5, hi=2.0):
    """Per-sample statistics f_i of a mean estimator (``trunc_seq`` needs a numeric c)."""
    if name == "pdis":
        return [_pdis(lr, None if rews is None else rews[i], G[i]) for i, lr in enumerate(lrs)]
    return [_weight(name, lr, c, lo, hi) * G[i] for i, lr in enumerate(lrs)]


def kish(w):
    s2 = sum(x * x for x in w)
    return sum(w) ** 2 / s2 if s2 else 0.0


def naive_wpdis(log_ratio, rewards, mask):
    """(value, linearised terms z_i) of weighted per-decision IS on the raw (n, T) arrays.

    Columns are time steps; a masked position is a step with ratio 1 and reward 0. Terminal
    rewards (n,) sit at the last real column of their row (column 0 for an empty row).
    """
    n, T = len(mask), len(mask[0])
    lr = [[float(log_ratio[i][t]) if mask[i][t] else 0.0 for t in range(T)] for i in range(n)]
    if getattr(rewards, "ndim", 1) == 1:
        steps = [[0.0] * T for _ in range(n)]
        for i in range(n):
            real = [t for t in range(T) if mask[i][t]]
            steps[i][real[-1] if real else 0] = float(rewards[i])
    else:
        steps = [[float(rewards[i][t]) if mask[i][t] else 0.0 for t in range(T)] for i in range(n)]
    prefix = [[_exp(math.fsum(lr[i][: t + 1])) for t in range(T)] for i in range(n)]
    value, z = 0.0, [0.0] * n
    for t in range(T):
        if all(steps[i][t] == 0 for i in range(n)):
            continue
        den = sum(prefix[i][t] for i in range(n))
        num = sum(prefix[i][t] * steps[i][t] for i in range(n))
        ratio = num / den
        value += ratio
        for i in range(n):
            z[i] += prefix[i][t] * (steps[i][t] - ratio) / (den / n)
    return value, z


def naive_estimate(name, lrs, rews, G, arrays, *, c=2.0, lo=0.5, hi=2.0):
    """(value, stderr, ess) by the formulas; psis only for n < 21 (no smoothing).

    ``arrays = (log_ratio, rewards, mask)`` as given (wpdis needs the column alignment).
    """
    n = len(lrs)
    W = [_w(lr) for lr in lrs]
    if name in ("snis", "psis"):
        value = sum(w * g for w, g in zip(W, G)) / sum(W)
        z = [w * (g - value) / (sum(W) / n) for w, g in zip(W, G)]
        sd = statistics.stdev(z) / math.sqrt(n) if n > 1 else math.nan
        return value, sd, kish(W)
    if name == "wpdis":
        value, z = naive_wpdis(*arrays)
        sd = statistics.stdev(z) / math.sqrt(n) if n > 1 else math.nan
        return value, sd, kish(W)
    if name == "trunc_seq" and c == "ionides":
        c = statistics.fmean(W) * math.sqrt(n)
    f = naive_samples(name, lrs, rews, G, c=c, lo=lo, hi=hi)
    value = statistics.fmean(f)
    sd = statistics.stdev(f) / math.sqrt(n) if n > 1 else math.nan
    weights = W if name == "pdis" else [_weight(name, lr, c, lo, hi) for lr in lrs]
    return value, sd, kish(weights)
