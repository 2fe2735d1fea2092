r"""Exact moments by enumerating every sequence (small MDPs only).

Estimators with no finite recursion (trunc_seq, mask_seq, psis, ...) are exact only by summing
over all sequences. :func:`enumerate_outcomes` lists every sequence with positive behaviour
probability (breadth first, stopping as soon as more than ``max_sequences`` exist) and, under
Bernoulli reward noise, splits each one into its two observed terminal rewards, so that every
statistic, including batch estimators, is a plain function of the rows: the estimator itself
is evaluated on them (``tokis.exact.moments``), so no statistic is written twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._errors import NoExactMethodError
from ._recursions import Pair

__all__ = ["Outcomes", "enumerate_outcomes"]


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
    tokens, contexts : int (N, T)
        The tokens and the contexts they were emitted in (0 at padding).
    prob : float (N,)
        Probability of the outcome under mu (start distribution and reward noise included);
        sums to 1.
    """

    log_ratio: np.ndarray
    rewards: np.ndarray
    mask: np.ndarray
    lengths: np.ndarray
    prob: np.ndarray
    tokens: np.ndarray
    contexts: np.ndarray

    @property
    def size(self) -> int:
        return int(self.prob.shape[0])


def _too_many(what: str, count: int, cap: int) -> NoExactMethodError:
    return NoExactMethodError(
        f"{what}: exact moments need enumerating every sequence, and this MDP has more than "
        f"max_sequences={cap} sequences with positive behaviour probability (found {count} so far). "
        "No exact method exists at this size: use a smaller vocabulary or horizon, raise max_sequences, "
        "or estimate by Monte Carlo (this function never substitutes sampling)."
    )


def enumerate_outcomes(pair: Pair, max_sequences: int, what: str = "enumeration") -> Outcomes:
    """List every sequence with positive mu-probability (and each terminal outcome under noise).

    Raises
    ------
    NoExactMethodError
        When more than ``max_sequences`` sequences exist (checked as the enumeration proceeds).
    """
    mdp = pair.mdp
    T, V = pair.T, pair.V
    nxt = mdp.next_context
    ctx = np.flatnonzero(mdp.start > 0)
    logp = np.log(mdp.start[ctx])
    hist_lr = np.zeros((ctx.size, 0))
    hist_rw = np.zeros((ctx.size, 0))
    hist_tok = np.zeros((ctx.size, 0), dtype=np.int64)
    hist_ctx = np.zeros((ctx.size, 0), dtype=np.int64)
    done = []  # (log_ratio rows, step-reward rows, final ctx, logp, token rows, context rows)
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
        # every kept prefix either ends here or goes on: refuse before building the rows
        if n_done + tok.size > max_sequences:
            raise _too_many(what, n_done + tok.size, max_sequences)
        lr = np.column_stack([hist_lr[par], pair.log_r[t][c, tok]])
        rw = np.column_stack([hist_rw[par], mdp.step_reward[c, tok]])
        tk = np.column_stack([hist_tok[par], tok])
        cx = np.column_stack([hist_ctx[par], c])
        cn = nxt[c, tok]
        if t == T - 1:
            stop = np.ones(tok.size, dtype=bool)
        elif mdp.eos is not None:
            stop = tok == mdp.eos
        else:
            stop = np.zeros(tok.size, dtype=bool)
        if stop.any():
            done.append((lr[stop], rw[stop], cn[stop], lp[stop], tk[stop], cx[stop]))
            n_done += int(stop.sum())
        go = ~stop
        ctx, logp, hist_lr, hist_rw, hist_tok, hist_ctx = cn[go], lp[go], lr[go], rw[go], tk[go], cx[go]

    rows_lr, rows_rw, mask_rows, fin, lps, rows_tok, rows_ctx = [], [], [], [], [], [], []
    for lr, rw, cn, lp, tk, cx in done:
        L = lr.shape[1]
        pad = T - L
        rows_lr.append(np.pad(lr, ((0, 0), (0, pad))))
        rows_rw.append(np.pad(rw, ((0, 0), (0, pad))))
        rows_tok.append(np.pad(tk, ((0, 0), (0, pad))))
        rows_ctx.append(np.pad(cx, ((0, 0), (0, pad))))
        mk = np.zeros((lr.shape[0], T), dtype=bool)
        mk[:, :L] = True
        mask_rows.append(mk)
        fin.append(cn)
        lps.append(lp)
    log_ratio = np.concatenate(rows_lr)
    steps = np.concatenate(rows_rw)
    mask = np.concatenate(mask_rows)
    tokens = np.concatenate(rows_tok)
    contexts = np.concatenate(rows_ctx)
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
        tokens, contexts = tokens[idx], contexts[idx]
        prob = prob[idx] * pz
        z = outcomes_z
    else:
        z = m
    rewards = steps.copy()
    rewards[np.arange(rewards.shape[0]), last] += z
    return Outcomes(log_ratio=log_ratio, rewards=rewards, mask=mask, lengths=lengths, prob=prob, tokens=tokens,
                    contexts=contexts)
