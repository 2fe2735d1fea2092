"""Sampled policy gradients: the scatter-add against its numpy reference and a plain loop, and the Monte
Carlo mean of the batch gradient against the exact expected gradient, with tolerances from the exact
per-sample variance along grad J (and the exact trace for time-dependent logits)."""

import math

import numpy as np
import pytest

from tokis import exact, objectives
from tokis._backends._numba_scatter import scatter_gradient
from tokis.envs import Policy, ngram, perturb, random_policy, sample
from tokis.objectives._sampled import scatter_numpy


def _batch(rng, n=300, T=9, S=5, V=4, time_dependent=False):
    tokens = rng.integers(0, V, size=(n, T))
    contexts = rng.integers(0, S, size=(n, T))
    mask = np.arange(T)[None, :] < rng.integers(0, T + 1, size=n)[:, None]
    w = np.where(mask, rng.normal(size=(n, T)), 0.0)
    probs = rng.dirichlet(np.ones(V), size=(T, S) if time_dependent else S)
    return w, tokens, contexts, mask, probs


@pytest.mark.parametrize("time_dependent", [False, True])
@pytest.mark.parametrize("n", [7, 300, 20_000])
def test_scatter_matches_numpy_and_a_loop(rng, time_dependent, n):
    w, tokens, contexts, mask, probs = _batch(rng, n=n, time_dependent=time_dependent)
    a = scatter_gradient(w, tokens, contexts, mask, probs)
    b = scatter_numpy(w, tokens, contexts, mask, probs)
    np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11)
    if n <= 300:
        ref = np.zeros(probs.shape)
        for i in range(n):
            for t in range(w.shape[1]):
                if mask[i, t]:
                    p = probs[t, contexts[i, t]] if time_dependent else probs[contexts[i, t]]
                    score = -p.copy()
                    score[tokens[i, t]] += 1.0
                    if time_dependent:
                        ref[t, contexts[i, t]] += w[i, t] * score
                    else:
                        ref[contexts[i, t]] += w[i, t] * score
        np.testing.assert_allclose(a, ref, rtol=1e-12, atol=1e-12)


def _problem(time_dependent=False, eos=3, T=5):
    mdp = ngram(4, 1, T, eos=eos, seed=2)
    mu = random_policy(mdp, scale=0.6, seed=3)
    if time_dependent:
        mu = Policy(np.broadcast_to(mu.logits, (T,) + mu.logits.shape).copy())
    pi = perturb(mu, kl=0.08, seed=4)
    return mdp, pi, mu


SETTINGS = [
    ("tok", {}),
    ("seq", {}),
    ("ppo_clip", {"eps_low": 0.1, "eps_high": 0.1, "aggregation": "seq_mean_token_sum"}),
    ("cispo", {"aggregation": "constant"}),
    ("gspo", {"eps_low": 0.05, "eps_high": 0.05}),
    ("tok", {"aggregation": "seq_mean_token_mean", "correction": "tis", "c": 1.1}),
]


@pytest.mark.parametrize("objective, params", SETTINGS, ids=[s[0] + str(i) for i, s in enumerate(SETTINGS)])
@pytest.mark.parametrize("time_dependent", [False, True])
def test_monte_carlo_mean_matches_the_exact_expected_gradient(objective, params, time_dependent):
    mdp, pi, mu = _problem(time_dependent)
    anchor = perturb(mu, kl=0.01, seed=9) if "correction" in params else None
    sampler = mu
    ex = exact.objective_gradient(mdp, pi, sampler, objective, anchor=anchor, **params)
    n, R = 256, 120
    grads = np.stack([objectives.gradient(objective, sample(mdp, sampler, n, seed=1000 + r), pi, anchor=anchor,
                                          baseline=ex.baseline, **params) for r in range(R)])
    mean = grads.mean(axis=0)
    u = ex.true / np.linalg.norm(ex.true)
    along = float((mean * u).sum())
    se = math.sqrt(ex.variance_along / (n * R))
    assert abs(along - float((ex.mean * u).sum())) <= 5 * se + 1e-12, (along, float((ex.mean * u).sum()), se)
    # the empirical variance of <g_hat, u> at batch size n agrees with the exact one (chi-square, R - 1 dof)
    emp = float((grads * u).sum(axis=tuple(range(1, grads.ndim))).var(ddof=1))
    assert emp == pytest.approx(ex.variance_along / n, rel=5 * math.sqrt(2 / (R - 1)) + 0.05)
    if time_dependent and math.isfinite(ex.trace):
        # E||mean - g_bar||^2 = trace / (n R); 4x its expectation is far in the tail for this many coordinates
        assert float(((mean - ex.mean) ** 2).sum()) <= 4 * ex.trace / (n * R)


