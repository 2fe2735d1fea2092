"""exact.surrogate: each objective's expected surrogate along a line, J and the trust-region bound.

The reference is written here from the definitions, independent of the engine: per sequence (and per
Bernoulli outcome) of tests/_reference.py, the surrogate of each built-in objective from its closed form
(tok r A, ppo_clip min(r A, clip(r) A) with dual clip, cispo's antiderivative written piecewise, seq W A,
gspo min(s A, clip(s) A)), the correction's factor and the aggregation. Then the first-order facts (the
slope of each surrogate is the objective's expected gradient along d; for tok with mu = pi_old it is
<grad J, d>), the bound below J on many random MDPs, the directions and bad input.
"""

import numpy as np
import pytest
from _cases import random_cases, random_mdp, random_policy_pair
from _reference import enumerate_sequences

from tokis import exact, objectives
from tokis.envs import Policy, perturb
from tokis.exact import NoExactMethodError, surrogate
from tokis.objectives import SequenceCoefficient, TokenCoefficient, define

CASES = list(random_cases(97, 16))
ALPHAS = np.array([-3.0, -1.0, -0.2, 0.0, 0.1, 0.7, 2.5])

SETUPS = [
    ("tok", {}),
    ("tok", {"aggregation": "token_mean", "correction": "tis", "c": 1.2}),
    ("tok", {"advantage": "critic", "aggregation": "seq_mean_token_mean"}),
    ("seq", {}),
    ("seq", {"aggregation": "constant", "normalize_std": True}),
    ("seq", {"correction": "mis", "correction_level": "sequence", "lo": 0.6, "hi": 1.6}),
    ("ppo_clip", {}),
    ("ppo_clip", {"dual_clip": 1.5, "eps_high": 0.28, "aggregation": "seq_mean_token_mean"}),
    ("ppo_clip", {"advantage": "critic"}),
    ("ppo_clip", {"correction": "tis", "correction_level": "sequence", "c": 1.3}),
    ("cispo", {}),
    ("cispo", {"eps_low": 0.2, "baseline": 0.3, "aggregation": "constant"}),
    ("gspo", {}),
    ("gspo", {"eps_low": 0.05, "eps_high": 0.1, "aggregation": "seq_mean_token_sum"}),
]


# ---------------------------------------------------------------------------------------------
# the reference
# ---------------------------------------------------------------------------------------------


def value_reference(name, l, A, p):
    """Closed forms of the built-in values (token level: l (n, T); sequence level: lam (n, 1))."""
    r = np.exp(l)
    if name == "tok":
        return r * A
    if name in ("ppo_clip", "gspo"):
        v = np.minimum(r * A, np.clip(r, 1 - p["eps_low"], 1 + p["eps_high"]) * A)
        if p.get("dual_clip") is not None:
            v = np.where(A < 0, np.maximum(v, p["dual_clip"] * A), v)
        return v
    if name == "cispo":
        lo, hi = 1 - p["eps_low"], 1 + p["eps_high"]
        with np.errstate(divide="ignore", invalid="ignore"):
            above = hi * (1 + l - np.log(hi)) * A
            below = lo * (1 + l - np.log(lo)) * A if lo > 0 else 0.0 * A
        return np.where(r > hi, above, np.where(r < lo, below, r * A))
    if name == "seq":
        return r * A
    raise AssertionError(name)


def correction_reference(st, l_rho):
    if st.correction is None:
        return np.ones_like(l_rho)
    rho = np.exp(l_rho)
    if st.correction.name == "tis":
        return np.minimum(rho, st.correction_params["c"])
    lo, hi = st.correction_params["lo"], st.correction_params["hi"]
    return np.where((rho >= lo) & (rho <= hi), rho, 0.0)


