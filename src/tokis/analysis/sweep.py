"""``tokis sweep`` as a module: ``python -m tokis.analysis.sweep GRID.toml`` and its Python functions.

A grid of configurations from a TOML file (:func:`load_grid`) or a dict (:func:`parse_grid`),
run through the sweep machinery of the other commands (:func:`run_grid`: results store, local
processes or Dask with ``scheduler=``). The computation lives in :mod:`._grid`.

Examples
--------
>>> from tokis.analysis.sweep import load_grid, run_grid        # doctest: +SKIP
>>> table = run_grid(load_grid("examples/grid.toml"), store=True)  # doctest: +SKIP
"""

from __future__ import annotations

import sys

from ._cli import main as _cli_main
from ._grid import Grid, load_grid, parse_grid, run_grid

__all__ = ["Grid", "load_grid", "parse_grid", "run_grid", "main"]


def main(argv=None) -> int:
    """Run ``tokis sweep`` with ``argv`` (default ``sys.argv[1:]``)."""
    return _cli_main(["sweep", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
