"""Token MDPs, policies, builders, behaviour-policy models and sampling (exact DP: :mod:`tokis.exact`)."""

from ._behavior import perturb, round_logits, temperature, top_k, top_p
from ._automata import (
    RewardAutomaton,
    count_automaton,
    last_token_automaton,
    lift_policy,
    parity_automaton,
    pattern_automaton,
    policy_context,
    product,
)
from ._builders import iid, ngram, prefix_tree, random_policy
from ._mdp import TokenMDP
from ._policy import Policy
from ._sample import Rollouts, sample

__all__ = [
    "TokenMDP",
    "Policy",
    "Rollouts",
    "sample",
    "iid",
    "ngram",
    "prefix_tree",
    "count_automaton",
    "pattern_automaton",
    "parity_automaton",
    "last_token_automaton",
    "product",
    "RewardAutomaton",
    "lift_policy",
    "policy_context",
    "random_policy",
    "perturb",
    "temperature",
    "top_k",
    "top_p",
    "round_logits",
]
