"""Sweeps: store keys, resume after SIGKILL without recomputation, repeated tables free, workers."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

import tokis
from tokis.analysis import Behavior, Family, ResultStore
from tokis.analysis.horizon import horizon
from tokis.analysis._config import config_key, parse_estimator
from tokis.analysis._sweep import Point, cell_config, run_sweep

TINY = dict(estimators=["seq", "tok"], n=8, replications=3, seed=1)
FAM = Family(vocab=3)
BEH = Behavior(kl=0.05)


def _count(path) -> int:
    if not os.path.exists(path):
        return 0
    try:
        conn = sqlite3.connect(path, timeout=5)
        try:
            return conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:  # table not created yet
        return 0


def test_cell_key_covers_the_configuration():
    mdp, pi = FAM.build(3)
    mu = BEH.apply(pi)
    p = Point((("T", 3),), mdp, pi, mu)
    spec = parse_estimator("clip_tok:c=2")
    base = cell_config(p, spec, n=8, replications=3, seed=1)
    assert base["version"] == tokis.__version__ and base["mdp"] == mdp.fingerprint()
    assert base["target"] == pi.fingerprint() and base["behavior"] == mu.fingerprint()
    k = config_key(base)
    variants = [
        cell_config(p, parse_estimator("clip_tok:c=3"), n=8, replications=3, seed=1),
        cell_config(p, parse_estimator("tok"), n=8, replications=3, seed=1),
        cell_config(p, spec, n=9, replications=3, seed=1),
        cell_config(p, spec, n=8, replications=4, seed=1),
        cell_config(p, spec, n=8, replications=3, seed=2),
        cell_config(Point((), mdp.with_horizon(4), pi, mu), spec, n=8, replications=3, seed=1),
        cell_config(Point((), mdp, pi, Behavior(kl=0.06).apply(pi)), spec, n=8, replications=3, seed=1),
        cell_config(Point((), mdp, pi, mu, seed=5), spec, n=8, replications=3, seed=1),
    ]
    keys = {config_key(v) for v in variants}
    assert k not in keys and len(keys) == len(variants)
    # the coordinates are labels only: the same configuration is the same cell
    assert config_key(cell_config(Point((("x", 1),), mdp, pi, mu), spec, n=8, replications=3, seed=1)) == k


def test_repeated_sweep_reads_everything_back(tmp_path):
    path = tmp_path / "r.sqlite"
    t1 = horizon(FAM, BEH, horizons=[1, 2, 3], store=path, **TINY)
    assert t1.attrs["total"] == 6 and t1.attrs["computed"] == 6 and t1.attrs["cached"] == 0
    t2 = horizon(FAM, BEH, horizons=[1, 2, 3], store=path, **TINY)
    assert t2.attrs["computed"] == 0 and t2.attrs["cached"] == 6
    pd.testing.assert_frame_equal(t1, t2)
    # a longer sweep only computes the new cells; an unstored run gives the same numbers
    t3 = horizon(FAM, BEH, horizons=[1, 2, 3, 4], store=path, **TINY)
    assert t3.attrs["computed"] == 2 and t3.attrs["cached"] == 6
    t4 = horizon(FAM, BEH, horizons=[1, 2, 3, 4], store=None, **TINY)
    pd.testing.assert_frame_equal(t3, t4)
    with ResultStore(path) as db:
        assert len(db) == 8


def test_horizon_table_contents():
    t = horizon(FAM, BEH, horizons="1..4", estimators=["seq", "tok", "clip_tok:c=1.5"], n=8, replications=3)
    assert list(t["T"].unique()) == [1, 2, 4]
    assert set(t["estimator"]) == {"seq", "tok", "clip_tok(c=1.5)"}
    for c in ("exact_bias", "exact_std", "exact_mse", "ess_fraction", "mc_bias", "mc_bias_lo", "mc_bias_hi", "mc_std",
              "mean_ess", "z", "std_underestimated", "seq_kl", "missing_mass"):
        assert c in t.columns
    assert (t["horizon"] == t["T"]).all()
    assert t.attrs["family"] == FAM.label and t.attrs["behavior"] == "kl=0.05"
    # population ESS fraction is exp(-log E[W^2]), and decreases with T
    np.testing.assert_allclose(t["ess_fraction"], np.exp(-t["log_second_moment"]), rtol=1e-12)
    assert np.all(np.diff(t.drop_duplicates("T")["ess_fraction"]) < 0)


def test_workers_match_single_process(tmp_path):
    t1 = horizon(FAM, BEH, horizons=[1, 2, 3], **TINY)
    t2 = horizon(FAM, BEH, horizons=[1, 2, 3], workers=2, store=tmp_path / "w.sqlite", **TINY)
    pd.testing.assert_frame_equal(t1, t2)
    assert t2.attrs["computed"] == 6
    with ResultStore(tmp_path / "w.sqlite") as db:
        assert len(db) == 6


_SLOW_SWEEP = textwrap.dedent("""
    import sys, time
    import tokis.analysis._sweep as sw
    from tokis.analysis import Behavior, Family
    from tokis.analysis.horizon import horizon
    real = sw.compute_point

    def slow(*args):
        time.sleep(0.4)
        return real(*args)

    sw.compute_point = slow
    horizon(Family(vocab=3), Behavior(kl=0.05), horizons=range(1, 13), estimators=["seq", "tok"], n=8,
            replications=3, seed=1, store=sys.argv[1])
    print("finished")
