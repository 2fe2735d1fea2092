"""``tokis train``: which objective trains best, on an exact MDP, with the true J after every update.

A plug-in of :mod:`tokis.analysis._cli` (``add_parser`` / ``run``); the computation is
:mod:`tokis.analysis._train`, imported inside :func:`run` so ``tokis --help`` stays cheap.
"""

from __future__ import annotations

import sys
import time

from ._progress import default_mode
from . import _cli_args as A

__all__ = ["add_parser", "run"]

_SAMPLERS = ("both", "pi_old", "mismatch")


def add_parser(subparsers):
    p = subparsers.add_parser(
        "train", help="train with each objective on an exact MDP: exact J after every update",
        description="Policy optimisation as an LLM-RL loop does it, on a token MDP whose optimum J* is known: each "
                    "iteration samples n sequences from the sampler (pi_old, or pi_old through a behaviour model: "
                    "engine mismatch), then takes E epochs x M minibatches of optimizer steps on the logits with "
                    "each objective's sampled gradient. After every update: the exact J(pi_theta), per-token "
                    "KL(pi_old||pi_theta), the clip fraction and the cosine of the step to grad J. Several seeds "
                    "per configuration; a summary per objective (final J/J*, updates to reach 90 % of "
                    "J* - J(pi_0), largest drop of J, clip fraction) and learning-curve plots.")
    A.add_family(p, "ngram", "count", vocab=16, threshold=6)
    A.add_behavior(p, "--round bf16 (the mismatched sampler, run next to mu = pi_old; see --samplers)")
    g = p.add_argument_group("training")
    g.add_argument("--objectives", default="seq,tok,ppo_clip,cispo,gspo", metavar="LIST",
                   help="comma-separated objectives with optional parameters and settings, e.g. "
                        "'tok,ppo_clip:eps_high=0.28,cispo:advantage=critic,tok:correction=tis,c=2' (default "
                        "seq,tok,ppo_clip,cispo,gspo)")
    g.add_argument("--samplers", default="both", metavar="WHICH",
                   help="both: mu = pi_old and the behaviour model above; pi_old: only mu = pi_old; mismatch: only "
                        "the behaviour model (default both)")
    g.add_argument("--horizon", type=int, default=32, metavar="T", help="horizon T (default 32)")
    g.add_argument("--n", type=int, default=64, help="sequences sampled per iteration (default 64)")
    g.add_argument("--epochs", type=int, default=4, metavar="E", help="passes over each batch (default 4)")
    g.add_argument("--minibatches", type=int, default=4, metavar="M",
                   help="minibatches per epoch, one update each (default 4)")
    g.add_argument("--iterations", type=int, default=20, metavar="K", help="batches sampled (default 20)")
    g.add_argument("--optimizer", default="adam", metavar="NAME", help="adam or sgd (default adam)")
    g.add_argument("--lr", type=float, default=0.05, help="learning rate (default 0.05)")
    g.add_argument("--time-dependent", action="store_true",
                   help="train time-dependent logits (T, S, V) instead of stationary (S, V)")
    g.add_argument("--seeds", type=int, default=8, metavar="S", help="independent runs per configuration (default 8)")
    g.add_argument("--seed", type=int, default=0, help="master seed of the runs (default 0)")
    g.add_argument("--workers", type=int, default=1, metavar="N", help="local processes, one run each (default 1)")
    A.add_scheduler(g)
    A.add_output(p, out="write CSV (every update of every run, the learning curves, the summary), LaTeX and PNG "
                        "plots (J against updates and sampled tokens; KL, clip fraction, cosine) to DIR", unit="run")
    return p


def run(a) -> int:
    from pathlib import Path

    from ._config import Behavior
    from ._output import to_markdown, write_tables
    from ._train import display_summary, learning_curves, summarize, train

    if a.samplers not in _SAMPLERS:
        raise ValueError(f"--samplers must be one of {', '.join(_SAMPLERS)}, got {a.samplers!r}")
    if a.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {a.seeds}")
    fam = A.family(a)
    mismatch = A.behavior(a, Behavior(round="bf16"))
    samplers = {"both": [Behavior(), mismatch], "pi_old": [Behavior()], "mismatch": [mismatch]}[a.samplers]
    progress = default_mode(a.progress)
    t0 = time.perf_counter()
    table = train(fam, samplers, objectives=a.objectives, horizon=a.horizon, n=a.n, epochs=a.epochs,
                  minibatches=a.minibatches, iterations=a.iterations, optimizer=a.optimizer, lr=a.lr,
                  time_dependent=a.time_dependent, seeds=a.seeds, seed=a.seed, workers=a.workers,
                  scheduler=a.scheduler, store=A.store(a), progress=progress)
    at = table.attrs
    sys.stderr.write(f"tokis: {at['total']} runs ({at['cached']} from the store, {at['computed']} computed) in "
                     f"{time.perf_counter() - t0:.1f} s\n")
    summary = summarize(table)
    shown = display_summary(summary)
    J_star, J0 = float(table["J_star"].iloc[0]), float(table["J0"].iloc[0])
    shape = "(T, S, V)" if a.time_dependent else "(S, V)"
    A.say(f"## training on {fam.label}, T={a.horizon}: J* = {J_star:.4g}, J(pi_0) = {J0:.4g} "
          f"(J(pi_0)/J* = {J0 / J_star:.3g})\n")
    per_batch = a.epochs * a.minibatches
    A.say(f"n={a.n} sequences per batch, E={a.epochs} epochs x M={a.minibatches} minibatches = {per_batch} updates "
          f"per batch, {a.iterations} batches ({a.iterations * per_batch} updates), {a.optimizer} lr={a.lr:g} on "
          f"{shape} logits, {a.seeds} seeds (master seed {a.seed})\n")
    A.say(to_markdown(shown, digits=a.digits))
    if a.out:
        from ._train_plots import plot_train, plot_train_diagnostics

        curves = learning_curves(table)
        written = write_tables({"train_summary": (summary, shown), "train_curves": curves}, a.out, digits=a.digits)
        table.to_csv(Path(a.out) / "train.csv", index=False)
        title = "Which objective trains best: exact J during training"
        plot_train(table, a.out, prefix="train", title=title)
        plot_train_diagnostics(table, a.out, prefix="train", title="Per-batch diagnostics")
        sys.stderr.write(f"tokis: wrote {Path(a.out) / 'train.csv'}, {', '.join(str(w) for w in written)} and PNG "
                         "plots\n")
    return 0
