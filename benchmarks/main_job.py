"""The main job (`tokis horizon` on its defaults), cold and warm, against a previous release in the same run.

Usage::

    python benchmarks/main_job.py                       # against the release before this round (6da1e09)
    python benchmarks/main_job.py --baseline v0.1 --repeats 3

Each timing is a fresh process running ``python -m tokis.analysis.horizon --no-store`` (the
default table, nothing read from the results store):

- **cold**: an empty numba cache directory (``NUMBA_CACHE_DIR``), i.e. a first run after
  installing, numba compilation included;
- **warm**: the same cache directory again (compiled kernels load from disk).

The baseline is checked out with ``git worktree`` into a temporary directory and run from its
``src`` on ``PYTHONPATH`` with the same interpreter and packages, so both versions are
measured side by side on the same machine in one run; the medians of ``--repeats`` runs and
the ratios baseline/current are printed as a markdown table. The printed tables of both
tables are compared with ``--same-defaults`` (the current version runs the baseline's defaults,
so both compute the same table; one more untimed run each writes the CSV): the largest
relative difference over the numeric columns both have is printed. Without it each version
runs its own defaults (this round's default table has two more estimators and a step reward).

Nothing here sets a tuning variable (OMP_WAIT_POLICY, thread counts): this is the environment a
user gets.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, ".."))

#: The last commit of the release before the "compile only what pays" round.
DEFAULT_BASELINE = "6da1e09"

#: The baseline's defaults of ``tokis horizon`` spelt out (terminal "last" reward, six estimators), so the
#: current version computes the baseline's table: the same work on both sides.
BASELINE_DEFAULTS = ["--reward", "last", "--estimators", "seq,tok,snis,clip_tok,geo,clip_prod"]


def _run(src: str, cache: str, extra: list[str]) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "PYTHONPATH", "TOKIS_STORE")}
    env.update(NUMBA_CACHE_DIR=cache, PYTHONPATH=src)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "tokis.analysis.horizon", "--no-store", *extra],
                         env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, out.stdout


def _measure(src: str, repeats: int, extra: list[str], out: str | None):
    cold, warm = [], []
    for _ in range(repeats):
        cache = tempfile.mkdtemp(prefix="tokis-numba-")
        try:
            cold.append(_run(src, cache, extra)[0])
            warm.append(_run(src, cache, extra)[0])
            if out is not None:  # one more, untimed, writing the CSV that is compared
                _run(src, cache, [*extra, "--out", out])
                out = None
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    return statistics.median(cold), statistics.median(warm)


def _compare(base_dir: str, cur_dir: str) -> str:
    """Largest relative difference of the numeric columns both CSVs have (rows matched by T and estimator)."""
    import numpy as np
    import pandas as pd

    b = pd.read_csv(os.path.join(base_dir, "horizon.csv")).set_index(["T", "estimator"]).sort_index()
    c = pd.read_csv(os.path.join(cur_dir, "horizon.csv")).set_index(["T", "estimator"]).sort_index()
    if not b.index.equals(c.index):
        return "different rows"
    cols = [k for k in b.columns if k in c.columns and b[k].dtype.kind == "f" and c[k].dtype.kind == "f"]
    x, y = b[cols].to_numpy(), c[cols].to_numpy()
    # differences relative to each column's scale (an exact bias of 1e-16 is rounding, not a value)
    both = np.abs(np.concatenate([x, y]))
    scale = np.where(np.isnan(both).all(axis=0), 0.0, np.nanmax(np.where(np.isnan(both), -np.inf, both), axis=0))
    diff = np.where(np.isnan(x) & np.isnan(y), 0.0, np.abs(x - y)) / np.where(scale > 0, scale, 1.0)
    exact = np.nanmax(diff, axis=0)
    mc = [k for k in cols if k.startswith("mc_") or k == "mean_ess"]
    same_mc = all(np.array_equal(b[k].to_numpy(), c[k].to_numpy(), equal_nan=True) for k in mc)
    worst = cols[int(np.nanargmax(exact))]
    return (f"{len(cols)} numeric columns x {len(b)} rows; largest difference {np.nanmax(exact):.2g} of its column's "
            f"scale (column {worst}); Monte Carlo columns bit-identical: {same_mc}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", default=DEFAULT_BASELINE, help=f"git revision of the previous release "
                    f"(default {DEFAULT_BASELINE})")
    ap.add_argument("--repeats", type=int, default=1, help="cold+warm pairs per version (default 1)")
    ap.add_argument("--same-defaults", action="store_true",
                    help="run the current version on the baseline's defaults (same table on both sides, compared)")
    a = ap.parse_args(argv)
    if a.repeats < 1:
        ap.error("--repeats must be >= 1")
    work = tempfile.mkdtemp(prefix="tokis-baseline-")
    tree = os.path.join(work, "tree")
    try:
        subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", tree, a.baseline], check=True,
                       capture_output=True, text=True)
        outs = [os.path.join(work, "base_out"), os.path.join(work, "cur_out")] if a.same_defaults else [None, None]
        base = _measure(os.path.join(tree, "src"), a.repeats, [], outs[0])
        cur = _measure(os.path.join(ROOT, "src"), a.repeats, BASELINE_DEFAULTS if a.same_defaults else [], outs[1])
        agreement = _compare(*outs) if a.same_defaults else ""
    finally:
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", tree], capture_output=True)
        subprocess.run(["git", "-C", ROOT, "worktree", "prune"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    print(f"# main job (`tokis horizon`, defaults, --no-store), {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, median of {a.repeats}\n")
    print("| version | cold (empty numba cache) s | warm s |")
    print("|---|--:|--:|")
    print(f"| baseline {a.baseline} | {base[0]:.1f} | {base[1]:.1f} |")
    print(f"| current | {cur[0]:.1f} | {cur[1]:.1f} |")
    print(f"| **speed-up** | **{base[0] / cur[0]:.1f}x** | **{base[1] / cur[1]:.1f}x** |")
    if a.same_defaults:
        print(f"\nsame table: {agreement}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
