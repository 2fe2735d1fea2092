"""Configurations: estimator specs, families, behaviour models, canonical keys."""

import math

import numpy as np
import pytest

from tokis import envs
from tokis.analysis import Behavior, EstimatorConfig, Family, config_key, parse_estimator, parse_estimators
from tokis.analysis._config import canonical_json
from tokis import exact
from tokis.estimators import REGISTRY


def test_parse_estimator_forms_and_defaults():
    assert parse_estimator("seq") == EstimatorConfig("seq", ())
    assert parse_estimator("clip_tok") == EstimatorConfig("clip_tok", (("c", float(REGISTRY["clip_tok"].params["c"])),))
    a = parse_estimator("clip_tok:c=3")
    assert a == parse_estimator(("clip_tok", {"c": 3})) == parse_estimator(("clip_tok", {"c": 3.0}))
    assert a.kwargs == {"c": 3.0} and a.label == "clip_tok(c=3)"
    assert parse_estimator("trunc_seq").kwargs == {"c": "ionides"}
    assert parse_estimator("trunc_seq:c=inf").kwargs == {"c": math.inf}
    assert parse_estimator("psis:self_normalized=false").kwargs == {"self_normalized": False}
    assert parse_estimator(a) == a


def test_parse_estimators_list_grammar():
    specs = parse_estimators("seq, tok,mask_tok:lo=0.5,hi=3,snis clip_tok:c=2")
    assert [s.label for s in specs] == ["seq", "tok", "mask_tok(hi=3,lo=0.5)", "snis", "clip_tok(c=2)"]
    assert len(parse_estimators(["seq", "seq", ("seq", None)])) == 1
    assert [s.name for s in parse_estimators(("clip_prod", {"c": 4}))] == ["clip_prod"]


@pytest.mark.parametrize("bad, err, match", [
    ("nope", ValueError, "unknown estimator 'nope'"),
    ("seq:c=2", ValueError, "has no parameter 'c'"),
    ("clip_tok:c", ValueError, "malformed estimator parameter"),
    ("", ValueError, "no estimator given"),
    ("c=2,seq", ValueError, "does not follow an estimator name"),
    ([3], TypeError, "estimator must be a name"),
    ([("clip_tok", [1])], TypeError, "parameters must be a dict"),
])
def test_parse_estimators_errors(bad, err, match):
    with pytest.raises(err, match=match):
        parse_estimators(bad)


def test_config_key_is_canonical():
    a = {"b": [1, 2.5, np.float64(3.0)], "a": np.int64(4), "c": (True, None, "x")}
    b = {"c": [True, None, "x"], "a": 4, "b": [1, 2.5, 3.0]}
    assert canonical_json(a) == canonical_json(b) == '{"a":4,"b":[1,2.5,3.0],"c":[true,null,"x"]}'
    assert config_key(a) == config_key(b) and len(config_key(a)) == 64
    assert config_key({"a": 1}) != config_key({"a": 2})
    with pytest.raises(TypeError, match="cannot convert object"):
        canonical_json(object())


@pytest.mark.parametrize("name", ["iid", "ngram", "prefix_tree"])
@pytest.mark.parametrize("reward", ["random", "count", "pattern", "parity", "last"])
def test_family_builds(name, reward):
    fam = Family(name=name, vocab=3, order=1, reward=reward, eos=2 if reward == "count" else None, seed=4)
    mdp, pi = fam.build(3)
    assert mdp.horizon == 3 and mdp.vocab_size == 3
    pi.check_compatible(mdp, "target")
    mdp2, pi2 = fam.build(3)
    assert mdp2.fingerprint() == mdp.fingerprint() and pi2.fingerprint() == pi.fingerprint()
    assert name in fam.label and f"reward={reward}" in fam.label
    if reward != "random":  # the policy ignores the reward automaton's state
        from tokis.envs import policy_context

        ctx = policy_context(mdp, fam.automaton())
        for p in np.unique(ctx):
            rows = pi.logits[ctx == p]
            assert np.all(rows == rows[0])


