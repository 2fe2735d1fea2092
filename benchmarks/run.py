"""tokis throughput benchmarks: sampling, estimators, exact DP, against the machine's read bandwidth.

Usage::

    python benchmarks/run.py                    # full suite (about 40 s on 2 cores)
    python benchmarks/run.py --quick            # small sizes (about 30 s)
    python benchmarks/run.py --json out.json    # also write every figure as JSON
    python benchmarks/run.py --backend cupy     # GPU figures (needs CuPy and a CUDA device)

Every timing is the median of ``--repeats`` runs (default 7; the minimum is shown too) after
one untimed warm-up call, so numba compilation is never inside a timing; compile times are
measured separately by re-compiling the main kernels without the on-disk cache (and then
loading them from it in a second process). Backends that are compared are run round-robin
(one call each per round, each round starting one backend later), so a burst of load from
other processes hits all of them alike. GPU timings synchronise the device before the clock stops.

Sections: machine; memory-read bandwidth (numba parallel sum and numpy sum over as many bytes
as the estimator input); sampling tokens per second (kernel only and the full
``tokis.envs.sample``); estimator elements per second (the per-row kernels on validated
arrays, and the public functions end to end) with bytes per second as a fraction of the
bandwidth; "auto": what ``backend="auto"`` runs against numpy and numba on one thread and on
every thread, at the small shapes where it used to lose (32768 x 2, 16384 x 4, 20000 x 256)
and larger ones, and replications as an array axis (one call for R batches against R calls);
a peer's per-trajectory product of probabilities; exact-DP times (including the exact moments
of seq and tok); the targets of DESIGN section 7 as ratios with pass/fail.

Everything runs in the environment a user gets by default: the runner sets no environment
variable (no ``OMP_WAIT_POLICY``, no ``OPENBLAS_NUM_THREADS``; the machine section records
what it found). Numba thread counts are chosen per call by tokis itself
(:mod:`tokis._backends._chunks`); the "numba 1 thread" and "numba, all threads" rows force one
or the other through its thresholds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import contextlib  # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))  # run from a checkout without installing

import numba  # noqa: E402

from tokis import estimators as est  # noqa: E402
from tokis._backends import _chunks  # noqa: E402
from tokis._backends import _numba_forms as nbf  # noqa: E402
from tokis._backends import _numba_sample  # noqa: E402
from tokis._backends._bandwidth import parallel_sum, read_bandwidth  # noqa: E402
from tokis import exact  # noqa: E402
from tokis.envs import Policy, TokenMDP, sample  # noqa: E402
from tokis.envs._sample import _sample_numpy, sampling_tables  # noqa: E402
from tokis.estimators import _evaluate, list_estimators  # noqa: E402
from tokis._core._batch import prepare  # noqa: E402

ESTIMATORS = tuple(list_estimators())  # the one registry

# kernel-level workloads: the (n, T) pass of each form family, on a validated Batch, with the
# inputs each one reads (for bytes per second). numba runs the family kernel with the estimator's
# token map compiled in; numpy and cupy run the form's array path.


def _threads(batch):
    """The threads a public call of this size runs its kernel on (tokis' own rule)."""
    return _chunks.threads_for(batch.log_ratio.size, _chunks.ESTIMATOR_PARALLEL_MIN)


def _args(func, params):
    return tuple(float(params[p]) for p in est._forms.map_params(func))


def _sum_pass(form, params):
    def run(batch, be):
        if be == "numba":
            return nbf.token_sum(form.token, batch.log_ratio, batch.mask, batch.full, _args(form.token, params),
                                 form.offset, form.per_length, batch.lengths, _threads(batch))
        return form.weights(batch.xp, batch, params)
    return run


def _product_pass(form, params):
    def run(batch, be):
        if be == "numba":
            return nbf.token_product(form.token, batch.log_ratio, batch.mask, batch.full,
                                     _args(form.token, params), form.per_length, batch.lengths, _threads(batch))
        return form.log_weights(batch.xp, batch, params)
    return run


def _pd_pass(batch, be):
    form = est.pdis.form
    if be == "numba":
        return nbf.per_decision(form.token, batch.log_ratio, batch.mask, batch.full, batch.rewards, (),
                                _threads(batch))
    return _evaluate._per_decision_pieces(batch.xp, form.prefix_log_weights(batch.xp, batch, {}), batch.rewards)


def _pd_columns_pass(batch, be):
    form = est.wpdis.form
    if be == "numba":
        return nbf.per_decision_columns(form.token, batch.log_ratio, batch.mask, batch.full, batch.rewards, (),
                                        1, _threads(batch))
    prefix = form.prefix_log_weights(batch.xp, batch, {})
    m = prefix.max(axis=0)
    den = batch.xp.exp(prefix - m[None, :])
    return den * batch.rewards, den, m


KERNEL_CASES = {
    "seq (token product)": (_product_pass(est.seq.form, {}), ("log_ratio",)),
    "tok (token sum)": (_sum_pass(est.tok.form, {}), ("log_ratio",)),
    "clip_prod (token product, clipped)": (_product_pass(est.clip_prod.form, {"c": 2.0}), ("log_ratio",)),
    "mask_tok (token sum, band)": (_sum_pass(est.mask_tok.form, {"lo": 0.5, "hi": 2.0}), ("log_ratio",)),
    "pdis (per-decision)": (_pd_pass, ("log_ratio", "rewards")),
    "wpdis (per-decision columns)": (_pd_columns_pass, ("log_ratio", "rewards")),
}

# public calls: rewards per step as tokis.envs.sample returns them (all estimators), and
# terminal rewards (n,) for the two headline estimators
CALL_FORMS = (("per-step", "rewards", ESTIMATORS), ("terminal", "returns", ("seq", "tok")))


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------


def _sync_for(backend):
    if backend != "cupy":
        return lambda: None
    import cupy

    return lambda: cupy.cuda.Device().synchronize()


def timed(fns: dict, repeats: int) -> dict:
    """Median seconds of each callable, measured round-robin after one warm-up call each.

    Every round starts one callable later than the previous one, so no callable always runs
    right after the same other one (the call after a numpy call, for instance, tends to pay
    for the memory numpy just returned to the system).

    Parameters
    ----------
    fns : dict
        ``name -> (callable, sync)``; ``sync`` is called before the clock stops.
    repeats : int

    Returns
    -------
    dict
        ``name -> {"median": s, "min": s, "times": [...]}``.
    """
    for f, sync in fns.values():
        f()
        sync()
    names = list(fns)
    times = {name: [] for name in fns}
    for k in range(repeats):
        for name in names[k % len(names):] + names[: k % len(names)]:
            f, sync = fns[name]
            t0 = time.perf_counter()
            f()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {k: {"median": statistics.median(v), "min": min(v), "times": v} for k, v in times.items()}


@contextlib.contextmanager
def _forced(name: str, value: int):
    """Set a thread threshold of :mod:`tokis._backends._chunks` for the duration (0: every thread)."""
    old = getattr(_chunks, name)
    setattr(_chunks, name, value)
    try:
        yield
    finally:
        setattr(_chunks, name, old)


def _with(name: str, value: int, f):
    """``f`` run with a forced threshold (for a timed() entry)."""
    def run():
        with _forced(name, value):
            return f()
    return run


ONE_THREAD = 1 << 62  # a threshold no call reaches
ALL_THREADS = 0


# ---------------------------------------------------------------------------------------------
# machine
# ---------------------------------------------------------------------------------------------


def machine_info(backends) -> dict:
    # read /proc/cpuinfo rather than run lscpu: a fork before the timings was measured to
    # slow this process's later numba calls by 15-40% on this kind of virtual machine
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    parallel_sum(np.ones(8))  # start the thread pool so the threading layer is known
    wake = []
    for _ in range(5):  # a tiny parallel call after 20 ms idle: thread wake-up latency
        time.sleep(0.02)
        t0 = time.perf_counter()
        parallel_sum(np.ones(8))
        wake.append(time.perf_counter() - t0)
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "numba_threads": numba.get_num_threads(),
        "threading_layer": numba.threading_layer(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "parallel_call_after_idle_s": statistics.median(wake),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "gpu": None,
    }
    if "cupy" in backends:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        info["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
        info["cupy"] = cupy.__version__
    return info


def available_backends(requested: str) -> list:
    wanted = ["numpy", "numba", "cupy"] if requested == "all" else ["numpy", "numba"] + (
        ["cupy"] if requested == "cupy" else []
    )
    if "cupy" in wanted:
        try:
            from tokis._backends._cupy import require_cupy

            require_cupy()
        except ValueError as exc:
            if requested == "cupy":
                raise SystemExit(f"--backend cupy: {exc}")
            wanted.remove("cupy")
    return wanted


# ---------------------------------------------------------------------------------------------
# compile times
# ---------------------------------------------------------------------------------------------


_COMPILE_SCRIPT = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[2])
from tokis._backends import _numba_forms as nbf, _numba_prepare as nbp, _numba_reduce as nbr, _numba_sample as nbs
from tokis import estimators as est

x = np.zeros((4, 8)); m = np.ones((4, 8), dtype=bool); e = np.empty(4); k = np.empty(4, dtype=np.int64)
tok = np.empty((4, 8), dtype=np.int64)
keys = np.ones(1, dtype=np.uint64)
s = (np.ones((1, 2, 3)), np.ones(2), np.zeros((2, 3), dtype=np.int64), np.int64(-1), keys, np.int64(4), tok, tok.copy())
cases = [
    ("sampler (rows)", nbs._sample_rows, s + (0, 4)),
    ("sampler (parallel driver)", nbs._sample_par, s),
    ("token product family, seq's map (rows + driver)", lambda: nbf.token_product(
        est.seq.form.token, x, m, True, (), False, np.full(4, 8)), ()),
    ("validation sweep", nbp._scan_rows, (x, m, True, x, True, np.zeros(5, dtype=np.int64), 0, 4)),
    ("reductions (mean of exp(b) h)", lambda: nbr.mean_batches(e + 1.0, 1, b=e * 0.0, log_weights=e * 0.0), ()),
]
if sys.argv[1] == "0":
    pad = np.full((4, 8), -1, dtype=np.int64)
    cases += [
        ("sample() assembly (rows)", nbs._assemble_rows,
         (pad, pad.copy(), np.ones((1, 2, 3)), np.ones((1, 2, 3)), True, np.ones((2, 3)), np.ones(2),
          np.zeros((2, 3), dtype=np.int64), False, keys, np.int64(4), m.copy(), x.copy(), x.copy(), x.copy(),
          x.copy(), k.copy(), k.copy(), e.copy(), 0, 4)),
        ("token sum family, tok's map (rows + driver)", lambda: nbf.token_sum(
            est.tok.form.token, x, m, True, (), 1.0, False, np.full(4, 8)), ()),
        ("per-decision family, pdis' map (rows + driver)", lambda: nbf.per_decision(
            est.pdis.form.token, x, m, True, x, ()), ()),
    ]
out = []
for name, f, args in cases:
    t0 = time.perf_counter()
    f(*args)
    out.append({"kernel": name, "compile_s": time.perf_counter() - t0})
# a second process finds them on disk: load times from numba's cache
print(json.dumps(out))
"""


def compile_times(quick: bool) -> list:
    """First-call (compile) seconds of the main kernels in a fresh process with an empty cache,
    then the same first calls in a second process that finds them in that cache (load seconds).

    A separate process keeps the compiler's memory churn out of this process's timings, and
    an empty ``NUMBA_CACHE_DIR`` makes every first call a real compilation.
    """
    import tempfile

    runs = []
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for _ in range(2):
            res = subprocess.run(
                [sys.executable, "-c", _COMPILE_SCRIPT, "1" if quick else "0", os.path.join(HERE, "..", "src")],
                env=env, capture_output=True, text=True, timeout=600,
            )
            if res.returncode != 0:
                raise RuntimeError(f"compile-time probe failed:\n{res.stderr}")
            runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return [dict(first, cached_s=second["compile_s"]) for first, second in zip(*runs)]


# ---------------------------------------------------------------------------------------------
# sampling
# ---------------------------------------------------------------------------------------------


def _random_problem(rng, n_ctx, vocab, horizon, *, time_dependent=False, eos=None):
    mdp = TokenMDP(
        rng.integers(0, n_ctx, size=(n_ctx, vocab)),
        horizon=horizon,
        terminal_reward=rng.uniform(size=n_ctx),
        eos=eos,
    )
    shape = (horizon, n_ctx, vocab) if time_dependent else (n_ctx, vocab)
    mu = Policy(rng.normal(size=shape))
    pi = Policy(mu.logits + 0.3 * rng.normal(size=shape))
    return mdp, pi, mu


def sampling_bench(backends, quick: bool, repeats: int) -> list:
    rng = np.random.default_rng(0)
    if quick:
        cases = [dict(n=4096, T=64, V=64, S=64), dict(n=2048, T=64, V=1024, S=16)]
    else:
        cases = [
            dict(n=16384, T=64, V=64, S=64),
            dict(n=4096, T=64, V=1024, S=64),
            dict(n=4096, T=256, V=16, S=256),
            dict(n=8192, T=128, V=32, S=32, time_dependent=True, eos=3),
        ]
    if "cupy" in backends:  # large enough for a GPU; the numpy reference would take minutes
        cases.append(dict(n=1 << 20, T=128, V=64, S=64, skip_numpy=True))
    rows = []
    for case in cases:
        n, T, V, S = case["n"], case["T"], case["V"], case["S"]
        mdp, pi, mu = _random_problem(rng, S, V, T, time_dependent=case.get("time_dependent", False),
                                      eos=case.get("eos"))
        cdf = sampling_tables(mu)
        fns = {}
        if not case.get("skip_numpy"):
            fns["numpy"] = (lambda: _sample_numpy(mdp, cdf, n, 1), _sync_for("numpy"))
        fns["numba"] = (lambda: _numba_sample.sample_numba(mdp, cdf, n, 1), _sync_for("numba"))
        fns["numba, all threads"] = (_with("SAMPLE_PARALLEL_MIN", ALL_THREADS,
                                           lambda: _numba_sample.sample_numba(mdp, cdf, n, 1)), _sync_for("numba"))
        if "cupy" in backends:
            from tokis._backends._cupy_sample import sample_cupy_device

            fns["cupy"] = (lambda: sample_cupy_device(mdp, cdf, n, 1), _sync_for("cupy"))
        res = timed(fns, repeats)
        tokens = int((_numba_sample.sample_numba(mdp, cdf, n, 1)[0] >= 0).sum())
        label = f"n={n} T={T} V={V} S={S}" + (" time-dep" if case.get("time_dependent") else "") + (
            " eos" if case.get("eos") is not None else "")
        for b, r in res.items():
            rows.append({"case": label, "level": "kernel", "backend": b, "n": n, "T": T, "V": V, "S": S,
                         "tokens": tokens, "seconds": r["median"], "min_seconds": r["min"],
                         "tokens_per_s": tokens / r["median"]})
        if case is cases[0] or case.get("eos") is not None:
            # the whole public call: tables, then tokens, log-probs, rewards, lengths (numba: one
            # fused parallel pass; numpy: the token sampler, then _assemble's gathers)
            whole = {b: (lambda b=b: sample(mdp, mu, n, target=pi, seed=1, backend=b), _sync_for(b))
                     for b in ("numpy", "auto")}
            whole["numba, all threads"] = (_with("SAMPLE_PARALLEL_MIN", ALL_THREADS, lambda: sample(
                mdp, mu, n, target=pi, seed=1, backend="numba")), _sync_for("numba"))
            whole = timed(whole, repeats)
            for b, r in whole.items():
                rows.append({"case": label, "level": "sample()", "backend": b, "n": n, "T": T, "V": V, "S": S,
                             "tokens": tokens, "seconds": r["median"], "min_seconds": r["min"],
                             "tokens_per_s": tokens / r["median"]})
    return rows


# ---------------------------------------------------------------------------------------------
# estimators
# ---------------------------------------------------------------------------------------------


def _estimator_inputs(rng, n, T):
    """Log-ratios of sd 0.1 per token with ~10% padded tails, terminal rewards in [0, 1]."""
    lengths = rng.integers(int(0.8 * T), T + 1, size=n)
    mask = np.arange(T)[None, :] < lengths[:, None]
    lr = np.where(mask, 0.1 * rng.standard_normal((n, T)), 0.0)
    g = rng.uniform(size=n)
    steps = np.zeros((n, T))
    steps[np.arange(n), lengths - 1] = g
    return {"log_ratio": lr, "mask": mask, "returns": g, "rewards": steps, "lengths": lengths}


def _public_backends(backends) -> list:
    """Backends the public estimator functions accept on this machine (numpy always)."""
    ok = []
    for b in backends:
        xp = __import__("cupy") if b == "cupy" else np
        try:
            est.seq(xp.zeros((2, 3)), xp.ones(2), backend=b)
            ok.append(b)
        except (ValueError, TypeError):
            pass
    return ok


def _device_inputs(b, data):
    if b != "cupy":
        return data
    import cupy

    return {k: cupy.asarray(v) for k, v in data.items()}


def _kernel_batches(backends, data) -> dict:
    """A validated Batch per backend (cupy: on the device), as the public call builds it."""
    host = prepare(data["log_ratio"], data["rewards"], data["mask"])
    out = {"numpy": host, "numba": host}
    if "cupy" in backends:
        out["cupy"] = _evaluate.load_batch(data["log_ratio"], data["rewards"], data["mask"], "cupy")[0]
    return out


def _nbytes(data, keys) -> int:
    return int(sum(data[k].nbytes for k in keys))


def estimator_bench(backends, quick: bool, repeats: int):
    """Kernel-level and public-call throughput; bytes per second against the read bandwidth.

    Inputs look like ``tokis.envs.sample``'s: log-ratios of sd 0.1 with zeros at padding, a
    mask, per-step rewards (n, T) with the terminal reward at the last real step. The
    bandwidth fraction of a row is (bytes of the inputs it reads) / time / bandwidth, with
    the bandwidth measured over as many bytes as one (n, T) float64 array.
    """
    rng = np.random.default_rng(1)
    sizes = [(8192, 512)] if quick else [(4096, 256), (16384, 512)]
    public = _public_backends(backends)
    kernel_backends = ["numpy", "numba"] + (["cupy"] if "cupy" in backends else [])
    kernel_rows, call_rows, peer_rows, bw_rows = [], [], [], []

    def bandwidths(nbytes, which):
        out = {b: read_bandwidth(nbytes, repeats=max(repeats, 7), backend=b) for b in which}
        bw_rows.append({"n": n, "T": T, "bytes": nbytes, "numpy_GBps": float("nan"),
                        **{f"{k}_GBps": v / 1e9 for k, v in out.items()}})
        # the CPU yardstick: the better of the parallel numba sum and numpy's one-thread sum
        out["numba"] = max(out["numba"], out.get("numpy", 0.0))
        return out

    def kernel_level(data, bw, which):
        batches = _kernel_batches(which, data)
        for case, (fn, reads) in KERNEL_CASES.items():
            fns = {b: (lambda fn=fn, batch=batches[b], b=b: fn(batch, b), _sync_for(b)) for b in which}
            nbytes = _nbytes(data, reads)
            for b, r in timed(fns, repeats).items():
                kernel_rows.append({"case": case, "backend": b, "n": n, "T": T, "seconds": r["median"],
                                    "min_seconds": r["min"], "elements_per_s": n * T / r["median"],
                                    "bytes": nbytes,
                                    "bandwidth_fraction": nbytes / r["median"] / bw["cupy" if b == "cupy" else "numba"]})

    for n, T in sizes:
        data = _estimator_inputs(rng, n, T)
        bw = bandwidths(data["log_ratio"].nbytes, ["numba", "numpy"] + (["cupy"] if "cupy" in backends else []))
        kernel_level(data, bw, kernel_backends)
        # public functions end to end (validation + kernels + reductions)
        for form, key, names in CALL_FORMS:
            nbytes = _nbytes(data, ("log_ratio", key, "mask"))
            for name in names:
                f = getattr(est, name)
                fns = {}
                for b in public:
                    d = _device_inputs(b, data)
                    fns[b] = (lambda f=f, d=d, b=b, key=key: f(d["log_ratio"], d[key], mask=d["mask"], backend=b),
                              _sync_for(b))
                for b, r in timed(fns, repeats).items():
                    call_rows.append({"estimator": name, "rewards": form, "backend": b, "n": n, "T": T,
                                      "seconds": r["median"], "min_seconds": r["min"],
                                      "elements_per_s": n * T / r["median"], "bytes": nbytes,
                                      "bandwidth_fraction": nbytes / r["median"] / bw["cupy" if b == "cupy" else "numba"]})
        # the peer's way: per trajectory, the product of probability ratios, in a Python loop
        pi_p = np.exp(data["log_ratio"] - 1.0)
        mu_p = np.full((n, T), math.exp(-1.0))
        lengths, g = data["lengths"], data["returns"]

        def peer():
            total = 0.0
            for i in range(n):
                L = lengths[i]
                total += np.prod(pi_p[i, :L] / mu_p[i, :L]) * g[i]
            return total / n

        pr = timed({"peer": (peer, _sync_for("numpy"))}, max(3, repeats // 2))["peer"]
        peer_rows.append({"n": n, "T": T, "seconds": pr["median"], "min_seconds": pr["min"],
                          "elements_per_s": n * T / pr["median"]})
    if "cupy" in backends:  # a GPU needs more bytes than the CPU sizes to reach its bandwidth
        n, T = (1 << 16, 1024)
        data = _estimator_inputs(rng, n, T)
        kernel_level(data, bandwidths(data["log_ratio"].nbytes, ["numba", "cupy"]), ["numba", "cupy"])
    return kernel_rows, call_rows, peer_rows, bw_rows, public


# ---------------------------------------------------------------------------------------------
# auto: what backend="auto" runs, against numpy and numba on one thread / every thread
# ---------------------------------------------------------------------------------------------

AUTO_SHAPES = [(32768, 2), (16384, 4), (20000, 256), (4096, 256), (8192, 512), (16384, 512), (32768, 512)]
AUTO_SHAPES_QUICK = [(32768, 2), (16384, 4), (20000, 256), (8192, 512)]


def auto_bench(quick: bool, repeats: int) -> dict:
    """Public seq and tok calls: auto vs numpy vs numba (1 thread, every thread), per shape.

    Inputs as ``_estimator_inputs`` (a mask with ~10 % padded tails) with terminal rewards (n,).
    Also replications as an array axis: one call on (R, n, T) against R calls on (n, T), for the
    estimators and for ``sample(seed=[...])`` against R ``sample`` calls.
    """
    rng = np.random.default_rng(7)
    rows = []
    # the yardstick: memory (not cache) read bandwidth over 128 MiB, the better of a parallel
    # numba sum and numpy's one-thread sum (a parallel sum pays any worker wake-up too)
    bw = max(read_bandwidth(1 << 27, repeats=max(repeats, 7), backend=b) for b in ("numba", "numpy"))
    for n, T in (AUTO_SHAPES_QUICK if quick else AUTO_SHAPES):
        data = _estimator_inputs(rng, n, T)
        lr, g, mask = data["log_ratio"], data["returns"], data["mask"]
        nbytes = _nbytes(data, ("log_ratio", "returns", "mask"))
        for name in ("seq", "tok"):
            f = getattr(est, name)
            fns = {
                "numpy": (lambda f=f: f(lr, g, mask=mask, backend="numpy"), _sync_for("numpy")),
                "auto": (lambda f=f: f(lr, g, mask=mask), _sync_for("numba")),
                "numba, 1 thread": (_with("ESTIMATOR_PARALLEL_MIN", ONE_THREAD,
                                          lambda f=f: f(lr, g, mask=mask, backend="numba")), _sync_for("numba")),
                "numba, all threads": (_with("ESTIMATOR_PARALLEL_MIN", ALL_THREADS,
                                             lambda f=f: f(lr, g, mask=mask, backend="numba")), _sync_for("numba")),
            }
            reps = repeats if n * T <= (1 << 22) else max(5, repeats // 2)
            res = timed(fns, 3 * reps if n * T <= (1 << 17) else reps)
            for b, r in res.items():
                rows.append({"estimator": name, "n": n, "T": T, "backend": b, "seconds": r["median"],
                             "min_seconds": r["min"], "vs_numpy": res["numpy"]["median"] / r["median"],
                             "bandwidth_fraction": nbytes / r["median"] / bw})
    # replications: one call over (R, n, T) against R calls
    R, n, T = (32, 1024, 64) if quick else (64, 2048, 64)
    data = _estimator_inputs(rng, R * n, T)
    lr, g, mask = (data["log_ratio"].reshape(R, n, T), data["returns"].reshape(R, n), data["mask"].reshape(R, n, T))
    reps = []
    for name in ("seq", "tok", "snis"):
        f = getattr(est, name)
        res = timed({"one call (R, n, T)": (lambda f=f: f(lr, g, mask=mask), _sync_for("numba")),
                     "R calls (n, T)": (lambda f=f: [f(lr[r], g[r], mask=mask[r]) for r in range(R)],
                                        _sync_for("numba"))}, repeats)
        for how, r in res.items():
            reps.append({"what": f"{name} (auto)", "R": R, "n": n, "T": T, "how": how, "seconds": r["median"],
                         "min_seconds": r["min"]})
    mdp, pi, mu = _random_problem(rng, 64, 64, T)
    seeds = list(range(100, 100 + R))
    res = timed({"one call (R, n, T)": (lambda: sample(mdp, mu, n, target=pi, seed=seeds), _sync_for("numba")),
                 "R calls (n, T)": (lambda: [sample(mdp, mu, n, target=pi, seed=s) for s in seeds],
                                    _sync_for("numba"))}, max(3, repeats // 2))
    for how, r in res.items():
        reps.append({"what": "sample() (auto)", "R": R, "n": n, "T": T, "how": how, "seconds": r["median"],
                     "min_seconds": r["min"]})
    return {"calls": rows, "replications": reps, "memory_bandwidth_GBps": bw / 1e9}


# ---------------------------------------------------------------------------------------------
# exact DP
# ---------------------------------------------------------------------------------------------


def gradient_bench(quick: bool, repeats: int) -> list:
    """Sampled policy gradients: the scatter-add (numba vs numpy reference) and the public call.

    The batch is ``sample()`` output of an order-1 n-gram MDP (S = V contexts), the objective tok.
    """
    from tokis import objectives
    from tokis._backends._numba_scatter import scatter_gradient
    from tokis.envs import ngram, perturb, random_policy
    from tokis.objectives._sampled import scatter_numpy

    rows = []
    for n, T, V in ([(4096, 256, 64)] if quick else [(4096, 256, 64), (16384, 512, 64)]):
        mdp = ngram(V, 1, T, seed=0)
        mu = random_policy(mdp, seed=1)
        pi = perturb(mu, kl=0.01, seed=2)
        ro = sample(mdp, mu, n, seed=3)
        rng = np.random.default_rng(0)
        w = np.where(ro.mask, rng.normal(size=ro.mask.shape), 0.0)
        probs = np.exp(pi.log_probs)
        fns = {"numba scatter": (lambda: scatter_gradient(w, ro.tokens, ro.contexts, ro.mask, probs), _sync_for("numba")),
               "numpy scatter": (lambda: scatter_numpy(w, ro.tokens, ro.contexts, ro.mask, probs), _sync_for("numpy")),
               "gradient(tok) numba": (lambda: objectives.gradient("tok", ro, pi), _sync_for("numba")),
               "gradient(ppo_clip) numba": (lambda: objectives.gradient("ppo_clip", ro, pi), _sync_for("numba")),
               "gradient(tok) numpy": (lambda: objectives.gradient("tok", ro, pi, backend="numpy"), _sync_for("numpy"))}
        tokens = int(ro.mask.sum())
        for name, r in timed(fns, repeats).items():
            rows.append({"case": name, "n": n, "T": T, "V": V, "seconds": r["median"], "min_seconds": r["min"],
                         "tokens_per_s": tokens / r["median"]})
    return rows


def exact_bench(quick: bool, repeats: int) -> list:
    rng = np.random.default_rng(2)
    cases = [(256, 1024, 64)] if quick else [(256, 1024, 64), (1024, 4096, 64), (1024, 1024, 256)]
    rows = []
    for T, S, V in cases:
        mdp, pi, mu = _random_problem(rng, S, V, T)
        fns = {
            "value": (lambda: exact.value(mdp, pi), _sync_for("numpy")),
            "occupancy": (lambda: exact.occupancy(mdp, pi), _sync_for("numpy")),
            "log_second_moment": (lambda: exact.log_second_moment(mdp, pi, mu), _sync_for("numpy")),
            "moments(seq)": (lambda: exact.moments(mdp, pi, mu, "seq"), _sync_for("numpy")),
            "moments(tok)": (lambda: exact.moments(mdp, pi, mu, "tok"), _sync_for("numpy")),
        }
        res = timed(fns, max(3, repeats // 2) if (T, S, V) != (256, 1024, 64) else repeats)
        for name, r in res.items():
            rows.append({"function": name, "T": T, "S": S, "V": V, "seconds": r["median"], "min_seconds": r["min"],
                         "cells_per_s": T * S * V / r["median"]})
    return rows


# ---------------------------------------------------------------------------------------------
# targets and printing
# ---------------------------------------------------------------------------------------------


def _pick(rows, **where):
    for r in rows:
        if all(r.get(k) == v for k, v in where.items()):
            return r
    return None


def targets(sampling, kernel_rows, call_rows, peer_rows, bw_rows, exact_rows, public, auto=None) -> list:
    out = []

    def add(name, value, goal, note):
        out.append({"target": name, "value": value, "goal": goal, "met": bool(value >= goal) if value == value else False,
                    "note": note})

    first = sampling[0]["case"]
    s_np = _pick(sampling, case=first, level="kernel", backend="numpy")
    s_nb = _pick(sampling, case=first, level="kernel", backend="numba")
    add(f"numba sampling / numpy sampling ({first})", s_np["seconds"] / s_nb["seconds"], 10.0,
        "token kernels, same tokens")
    a = _pick(sampling, case=first, level="sample()", backend="numpy")
    b = _pick(sampling, case=first, level="sample()", backend="auto")
    add(f"auto sample() / numpy sample(), end to end ({first})", a["seconds"] / b["seconds"], 10.0,
        "every Rollouts field, bit for bit the same")
    n, T = max(((r["n"], r["T"]) for r in call_rows or kernel_rows if r["backend"] == "numpy"),
               key=lambda s: s[0] * s[1])
    for case, label in (("seq (token product)", "seq"), ("tok (token sum)", "tok")):
        a = _pick(kernel_rows, case=case, backend="numpy", n=n, T=T)
        b = _pick(kernel_rows, case=case, backend="numba", n=n, T=T)
        add(f"numba {label} / numpy {label}, kernel (n={n}, T={T})", a["seconds"] / b["seconds"], 5.0,
            "the (n, T) pass on validated arrays, on the threads tokis picks for this size")
        if "numba" in public:
            for form in ("per-step", "terminal"):
                a = _pick(call_rows, estimator=label, backend="numpy", n=n, T=T, rewards=form)
                b = _pick(call_rows, estimator=label, backend="numba", n=n, T=T, rewards=form)
                add(f"numba {label} / numpy {label}, public call, {form} rewards (n={n}, T={T})",
                    a["seconds"] / b["seconds"], 5.0, "validation + kernel + reductions")
    b = _pick(kernel_rows, case="seq (token product)", backend="numba", n=n, T=T)
    add(f"numba seq kernel bytes/s / read bandwidth (n={n}, T={T})", b["bandwidth_fraction"], 0.5,
        "within 2x of a plain parallel sum over the same bytes")
    if "numba" in public:
        for form in ("per-step", "terminal"):
            c = _pick(call_rows, estimator="seq", backend="numba", n=n, T=T, rewards=form)
            add(f"numba seq public call bytes/s / read bandwidth, {form} rewards (n={n}, T={T})",
                c["bandwidth_fraction"], 0.5, "input bytes (log-ratios, rewards, mask) over the whole call")
    p = _pick(peer_rows, n=n, T=T)
    best = _pick(call_rows, estimator="seq", backend="numba", n=n, T=T, rewards="terminal") or b
    add(f"peer per-trajectory product / numba seq (n={n}, T={T})", p["seconds"] / best["seconds"], 1.0,
        "Python loop of np.prod(pi/mu) per row, as OPE libraries do")
    cu = [r for r in sampling if r["backend"] == "cupy"]
    if cu:
        best = max(cu, key=lambda r: r["tokens_per_s"])
        add(f"cupy sampling tokens/s / 1e9 ({best['case']})", best["tokens_per_s"] / 1e9, 1.0,
            "billions of tokens per second on the GPU")
        c = max((r for r in kernel_rows if r["case"] == "seq (token product)" and r["backend"] == "cupy"),
                key=lambda r: r["n"] * r["T"])
        add(f"cupy seq kernel bytes/s / GPU read bandwidth (n={c['n']}, T={c['T']})", c["bandwidth_fraction"], 0.5,
            "at least half of a plain cupy sum over the same bytes")
    for r in (auto or {}).get("calls", []):
        if r["backend"] == "auto":
            add(f"auto {r['estimator']} / numpy {r['estimator']}, public call ({r['n']}x{r['T']})", r["vs_numpy"],
                1.0, "auto is never slower than numpy (DESIGN section 7)")
    big = _pick(exact_rows, function="value", T=1024, S=4096, V=64)
    if big is not None:
        add("exact DP value() at T=1024, S=4096, V=64: 1 s / time", 1.0 / big["seconds"], 1.0, "under a second")
    return out


def _fmt(x, unit=""):
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{suffix}{unit}"
    return f"{x:.3g}{unit}"


def _ms(r):
    return f"{r['seconds'] * 1e3:.2f} ({r['min_seconds'] * 1e3:.2f}) ms"


def print_table(title, header, rows):
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")


def report(res):
    m = res["machine"]
    print(f"## tokis benchmarks ({'quick' if res['quick'] else 'full'}), repeats={res['repeats']}\n")
    print(f"CPU: {m['cpu']}, {m['cores']} cores, numba {m['numba']} with {m['numba_threads']} threads "
          f"({m['threading_layer']}, OMP_WAIT_POLICY={m['omp_wait_policy']}), numpy {m['numpy']} "
          f"(OPENBLAS_NUM_THREADS={m['openblas_threads']}); "
          f"GPU: {m['gpu'] or 'none'}")
    print(f"A tiny parallel numba call after 20 ms idle takes {m['parallel_call_after_idle_s'] * 1e6:.0f} us "
          "(thread wake-up latency).")
    print_table("Numba compile time (excluded from every timing), and the load from numba's disk cache",
                ["kernel", "compile (empty cache)", "next process (cached)"],
                [[r["kernel"], f"{r['compile_s']:.2f} s", f"{r['cached_s']:.3f} s"] for r in res["compile"]])
    gb = lambda r, k: f"{r[k]:.1f} GB/s" if r.get(k, math.nan) == r.get(k, math.nan) else "-"  # noqa: E731
    print_table("Memory-read bandwidth (a plain sum over as many bytes as one (n, T) float64 array)",
                ["n x T", "bytes", "numba", "numpy"] + (["cupy"] if "cupy_GBps" in res["bandwidth"][0] else []),
                [[f"{r['n']}x{r['T']}", _fmt(r["bytes"], "B"), gb(r, "numba_GBps"), gb(r, "numpy_GBps")]
                 + ([gb(r, "cupy_GBps")] if "cupy_GBps" in res["bandwidth"][0] else []) for r in res["bandwidth"]])
    print_table("Sampling (tokens per second)", ["case", "level", "backend", "median (min) time", "tokens/s"],
                [[r["case"], r["level"], r["backend"], _ms(r), _fmt(r["tokens_per_s"])]
                 for r in res["sampling"]])
    print_table("Estimator kernels on validated arrays (elements per second)",
                ["kernel", "n x T", "backend", "median (min) time", "elements/s", "of bandwidth"],
                [[r["case"], f"{r['n']}x{r['T']}", r["backend"], _ms(r),
                  _fmt(r["elements_per_s"]), f"{100 * r['bandwidth_fraction']:.0f}%"] for r in res["kernels"]])
    print_table("Public estimators end to end (elements per second)",
                ["estimator", "rewards", "n x T", "backend", "median (min) time", "elements/s", "of bandwidth"],
                [[r["estimator"], r["rewards"], f"{r['n']}x{r['T']}", r["backend"], _ms(r),
                  _fmt(r["elements_per_s"]), f"{100 * r['bandwidth_fraction']:.0f}%"] for r in res["calls"]])
    print(f"\nMemory read bandwidth for the auto table: {res['auto']['memory_bandwidth_GBps']:.1f} GB/s "
          "(the better of a parallel numba sum and numpy's sum over 128 MiB)")
    print_table("auto against numpy and numba on one thread / every thread (public calls, terminal rewards)",
                ["estimator", "n x T", "backend", "median (min) time", "numpy / this", "of bandwidth"],
                [[r["estimator"], f"{r['n']}x{r['T']}", r["backend"], _ms(r), f"{r['vs_numpy']:.2f}x",
                  f"{100 * r['bandwidth_fraction']:.0f}%"] for r in res["auto"]["calls"]])
    print_table("Replications as an array axis: one call for R batches against R calls",
                ["what", "R x n x T", "how", "median (min) time"],
                [[r["what"], f"{r['R']}x{r['n']}x{r['T']}", r["how"], _ms(r)] for r in res["auto"]["replications"]])
    print_table("Peer: per-trajectory np.prod(pi/mu) * G in a Python loop",
                ["n x T", "median (min) time", "elements/s"],
                [[f"{r['n']}x{r['T']}", _ms(r), _fmt(r["elements_per_s"])] for r in res["peer"]])
    print_table("Sampled policy gradients (tokens per second)", ["case", "n x T, V", "median (min) time", "tokens/s"],
                [[r["case"], f"{r['n']}x{r['T']}, V={r['V']}", _ms(r), _fmt(r["tokens_per_s"])]
                 for r in res["gradients"]])
    print_table("Exact DP (numba kernels)", ["function", "T", "S", "V", "median (min) time", "T*S*V cells/s"],
                [[r["function"], r["T"], r["S"], r["V"], _ms(r), _fmt(r["cells_per_s"])]
                 for r in res["exact"]])
    print_table("Targets (ratios measured in this run)", ["target", "value", "goal", "met", "note"],
                [[t["target"], f"{t['value']:.2f}", f">= {t['goal']:g}",
                  "yes" if t["met"] else f"NO (short by {t['goal'] / t['value']:.2f}x)" if t["value"] > 0 else "NO",
                  t["note"]] for t in res["targets"]])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (about 20 s)")
    ap.add_argument("--json", metavar="PATH", help="write every figure as JSON to PATH")
    ap.add_argument("--repeats", type=int, default=7, help="timed repeats per measurement (median; default 7)")
    ap.add_argument("--backend", choices=("cpu", "cupy", "all"), default="all",
                    help="cpu: numpy and numba; cupy: also the GPU (error without one); all: GPU when present")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    t0 = time.perf_counter()
    backends = available_backends(args.backend)
    res = {"quick": args.quick, "repeats": args.repeats, "machine": machine_info(backends)}
    res["sampling"] = sampling_bench(backends, args.quick, args.repeats)
    kernels, calls, peer, bw, public = estimator_bench(backends, args.quick, args.repeats)
    res.update(kernels=kernels, calls=calls, peer=peer, bandwidth=bw, public_backends=public)
    res["auto"] = auto_bench(args.quick, args.repeats)
    res["exact"] = exact_bench(args.quick, args.repeats)
    res["gradients"] = gradient_bench(args.quick, args.repeats)
    res["compile"] = compile_times(args.quick)  # last: a subprocess, after every timing
    res["targets"] = targets(res["sampling"], kernels, calls, peer, bw, res["exact"], public, res["auto"])
    res["wall_s"] = time.perf_counter() - t0
    report(res)
    print(f"\n(total {res['wall_s']:.0f} s)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1, default=float)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
