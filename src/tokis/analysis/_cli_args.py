"""Options and conversions shared by the ``tokis`` subcommands (argparse only: importing this is cheap).

A subcommand module outside :mod:`tokis.analysis._cli` registers itself with
``add_parser(subparsers)`` (building its options from the groups here) and runs with
``run(args) -> int``; it imports its computation inside ``run`` so ``tokis --help`` and a bad
option answer without importing numpy, numba or pandas.
"""

from __future__ import annotations

import argparse
import sys
import time

from ._progress import default_mode
from ._names import FAMILIES, REWARDS, ROUNDINGS

__all__ = ["UsageError", "Parser", "add_family", "add_behavior", "add_run", "add_output", "add_scheduler", "family", "behavior",
           "int_list", "store", "run_kwargs", "validate_run", "say", "report_counts"]


class UsageError(Exception):
    """A bad option (reported on one line, exit status 2)."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``tokis: error: ...`` (exit status 2)."""

    def error(self, message):  # noqa: D401 - argparse hook
        raise UsageError(message)


def add_family(p, default_family: str, default_reward: str = "last", *, vocab: int = 8, threshold: int = 2):
    """The MDP family options, with a command's own defaults of family, reward, vocabulary and threshold."""
    g = p.add_argument_group("MDP family")
    g.add_argument("--family", default=default_family, metavar="NAME",
                   help=f"context automaton: {', '.join(FAMILIES)} (default {default_family})")
    g.add_argument("--vocab", type=int, default=vocab, metavar="V", help=f"vocabulary size (default {vocab})")
    g.add_argument("--order", type=int, default=1, metavar="K", help="n-gram order, ngram only (default 1)")
    g.add_argument("--eos", type=int, default=None, metavar="TOKEN", help="end-of-sequence token (default none)")
    g.add_argument("--reward", default=default_reward, metavar="KIND",
                   help=f"reward: {', '.join(REWARDS)} (default {default_reward}; last: 1 when the last token is "
                        "--reward-token; random: a Uniform[0,1] terminal reward per context; frequency: step reward "
                        "1/T per --reward-token emitted)")
    g.add_argument("--reward-token", type=int, default=0, metavar="TOKEN",
                   help="token of the count/parity/last reward (default 0)")
    g.add_argument("--threshold", type=int, default=threshold, metavar="M",
                   help=f"threshold of the count reward (default {threshold})")
    g.add_argument("--pattern", default="0,1", metavar="TOKENS", help="pattern of the pattern reward (default 0,1)")
    g.add_argument("--noise", default="none", metavar="KIND",
                   help="terminal reward observation noise: none or bernoulli (default none)")
    g.add_argument("--mdp-seed", type=int, default=0, metavar="S",
                   help="seed of the random reward, the target policy and the perturbation direction (default 0)")
    g.add_argument("--scale", type=float, default=1.0, metavar="SD",
                   help="std of the target policy's Gaussian logits (default 1)")


def add_behavior(p, default: str):
    g = p.add_argument_group("behaviour model (how mu differs from pi)", f"default: {default}")
    g.add_argument("--kl", type=float, default=None, help="perturb to a per-context KL(pi||mu)")
    g.add_argument("--chi2", type=float, default=None, help="perturb to a per-context chi2(pi||mu)")
    g.add_argument("--temperature", type=float, default=None, metavar="TAU", help="sampling temperature")
    g.add_argument("--top-k", type=int, default=None, metavar="K", help="top-k truncation")
    g.add_argument("--top-p", type=float, default=None, metavar="P", help="nucleus (top-p) truncation")
    g.add_argument("--round", default=None, metavar="DTYPE",
                   help=f"round the logits: {', '.join(ROUNDINGS)}")


def add_run(p, *, estimators: str | None, n: int = 256, replications: int = 100):
    g = p.add_argument_group("Monte Carlo")
    if estimators is not None:
        g.add_argument("--estimators", default=estimators, metavar="LIST",
                       help="comma-separated estimators with optional parameters, e.g. "
                            f"'seq,tok,clip_tok:c=2,mask_tok:lo=0.5,hi=2' (default {estimators})")
    g.add_argument("--n", type=int, default=n, help=f"sequences per replication (default {n})")
    g.add_argument("--replications", "-R", type=int, default=replications,
                   help=f"Monte Carlo replications (default {replications})")
    g.add_argument("--seed", type=int, default=0, help="master seed of the replications (default 0)")
    g.add_argument("--backend", default="auto", help="sampling/estimator backend: auto, numpy, numba, cupy")
    g.add_argument("--workers", type=int, default=1, metavar="N", help="local processes (default 1)")
    add_scheduler(g)
    add_output(p)