def reference(mdp, theta, mu, anchor, objective, **params):
    """E_mu[surrogate of one sample] by enumerating every sequence (and Bernoulli outcome)."""
    spec = objectives.get_objective(objective)
    st = spec.settings(**params)
    p = dict(st.params)
    e = enumerate_sequences(mdp, th=theta, mu=mu, an=anchor)
    T = mdp.horizon
    l = np.where(e.mask, e.logp["th"] - e.logp["an"], 0.0)
    l_rho = np.where(e.mask, e.logp["an"] - e.logp["mu"], 0.0)
    mask, prob, steps, m = e.mask, e.prob["mu"], e.step_rewards, e.terminal
    idx = np.arange(prob.size)
    if mdp.reward_noise == "bernoulli":
        idx = np.concatenate([idx, idx])
        z = np.concatenate([np.ones_like(m), np.zeros_like(m)])
        prob = prob[idx] * np.concatenate([m, 1 - m])
    else:
        z = m
    l, l_rho, mask, steps = l[idx], l_rho[idx], mask[idx], steps[idx]
    tokens, contexts = e.tokens[idx], e.contexts[idx]
    G = steps.sum(axis=1) + z
    L = mask.sum(axis=1)
    mean_len = float(prob @ L)
    if st.advantage == "critic":
        Q, V = exact.q_values(mdp, mu), exact.state_values(mdp, mu)
        A = np.zeros(mask.shape)
        for t in range(T):
            on = mask[:, t]
            A[on, t] = Q[t, contexts[on, t], tokens[on, t]] - V[t, contexts[on, t]]
    else:
        b = exact.value(mdp, mu) if st.baseline is None else st.baseline
        sd = np.sqrt(prob @ (G - prob @ G) ** 2) if st.normalize_std else 1.0
        A = ((G - b) / sd)[:, None] if sd > 0 else np.zeros((G.size, 1))
    psi = {"seq_mean_token_sum": np.ones(L.size), "seq_mean_token_mean": 1.0 / L,
           "token_mean": np.full(L.size, 1.0 / mean_len), "constant": np.full(L.size, 1.0 / T)}[st.aggregation]
    seq_level = st.correction is not None and st.correction_level == "sequence"
    corr = correction_reference(st, l_rho.sum(axis=1, keepdims=True) if seq_level else l_rho)
    if isinstance(spec.coefficient, SequenceCoefficient):
        lam = l.sum(axis=1, keepdims=True)
        count = np.ones(L.size)
        if spec.coefficient.per_length:
            lam, count = lam / L[:, None], L
        per = (value_reference(spec.name, lam, A, p) * corr)[:, 0] * count
    else:
        per = np.where(mask, value_reference(spec.name, l, A, p) * corr, 0.0).sum(axis=1)
    return float(prob @ (per * psi))


def line_policy(pol, d, a):
    return Policy(np.where(np.isfinite(pol.logits), pol.logits + a * d, -np.inf))


# ---------------------------------------------------------------------------------------------
# against enumeration
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("objective, params", SETUPS)
def test_surrogate_equals_enumeration(objective, params):
    worst = 0.0
    for k, (mdp, pi, mu, desc) in enumerate(CASES):
        if params.get("normalize_std") and exact.moments(mdp, mu, mu, "seq").variance < 1e-12:
            continue  # a constant return: A = (G - b) / sd is rounding over rounding
        anchor = None if k % 2 else perturb(pi, kl=0.02, seed=k)
        r = surrogate(mdp, pi, mu, objective, direction="random", seed=k, alphas=ALPHAS, anchor=anchor, **params)
        an = pi if anchor is None else anchor
        base = reference(mdp, pi, mu, an, objective, **params)
        assert r.surrogate[3] == r.value_old == exact.value(mdp, pi), desc
        for i, a in enumerate(ALPHAS):
            theta = line_policy(pi, r.direction, a)
            ref = reference(mdp, theta, mu, an, objective, **params)
            want = r.value_old + ref - base
            err = abs(r.surrogate[i] - want) / (1 + abs(ref) + abs(base))
            worst = max(worst, err)
            assert err < 1e-10, (desc, a, r.surrogate[i], want)
            assert r.value[i] == exact.value(mdp, theta), desc
        assert r.method in ("exact", "enumeration")
    print(f"{objective} {params}: largest relative error {worst:.2e}")


