"""Dask distributed (``--scheduler``): the same tables, bit for bit, and cells stored by the client as they arrive.

A real ``dask scheduler`` with two ``dask worker`` processes on 127.0.0.1 runs a sweep through
``tokis horizon --scheduler tcp://...``; one worker is killed while it computes a cell, and the
table must still equal the in-process one, byte for byte, with every cell stored once.
"""

import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

import tokis.analysis._dask as D
from tokis.analysis import Behavior, Family, ResultStore
from tokis.analysis._cli import main
from tokis.analysis._grid import run_grid
from tokis.analysis._sweep import run_tasks
from tokis.analysis.coverage import coverage
from tokis.analysis.gradient import gradient_sweep
from tokis.analysis.horizon import horizon

FAM = Family(vocab=3)
BEH = Behavior(kl=0.05)
# numpy backend: the workers start computing at once (no numba compilation in each new process)
TINY = dict(estimators=["seq", "tok", "snis"], n=16, replications=5, seed=2, backend="numpy")


# ---------------------------------------------------------------------------------------------
# the argument (no dask needed)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("given, expected", [
    (None, None), ("local", "local"), (" local ", "local"), ("tcp://127.0.0.1:8786", "tcp://127.0.0.1:8786"),
    ("10.0.0.5:8786", "tcp://10.0.0.5:8786"), ("tls://sched.example.org:8786", "tls://sched.example.org:8786"),
    ("tcp://[::1]:8786", "tcp://[::1]:8786"),
])
def test_scheduler_addresses(given, expected):
    assert D.check_scheduler(given) == expected


@pytest.mark.parametrize("given, match", [
    ("", "must be 'local' or the address"), ("foo", "must be 'local' or the address"),
    ("tcp://host", "must be 'local' or the address"), ("http://host:80", "must be 'local' or the address"),
    ("tcp://host:port", "must be 'local' or the address"),
])
def test_bad_scheduler_addresses(given, match):
    with pytest.raises(ValueError, match=match):
        D.check_scheduler(given)


def test_scheduler_type_and_workers():
    with pytest.raises(TypeError, match="scheduler must be 'local'"):
        D.check_scheduler(8786)
    with pytest.raises(ValueError, match="leave --workers at 1"):
        D.check_scheduler("tcp://127.0.0.1:8786", workers=2)
    assert D.check_scheduler("local", workers=3) == "local"
    assert D.local_worker_count(3) == 3 and D.local_worker_count(1) == len(os.sched_getaffinity(0))


