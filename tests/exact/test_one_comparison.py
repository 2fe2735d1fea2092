"""Thresholds are compared once, in one space: the estimator and its exact moments agree at the boundary.

A token whose ratio pi/mu equals a threshold in floating point is the case where a comparison
written twice (``l >= log lo`` in the estimator, ``exp(l) >= lo`` in the DP) disagreed: for
``pi = 0.6, mu = 0.5, lo = 1.2`` the exact mean of mask_tok was 1.1 while every sampled
estimate said 1.0. Both now evaluate the declaration's one token map on the same log-ratios.
"""

import math

import numpy as np
import pytest

import tokis.estimators as est
from tokis import exact
from tokis.envs import Policy, TokenMDP, sample

BOUNDARY = [(0.6, 0.5, "lo"), (0.3, 0.25, "lo"), (0.7, 0.35, "hi"), (0.45, 0.3, "hi"), (0.55, 0.5, "lo")]


@pytest.mark.parametrize("p, q, side", BOUNDARY)
def test_mask_tok_at_the_threshold(p, q, side):
    V = 2
    mdp = TokenMDP(np.zeros((1, V), dtype=int), horizon=1, terminal_reward=[1.0])
    pi = Policy(np.log([[p, 1.0 - p]]))
    mu = Policy(np.log([[q, 1.0 - q]]))
    r = p / q
    params = {"lo": r, "hi": 10.0} if side == "lo" else {"lo": 0.01, "hi": r}
    m = exact.moments(mdp, pi, mu, "mask_tok", **params)
    ro = sample(mdp, mu, 4000, target=pi, seed=3)
    e = est.mask_tok(ro.log_ratio, ro.returns, mask=ro.mask, **params)
    f = np.asarray(e.samples) * math.exp(e.log_scale)
    # the exact mean says whether token 0 is kept: 1 + q (r0 - 1) if kept (token 1 is outside the band)
    kept = exact.moments(mdp, pi, mu, "mask_tok", method="enumeration", **params).mean
    assert m.mean == pytest.approx(kept, rel=1e-14)
    # token 1 is far from both thresholds: its share of the exact mean is unambiguous
    r1 = (1.0 - p) / (1.0 - q)
    share1 = (1.0 - q) * (r1 - 1.0) if params["lo"] <= r1 <= params["hi"] else 0.0
    token0_kept = abs(m.mean - 1.0 - share1) > 1e-12
    token0 = ro.tokens[:, 0] == 0
    expected0 = math.exp(float(ro.log_ratio[token0][0, 0])) if token0_kept else 1.0
    np.testing.assert_allclose(f[token0], expected0, rtol=1e-14)
    # and the Monte Carlo mean is within 5 exact standard errors of the exact mean
    assert abs(e.value - m.mean) <= 5 * math.sqrt(m.variance / 4000) + 1e-15