def test_method_follows_the_structure():
    mdp, pi, mu, _ = CASES[8]  # no eos, no step rewards
    assert not mdp.has_step_reward and mdp.eos is None
    for name in ("tok", "seq", "ppo_clip", "cispo"):
        assert surrogate(mdp, pi, mu, name, alphas=ALPHAS).method == "exact", name
    assert surrogate(mdp, pi, mu, "gspo", alphas=ALPHAS).method == "enumeration"
    mdp, pi, mu, _ = CASES[10]  # step rewards: clipping needs the enumeration, tok does not
    assert mdp.has_step_reward
    assert surrogate(mdp, pi, mu, "tok", alphas=ALPHAS).method == "exact"
    assert surrogate(mdp, pi, mu, "ppo_clip", alphas=ALPHAS).method == "enumeration"
    assert surrogate(mdp, pi, mu, "ppo_clip", alphas=ALPHAS, advantage="critic").method == "exact"


# ---------------------------------------------------------------------------------------------
# first order
# ---------------------------------------------------------------------------------------------


def slope(mdp, pol, mu, objective, d, a, h=1e-6, **kw):
    r = surrogate(mdp, pol, mu, objective, direction=d, alphas=[a - h, a + h], **kw)
    return (r.surrogate[1] - r.surrogate[0]) / (2 * h)


@pytest.mark.parametrize("kind", ["gradient", "natural", "random", "given"])
def test_tok_slope_at_zero_is_the_directional_derivative_of_J(kind):
    """With mu = pi_old, d/dalpha of tok's surrogate at 0 is <grad J, d> (and so is the bound's)."""
    for k, (mdp, pi, mu, desc) in enumerate(CASES):
        if np.linalg.norm(exact.gradient(mdp, pi)) < 1e-12:  # constant reward: rounding noise
            continue
        if kind == "given":
            d = np.random.default_rng(k).normal(size=pi.logits.shape)
        else:
            d = surrogate(mdp, pi, pi, "tok", direction=kind, alphas=[0.0], seed=k).direction
        g = exact.gradient(mdp, pi)
        want = float((g * d).sum())
        scale = 1 + np.abs(g).sum() * np.abs(d).max()
        assert abs(slope(mdp, pi, pi, "tok", d, 0.0) - want) < 1e-7 * scale, desc
        h = 1e-5
        r = surrogate(mdp, pi, pi, "tok", direction=d, alphas=[-h, h])
        assert abs((r.bound[1] - r.bound[0]) / (2 * h) - want) < 1e-4 * scale, desc
        assert abs((r.value[1] - r.value[0]) / (2 * h) - want) < 1e-6 * scale, desc


@pytest.mark.parametrize("objective, params", SETUPS)
def test_slope_is_the_expected_gradient_along_d(objective, params):
    """Each value is the antiderivative of its coefficient: the surrogate's slope is <g_bar(theta), d>."""
    for k, (mdp, pi, mu, desc) in enumerate(CASES[:8]):
        d = surrogate(mdp, pi, mu, "tok", direction="random", alphas=[0.0], seed=k).direction
        points = (0.0,) if objective == "gspo" else (0.0, 0.4)
        for a in points:
            theta = line_policy(pi, d, a)
            g = exact.objective_gradient(mdp, theta, mu, objective, anchor=pi, **params).mean
            want = float((g * d).sum())
            got = slope(mdp, pi, mu, objective, d, a, **params)
            assert abs(got - want) < 1e-6 * (1 + np.abs(g).sum()), (desc, a, got, want)


def test_tok_with_pi_old_sampling_is_the_cpi_surrogate():
    for k, (mdp, pi, mu, desc) in enumerate(CASES):
        r = surrogate(mdp, pi, pi, "tok", direction="random", seed=k, alphas=ALPHAS)
        np.testing.assert_allclose(r.surrogate, r.cpi, rtol=0, atol=1e-12 * (1 + np.abs(r.cpi).max()), err_msg=desc)


# ---------------------------------------------------------------------------------------------
# the bound
# ---------------------------------------------------------------------------------------------

WIDE = np.array([-40.0, -10.0, -4.0, -1.5, -0.5, 0.5, 1.5, 4.0, 10.0, 40.0])


