"""The bottom layer: input validation, the counter-based RNG and array-namespace helpers.

Nothing here imports the rest of tokis; every other layer may import it (DESIGN section 1).
"""