def test_command_line_rejects_a_bad_scheduler_before_computing(capsys):
    assert main(["horizon", "--scheduler", "nowhere", "--no-store"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tokis: error: --scheduler must be") and err.count("\n") == 1


def test_missing_dask_names_the_option_and_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(D.SchedulerError, match=r"--scheduler needs Dask distributed.*pip install -e '\.\[dask\]'"):
        run_tasks([(1,)], abs, lambda x: (x,), lambda *a: None, 1, scheduler="local")
    # nothing to compute: no cluster, no dask (a rerun read from the store is free)
    run_tasks([], abs, lambda x: (x,), lambda *a: None, 1, scheduler="local")


def test_workers_without_tokis_or_with_another_version():
    class Stub:
        def __init__(self, answer):
            self.answer = answer

        def run(self, fn, on_error):
            assert on_error == "return"
            return {"tcp://10.0.0.9:4000": self.answer}

    D._check_workers(Stub(D._worker_version()), "tcp://x:1")
    with pytest.raises(D.SchedulerError, match="tcp://10.0.0.9:4000 cannot import tokis.*ModuleNotFoundError"):
        D._check_workers(Stub(ModuleNotFoundError("No module named 'tokis'")), "tcp://x:1")
    with pytest.raises(D.SchedulerError, match="runs tokis 0.0.1, this process"):
        D._check_workers(Stub("0.0.1"), "tcp://x:1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_is_one_clear_error(monkeypatch, tmp_path):
    pytest.importorskip("distributed")
    monkeypatch.setattr(D, "CONNECT_TIMEOUT", 1)
    addr = f"tcp://127.0.0.1:{_free_port()}"
    with pytest.raises(D.SchedulerError, match=f"--scheduler {addr}: no Dask scheduler answers"):
        horizon(FAM, BEH, horizons=[1, 2], scheduler=addr, **TINY)
    # a sweep whose cells are all stored never connects
    path = tmp_path / "s.sqlite"
    first = horizon(FAM, BEH, horizons=[1, 2], store=path, **TINY)
    again = horizon(FAM, BEH, horizons=[1, 2], store=path, scheduler=addr, **TINY)
    assert again.attrs["cached"] == 6 and again.attrs["computed"] == 0
    pd.testing.assert_frame_equal(first, again, check_exact=True)


def test_a_scheduler_without_workers_is_one_clear_error(monkeypatch):
    distributed = pytest.importorskip("distributed")
    monkeypatch.setattr(D, "WAIT_FOR_WORKERS", 1)
    with distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as empty:
        addr = empty.scheduler_address
        with pytest.raises(D.SchedulerError, match=f"--scheduler {addr}: no Dask worker joined within 1 s"):
            horizon(FAM, BEH, horizons=[1], scheduler=addr, **TINY)


# ---------------------------------------------------------------------------------------------
# a local cluster: every executor call site gives the in-process table, bit for bit
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  env={"NUMBA_NUM_THREADS": "1"}) as cluster, distributed.Client(cluster) as c:
        yield c


def test_horizon_on_dask_equals_in_process(client, tmp_path):
    one = horizon(FAM, BEH, horizons=[1, 2, 4], **TINY)
    path = tmp_path / "d.sqlite"
    dist = horizon(FAM, BEH, horizons=[1, 2, 4], scheduler=client, store=path, **TINY)
    pd.testing.assert_frame_equal(one, dist, check_exact=True)
    assert dist.attrs["computed"] == 9
    with ResultStore(path) as db:  # the client wrote every cell
        assert len(db) == 9
    assert client.status == "running"  # a given Client is used, not closed
    assert D.check_scheduler(client) is client
    with pytest.raises(ValueError, match="with a distributed.Client the cluster's workers compute"):
        horizon(FAM, BEH, horizons=[1], scheduler=client, workers=2, **TINY)


def test_gradient_and_coverage_on_dask_equal_in_process(client):
    kw = dict(objectives=["tok", "ppo_clip"], horizons=[1, 2], kls=[0.05], n=32)
    pd.testing.assert_frame_equal(gradient_sweep(FAM, **kw), gradient_sweep(FAM, scheduler=client, **kw),
                                  check_exact=True)
    kw = dict(estimators=["seq", "tok"], methods=["normal", "t"], horizons=[1, 2], n=8, replications=20, seed=4,
              backend="numpy")
    pd.testing.assert_frame_equal(coverage(FAM, **kw), coverage(FAM, scheduler=client, **kw), check_exact=True)


def test_grid_on_dask_equals_in_process(client):
    grid = dict(vocab=3, model=["perturb", "temperature"], divergence="sampler_kl", values=[0.01, 0.05],
                horizons=[1, 3], estimators=["seq", "tok"], n=16, replications=4, seeds=[0, 5], backend="numpy")
    pd.testing.assert_frame_equal(run_grid(grid), run_grid(grid, scheduler=client), check_exact=True)


USER_MODULE = """
import numpy as np
from tokis.estimators import TokenSum, define


def two_sided(l, eps):
    return np.clip(np.exp(l), 1.0 - eps, 1.0 + eps) - 1.0


clip2 = define("clip2_on_dask", TokenSum(two_sided), params={"eps": 0.2})
"""


@pytest.fixture
def isolated_registry():
    from tokis.estimators import _define

    saved = dict(_define._REGISTRY)
    yield
    _define._REGISTRY.clear()
    _define._REGISTRY.update(saved)


def test_user_estimators_must_import_on_the_workers(client, tmp_path, monkeypatch, isolated_registry):
    (tmp_path / "tokis_dask_user.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)  # this process finds the module in its working directory, the workers do not
    kw = dict(horizons=[1, 2], estimators=["seq", "tokis_dask_user:clip2:eps=0.1"], n=16, replications=5, seed=2,
              backend="numpy")
    with pytest.raises(ValueError, match="cannot import module 'tokis_dask_user'"):
        horizon(FAM, BEH, scheduler=client, **kw)
    client.run(lambda p: __import__("sys").path.insert(0, p), str(tmp_path))  # importable there too
    try:
        dist = horizon(FAM, BEH, scheduler=client, **kw)
    finally:
        client.run(lambda p: __import__("sys").path.remove(p), str(tmp_path))
    pd.testing.assert_frame_equal(horizon(FAM, BEH, **kw), dist, check_exact=True)
    assert list(dist["estimator"]) == ["seq", "clip2_on_dask(eps=0.1)"] * 2


def test_local_cluster_from_the_command_line(tmp_path, capsys):
    pytest.importorskip("distributed")
    args = ["horizon", "--vocab", "3", "--horizons", "1,2", "--estimators", "seq,tok", "--n", "16", "-R", "5",
            "--backend", "numpy", "--no-progress"]
    assert main([*args, "--no-store", "--out", str(tmp_path / "one")]) == 0
    assert main([*args, "--scheduler", "local", "--workers", "2", "--store", str(tmp_path / "s.sqlite"),
                 "--out", str(tmp_path / "dask")]) == 0
    assert "4 cells (0 from the store, 4 computed)" in capsys.readouterr().err
    assert (tmp_path / "one" / "horizon.csv").read_bytes() == (tmp_path / "dask" / "horizon.csv").read_bytes()


def test_an_error_in_a_cell_reaches_the_caller(client):
    def finish(*a):
        raise AssertionError("no task may finish")

    with pytest.raises(ZeroDivisionError):
        run_tasks([(1, 0)], divmod, lambda a, b: (a, b), finish, 1, scheduler=client)


# ---------------------------------------------------------------------------------------------
# a real scheduler and two workers; one is killed mid-sweep
# ---------------------------------------------------------------------------------------------


def _count(path) -> int:
    try:
        with sqlite3.connect(path, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
    except sqlite3.OperationalError:  # no file or table yet
        return 0


def _stop(procs):
    for p in reversed(procs):  # workers, then the scheduler (test processes: no graceful shutdown needed)
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)


SWEEP = ["horizon", "--vocab", "4", "--horizons", "2,3,4,5,6,7", "--estimators", "seq,tok", "--n", "256",
         "--replications", "40", "--seed", "3", "--backend", "numpy", "--no-progress"]


def test_real_cluster_survives_a_killed_worker(tmp_path, capsys):
    distributed = pytest.importorskip("distributed")
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
    dask = [sys.executable, "-m", "dask"]
    procs, logs = [], [open(tmp_path / name, "w") for name in ("scheduler.log", "worker0.log", "worker1.log")]
    try:
        procs.append(subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                       "--no-dashboard"], stdout=logs[0], stderr=subprocess.STDOUT, env=env))
        for i in range(2):
            procs.append(subprocess.Popen([*dask, "worker", addr, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                                           "--name", f"w{i}", "--death-timeout", "60"], stdout=logs[i + 1],
                                          stderr=subprocess.STDOUT, env=env, cwd=tmp_path))
        # the in-process table while the cluster starts
        assert main([*SWEEP, "--no-store", "--out", str(tmp_path / "local")]) == 0
        capsys.readouterr()
        with distributed.Client(addr, timeout=30) as watch:
            watch.wait_for_workers(2, timeout=30)
            pids = watch.run(os.getpid)
            victim_addr, victim_pid = sorted(pids.items())[0]
            victim = next(p for p in procs[1:] if p.pid == victim_pid)
            store = tmp_path / "dask.sqlite"
            killed = {}

            def kill_mid_cell():  # once the sweep has stored a cell and the victim computes another
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    if _count(store) >= 1 and watch.processing().get(victim_addr):
                        victim.kill()
                        killed["cells_stored"] = _count(store)
                        return
                    time.sleep(0.01)

            killer = threading.Thread(target=kill_mid_cell, daemon=True)
            killer.start()
            rc = main([*SWEEP, "--scheduler", addr, "--store", str(store), "--out", str(tmp_path / "dask")])
            killer.join(timeout=5)
            out = capsys.readouterr()
            assert rc == 0, out.err
            assert victim.wait(timeout=10) != 0 and "cells_stored" in killed
            assert killed["cells_stored"] < 12  # killed mid-sweep, not after it
            assert len(watch.scheduler_info()["workers"]) == 1
        assert "12 cells (0 from the store, 12 computed)" in out.err
        with ResultStore(store) as db:
            assert len(db) == 12
    finally:
        _stop(procs)
        for log in logs:
            log.close()
    for name in ("horizon.csv", "horizon.tex"):  # the same table, byte for byte
        assert (tmp_path / "dask" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
