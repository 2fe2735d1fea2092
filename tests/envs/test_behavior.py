"""Behaviour-policy models: exact-divergence perturbation, temperature, top-k/top-p, rounding."""

from __future__ import annotations

import numpy as np
import pytest
from _cases import random_mdp
from _reference import enumerate_sequences

from tokis.envs import Policy, TokenMDP
from tokis.envs._behavior import (
    FORMATS,
    perturb,
    round_logits,
    round_to_format,
    temperature,
    top_k,
    top_p,
)

# tolerance of the exact-divergence contract (relative above 1, absolute below)
TOL = 1e-10


def kl_rows(pi: Policy, mu: Policy) -> np.ndarray:
    """KL(pi || mu) per row, summed over the support of pi (finite log pi)."""
    lp, lm = pi.log_probs, mu.log_probs
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(lp), np.exp(lp) * (lp - lm), 0.0).sum(axis=-1)


def chi2_rows(pi: Policy, mu: Policy) -> np.ndarray:
    """chi2(pi || mu) = sum_a pi^2 / mu - 1 per row, computed as sum exp(2 log pi - log mu)."""
    lp, lm = pi.log_probs, mu.log_probs
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(lp), np.exp(2 * lp - lm), 0.0).sum(axis=-1) - 1.0


DIV = {"kl": kl_rows, "chi2": chi2_rows}


def random_logits(rng, shape, scale, *, holes=False):
    """Gaussian logits; with ``holes``, some -inf entries (never a whole row) and a few at -800."""
    lg = rng.normal(scale=scale, size=shape)
    if holes:
        lg[..., 0] = np.where(rng.random(shape[:-1]) < 0.3, -np.inf, lg[..., 0])
        lg[..., 1] = np.where(rng.random(shape[:-1]) < 0.1, -800.0, lg[..., 1])
    return lg


# ----------------------------------------------------------------------------------------------
# perturb
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["kl", "chi2"])
@pytest.mark.parametrize("V", [2, 3, 5, 64])
@pytest.mark.parametrize("time_dependent", [False, True])
def test_perturb_hits_divergence_in_every_row(kind, V, time_dependent):
    rng = np.random.default_rng(100 + V + 7 * time_dependent)
    shape = (4, 30, V) if time_dependent else (60, V)
    for scale in (0.3, 1.0, 4.0):
        pi = Policy(random_logits(rng, shape, scale, holes=V >= 3))
        for eps in (1e-9, 1e-3, 0.2, 1.0, 5.0, 40.0):
            mu = perturb(pi, **{kind: eps}, seed=3)
            assert mu.logits.shape == pi.logits.shape and mu.time_dependent == time_dependent
            d = DIV[kind](pi, mu)
            assert np.all(np.abs(d - eps) <= TOL * max(1.0, eps)), (scale, eps, np.abs(d - eps).max())
            # the support is pi's
            np.testing.assert_array_equal(np.isfinite(mu.logits), np.isfinite(pi.logits))


@pytest.mark.parametrize("kind", ["kl", "chi2"])
def test_perturb_large_table(kind):
    """The size used by the horizon sweeps (S = 4096, V = 64)."""
    rng = np.random.default_rng(5)
    pi = Policy(rng.normal(scale=2.0, size=(4096, 64)))
    mu = perturb(pi, **{kind: 0.05}, seed=1)
    assert np.all(np.abs(DIV[kind](pi, mu) - 0.05) <= TOL)


def test_perturb_nearly_one_hot_rows():
    # pi is (numerically) one-hot on token 0 except for tiny masses; perturbing must still work
    lg = np.array([[0.0, -800.0, -900.0], [0.0, -40.0, -np.inf], [0.0, -1e3, -2e3]])
    pi = Policy(lg)
    for seed in range(8):
        for kind in ("kl", "chi2"):
            for eps in (1e-6, 0.5, 3.0):
                mu = perturb(pi, **{kind: eps}, seed=seed)
                d = DIV[kind](pi, mu)
                assert np.all(np.abs(d - eps) <= TOL * max(1.0, eps)), (seed, kind, eps, d)


