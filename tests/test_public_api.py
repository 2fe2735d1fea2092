"""Pin the public API (DESIGN section 8): scripts and checks call these names."""

import inspect

import tokis.envs as envs
import tokis.exact as exact
import tokis.estimators as est

ENVS = {
    "TokenMDP", "Policy", "Rollouts", "sample", "iid", "ngram", "prefix_tree", "count_automaton",
    "pattern_automaton", "parity_automaton", "last_token_automaton", "product", "random_policy", "perturb",
    "temperature", "top_k", "top_p", "round_logits", "RewardAutomaton", "lift_policy", "policy_context",
}
EXACT = {
    "occupancy", "final_distribution", "state_values", "q_values", "value", "token_divergence", "sequence_kl",
    "log_second_moment", "support_mismatch", "divergences", "Divergences", "moments", "Moments",
    "population_ess", "tok_bias_decomposition", "TokBiasDecomposition", "NoExactMethodError", "objective_gradient",
    "GradientMoments",
    "gradient", "optimal_value", "surrogate", "SurrogateCurve",
}
ESTIMATORS = {
    "seq", "tok", "tok_sum", "tok_mean", "pdis", "wpdis", "snis", "trunc_seq", "clip_prod", "clip_tok", "geo",
    "mask_seq", "mask_tok", "psis",
}


def test_all_lists_are_pinned():
    assert set(envs.__all__) == ENVS
    assert set(exact.__all__) == EXACT
    assert ESTIMATORS | {"REGISTRY", "Estimate", "EstimatorSpec", "diagnose", "Diagnostics", "get_estimator",
                         "list_estimators", "BACKENDS", "TokenSum", "TokenProduct", "PerDecision",
                         "SequenceTransform", "BatchTransform", "Param", "define", "register", "prepare"} == set(est.__all__)
    for mod in (envs, exact, est):
        for name in mod.__all__:
            assert hasattr(mod, name), name


def test_registry_covers_every_estimator_function():
    assert set(est.REGISTRY) == ESTIMATORS
    for name, spec in est.REGISTRY.items():
        assert spec is getattr(est, name)
        params = inspect.signature(spec).parameters
        assert list(params)[:2] == ["log_ratio", "rewards"]
        assert params["rewards"].default is None  # omitted with a batch from est.prepare
        assert params["mask"].kind is inspect.Parameter.KEYWORD_ONLY
        assert params["backend"].default == "auto"
        for p, default in spec.params.items():
            assert params[p].default == default, (name, p)


def test_signatures_of_the_contract():
    sig = inspect.signature(envs.TokenMDP)
    assert list(sig.parameters) == [
        "next_context", "horizon", "terminal_reward", "step_reward", "start", "eos", "reward_noise"]
    sig = inspect.signature(envs.sample)
    assert list(sig.parameters) == ["mdp", "behavior", "n", "target", "seed", "backend"]
    assert sig.parameters["backend"].default == "auto"
    sig = inspect.signature(exact.moments)
    assert list(sig.parameters)[:5] == ["mdp", "target", "behavior", "estimator", "n"]
    sig = inspect.signature(est.prepare)
    assert list(sig.parameters) == ["log_ratio", "rewards", "mask", "backend"]
    assert sig.parameters["mask"].kind is inspect.Parameter.KEYWORD_ONLY
    assert sig.parameters["backend"].default == "auto"
    sig = inspect.signature(envs.perturb)
    assert {"kl", "chi2", "seed"} <= set(sig.parameters)
