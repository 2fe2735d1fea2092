"""Throughput of ``tokis train``: optimizer updates and tokens per second, exact J after every update included.

Usage::

    python benchmarks/bench_train.py                 # three MDP sizes up to S*V ~ 1e5 (about a minute on 2 cores)
    python benchmarks/bench_train.py --repeats 3 --iterations 2

One training run (:func:`tokis.analysis.train.run_seed`: sample n sequences, E epochs x M
minibatch steps with the objective's sampled gradient, and after *every* update the exact J,
grad J and per-token KL to pi_old) per repeat, after one untimed warm-up run (numba compiles
outside the timings); the median over ``--repeats`` is reported, with the minimum. Columns:

- ``updates/s``: optimizer updates per second of wall time;
- ``sampled tok/s``: tokens sampled from the sampler per second (n T per batch);
- ``trained tok/s``: tokens whose gradient was computed per second (E n T per batch);
- ``exact share``: the share of the run spent in the per-update exact evaluation (J, grad J and
  KL, timed alone on the same policy: update count x its median time / run time); the rest is
  sampling, the sampled gradient, the clip fraction, the optimizer and Python.

The MDPs are order-k n-gram token MDPs with T = 32 (``Family``), from the default task of
``tokis train`` (V = 16, count reward: S*V = 1904) to S*V ~ 1e5.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))  # run from a checkout without installing

import numpy as np  # noqa: E402

from tokis import envs, exact  # noqa: E402
from tokis.analysis import Family  # noqa: E402
from tokis.analysis.train import TrainConfig, run_seed  # noqa: E402

#: (label, family): S*V from 1.9e3 to 1.0e5, T = 32.
SIZES = (
    ("default task", Family(vocab=16, reward="count", threshold=6)),
    ("V=32, k=1, count", Family(vocab=32, reward="count", threshold=6)),
    ("V=46, k=2, random", Family(vocab=46, order=2, reward="random")),
)


def _median_min(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up: numba compilation and caches outside the timings
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def _exact_eval(mdp, old, policy):
    exact.value(mdp, policy)
    exact.gradient(mdp, policy)
    exact.token_divergence(mdp, old, policy, kind="kl", under="target")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="timed runs per size (default 5; median reported)")
    p.add_argument("--iterations", type=int, default=3, help="batches per run (default 3)")
    p.add_argument("--objective", default="ppo_clip", help="objective (default ppo_clip)")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--minibatches", type=int, default=4)
    a = p.parse_args(argv)
    if a.repeats < 1 or a.iterations < 1:
        p.error("--repeats and --iterations must be >= 1")
    import numba

    print(f"# tokis train throughput: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"numba {numba.__version__} ({numba.get_num_threads()} threads), numpy {np.__version__}")
    print(f"objective {a.objective}, n={a.n}, E={a.epochs}, M={a.minibatches}, {a.iterations} batches per run, "
          f"Adam; median (min) of {a.repeats} runs\n")
    rows = []
    for label, fam in SIZES:
        cfg = TrainConfig(family=fam, horizon=32, objective=a.objective, n=a.n, epochs=a.epochs,
                          minibatches=a.minibatches, iterations=a.iterations)
        mdp, pi0 = cfg.build()
        SV = mdp.num_contexts * mdp.vocab_size
        seed = [0]

        def one_run():
            seed[0] += 1
            return run_seed(cfg, seed[0])

        med, best = _median_min(one_run, a.repeats)
        moved = envs.perturb(pi0, kl=0.01, seed=1)
        ev, _ = _median_min(lambda: _exact_eval(mdp, pi0, moved), max(a.repeats, 5))
        U = cfg.updates
        sampled = a.iterations * a.n * cfg.horizon
        rows.append((label, mdp.num_contexts, mdp.vocab_size, SV, U, med, best, U / med, sampled / med,
                     a.epochs * sampled / med, U * ev / med, ev))
    print("| MDP | S | V | S*V | updates | run s (min) | updates/s | sampled tok/s | trained tok/s | exact share "
          "| exact eval ms |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for (label, S, V, SV, U, med, best, ups, stps, ttps, share, ev) in rows:
        print(f"| {label} | {S} | {V} | {SV} | {U} | {med:.3f} ({best:.3f}) | {ups:.0f} | {stps:.3g} | {ttps:.3g} "
              f"| {share:.0%} | {ev * 1e3:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