def test_perturb_zero_target_and_per_row_targets(rng):
    pi = Policy(rng.normal(size=(5, 4)))
    mu = perturb(pi, kl=0.0)
    np.testing.assert_allclose(mu.probs, pi.probs, rtol=1e-14, atol=0)
    targets = np.array([0.0, 0.01, 0.1, 1.0, 3.0])
    for kind in ("kl", "chi2"):
        mu = perturb(pi, **{kind: targets}, seed=2)
        np.testing.assert_allclose(DIV[kind](pi, mu), targets, rtol=TOL, atol=TOL)
    # time-dependent: a (T, 1) array broadcasts over contexts, a (S,) one over steps
    pi_t = Policy(rng.normal(size=(3, 5, 4)))
    step_targets = np.array([[0.1], [0.2], [0.4]])
    mu = perturb(pi_t, chi2=step_targets, seed=1)
    np.testing.assert_allclose(chi2_rows(pi_t, mu), np.broadcast_to(step_targets, (3, 5)), rtol=TOL, atol=TOL)
    mu = perturb(pi_t, kl=targets, seed=1)
    np.testing.assert_allclose(kl_rows(pi_t, mu), np.broadcast_to(targets, (3, 5)), rtol=TOL, atol=TOL)


def test_perturb_reproducible_by_seed(rng):
    pi = Policy(rng.normal(size=(2, 6, 3)))
    a = perturb(pi, kl=0.1, seed=4)
    b = perturb(pi, kl=0.1, seed=4)
    c = perturb(pi, kl=0.1, seed=5)
    np.testing.assert_array_equal(a.logits, b.logits)
    assert not np.allclose(a.logits, c.logits)
    # different contexts move in different directions
    assert not np.allclose(a.log_probs[0, 0] - pi.log_probs[0, 0], a.log_probs[0, 1] - pi.log_probs[0, 1])


def test_perturb_single_token_rows():
    pi = Policy(np.array([[0.0, -np.inf], [0.0, 1.0]]))
    mu = perturb(pi, chi2=np.array([0.0, 0.5]))  # the one-hot row has target 0: fine
    np.testing.assert_array_equal(mu.probs[0], [1.0, 0.0])
    np.testing.assert_allclose(chi2_rows(pi, mu), [0.0, 0.5], atol=TOL)
    with pytest.raises(ValueError, match="single token"):
        perturb(pi, kl=0.1)
    with pytest.raises(ValueError, match="single token"):
        perturb(Policy(np.zeros((3, 1))), chi2=0.1)
    np.testing.assert_array_equal(perturb(Policy(np.zeros((3, 1))), chi2=0.0).probs, 1.0)


@pytest.mark.parametrize("S,V,T", [(1, 2, 5), (2, 3, 3), (3, 2, 4), (4, 3, 2)])
@pytest.mark.parametrize("time_dependent", [False, True])
def test_second_moment_closed_form_by_enumeration(S, V, T, time_dependent):
    """chi2 fixed per context, constant reward, no eos: E_mu[W^2] = (1 + chi2)^T exactly;
    KL fixed per context: the sequence KL(pi || mu) = T * KL."""
    rng = np.random.default_rng(S * 100 + V * 10 + T + 1000 * time_dependent)
    base = random_mdp(rng, S=S, V=V, T=T, multi_start=True)
    mdp = TokenMDP(base.next_context, horizon=T, terminal_reward=np.ones(S), start=base.start)
    shape = (T, S, V) if time_dependent else (S, V)
    pi = Policy(rng.normal(size=shape))
    for eps in (0.05, 0.7, 3.0):
        mu = perturb(pi, chi2=eps, seed=9)
        enum = enumerate_sequences(mdp, pi=pi, mu=mu)
        second = np.sum(enum.prob["pi"] ** 2 / enum.prob["mu"])
        np.testing.assert_allclose(second, (1 + eps) ** T, rtol=TOL)
        assert np.all(enum.terminal == 1.0)
        mu = perturb(pi, kl=eps, seed=9)
        enum = enumerate_sequences(mdp, pi=pi, mu=mu)
        seq_kl = np.sum(enum.prob["pi"] * (enum.logp["pi"] - enum.logp["mu"]).sum(axis=1))
        np.testing.assert_allclose(seq_kl, T * eps, rtol=TOL)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(), ValueError, "exactly one of kl and chi2"),
        (dict(kl=0.1, chi2=0.1), ValueError, "exactly one of kl and chi2"),
        (dict(kl=-0.1), ValueError, "kl must be >= 0"),
        (dict(chi2=-1e-3), ValueError, "chi2 must be >= 0"),
        (dict(kl=np.nan), ValueError, "kl must be finite"),
        (dict(chi2=np.inf), ValueError, "chi2 must be finite"),
        (dict(kl="0.1"), TypeError, "kl"),
        (dict(kl=np.ones(3)), ValueError, "kl must be a scalar or broadcastable"),
        (dict(kl=0.1, seed=-1), ValueError, "seed"),
        (dict(kl=0.1, seed=0.5), TypeError, "seed"),
    ],
)
def test_perturb_errors(kwargs, exc, match):
    pi = Policy(np.zeros((4, 3)))
    with pytest.raises(exc, match=match):
        perturb(pi, **kwargs)