def test_bound_is_below_the_return_on_many_mdps():
    """The bound's constant is right: bound <= J(theta(alpha)) everywhere, with equality at 0."""
    worst = np.inf
    tight = 0
    n = 0
    for seed in range(4):
        for k, (mdp, pi, mu, desc) in enumerate(random_cases(500 + seed, 32)):
            if k % 3 == 0:  # sharper policies: the state drift matters more
                pi = Policy(3.0 * pi.logits)
            for kind in ("gradient", "natural", "random"):
                try:
                    r = surrogate(mdp, pi, mu, "tok", direction=kind, seed=k)
                except ValueError:  # a zero gradient (constant reward): nothing to draw
                    continue
                r2 = surrogate(mdp, pi, mu, "tok", direction=r.direction, alphas=WIDE)
                scale = 1 + float(np.abs(mdp.terminal_reward).max() + mdp.horizon * np.abs(mdp.step_reward).max())
                for c in (r, r2):
                    slack = c.value - c.bound
                    assert slack.min() > -1e-12 * scale, (desc, kind, slack.min())
                    assert np.all(c.bound <= c.cpi + 1e-15), desc
                    worst = min(worst, float(slack.min() / scale))
                    tight += int(np.any(c.cpi > c.value + 1e-9))
                    n += 1
                assert r.bound[20] == r.value_old == r.cpi[20], desc
    print(f"smallest slack (J - bound) / scale over {n} curves: {worst:.3e}; cpi above J on {tight}")
    assert tight > 0  # the first-order surrogate does overshoot J: the penalty is not decoration


