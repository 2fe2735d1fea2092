"""Behaviour-policy models (placeholder until implemented)."""

__all__ = ["perturb", "temperature", "top_k", "top_p", "round_logits"]


def perturb(policy, *, kl=None, chi2=None, seed=0):
    raise NotImplementedError


def temperature(policy, tau):
    raise NotImplementedError


def top_k(policy, k):
    raise NotImplementedError


def top_p(policy, p):
    raise NotImplementedError


def round_logits(policy, dtype="bfloat16"):
    raise NotImplementedError
