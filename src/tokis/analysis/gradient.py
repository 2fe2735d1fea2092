"""``tokis gradient`` as a module: ``python -m tokis.analysis.gradient`` and its Python functions.

The computation lives in :mod:`._gradient`; this module re-exports it and runs the command.
"""

from __future__ import annotations

import sys

from ._cli import main as _cli_main
from ._gradient import (
    DEFAULT_BEHAVIOR,
    DEFAULT_HORIZONS,
    DEFAULT_KLS,
    DEFAULT_N,
    DEFAULT_OBJECTIVES,
    ObjectiveConfig,
    display_gradient_table,
    gradient_sweep,
    landscape,
    parse_objective,
    parse_objectives,
    turning_points,
)

__all__ = ["gradient_sweep", "turning_points", "landscape", "display_gradient_table", "ObjectiveConfig",
           "parse_objective", "parse_objectives", "DEFAULT_OBJECTIVES", "DEFAULT_HORIZONS",
           "DEFAULT_KLS", "DEFAULT_BEHAVIOR", "DEFAULT_N", "main"]


def main(argv=None) -> int:
    """``python -m tokis.analysis.gradient``: same as ``tokis gradient``."""
    return _cli_main(["gradient", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
