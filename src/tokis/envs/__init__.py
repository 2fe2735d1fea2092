"""Token MDPs, policies, builders, behaviour-policy models, exact dynamic programs and sampling."""

from . import exact
from ._behavior import perturb, round_logits, temperature, top_k, top_p
from ._builders import (
    count_automaton,
    iid,
    last_token_automaton,
    ngram,
    parity_automaton,
    pattern_automaton,
    prefix_tree,
    product,
    random_policy,
)
from ._mdp import TokenMDP
from ._policy import Policy
from ._sample import Rollouts, sample

__all__ = [
    "TokenMDP",
    "Policy",
    "Rollouts",
    "sample",
    "exact",
    "iid",
    "ngram",
    "prefix_tree",
    "count_automaton",
    "pattern_automaton",
    "parity_automaton",
    "last_token_automaton",
    "product",
    "random_policy",
    "perturb",
    "temperature",
    "top_k",
    "top_p",
    "round_logits",
]
