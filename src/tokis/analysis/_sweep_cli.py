"""``tokis sweep GRID.toml``: every configuration of a grid file, one sweep, one combined CSV.

The grid's keys are documented in :mod:`tokis.analysis._grid`. Cells run in this process, on
``--workers`` local processes or on Dask (``--scheduler``), and are kept in the results store,
so an interrupted grid resumes and a repeated one is read back.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ._progress import default_mode
from . import _cli_args as A

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    p = subparsers.add_parser(
        "sweep", help="run a grid of configurations from a TOML file",
        description="Run every combination of a grid file (family x vocab x order x behaviour model x divergence x "
                    "horizons x n x replications x seeds, each point with every estimator of the file) through the "
                    "sweep machinery: results store, resume, --workers or --scheduler; print the table of the keys "
                    "that vary and write OUT/<grid name>.csv with every configuration column. Keys: see the README "
                    "(section 'More than one machine') or examples/grid.toml.")
    p.add_argument("grid", metavar="GRID.toml", help="the grid file (TOML)")
    g = p.add_argument_group("execution")
    g.add_argument("--workers", type=int, default=1, metavar="N", help="local processes (default 1)")
    A.add_scheduler(g)
    A.add_output(p, out="directory of the combined CSV <grid name>.csv and its LaTeX table (default: the current "
                        "directory)", out_default=".")
    return p


def run(a) -> int:
    from ._common import display_table
    from ._grid import display_coords, load_grid, run_grid
    from ._output import to_markdown, write_tables

    grid = load_grid(a.grid)
    progress = default_mode(a.progress)
    sys.stderr.write(f"tokis: {a.grid}: {grid.points} points x {len(grid.estimators)} estimators = "
                     f"{grid.cells} cells\n")
    t0 = time.perf_counter()
    table = run_grid(grid, store=A.store(a), workers=a.workers, scheduler=a.scheduler, progress=progress)
    A.report_counts(table, t0)
    shown = display_table(table, display_coords(grid))
    A.say(f"## sweep {grid.source}: {grid.points} points, {len(table)} cells\n")
    A.say(to_markdown(shown, digits=a.digits))
    name = Path(a.grid).stem
    written = write_tables({name: (table, shown)}, a.out, digits=a.digits)
    sys.stderr.write(f"tokis: wrote {written[0]} (every column) and {written[1]}\n")
    return 0
