"""Brute-force enumeration of every sequence of a small token MDP (tests only).

This is the ground truth the exact dynamic programs and estimator moments are checked
against. It walks every start context and every token sequence (stopping at eos or the
horizon) and records, per sequence, its probability under each policy and its per-step data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Enumeration:
    """All sequences of an MDP, padded to the horizon.

    Arrays have N rows (one per sequence, start context included) and T columns.
    ``prob[name]`` is the probability of each sequence under policy ``name`` (start included);
    ``logp[name]`` the per-step log-probabilities (0 at padding); ``rewards`` per-step rewards
    with the *mean* terminal reward added at the last real step.
    """

    start_context: np.ndarray  # (N,)
    tokens: np.ndarray  # (N, T), -1 at padding
    contexts: np.ndarray  # (N, T), context before each token, -1 at padding
    mask: np.ndarray  # (N, T)
    lengths: np.ndarray  # (N,)
    final_context: np.ndarray  # (N,)
    step_rewards: np.ndarray  # (N, T)
    terminal: np.ndarray  # (N,) mean terminal reward
    rewards: np.ndarray  # (N, T) step rewards + terminal at the last real step
    returns: np.ndarray  # (N,)
    prob: dict
    logp: dict

    def log_ratio(self, target: str = "pi", behavior: str = "mu") -> np.ndarray:
        with np.errstate(invalid="ignore"):
            lr = self.logp[target] - self.logp[behavior]
        return np.where(self.mask, lr, 0.0)


def enumerate_sequences(mdp, **policies) -> Enumeration:
    """Enumerate every sequence of ``mdp``; ``policies`` maps names to ``Policy`` objects."""
    T = mdp.horizon
    V = mdp.vocab_size
    names = list(policies)
    lps = {k: p.expand_log_probs(T) for k, p in policies.items()}
    rows = []

    def walk(c0, c, t, toks, ctxs, steps, lp):
        if t == T:
            rows.append((c0, list(toks), list(ctxs), list(steps), c, {k: list(v) for k, v in lp.items()}))
            return
        for a in range(V):
            nxt = int(mdp.next_context[c, a])
            toks.append(a)
            ctxs.append(c)
            steps.append(float(mdp.step_reward[c, a]))
            for k in names:
                lp[k].append(float(lps[k][t, c, a]))
            if mdp.eos is not None and a == mdp.eos:
                rows.append((c0, list(toks), list(ctxs), list(steps), nxt, {k: list(v) for k, v in lp.items()}))
            else:
                walk(c0, nxt, t + 1, toks, ctxs, steps, lp)
            toks.pop()
            ctxs.pop()
            steps.pop()
            for k in names:
                lp[k].pop()

    for c0 in range(mdp.num_contexts):
        if mdp.start[c0] > 0:
            walk(c0, c0, 0, [], [], [], {k: [] for k in names})

    N = len(rows)
    tokens = -np.ones((N, T), dtype=np.int64)
    contexts = -np.ones((N, T), dtype=np.int64)
    mask = np.zeros((N, T), dtype=bool)
    step_rewards = np.zeros((N, T))
    logp = {k: np.zeros((N, T)) for k in names}
    start_context = np.zeros(N, dtype=np.int64)
    final_context = np.zeros(N, dtype=np.int64)
    lengths = np.zeros(N, dtype=np.int64)
    for i, (c0, toks, ctxs, steps, cf, lp) in enumerate(rows):
        L = len(toks)
        tokens[i, :L] = toks
        contexts[i, :L] = ctxs
        mask[i, :L] = True
        step_rewards[i, :L] = steps
        for k in names:
            logp[k][i, :L] = lp[k]
        start_context[i] = c0
        final_context[i] = cf
        lengths[i] = L
    terminal = mdp.terminal_reward[final_context]
    rewards = step_rewards.copy()
    rewards[np.arange(N), lengths - 1] += terminal
    log_start = np.log(mdp.start[start_context])
    prob = {k: np.exp(log_start + logp[k].sum(axis=1)) for k in names}
    return Enumeration(
        start_context=start_context,
        tokens=tokens,
        contexts=contexts,
        mask=mask,
        lengths=lengths,
        final_context=final_context,
        step_rewards=step_rewards,
        terminal=terminal,
        rewards=rewards,
        returns=rewards.sum(axis=1),
        prob=prob,
        logp=logp,
    )
