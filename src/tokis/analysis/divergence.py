"""``tokis divergence`` as a module: ``python -m tokis.analysis.divergence`` and its Python function.

The computation lives in :mod:`._divergence`; this module re-exports it and runs the command.
"""

from __future__ import annotations

import sys

from ._cli import main as _cli_main
from ._divergence import divergence, DEFAULT_VALUES, DEFAULT_ESTIMATORS

__all__ = ["divergence", "DEFAULT_VALUES", "DEFAULT_ESTIMATORS", "main"]


def main(argv=None) -> int:
    """``python -m tokis.analysis.divergence``: same as ``tokis divergence``."""
    return _cli_main(["divergence", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