def add_output(p, *, out: str = "write CSV, LaTeX and PNG plots to DIR", out_default=None, unit: str = "cell"):
    """The output and results-store options (``--out``, ``--store``, ``--no-store``, ``--progress``, ``--digits``)."""
    o = p.add_argument_group("output and results store")
    o.add_argument("--out", default=out_default, metavar="DIR", help=out)
    o.add_argument("--store", default=None, metavar="PATH",
                   help="SQLite results store (default $TOKIS_STORE or ~/.cache/tokis/results.sqlite)")
    o.add_argument("--no-store", action="store_true", help="do not read or write the results store")
    o.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help=f"show a progress bar over {unit}s (default: a bar when stderr is a terminal, else a line per "
                        "finished point)")
    o.add_argument("--no-progress", dest="progress", action="store_false", help="no progress output")
    o.add_argument("--digits", type=int, default=4, help="significant digits in the printed tables (default 4)")


def add_scheduler(g):
    """The ``--scheduler`` option (Dask distributed) of every sweep command, in group ``g``."""
    g.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="compute on Dask distributed: 'local' (a LocalCluster, one process per core, or --workers N) "
                        "or tcp://host:port of a running `dask scheduler` with `dask worker`s; the client keeps the "
                        "store. Needs pip install -e '.[dask]' (default: no Dask, --workers local processes)")


def family(a):
    from ._config import Family

    return Family(name=a.family, vocab=a.vocab, order=a.order, eos=a.eos, reward=a.reward, token=a.reward_token,
                  threshold=a.threshold, pattern=tuple(int(x) for x in int_list(a.pattern, "pattern")),
                  noise=a.noise, seed=a.mdp_seed, scale=a.scale)


def int_list(text: str, name: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{name} must be comma-separated integers, got {text!r}") from None


def behavior(a, default):
    from ._config import Behavior

    opts = dict(kl=a.kl, chi2=a.chi2, temperature=a.temperature, top_k=a.top_k, top_p=a.top_p, round=a.round)
    given = {k: v for k, v in opts.items() if v is not None}
    if not given:
        return default
    return Behavior(**given, seed=a.mdp_seed)


def store(a):
    if a.no_store:
        return None
    if a.store is not None:
        return a.store
    return True


def run_kwargs(a) -> dict:
    progress = default_mode(a.progress)
    return dict(n=a.n, replications=a.replications, seed=a.seed, backend=a.backend, workers=a.workers,
                store=store(a), progress=progress, scheduler=a.scheduler)


def validate_run(a):
    """Check the Monte Carlo and output options a subcommand has (those it lacks are skipped)."""
    for name in ("n", "workers"):
        if getattr(a, name, None) is not None and getattr(a, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(a, name)}")
    if getattr(a, "replications", None) is not None and a.replications < 2:
        raise ValueError(f"--replications must be >= 2, got {a.replications}")
    if getattr(a, "digits", None) is not None and a.digits < 1:
        raise ValueError(f"--digits must be >= 1, got {a.digits}")
    if getattr(a, "backend", None) is not None and a.backend not in ("auto", "numpy", "numba", "cupy"):
        raise ValueError(f"unknown backend {a.backend!r}; choose from auto, numpy, numba, cupy")
    if getattr(a, "scheduler", None) is not None:
        from ._dask import check_scheduler  # the address's form only: dask is imported when a cell runs

        check_scheduler(a.scheduler, getattr(a, "workers", 1))


def say(text: str = ""):
    sys.stdout.write(text + "\n")


def report_counts(table, t0):
    at = table.attrs
    sys.stderr.write(f"tokis: {at.get('total', len(table))} cells ({at.get('cached', 0)} from the store, "
                     f"{at.get('computed', 0)} computed) in {time.perf_counter() - t0:.1f} s\n")


