"""``tokis train`` as a module: ``python -m tokis.analysis.train`` and its Python functions.

The computation lives in :mod:`._train` (the runs, the store, the summary), :mod:`._train_loop`
(one run), :mod:`._optim` (the optimizers) and :mod:`._train_plots`; this module re-exports them
and runs the command.
"""

from __future__ import annotations

import sys

from ._cli import main as _cli_main
from ._optim import OPTIMIZERS, AdamState, Optimizer, SGDState, adam, make_optimizer, sgd
from ._train import (
    DEFAULT_EPOCHS,
    DEFAULT_FAMILY,
    DEFAULT_HORIZON,
    DEFAULT_ITERATIONS,
    DEFAULT_LR,
    DEFAULT_MINIBATCHES,
    DEFAULT_N,
    DEFAULT_OBJECTIVES,
    DEFAULT_OPTIMIZER,
    DEFAULT_SAMPLERS,
    DEFAULT_SEEDS,
    configurations,
    display_summary,
    learning_curves,
    summarize,
    train,
)
from ._train_loop import TrainConfig, clip_fraction, iteration_seed, run_seed
from ._train_plots import plot_train, plot_train_diagnostics

__all__ = ["train", "summarize", "learning_curves", "display_summary", "configurations", "TrainConfig", "run_seed",
           "clip_fraction", "iteration_seed", "Optimizer", "SGDState", "AdamState", "sgd", "adam", "make_optimizer",
           "OPTIMIZERS", "plot_train", "plot_train_diagnostics", "DEFAULT_OBJECTIVES", "DEFAULT_SAMPLERS",
           "DEFAULT_FAMILY", "DEFAULT_HORIZON", "DEFAULT_N", "DEFAULT_EPOCHS", "DEFAULT_MINIBATCHES",
           "DEFAULT_ITERATIONS", "DEFAULT_OPTIMIZER", "DEFAULT_LR", "DEFAULT_SEEDS", "main"]


def main(argv=None) -> int:
    """``python -m tokis.analysis.train``: same as ``tokis train``."""
    return _cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
