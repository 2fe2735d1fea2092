"""Exact variances where ``Var f << E[f]^2``: no catastrophic cancellation.

Forming ``Var f = E[f^2] - E[f]^2`` loses ``log10(E[f]^2 / Var f)`` digits. With per-token
chi^2(pi||mu) = 1e-6 in every context and T = 10^4 tokens, tok_sum has ``E[f] = T`` and
``Var f = T chi^2 = 0.01``: ten digits cancel, and the former engine was off by 1.9e-3
relative. Here every engine is called directly (``tokis.exact._recursions``) on i.i.d.-token
MDPs with a constant reward, where the variance has a closed form, and must be correct to
``1e-9`` relative.

Closed forms. In one context, let ``A_k = sum_a mu(a) r(a)^k`` (``A_0 = 1`` and ``A_1 = 1`` up to
rounding; the engines see the floating-point ``mu`` and ``r``, so the references use them too)
and ``chi2 = A_2 A_0 / A_1^2 - 1``, computed without cancellation as
``sum_{a,b} mu_a mu_b (r_a - r_b)^2 / (2 A_1^2)`` with ``r_a - r_b = expm1(l_a) - expm1(l_b)``.
With ``M = A_0^T`` the total mass and ``a1 = A_1 / A_0``, the central second moments
``sum_x p(x) (f(x) - fbar)^2`` are

- tok_sum ``f = sum_t r_t``: ``M T a1^2 chi2`` (a sum of ``T`` i.i.d. terms); tok
  ``f = 1 + sum_t (r_t - 1)``: the same; tok_mean ``f = sum_t r_t / T``: that over ``T^2``;
- seq ``f = prod_t r_t``: ``M a1^{2T} expm1(T log1p(chi2))``; clip_prod the same with ``r``
  replaced by ``min(r, c)``;
- pdis with step reward 1 and terminal reward 0, ``f = sum_{t=1}^T W_{<=t}``:
  ``M sum_{s,t} a1^{s+t} expm1(min(s, t) log1p(chi2))``.

For several contexts (an order-1 n-gram MDP) the increments ``r_t - E[r_t | c_t]`` of tok_sum
are martingale differences, so ``Var sum_t r_t = sum_t sum_c d_t(c) Var(r | c)`` with ``d`` the
behaviour's occupancy (``E[r | c] = 1`` up to rounding, which changes nothing at 1e-9).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tokis.envs import TokenMDP, iid, ngram, perturb, random_policy
from tokis.exact import occupancy
from tokis.exact import _recursions as rec

T = 10_000
V = 8
CHI2 = 1e-6
RTOL = 1e-9


def build(builder=iid, *, step=False, chi2=CHI2, seed=1):
    """The MDP (constant terminal reward 1, or step reward 1 and terminal reward 0), pi and mu."""
    base = builder(V, T) if builder is iid else builder(V, 1, T)
    S = base.num_contexts
    mdp = TokenMDP(base.next_context, horizon=T, terminal_reward=np.zeros(S) if step else np.ones(S),
                   step_reward=np.ones((S, V)) if step else None)
    pi = random_policy(mdp, seed=seed)
    mu = perturb(pi, chi2=chi2, seed=seed + 1)
    return mdp, pi, mu, rec.prepare(mdp, pi, mu)


def row_moments(mu_row: np.ndarray, d_row: np.ndarray):
    """``(A_0, A_1, chi2)`` of one context from mu and ``d = r - 1`` (chi2 without cancellation)."""
    A0 = float(mu_row.sum())
    A1 = float(mu_row @ (1.0 + d_row))
    chi2 = float((mu_row[:, None] * mu_row[None, :] * (d_row[:, None] - d_row[None, :]) ** 2).sum()) / (2.0 * A1 * A1)
    return A0, A1, chi2


def stationary_row(pair, c=0):
    mu_row = rec.steps(pair.mu, T)[0, c]
    d_row = np.expm1(rec.steps(pair.log_r, T)[0, c])
    return mu_row, d_row


def rel(got: float, ref: float) -> float:
    return abs(got - ref) / abs(ref)


def scaled(v: float, s: float) -> float:
    return v * math.exp(s)


def test_perturb_gives_the_requested_chi2():
    # the closed forms use the chi2 of the floating-point policies; it is the requested one
    _, _, _, pair = build()
    _, _, chi2 = row_moments(*stationary_row(pair))
    assert rel(chi2, CHI2) < 1e-8


@pytest.mark.parametrize("name", ["tok_sum", "tok", "tok_mean"])
def test_additive_variance_is_cancellation_free(name):
    _, _, _, pair = build()
    A0, A1, chi2 = row_moments(*stationary_row(pair))
    a1 = A1 / A0
    var = A0**T * T * a1 * a1 * chi2
    r = np.exp(rec.steps(pair.log_r, T))
    if name == "tok_sum":
        mean, got = rec.additive(pair, r, 0.0)
        assert rel(mean, A0**T * T * a1) < 1e-12
    elif name == "tok":
        mean, got = rec.additive(pair, r - 1.0, 1.0)
    else:
        mean, got = rec.additive(pair, r, 0.0, per_length=True)
        var /= T * T
    assert rel(got, var) <= RTOL, (name, got, var, rel(got, var))


def test_additive_variance_with_several_contexts():
    mdp, _, mu, pair = build(ngram)
    d = occupancy(mdp, mu)  # (T, S): probability of running in c at step t
    var_c = np.zeros(mdp.num_contexts)
    for c in range(mdp.num_contexts):
        A0, A1, chi2 = row_moments(*stationary_row(pair, c))
        var_c[c] = (A1 / A0) ** 2 * chi2  # Var(r | c)
    var = float((d.sum(axis=0) * var_c).sum())
    r = np.exp(rec.steps(pair.log_r, T))
    _, got = rec.additive(pair, r, 0.0)
    assert rel(got, var) <= RTOL, (got, var, rel(got, var))


def _product_variance(mu_row, d_row):
    A0, A1, chi2 = row_moments(mu_row, d_row)
    a1 = A1 / A0
    return A0**T * a1 ** (2 * T) * math.expm1(T * math.log1p(chi2))


@pytest.mark.parametrize("chi2", [CHI2, 1e-8])
def test_seq_variance_is_cancellation_free(chi2):
    # at chi2 = 1e-8, E[W^2] / Var W = 1e4: E[W^2] - E[W]^2 would lose another two digits
    _, _, _, pair = build(chi2=chi2)
    var = _product_variance(*stationary_row(pair))
    res = rec.multiplicative(pair, pair.log_r)
    (v1, s1), (vv, sv) = res.total()
    assert rel(scaled(vv, sv), var) <= RTOL, (scaled(vv, sv), var)
    assert res.var[0] >= 0 and rel(scaled(res.var[0], res.var_scale[0]) * math.exp(res.log_mass[0]), var) <= RTOL


def test_clip_prod_variance_is_cancellation_free():
    _, _, _, pair = build()
    mu_row, d_row = stationary_row(pair)
    lc = float(np.quantile(rec.steps(pair.log_r, T)[0, 0], 0.6))  # clips some tokens
    c = math.exp(lc)
    h_minus_1 = np.where(d_row < c - 1.0, d_row, math.expm1(lc))
    assert (h_minus_1 < d_row).any()
    var = _product_variance(mu_row, h_minus_1)
    res = rec.multiplicative(pair, np.minimum(rec.steps(pair.log_r, T), lc))
    _, (vv, sv) = res.total()
    assert rel(scaled(vv, sv), var) <= RTOL, (scaled(vv, sv), var)


def test_pdis_variance_is_cancellation_free():
    mdp, _, _, pair = build(step=True)
    A0, A1, chi2 = row_moments(*stationary_row(pair))
    a1 = A1 / A0
    k = np.arange(1, T + 1)
    p = a1**k
    tail = np.concatenate([np.cumsum(p[::-1])[::-1][1:], [0.0]])  # sum_{t > k} a1^t
    pairs = p * p + 2.0 * p * tail  # a1^{s+t} over the pairs with min(s, t) = k
    var = A0**T * float(np.sum(np.expm1(k * math.log1p(chi2)) * pairs))
    res = rec.pdis(pair, mdp.step_reward, np.ones(T), np.zeros(T))
    assert rel(scaled(*res.first), A0**T * float(p.sum())) < 1e-12
    assert rel(scaled(*res.variance), var) <= RTOL, (scaled(*res.variance), var)


@pytest.mark.parametrize("name", ["tok_sum", "seq", "pdis"])
def test_public_moments_are_cancellation_free(name):
    # the same closed forms through tokis.exact.moments (its form dispatch reads the central moments)
    from tokis.exact import moments

    mdp, pi, mu, pair = build(step=name == "pdis")
    mu_row, d_row = stationary_row(pair)
    A0, A1, chi2 = row_moments(mu_row, d_row)
    a1 = A1 / A0
    if name == "tok_sum":
        var = A0**T * T * a1 * a1 * chi2
    elif name == "seq":
        var = _product_variance(mu_row, d_row)
    else:
        k = np.arange(1, T + 1)
        p = a1**k
        tail = np.concatenate([np.cumsum(p[::-1])[::-1][1:], [0.0]])
        var = A0**T * float(np.sum(np.expm1(k * math.log1p(chi2)) * (p * p + 2.0 * p * tail)))
    m = moments(mdp, pi, mu, name)
    assert m.method == "exact" and rel(m.variance, var) <= RTOL, (m.variance, var)