def test_policy_type_errors():
    for f, args in ((perturb, dict(kl=0.1)), (temperature, dict(tau=1.0)), (top_k, dict(k=1)),
                    (top_p, dict(p=0.5)), (round_logits, dict())):
        with pytest.raises(TypeError, match="policy"):
            f("not a policy", **args)
    # raw logits arrays are accepted
    np.testing.assert_array_equal(temperature(np.zeros((2, 2)), 2.0).probs, 0.5)


# ----------------------------------------------------------------------------------------------
# temperature
# ----------------------------------------------------------------------------------------------


def test_temperature(rng):
    lg = rng.normal(scale=2.0, size=(3, 7, 5))
    lg[0, 0, 2] = -np.inf
    pi = Policy(lg)
    np.testing.assert_allclose(temperature(pi, 1.0).probs, pi.probs, rtol=1e-14, atol=1e-300)
    # tau = 2: mu ∝ pi^(1/2)
    half = np.sqrt(pi.probs)
    np.testing.assert_allclose(temperature(pi, 2.0).probs, half / half.sum(-1, keepdims=True), rtol=1e-13)
    # tau -> 0: the arg-max token, with the runner-up at exp((l2 - l1) / tau) relative mass
    cold = temperature(pi, 1e-3)
    top = np.argmax(lg, axis=-1)
    np.testing.assert_array_equal(np.argmax(cold.probs, axis=-1), top)
    srt = np.sort(lg, axis=-1)
    gap = srt[..., -1] - srt[..., -2]
    bound = (lg.shape[-1] - 1) * np.exp(-gap / 1e-3)
    assert np.all(1.0 - np.take_along_axis(cold.probs, top[..., None], -1)[..., 0] <= bound + 1e-15)
    # tau -> inf: uniform over the support; -inf stays -inf
    hot = temperature(pi, 1e12)
    support = np.isfinite(lg)
    uniform = support / support.sum(-1, keepdims=True)
    np.testing.assert_allclose(hot.probs, uniform, atol=1e-10)
    assert hot.probs[0, 0, 2] == 0.0
    assert hot.time_dependent


@pytest.mark.parametrize("tau,exc", [(0.0, ValueError), (-1.0, ValueError), (np.inf, ValueError),
                                     (np.nan, ValueError), ("1", TypeError), (True, TypeError)])
def test_temperature_errors(tau, exc):
    with pytest.raises(exc, match="tau"):
        temperature(Policy(np.zeros((2, 2))), tau)


# ----------------------------------------------------------------------------------------------
# top-k and top-p
# ----------------------------------------------------------------------------------------------


def test_top_k(rng):
    lg = rng.normal(size=(2, 20, 6))
    pi = Policy(lg)
    for k in (1, 2, 3, 5, 6, 9):
        mu = top_k(pi, k)
        kept = np.isfinite(mu.logits)
        assert np.all(kept.sum(-1) == min(k, 6))
        # the kept tokens are the k largest logits, and keep their logits
        kth = np.sort(lg, axis=-1)[..., -min(k, 6)]
        np.testing.assert_array_equal(kept, lg >= kth[..., None])
        np.testing.assert_array_equal(mu.logits[kept], lg[kept])
        assert mu.time_dependent
    np.testing.assert_array_equal(top_k(pi, 6).logits, lg)