def test_bound_penalty_vanishes_for_one_token():
    """T = 1: no state drift, J(theta) = J_old + cpi exactly and the bound is J."""
    rng = np.random.default_rng(3)
    mdp = random_mdp(rng, S=3, V=4, T=1, multi_start=True, step_reward=True)
    pi, mu = random_policy_pair(rng, mdp)
    r = surrogate(mdp, pi, mu, "ppo_clip", alphas=WIDE)
    np.testing.assert_allclose(r.bound, r.value, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# directions and the grid
# ---------------------------------------------------------------------------------------------


def fisher_blocks(mdp, pol):
    """Exact Fisher information of the sequence distribution, one (V, V) block per row of the logits."""
    d = exact.occupancy(mdp, pol)
    P = pol.expand_probs(mdp.horizon)
    blocks = np.einsum("ts,tsa,ab->tsab", d, P, np.eye(mdp.vocab_size)) - np.einsum("ts,tsa,tsb->tsab", d, P, P)
    return blocks if pol.time_dependent else blocks.sum(axis=0)


@pytest.mark.parametrize("time_dependent", [False, True])
def test_directions(time_dependent):
    for k, (mdp, pi, mu, desc) in enumerate(random_cases(7, 12, time_dependent=time_dependent)):
        g = exact.gradient(mdp, pi)
        if np.linalg.norm(g) < 1e-12:  # constant reward: the gradient is rounding noise
            continue
        r = surrogate(mdp, pi, mu, "tok", alphas=[0.0])
        assert r.direction_kind == "gradient"
        np.testing.assert_allclose(r.direction, g / np.linalg.norm(g), rtol=1e-13, atol=1e-15)
        nat = surrogate(mdp, pi, mu, "tok", direction="natural", alphas=[0.0]).direction
        F = fisher_blocks(mdp, pi)
        x = np.stack([np.linalg.pinv(F[idx]) @ g[idx] for idx in np.ndindex(g.shape[:-1])]).reshape(g.shape)
        np.testing.assert_allclose(nat, x / np.linalg.norm(x), rtol=0, atol=1e-9, err_msg=desc)
        assert abs(np.linalg.norm(nat) - 1) < 1e-12
        ra = surrogate(mdp, pi, mu, "tok", direction="random", alphas=[0.0], seed=k)
        assert ra.direction.shape == pi.logits.shape
        assert abs(np.linalg.norm(ra.direction) - 1) < 1e-12
        np.testing.assert_allclose(ra.direction.sum(axis=-1), 0, atol=1e-12)
        again = surrogate(mdp, pi, mu, "tok", direction="random", alphas=[0.0], seed=k).direction
        other = surrogate(mdp, pi, mu, "tok", direction="random", alphas=[0.0], seed=k + 1000).direction
        assert np.array_equal(ra.direction, again)
        assert ra.direction.size == 2 or not np.allclose(ra.direction, other)  # V = 2, one row: +-(1, -1)/sqrt 2
        given = np.random.default_rng(k).normal(size=pi.logits.shape)
        gv = surrogate(mdp, pi, mu, "tok", direction=given, alphas=[1.0])
        assert gv.direction_kind == "given" and np.array_equal(gv.direction, given)
        assert gv.value[0] == exact.value(mdp, Policy(pi.logits + given))


def test_random_direction_leaves_zero_probability_tokens_alone():
    rng = np.random.default_rng(5)
    mdp = random_mdp(rng, S=3, V=4, T=3)
    logits = rng.normal(size=(3, 4))
    logits[1, 2] = -np.inf
    r = surrogate(mdp, Policy(logits), Policy(logits), "tok", direction="random", seed=1)
    assert r.direction[1, 2] == 0 and abs(r.direction[1].sum()) < 1e-12
    assert np.all(np.isfinite(r.surrogate)) and np.all(np.isfinite(r.bound))


def test_default_grid():
    for k, (mdp, pi, mu, desc) in enumerate(CASES[:6]):
        r = surrogate(mdp, pi, mu, "ppo_clip", direction="random", seed=k)
        assert r.alphas.size == 41 and r.alphas[20] == 0 and np.array_equal(r.alphas, -r.alphas[::-1])
        assert abs(max(r.kl[0], r.kl[-1]) - 0.05) < 1e-9, desc
        assert r.kl[20] == 0 and np.all(r.kl >= 0)
        assert np.all(np.diff(r.kl[20:]) > 0) and np.all(np.diff(r.kl[:21]) < 0)


def test_kl_field():
    mdp, pi, mu, _ = CASES[5]
    r = surrogate(mdp, pi, mu, "tok", alphas=ALPHAS)
    for i, a in enumerate(ALPHAS):
        want = exact.token_divergence(mdp, pi, line_policy(pi, r.direction, a), kind="kl", under="target")
        assert abs(r.kl[i] - want) < 1e-14


# ---------------------------------------------------------------------------------------------
# declarations, results, errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(objectives.REGISTRY))
def test_builtin_values_are_antiderivatives_of_their_coefficients(name):
    spec = objectives.get_objective(name)
    coef = spec.coefficient
    assert coef.value is not None
    settings = [dict(spec.defaults)]
    if "eps_low" in spec.defaults:
        settings.append({**spec.defaults, "eps_low": 0.3, "eps_high": 0.25})
    if "dual_clip" in spec.defaults:
        settings.append({**spec.defaults, "dual_clip": 2.0})
    x = np.linspace(-1.5, 1.5, 3001)
    h = 1e-7
    for p in settings:
        args = [p[k] for k in coef.value_params]
        fargs = [p[k] for k in coef.params]
        for A in (1.0, -0.7):
            v = coef.value(x, A, *args)
            fd = (coef.value(x + h, A, *args) - coef.value(x - h, A, *args)) / (2 * h)
            with np.errstate(divide="ignore"):  # log1p(-1): no lower clip
                w = coef.fn(x, A, *fargs)
            near_kink = np.zeros_like(x, dtype=bool)
            for edge in (np.log1p(-min(p.get("eps_low", 0), 0.999)), np.log1p(p.get("eps_high", 0)),
                         np.log(p["dual_clip"]) if p.get("dual_clip") else np.nan):
                near_kink |= np.abs(x - edge) < 2 * h
            assert np.allclose(fd[~near_kink], w[~near_kink], atol=1e-6), (name, p, A)
            assert np.max(np.abs(np.diff(v))) < 0.01  # continuous
            assert np.allclose(coef.value(x, 2.5 * A, *args), 2.5 * v)  # homogeneous in A
            if name != "cispo":
                assert np.allclose(v, value_reference(name, x, A, p))


def test_user_objective_with_and_without_value():
    plain = define("tok_no_value", TokenCoefficient(lambda l, A: np.exp(l) * A))
    mdp, pi, mu, _ = CASES[1]
    with pytest.raises(ValueError, match="declares no surrogate value"):
        surrogate(mdp, pi, mu, plain)
    def scaled(l, A, c):
        return c * np.exp(l) * A

    half = define("tok_half", TokenCoefficient(scaled, value=scaled), params={"c": 0.5})
    a = surrogate(mdp, pi, mu, half, alphas=ALPHAS)
    b = surrogate(mdp, pi, mu, "tok", alphas=ALPHAS)
    np.testing.assert_allclose(a.surrogate - a.value_old, 0.5 * (b.surrogate - b.value_old), atol=1e-14)
    with pytest.raises(TypeError, match="value"):
        TokenCoefficient(lambda l, A: l * A, value=lambda l, A, other: l * A)
    with pytest.raises(TypeError, match="value"):
        SequenceCoefficient(lambda lam, A: lam * A, value=3.0)
    with pytest.raises(ValueError, match="declares no surrogate value"):
        surrogate(mdp, pi, mu, define("seq_no_value", SequenceCoefficient(lambda lam, A: lam * A)))


def test_result_is_frozen():
    mdp, pi, mu, _ = CASES[3]
    r = surrogate(mdp, pi, mu, "cispo", alphas=ALPHAS)
    for f in ("alphas", "surrogate", "value", "bound", "cpi", "kl", "direction"):
        arr = getattr(r, f)
        assert not arr.flags.writeable, f
        assert arr.shape == (ALPHAS.size,) if f != "direction" else pi.logits.shape
    with pytest.raises(AttributeError):
        r.method = "x"
    assert r.objective == "cispo" and r.settings["eps_high"] == 0.28 and r.baseline == exact.value(mdp, mu)
    assert "TRPO" in r.reference and r.bound_name


def test_no_exact_method_is_a_clear_error():
    rng = np.random.default_rng(1)
    mdp = random_mdp(rng, S=4, V=4, T=8)
    pi, mu = random_policy_pair(rng, mdp)
    with pytest.raises(NoExactMethodError, match="max_sequences"):
        surrogate(mdp, pi, mu, "gspo", alphas=[0.0, 1.0], max_sequences=1000)
    assert surrogate(mdp, pi, mu, "ppo_clip", alphas=[0.0, 1.0], max_sequences=1000).method == "exact"


def test_bad_input():
    mdp, pi, mu, _ = CASES[1]
    bad = [
        (dict(direction="sideways"), ValueError, "direction"),
        (dict(direction=np.zeros(pi.logits.shape)), ValueError, "direction"),
        (dict(direction=np.ones((9, 9))), ValueError, "direction"),
        (dict(direction=np.full(pi.logits.shape, np.nan)), ValueError, "direction"),
        (dict(alphas=[]), ValueError, "alphas"),
        (dict(alphas=[[0.0, 1.0]]), ValueError, "alphas"),
        (dict(alphas=[0.0, np.inf]), ValueError, "alphas"),
        (dict(alphas=["a"]), TypeError, "alphas"),
        (dict(seed=1.5), TypeError, "seed"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(max_sequences=0), ValueError, "max_sequences"),
        (dict(anchor=np.zeros((2, 2))), ValueError, "anchor"),
        (dict(eps_hgh=0.2), TypeError, "eps_hgh"),
        (dict(aggregation="sum"), ValueError, "aggregation"),
    ]
    for kw, exc, word in bad:
        with pytest.raises(exc, match=word):
            surrogate(mdp, pi, mu, "ppo_clip", **kw)
    with pytest.raises(ValueError, match="policy_old"):
        surrogate(mdp, np.zeros((9, 9)), mu, "tok")
    with pytest.raises(ValueError, match="behavior"):
        surrogate(mdp, pi, np.zeros((9, 9)), "tok")
    with pytest.raises(ValueError, match="objective"):
        surrogate(mdp, pi, mu, "trpo")
    with pytest.raises(ValueError, match="critic"):
        surrogate(mdp, pi, mu, "seq", advantage="critic")
    with pytest.raises(ValueError, match="correction_level"):
        surrogate(mdp, pi, mu, "gspo", correction="tis")
    flat = random_mdp(np.random.default_rng(0), S=2, V=2, T=2)
    flat = type(flat)(flat.next_context, horizon=2, terminal_reward=np.ones(2))
    with pytest.raises(ValueError, match="direction"):
        surrogate(flat, Policy(np.zeros((2, 2))), Policy(np.zeros((2, 2))), "tok")
