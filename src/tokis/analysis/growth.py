"""``tokis growth`` as a module: ``python -m tokis.analysis.growth`` and its Python function.

The computation lives in :mod:`._growth`; this module re-exports it and runs the command.
"""

from __future__ import annotations

import sys

from ._cli import main as _cli_main
from ._growth import growth, fit_growth, DEFAULT_HORIZONS, DEFAULT_BEHAVIOR, QUANTITIES

__all__ = ["growth", "fit_growth", "DEFAULT_HORIZONS", "DEFAULT_BEHAVIOR", "QUANTITIES", "main"]


def main(argv=None) -> int:
    """``python -m tokis.analysis.growth``: same as ``tokis growth``."""
    return _cli_main(["growth", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
