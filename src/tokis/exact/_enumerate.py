r"""Exact moments by enumerating every sequence (small MDPs only).

Estimators with no finite recursion (trunc_seq, mask_seq, psis, ...) are exact only by summing
over all sequences. :func:`enumerate_outcomes` lists every sequence with positive behaviour
probability (breadth first, stopping as soon as more than ``max_sequences`` exist) and, under
Bernoulli reward noise, splits each one into its two observed terminal rewards, so that every
statistic, including batch estimators, is a plain function of the rows. :data:`STATISTICS`
holds the per-sample statistic of every per-sample estimator as an array function.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._recursions import Pair

__all__ = ["Outcomes", "enumerate_outcomes", "STATISTICS", "statistic"]


@dataclass(frozen=True)
class Outcomes:
    """Every distinct observable outcome under the behaviour policy.

    Attributes
    ----------
    log_ratio : float (N, T)
        ``log pi - log mu`` of each token (0 at padding, ``-inf`` where pi = 0).
    rewards : float (N, T)
        Step rewards with the *observed* terminal reward added at the last real step.
    mask : bool (N, T)
    lengths : int (N,)
    prob : float (N,)
        Probability of the outcome under mu (start distribution and reward noise included);
        sums to 1.
    """

    log_ratio: np.ndarray
    rewards: np.ndarray
    mask: np.ndarray
    lengths: np.ndarray
    prob: np.ndarray

    @property
    def size(self) -> int:
        return int(self.prob.shape[0])


def _too_many(what: str, count: int, cap: int) -> ValueError:
    return ValueError(
        f"{what}: exact moments need enumerating every sequence, and this MDP has more than "
        f"max_sequences={cap} sequences with positive behaviour probability (found {count} so far). "
        "No exact method exists at this size: use a smaller vocabulary or horizon, raise max_sequences, "
        "or estimate by Monte Carlo (this function never substitutes sampling)."
    )


def enumerate_outcomes(pair: Pair, max_sequences: int, what: str = "enumeration") -> Outcomes:
    """List every sequence with positive mu-probability (and each terminal outcome under noise).

    Raises
    ------
    ValueError
        When more than ``max_sequences`` sequences exist (checked as the enumeration proceeds).
    """
    mdp = pair.mdp
    T, V = pair.T, pair.V
    nxt = mdp.next_context
    ctx = np.flatnonzero(mdp.start > 0)
    logp = np.log(mdp.start[ctx])
    hist_lr = np.zeros((ctx.size, 0))
    hist_rw = np.zeros((ctx.size, 0))
    done = []  # (log_ratio rows, step-reward rows, final ctx, logp)
    n_done = 0
    for t in range(T):
        P = ctx.size
        if P == 0:
            break
        par = np.repeat(np.arange(P), V)
        tok = np.tile(np.arange(V), P)
        c = ctx[par]
        lp = logp[par] + pair.log_mu[t][c, tok]
        keep = lp > -np.inf
        par, tok, c, lp = par[keep], tok[keep], c[keep], lp[keep]
        lr = np.column_stack([hist_lr[par], pair.log_r[t][c, tok]])
        rw = np.column_stack([hist_rw[par], mdp.step_reward[c, tok]])
        cn = nxt[c, tok]
        if t == T - 1:
            stop = np.ones(tok.size, dtype=bool)
        elif mdp.eos is not None:
            stop = tok == mdp.eos
        else:
            stop = np.zeros(tok.size, dtype=bool)
        if stop.any():
            done.append((lr[stop], rw[stop], cn[stop], lp[stop]))
            n_done += int(stop.sum())
        go = ~stop
        ctx, logp, hist_lr, hist_rw = cn[go], lp[go], lr[go], rw[go]
        if n_done + ctx.size > max_sequences:
            raise _too_many(what, n_done + ctx.size, max_sequences)

    rows_lr, rows_rw, mask_rows, fin, lps = [], [], [], [], []
    for lr, rw, cn, lp in done:
        L = lr.shape[1]
        pad = T - L
        rows_lr.append(np.pad(lr, ((0, 0), (0, pad))))
        rows_rw.append(np.pad(rw, ((0, 0), (0, pad))))
        mk = np.zeros((lr.shape[0], T), dtype=bool)
        mk[:, :L] = True
        mask_rows.append(mk)
        fin.append(cn)
        lps.append(lp)
    log_ratio = np.concatenate(rows_lr)
    steps = np.concatenate(rows_rw)
    mask = np.concatenate(mask_rows)
    final = np.concatenate(fin)
    prob = np.exp(np.concatenate(lps))
    lengths = mask.sum(axis=1)
    m = mdp.terminal_reward[final]
    last = lengths - 1
    if mdp.reward_noise == "bernoulli":
        # Z = 1 with probability m, Z = 0 with probability 1 - m.
        outcomes_z = np.concatenate([np.ones_like(m), np.zeros_like(m)])
        pz = np.concatenate([m, 1.0 - m])
        idx = np.concatenate([np.arange(m.size), np.arange(m.size)])
        keep = pz > 0
        idx, outcomes_z, pz = idx[keep], outcomes_z[keep], pz[keep]
        log_ratio, steps, mask, lengths, last = log_ratio[idx], steps[idx], mask[idx], lengths[idx], last[idx]
        prob = prob[idx] * pz
        z = outcomes_z
    else:
        z = m
    rewards = steps.copy()
    rewards[np.arange(rewards.shape[0]), last] += z
    return Outcomes(log_ratio=log_ratio, rewards=rewards, mask=mask, lengths=lengths, prob=prob)


# --------------------------------------------------------------------------- per-sample statistics


def _parts(lr, rw, mask):
    with np.errstate(over="ignore"):
        r = np.where(mask, np.exp(lr), 1.0)
    return r, rw.sum(axis=1), mask.sum(axis=1), lr.sum(axis=1)


def _seq(lr, rw, mask):
    _, G, _, lw = _parts(lr, rw, mask)
    return np.exp(lw) * G


def _tok(lr, rw, mask):
    r, G, _, _ = _parts(lr, rw, mask)
    return (1.0 + np.where(mask, r - 1.0, 0.0).sum(axis=1)) * G


def _tok_sum(lr, rw, mask):
    r, G, _, _ = _parts(lr, rw, mask)
    return np.where(mask, r, 0.0).sum(axis=1) * G


def _tok_mean(lr, rw, mask):
    r, G, L, _ = _parts(lr, rw, mask)
    return np.where(mask, r, 0.0).sum(axis=1) / L * G


def _pdis(lr, rw, mask):
    return (np.exp(np.cumsum(lr, axis=1)) * rw).sum(axis=1)


def _clip_prod(lr, rw, mask, c):
    _, G, _, _ = _parts(lr, rw, mask)
    return np.exp(np.where(mask, np.minimum(lr, np.log(c)), 0.0).sum(axis=1)) * G


def _clip_tok(lr, rw, mask, c):
    r, G, _, _ = _parts(lr, rw, mask)
    return (1.0 + np.where(mask, np.minimum(r, c) - 1.0, 0.0).sum(axis=1)) * G


def _geo(lr, rw, mask):
    _, G, L, lw = _parts(lr, rw, mask)
    return np.exp(lw / L) * G


def _mask_seq(lr, rw, mask, lo, hi):
    _, G, _, lw = _parts(lr, rw, mask)
    with np.errstate(divide="ignore"):
        inside = (lw >= np.log(lo)) & (lw <= np.log(hi))
    return np.where(inside, np.exp(lw) * G, 0.0)


def _mask_tok(lr, rw, mask, lo, hi):
    r, G, _, _ = _parts(lr, rw, mask)
    inside = mask & (r >= lo) & (r <= hi)
    return (1.0 + np.where(inside, r - 1.0, 0.0).sum(axis=1)) * G


def _trunc_seq(lr, rw, mask, c):
    _, G, _, lw = _parts(lr, rw, mask)
    return np.minimum(np.exp(lw), c) * G


#: Per-sample statistic of every per-sample estimator: ``f(log_ratio, rewards, mask, **params) -> (N,)``.
STATISTICS = {
    "seq": _seq,
    "tok": _tok,
    "tok_sum": _tok_sum,
    "tok_mean": _tok_mean,
    "pdis": _pdis,
    "clip_prod": _clip_prod,
    "clip_tok": _clip_tok,
    "geo": _geo,
    "mask_seq": _mask_seq,
    "mask_tok": _mask_tok,
    "trunc_seq": _trunc_seq,
}


def statistic(name: str, outcomes: Outcomes, params) -> np.ndarray:
    """The per-sample statistic of ``name`` on every outcome, shape (N,)."""
    return STATISTICS[name](outcomes.log_ratio, outcomes.rewards, outcomes.mask, **dict(params))