""")


def test_killed_sweep_resumes_without_recomputing(tmp_path):
    """SIGKILL a sweep midway: finished cells survive intact, the rerun computes only the rest."""
    path = str(tmp_path / "kill.sqlite")
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_SWEEP, path], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _count(path) < 4:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the sweep stored no cells in time"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    stored = _count(path)
    total = 12 * 2
    assert 4 <= stored < total
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    resumed = horizon(FAM, BEH, horizons=range(1, 13), store=path, **TINY)
    assert resumed.attrs["cached"] == stored
    assert resumed.attrs["computed"] == total - stored
    again = horizon(FAM, BEH, horizons=range(1, 13), store=path, **TINY)
    assert again.attrs["computed"] == 0 and again.attrs["cached"] == total
    # the stored cells hold the same numbers a fresh computation gives
    fresh = horizon(FAM, BEH, horizons=range(1, 13), store=None, **TINY)
    pd.testing.assert_frame_equal(resumed, fresh)


def test_run_sweep_errors():
    mdp, pi = FAM.build(2)
    p = Point((("T", 2),), mdp, pi, pi)
    with pytest.raises(ValueError, match="the sweep has no points"):
        run_sweep([], ["seq"], n=4, replications=2)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        run_sweep([p], ["seq"], n=4, replications=2, workers=0)
    with pytest.raises(ValueError, match="replications must be >= 2"):
        run_sweep([p], ["seq"], n=4, replications=1)
    with pytest.raises(ValueError, match="T must be >= 1"):
        horizon(FAM, BEH, horizons=[0, 1], **TINY)
    with pytest.raises(ValueError, match="unknown family"):
        horizon("nope", BEH, horizons=[1], **TINY)
    with pytest.raises(ValueError, match="kl must be >= 0"):
        horizon(FAM, {"kl": -1.0}, horizons=[1], **TINY)
    with pytest.raises(TypeError, match="family must be a Family"):
        horizon(3, BEH, horizons=[1], **TINY)


def test_progress_bar_counts_cells(tmp_path, capsys):
    horizon(FAM, BEH, horizons=[1, 2], progress=True, **TINY)
    err = capsys.readouterr().err
    assert "horizon:" in err and "0/4 [" in err and "cell" in err
    # a resumed sweep starts the bar at the cells already stored
    horizon(FAM, BEH, horizons=[1], store=tmp_path / "p.sqlite", **TINY)
    horizon(FAM, BEH, horizons=[1, 2], progress=True, store=tmp_path / "p.sqlite", **TINY)
    assert "2/4 [" in capsys.readouterr().err


def test_crash_midway_keeps_finished_cells(tmp_path, monkeypatch, capsys):
    """An exception (or Ctrl-C) in a later point leaves the earlier points' cells stored."""
    import tokis.analysis._sweep as sw
    from tokis.analysis._cli import main

    real, calls = sw.compute_point, []

    def flaky(*args):
        calls.append(args[0].horizon)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(sw, "compute_point", flaky)
    path = tmp_path / "c.sqlite"
    rc = main(["horizon", "--vocab", "3", "--horizons", "1,2,3,4", "--estimators", "seq,tok", "--n", "8",
               "--replications", "3", "--seed", "1", "--kl", "0.05", "--reward", "last", "--store", str(path), "--no-progress"])
    assert rc == 130
    assert capsys.readouterr().err == "tokis: interrupted; finished cells are in the store\n"
    with ResultStore(path) as db:
        assert len(db) == 4  # the two finished points, two estimators each
    monkeypatch.setattr(sw, "compute_point", real)
    t = horizon(FAM, BEH, horizons=[1, 2, 3, 4], store=path, **TINY)
    assert t.attrs["cached"] == 4 and t.attrs["computed"] == 4


def test_damaged_stored_cell_is_recomputed_never_printed(tmp_path):
    from tokis.analysis._store import StoreWarning

    path = tmp_path / "d.sqlite"
    first = horizon(FAM, BEH, horizons=[2, 3], store=path, **TINY)
    conn = sqlite3.connect(path)
    (key, row), *_ = conn.execute("SELECT key, row FROM cells").fetchall()
    conn.execute("UPDATE cells SET row = ? WHERE key = ?", (row.replace('"exact_mean": ', '"exact_mean": "banana", "x": '), key))
    conn.commit()
    conn.close()
    with pytest.warns(StoreWarning, match="exact_mean"):
        again = horizon(FAM, BEH, horizons=[2, 3], store=path, **TINY)
    assert again.attrs["computed"] == 1 and again.attrs["cached"] == 3
    pd.testing.assert_frame_equal(again, first, check_exact=True)


def test_progress_lines_when_stderr_is_not_a_terminal(capsys):
    horizon(FAM, BEH, horizons=[1, 2, 3], store=None, progress="lines", **TINY)
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("tokis: horizon 6/6 cells (100 %)")
    assert all(line.startswith("tokis: horizon ") for line in lines)
