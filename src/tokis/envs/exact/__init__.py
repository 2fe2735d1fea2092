"""Exact quantities by dynamic programming over (step, context); all O(T*S*V)."""
