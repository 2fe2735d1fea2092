"""The first-run helper: started once per installed source, and it compiles what the sweep then loads."""

import json
import os
import subprocess
import sys

import numba

from tokis._backends import _kernel_cache
from tokis.analysis import _sweep, _warmup
from tokis.analysis._config import parse_estimators
from tokis.analysis._horizon import DEFAULT_ESTIMATORS, DEFAULT_FAMILY, horizon_points
from tokis.analysis._config import Behavior


def _point(T=4):
    return horizon_points(DEFAULT_FAMILY, Behavior(), [T])[0]


class _Spawn:
    def __init__(self):
        self.calls = []

    def __call__(self, argv, **kw):
        self.calls.append(argv)
        return argv


def test_started_once_per_source_and_only_where_it_can_help(tmp_path, monkeypatch):
    spawn = _Spawn()
    monkeypatch.setattr(_warmup.subprocess, "Popen", spawn)
    monkeypatch.setattr(_kernel_cache, "cache_dir", lambda: str(tmp_path))
    specs = parse_estimators(["seq", "snis"])
    monkeypatch.setattr(numba, "get_num_threads", lambda: 1)
    assert _warmup.start(_point(), specs, "auto") is None  # no second thread to compile on
    monkeypatch.setattr(numba, "get_num_threads", lambda: 2)
    assert _warmup.start(_point(), specs, "numpy") is None  # nothing to compile
    argv = _warmup.start(_point(), specs, "auto")
    assert argv[:3] == [sys.executable, "-m", "tokis.analysis._warmup"] and os.path.exists(argv[3])
    assert (tmp_path / f"warmup-{_warmup.stamp_key()}").exists()
    assert _warmup.start(_point(), specs, "auto") is None  # claimed: never again for this source
    assert len(spawn.calls) == 1


def test_only_an_in_process_sweep_with_work_to_do_starts_it(monkeypatch):
    seen = []
    monkeypatch.setattr(_warmup, "start", lambda point, specs, backend: seen.append((point.mdp.horizon, backend)))
    pts = horizon_points(DEFAULT_FAMILY, Behavior(), [1, 2])
    _sweep.run_sweep(pts, ["seq"], n=8, replications=2)
    assert seen == [(1, "auto")]
    _sweep.run_sweep(pts, ["seq"], n=8, replications=2, workers=2)
    assert len(seen) == 1


_SWEEP = r"""
import json, sys
from numba.core import event
compiled = []
class L(event.Listener):
    def on_start(self, ev): pass
    def on_end(self, ev):
        f = ev.data["dispatcher"].py_func
        compiled.append(f.__module__ + "." + f.__name__)
event.register("numba:compile", L())
from tokis.analysis._config import Behavior, parse_estimators
from tokis.analysis._horizon import DEFAULT_ESTIMATORS, DEFAULT_FAMILY, horizon_points
from tokis.analysis import _warmup
from tokis.analysis._harness import _simulate
p = horizon_points(DEFAULT_FAMILY, Behavior(), [4])[0]
specs = parse_estimators(DEFAULT_ESTIMATORS)
if sys.argv[1] == "warm":
    _warmup.warm(p.mdp, p.target, p.behavior, specs)
else:
    _simulate(p.mdp, p.target, p.behavior, specs, 4, [1, 2], "auto")
print(json.dumps(compiled))
"""


def test_the_helper_compiles_the_kernels_the_sweep_then_loads(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"), XDG_CACHE_HOME=str(tmp_path / "xdg"))

    def run(mode):
        out = subprocess.run([sys.executable, "-c", _SWEEP, mode], env=env, capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])

    helper = run("warm")
    sweep = run("sweep")
    family = lambda names: {n for n in names if n.startswith("tokis_")}  # noqa: E731 - generated kernel modules
    # the helper compiled the family kernels of every default estimator and the ratio reduction ...
    assert len({n.split(".")[0] for n in family(helper)}) >= 5
    assert any(n.endswith("_ratio_batches_serial") for n in helper)
    # ... but neither the sampler, the input checks nor the mean reduction (the sweep needs them first)
    assert not any(n.endswith(("_ratio_rows", "_scan_rows", "_mean_batches_serial")) for n in helper)
    # the sweep compiled those, and loaded every kernel the helper compiled from the cache
    assert any(n.endswith("_mean_batches_serial") for n in sweep)
    assert not family(sweep) and not any(n.endswith("_ratio_batches_serial") for n in sweep)


def test_a_job_that_cannot_be_handed_over_runs_without_it(tmp_path, monkeypatch):
    monkeypatch.setattr(_kernel_cache, "cache_dir", lambda: str(tmp_path))
    monkeypatch.setattr(numba, "get_num_threads", lambda: 2)

    def no_process(argv, **kw):
        raise OSError("cannot start a process here")

    monkeypatch.setattr(_warmup.subprocess, "Popen", no_process)
    assert _warmup.start(_point(), parse_estimators(["seq"]), "auto") is None
    assert [p.name for p in tmp_path.iterdir()] == [f"warmup-{_warmup.stamp_key()}"]  # no job file left behind
    # an unpicklable job (a map defined in a function, say) is no error either
    (tmp_path / f"warmup-{_warmup.stamp_key()}").unlink()
    monkeypatch.setattr(_warmup.pickle, "dump", lambda *a, **k: (_ for _ in ()).throw(TypeError("cannot pickle")))
    assert _warmup.start(_point(), parse_estimators(["seq"]), "auto") is None
    assert [p.name for p in tmp_path.iterdir()] == [f"warmup-{_warmup.stamp_key()}"]