def test_behavior_apply_and_label():
    mdp, pi = Family(vocab=4).build(4)
    assert Behavior().apply(pi) is pi and Behavior().label == "mu=pi"
    mu = Behavior(kl=0.03, seed=1).apply(pi)
    assert exact.token_divergence(mdp, pi, mu, kind="kl") == pytest.approx(0.03, rel=1e-8)
    mu2 = Behavior(chi2=0.1).apply(pi)
    assert exact.token_divergence(mdp, pi, mu2, kind="chi2") == pytest.approx(0.1, rel=1e-8)
    b = Behavior(temperature=1.2, top_p=0.9, round="bf16")
    assert b.label == "tau=1.2,top_p=0.9,round=bf16"
    mu3 = b.apply(pi)
    assert np.isneginf(mu3.logits).any()  # truncated support
    assert Behavior(top_k=2).apply(pi).probs.astype(bool).sum(axis=-1).max() == 2


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(name="lattice"), ValueError, "unknown family 'lattice'"),
    (dict(vocab=0), ValueError, "vocab must be >= 1"),
    (dict(vocab=2.5), TypeError, "vocab must be an integer"),
    (dict(order=-1), ValueError, "order must be >= 0"),
    (dict(eos=8), ValueError, "eos must be a token"),
    (dict(reward="bleu"), ValueError, "unknown reward 'bleu'"),
    (dict(token=9), ValueError, "token must be a token"),
    (dict(token=9, reward="frequency"), ValueError, "token must be a token"),
    (dict(reward="frequency", noise="bernoulli"), ValueError, "step rewards only"),
    (dict(threshold=0), ValueError, "threshold must be >= 1"),
    (dict(pattern=()), ValueError, "pattern must not be empty"),
    (dict(pattern=(0, 8), reward="pattern"), ValueError, "pattern tokens"),
    (dict(noise="gauss"), ValueError, "unknown noise"),
    (dict(scale=-1.0), ValueError, "scale must be >= 0"),
    (dict(seed=-1), ValueError, "mdp seed must be >= 0"),
])
def test_family_errors(kwargs, err, match):
    with pytest.raises(err, match=match):
        Family(**kwargs)


def test_family_checks_only_what_its_reward_reads():
    # vocab 1 with the default pattern (0, 1) is fine unless the reward is the pattern
    mdp, pi = Family(vocab=1, reward="random").build(3)
    assert mdp.vocab_size == 1 and pi.vocab_size == 1
    Family(vocab=1)  # reward "last" reads token 0 only


def test_frequency_reward_is_the_token_frequency():
    import tokis

    fam = Family(vocab=3, reward="frequency", token=1, seed=2)
    for T in (1, 3, 5):
        mdp, pi = fam.build(T)
        assert mdp.has_step_reward and not mdp.terminal_reward.any()
        # J = E[#token 1]/T = mean over t of the probability of emitting token 1 at step t
        occ = tokis.exact.occupancy(mdp, pi)  # (T, S)
        expect = sum(occ[t] @ pi.probs_at(t)[:, 1] for t in range(T)) / T
        assert tokis.exact.value(mdp, pi) == pytest.approx(expect, rel=1e-12)


def test_family_build_horizon_error():
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        Family().build(0)


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(kl=-0.1), ValueError, "kl must be >= 0"),
    (dict(chi2=-1), ValueError, "chi2 must be >= 0"),
    (dict(kl=math.inf), ValueError, "kl must be finite"),
    (dict(kl="x"), TypeError, "kl must be a real number"),
    (dict(kl=0.1, chi2=0.1), ValueError, "at most one of kl and chi2"),
    (dict(temperature=0), ValueError, "temperature must be > 0"),
    (dict(top_k=0), ValueError, "top_k must be >= 1"),
    (dict(top_p=1.5), ValueError, r"top_p must be in \(0, 1\]"),
    (dict(round="fp8"), ValueError, "unknown round 'fp8'"),
])
def test_behavior_errors(kwargs, err, match):
    with pytest.raises(err, match=match):
        Behavior(**kwargs)


def test_round_alias_applies():
    mdp, pi = Family(vocab=4).build(2)
    a = Behavior(round="bf16").apply(pi)
    b = envs.round_logits(pi, "bfloat16")
    np.testing.assert_array_equal(a.logits, b.logits)
