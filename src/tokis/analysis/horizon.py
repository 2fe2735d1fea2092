"""``tokis horizon`` as a module: ``python -m tokis.analysis.horizon`` and its Python function.

The computation lives in :mod:`._horizon`; this module re-exports it and runs the command.
"""

from __future__ import annotations

import sys

from ._cli import main as _cli_main
from ._horizon import horizon, overtakes, DEFAULT_ESTIMATORS, DEFAULT_HORIZONS, DEFAULT_BEHAVIOR, DEFAULT_FAMILY

__all__ = ["horizon", "overtakes", "DEFAULT_ESTIMATORS", "DEFAULT_HORIZONS", "DEFAULT_BEHAVIOR", "DEFAULT_FAMILY",
           "main"]


def main(argv=None) -> int:
    """``python -m tokis.analysis.horizon``: same as ``tokis horizon``."""
    return _cli_main(["horizon", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