def test_batch_definitions():
    mdp, pi, mu = _problem()
    ro = sample(mdp, mu, 50, seed=0)
    a = objectives.gradient("tok", ro, pi, baseline=0.2)
    b = objectives.gradient("tok", ro, pi, baseline=0.2, backend="numpy")
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    # token_mean divides the batch by its token count: n / sum(L) times the token-sum gradient
    tm = objectives.gradient("tok", ro, pi, baseline=0.2, aggregation="token_mean")
    np.testing.assert_allclose(tm, a * ro.n / ro.lengths.sum(), rtol=1e-12, atol=1e-14)
    # the default baseline is the batch mean of the returns (GRPO); normalize_std divides by the batch std
    d = objectives.gradient("tok", ro, pi)
    np.testing.assert_allclose(d, objectives.gradient("tok", ro, pi, baseline=float(ro.returns.mean())), atol=1e-15)
    s = objectives.gradient("tok", ro, pi, normalize_std=True)
    np.testing.assert_allclose(s, d / ro.returns.std(), rtol=1e-12, atol=1e-14)
    # on-policy with eps wide open, ppo_clip's coefficient is tok's
    w = objectives.gradient("ppo_clip", ro, mu, eps_low=1.0, eps_high=1e9, aggregation="seq_mean_token_sum")
    np.testing.assert_allclose(w, objectives.gradient("tok", ro, mu), rtol=1e-12, atol=1e-14)


def test_errors():
    mdp, pi, mu = _problem()
    ro = sample(mdp, mu, 10, seed=0)
    with pytest.raises(ValueError, match="objective must be one of"):
        objectives.gradient("nope", ro, pi)
    with pytest.raises(TypeError, match="rollouts must be tokis.envs.Rollouts"):
        objectives.gradient("tok", "ro", pi)
    with pytest.raises(TypeError, match="policy must be a tokis.envs.Policy"):
        objectives.gradient("tok", ro, pi.logits)
    with pytest.raises(ValueError, match="advantage='critic' needs advantages="):
        objectives.gradient("tok", ro, pi, advantage="critic")
    with pytest.raises(ValueError, match="advantages must have shape"):
        objectives.gradient("tok", ro, pi, advantage="critic", advantages=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="backend must be one of"):
        objectives.gradient("tok", ro, pi, backend="gpu")
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        objectives.gradient("tok", ro, pi, eps=0.2)


@pytest.mark.parametrize("objective, params", [("tok", {}), ("ppo_clip", {"aggregation": "token_mean"}),
                                               ("gspo", {"normalize_std": True})])
def test_rollouts_of_several_seeds_give_one_gradient_each(objective, params):
    mdp, pi, mu = _problem()
    seeds = [5, 6, 7]
    ro = sample(mdp, mu, 200, target=pi, seed=seeds)
    g = objectives.gradient(objective, ro, pi, **params)
    assert g.shape == (3,) + pi.logits.shape
    for r, s in enumerate(seeds):
        np.testing.assert_array_equal(g[r], objectives.gradient(objective, sample(mdp, mu, 200, target=pi, seed=s), pi,
                                                                **params))
    with pytest.raises(ValueError, match=r"advantages must have shape \(3, 200, 5\)"):
        objectives.gradient("tok", ro, pi, advantage="critic", advantages=np.zeros((200, 5)))
