"""``tokis coverage`` as a module: ``python -m tokis.analysis.coverage`` and its Python functions.

The computation lives in :mod:`._coverage`; this module re-exports it and runs the command.
"""

from __future__ import annotations

import sys

from ._cli import main as _cli_main
from ._coverage import (
    DEFAULT_BEHAVIOR,
    DEFAULT_ESTIMATORS,
    DEFAULT_HORIZONS,
    DEFAULT_LEVEL,
    DEFAULT_METHODS,
    DEFAULT_N,
    DEFAULT_REPLICATIONS,
    DEFAULT_RESAMPLES,
    coverage,
    display_coverage_table,
    parse_methods,
    wilson_interval,
)

__all__ = ["coverage", "display_coverage_table", "parse_methods", "wilson_interval", "DEFAULT_ESTIMATORS",
           "DEFAULT_METHODS", "DEFAULT_HORIZONS", "DEFAULT_BEHAVIOR", "DEFAULT_N", "DEFAULT_REPLICATIONS",
           "DEFAULT_LEVEL", "DEFAULT_RESAMPLES", "main"]


def main(argv=None) -> int:
    """``python -m tokis.analysis.coverage``: same as ``tokis coverage``."""
    return _cli_main(["coverage", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
