"""``tokis mismatch`` as a module: ``python -m tokis.analysis.mismatch`` and its Python function.

The computation lives in :mod:`._mismatch`; this module re-exports it and runs the command.
"""

from __future__ import annotations

import sys

from ._cli import main as _cli_main
from ._mismatch import mismatch, calibrate, MODELS, DEFAULT_MODELS, DEFAULT_ESTIMATORS

__all__ = ["mismatch", "calibrate", "MODELS", "DEFAULT_MODELS", "DEFAULT_ESTIMATORS", "main"]


def main(argv=None) -> int:
    """``python -m tokis.analysis.mismatch``: same as ``tokis mismatch``."""
    return _cli_main(["mismatch", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
