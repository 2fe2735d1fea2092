"""MDP builders (placeholder until implemented)."""

__all__ = ["iid", "ngram", "prefix_tree", "count_automaton", "pattern_automaton", "parity_automaton",
           "last_token_automaton", "product", "random_policy"]


def _todo(*a, **k):
    raise NotImplementedError


iid = ngram = prefix_tree = count_automaton = pattern_automaton = parity_automaton = _todo
last_token_automaton = product = random_policy = _todo
