"""Divergences between two policies (placeholder until implemented)."""

__all__ = ["token_divergence", "sequence_kl", "log_second_moment", "divergences", "Divergences", "support_mismatch"]


def _todo(*a, **k):
    raise NotImplementedError


token_divergence = sequence_kl = log_second_moment = divergences = support_mismatch = _todo
Divergences = None
