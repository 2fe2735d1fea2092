"""Names of the configuration options (no imports: the command-line parser reads them at start-up)."""

__all__ = ["FAMILIES", "REWARDS", "ROUNDINGS"]

#: MDP families understood by :class:`~tokis.analysis.Family`.
FAMILIES = ("iid", "ngram", "prefix_tree")
#: Reward options: a random terminal reward per context, a reward automaton, or ``frequency``: a step
#: reward 1/T each time the reward token is emitted (so per-decision IS differs from sequence IS).
REWARDS = ("random", "count", "pattern", "parity", "last", "frequency")
#: Logit roundings understood by :class:`~tokis.analysis.Behavior` (short and numpy names).
ROUNDINGS = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16"}