def test_top_k_ties_and_holes():
    pi = Policy(np.array([[1.0, 1.0, 1.0, 0.0], [0.0, 2.0, 2.0, 2.0], [-np.inf, 0.0, -np.inf, 1.0]]))
    mu = top_k(pi, 2)
    np.testing.assert_array_equal(np.isfinite(mu.logits), [[1, 1, 0, 0], [0, 1, 1, 0], [0, 1, 0, 1]])
    mu = top_k(pi, 3)  # the third row has only two finite logits
    np.testing.assert_array_equal(np.isfinite(mu.logits).sum(-1), [3, 3, 2])


@pytest.mark.parametrize("k,exc", [(0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError)])
def test_top_k_errors(k, exc):
    with pytest.raises(exc, match="k"):
        top_k(Policy(np.zeros((2, 2))), k)


def test_top_p(rng):
    lg = rng.normal(scale=1.5, size=(3, 30, 8))
    pi = Policy(lg)
    probs = pi.probs
    for p in (1e-6, 0.3, 0.5, 0.8, 0.95, 0.999999):
        mu = top_p(pi, p)
        kept = np.isfinite(mu.logits)
        mass = np.where(kept, probs, 0.0).sum(-1)
        assert np.all(mass >= p - 1e-12)
        # minimal: dropping the least probable kept token leaves less than p
        smallest = np.where(kept, probs, np.inf).min(-1)
        assert np.all(mass - smallest < p)
        # the kept tokens are the most probable ones
        assert np.all(np.where(kept, probs, np.inf).min(-1) >= np.where(kept, -np.inf, probs).max(-1))
        np.testing.assert_array_equal(mu.logits[kept], lg[kept])
    assert np.all(np.isfinite(top_p(pi, 1e-9).logits).sum(-1) == 1)
    np.testing.assert_array_equal(top_p(pi, 1.0).logits, lg)


def test_top_p_hand_example():
    # probabilities (1/2, 1/8, 1/4, 1/8): ranked 0, 2, then the tie 1 before 3
    pi = Policy(np.log([[0.5, 0.125, 0.25, 0.125]]))
    kept = lambda p: np.isfinite(top_p(pi, p).logits)[0].astype(int).tolist()  # noqa: E731
    assert kept(0.5 - 1e-9) == [1, 0, 0, 0]
    assert kept(0.5 + 1e-9) == [1, 0, 1, 0]
    assert kept(0.75 - 1e-9) == [1, 0, 1, 0]
    assert kept(0.75 + 1e-9) == [1, 1, 1, 0]  # tie broken towards the lower index
    assert kept(0.875 + 1e-9) == [1, 1, 1, 1]
    np.testing.assert_allclose(top_p(pi, 0.7).probs, [[2 / 3, 0.0, 1 / 3, 0.0]], rtol=1e-14)


def test_top_p_keeps_support_at_one():
    pi = Policy(np.array([[0.0, -np.inf, -30.0, 5.0]]))
    np.testing.assert_array_equal(np.isfinite(top_p(pi, 1.0).logits), [[1, 0, 1, 1]])


@pytest.mark.parametrize("p,exc", [(0.0, ValueError), (-0.1, ValueError), (1.5, ValueError),
                                   (np.nan, ValueError), ("0.5", TypeError)])
def test_top_p_errors(p, exc):
    with pytest.raises(exc, match="p"):
        top_p(Policy(np.zeros((2, 2))), p)


# ----------------------------------------------------------------------------------------------
# rounding
# ----------------------------------------------------------------------------------------------


