"""Exact expectations by brute-force enumeration of every sequence of small random MDPs.

Each estimator is run on ALL enumerated sequences; its per-sample statistic ``f_i``
(``samples * exp(log_scale)``) weighted by the behaviour probability of sequence ``i`` gives
``E_mu[f]`` exactly. Unbiased estimators must give ``J(pi) = sum_i P_pi(i) G_i``; the others
their surrogate, computed here independently by a direct loop over sequences and tokens.
"""

import math

import numpy as np
import pytest
from _cases import random_cases
from _reference import enumerate_sequences

import tokis.estimators as est

CASES = list(random_cases(20261125, 24))
PARAMS = {"clip_prod": {"c": 1.2}, "clip_tok": {"c": 1.2}, "mask_tok": {"lo": 0.75, "hi": 1.3},
          "mask_seq": {"lo": 0.75, "hi": 1.3}, "trunc_seq": {"c": 1.3}}


def _surrogate_weight(name, toks):
    """Sequence weight of the statistic f = weight * G, straight from the DESIGN table."""
    r = [math.exp(x) for x in toks]
    L = len(toks)
    W = math.prod(r)
    p = PARAMS.get(name, {})
    if name == "tok":
        return 1 + sum(x - 1 for x in r)
    if name == "tok_sum":
        return sum(r)
    if name == "tok_mean":
        return sum(r) / L
    if name == "clip_prod":
        return math.prod(min(x, p["c"]) for x in r)
    if name == "clip_tok":
        return 1 + sum(min(x, p["c"]) - 1 for x in r)
    if name == "geo":
        return math.exp(sum(toks) / L)
    if name == "mask_tok":
        return 1 + sum(x - 1 for x in r if p["lo"] <= x <= p["hi"])
    if name == "mask_seq":
        return W if p["lo"] <= W <= p["hi"] else 0.0
    if name == "trunc_seq":
        return min(W, p["c"])
    raise KeyError(name)


def _expectation(e, pmu):
    f = np.asarray(e.samples) * math.exp(e.log_scale)
    return float(np.dot(pmu, f))


def _reward_kinds(mdp, enum):
    kinds = [("step", enum.rewards)]
    if not mdp.has_step_reward:
        kinds.append(("terminal", enum.returns))
    return kinds


@pytest.mark.parametrize("case", CASES, ids=[c[3].split(":")[0] for c in CASES])
def test_unbiased_estimators_have_mean_j_pi(case):
    mdp, pi, mu, _ = case
    enum = enumerate_sequences(mdp, pi=pi, mu=mu)
    lr, pmu = enum.log_ratio(), enum.prob["mu"]
    j_pi = float(np.dot(enum.prob["pi"], enum.returns))
    assert pmu.sum() == pytest.approx(1.0, abs=1e-12)
    for _, rewards in _reward_kinds(mdp, enum):
        for name in ("seq", "pdis"):
            e = est.REGISTRY[name](lr, rewards, mask=enum.mask)
            assert _expectation(e, pmu) == pytest.approx(j_pi, rel=1e-12, abs=1e-12), name


@pytest.mark.parametrize("case", CASES, ids=[c[3].split(":")[0] for c in CASES])
def test_biased_estimators_have_mean_equal_to_their_surrogate(case):
    mdp, pi, mu, _ = case
    enum = enumerate_sequences(mdp, pi=pi, mu=mu)
    lr, pmu = enum.log_ratio(), enum.prob["mu"]
    names = ("tok", "tok_sum", "tok_mean", "clip_prod", "clip_tok", "geo", "mask_tok", "mask_seq", "trunc_seq")
    for _, rewards in _reward_kinds(mdp, enum):
        for name in names:
            expected = 0.0
            for i in range(len(pmu)):
                toks = [float(x) for x in lr[i, : enum.lengths[i]]]
                expected += pmu[i] * _surrogate_weight(name, toks) * float(enum.returns[i])
            e = est.REGISTRY[name](lr, rewards, mask=enum.mask, **PARAMS.get(name, {}))
            assert _expectation(e, pmu) == pytest.approx(expected, rel=1e-12, abs=1e-12), name


def _cpi_surrogate(mdp, pi, mu):
    """J(mu) + sum_t sum_c d^mu_t(c) sum_a (pi - mu)(a|c) Q^mu_t(c, a), by a small DP."""
    T, S, V = mdp.horizon, mdp.num_contexts, mdp.vocab_size
    nc, step, term, eos = mdp.next_context, mdp.step_reward, mdp.terminal_reward, mdp.eos
    Q = np.zeros((T, S, V))
    value_next = None
    for t in reversed(range(T)):
        for c in range(S):
            for a in range(V):
                ends = t == T - 1 or (eos is not None and a == eos)
                after = term[nc[c, a]] if ends else value_next[nc[c, a]]
                Q[t, c, a] = step[c, a] + after
        value_next = (mu.probs_at(t) * Q[t]).sum(axis=1)
    j_mu = float(np.dot(mdp.start, value_next))
    d = np.array(mdp.start, dtype=float)
    total = j_mu
    for t in range(T):
        pm, pp = mu.probs_at(t), pi.probs_at(t)
        total += float(np.sum(d[:, None] * (pp - pm) * Q[t]))
        d_next = np.zeros(S)
        for c in range(S):
            for a in range(V):
                if eos is None or a != eos:
                    d_next[nc[c, a]] += d[c] * pm[c, a]
        d = d_next
    return total


@pytest.mark.parametrize("case", CASES[:12], ids=[c[3].split(":")[0] for c in CASES[:12]])
def test_mean_of_tok_is_the_cpi_surrogate(case):
    mdp, pi, mu, _ = case
    enum = enumerate_sequences(mdp, pi=pi, mu=mu)
    e = est.tok(enum.log_ratio(), enum.rewards, mask=enum.mask)
    assert _expectation(e, enum.prob["mu"]) == pytest.approx(_cpi_surrogate(mdp, pi, mu), rel=1e-12, abs=1e-12)


def test_cases_cover_every_feature():
    descs = [c[3] for c in CASES]
    for key in ("'eos': True", "'step_reward': True", "'multi_start': True", "'noise': True", "timedep=True"):
        assert any(key in d for d in descs), key