def test_bfloat16_hand_examples():
    # bfloat16 keeps 8 significant bits: in [1, 2) the spacing is 2^-7.
    u = 2.0**-7
    cases = {
        1 + u / 4: 1.0,  # 1 + 2^-9: below half a spacing
        1 + 3 * u / 4: 1 + u,  # 1 + 3*2^-9: above half
        1 + u / 2: 1.0,  # exact tie: to the even neighbour (1)
        1 + 3 * u / 2: 1 + 2 * u,  # tie between 1+u (odd) and 1+2u (even)
        -(1 + 3 * u / 4): -(1 + u),
        2.0**10 * (1 + 3 * u / 4): 2.0**10 * (1 + u),  # same pattern one binade up
        3.0: 3.0,
        np.pi: 3.140625,  # 3.14159... = 2 * 1.5708: 1.5708 -> 201/128 = 1.5703125
        -np.inf: -np.inf,
    }
    x = np.array(list(cases))
    np.testing.assert_array_equal(round_to_format(x, "bfloat16"), list(cases.values()))


def test_float16_hand_examples():
    u = 2.0**-10  # 11 significant bits
    x = np.array([1 + u / 2, 1 + 3 * u / 2, 1 + 0.3 * u, 65504.0, 2.0**-24, 2.0**-26])
    np.testing.assert_array_equal(round_to_format(x, "float16"), [1.0, 1 + 2 * u, 1.0, 65504.0, 2.0**-24, 0.0])


def test_rounding_matches_numpy_and_bit_trick(rng):
    x = rng.normal(size=20000) * np.exp(rng.uniform(-30, 12, size=20000))
    x = np.concatenate([x, rng.normal(size=2000) * 1e-6, [0.0, -0.0, 1e-8, 5e-8]])
    with np.errstate(over="ignore"):  # numpy warns where float16 overflows (to inf, like ours)
        x16 = x.astype(np.float16).astype(np.float64)
    assert np.isinf(x16).any()
    np.testing.assert_array_equal(round_to_format(x, "float16"), x16)
    np.testing.assert_array_equal(round_to_format(x, "float32"), x.astype(np.float32).astype(np.float64))
    # bfloat16 on float32 inputs: round-to-nearest-even on the top 16 bits of the float32 pattern
    x32 = np.concatenate([x.astype(np.float32), rng.normal(size=1000).astype(np.float32) * np.float32(1e-39)])
    bits = x32.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
    expected = rounded.view(np.float32).astype(np.float64)
    np.testing.assert_array_equal(round_to_format(x32.astype(np.float64), "bfloat16"), expected)


def test_round_logits_policy(rng):
    lg = rng.normal(scale=3.0, size=(2, 5, 7))
    lg[1, 2, 3] = -np.inf
    pi = Policy(lg)
    for dtype, sig in (("bfloat16", 8), ("float16", 11), ("bf16", 8), ("fp16", 11), (np.float16, 11)):
        mu = round_logits(pi, dtype)
        assert mu.logits.shape == lg.shape and mu.time_dependent
        assert mu.logits[1, 2, 3] == -np.inf
        finite = np.isfinite(lg)
        # relative rounding error at most half a spacing: 2^-sig
        assert np.all(np.abs(mu.logits[finite] - lg[finite]) <= 2.0**-sig * np.abs(lg[finite]))
        # idempotent
        np.testing.assert_array_equal(round_logits(mu, dtype).logits, mu.logits)
    assert not np.array_equal(round_logits(pi).logits, lg)
    np.testing.assert_array_equal(round_logits(pi).logits, round_logits(pi, "bfloat16").logits)


def test_round_logits_errors():
    pi = Policy(np.zeros((2, 2)))
    for bad in ("float64", "int8", "bfloat", np.float64, None):
        with pytest.raises(ValueError, match="dtype"):
            round_logits(pi, bad)
    with pytest.raises(ValueError, match="range of dtype='float16'"):
        round_logits(Policy(np.array([[0.0, 7e4]])), "float16")
    with pytest.raises(ValueError, match="range of dtype='bfloat16'"):
        round_logits(Policy(np.array([[0.0, -3.4e38]])), "bfloat16")
    assert set(FORMATS) == {"bfloat16", "float16", "float32"}


def test_perturb_out_of_floating_range_is_a_clear_error():
    import tokis

    mdp = tokis.envs.ngram(8, 1, 4)
    pi = tokis.envs.random_policy(mdp, seed=0)
    with pytest.raises(ValueError, match=r"cannot reach chi2 = 100000 .*smaller divergence"):
        tokis.envs.perturb(pi, chi2=1e5)
