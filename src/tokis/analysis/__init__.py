"""Analysis: the Monte Carlo harness, sweeps, tables, plots, results store and ``tokis`` commands.

Python API:

* :func:`monte_carlo` -- R replications of n samples, every estimator next to its exact moments;
* :class:`Family`, :class:`Behavior`, :func:`parse_estimators` -- configurations;
* :class:`ResultStore` -- the SQLite store of finished cells; :func:`to_markdown`,
  :func:`to_latex` -- table writers;
* one public module per command of the ``tokis`` console script, each with a function of the
  same name returning a pandas DataFrame (and runnable as ``python -m tokis.analysis.<name>``):
  :func:`tokis.analysis.horizon.horizon` (with :func:`~tokis.analysis.horizon.overtakes`),
  :func:`tokis.analysis.divergence.divergence`, :func:`tokis.analysis.mismatch.mismatch`
  (with :func:`~tokis.analysis.mismatch.calibrate`), :func:`tokis.analysis.growth.growth`
  (with :func:`~tokis.analysis.growth.fit_growth`) and
  :func:`tokis.analysis.gradient.gradient_sweep` (exact policy gradients of the objectives, with
  :func:`~tokis.analysis.gradient.turning_points`, :func:`~tokis.analysis.gradient.landscape` and
  :func:`~tokis.analysis.gradient.parse_objectives`);
  :func:`tokis.analysis.train.train` (policy optimisation with every objective on an exact MDP, the
  true J after every update; with :func:`~tokis.analysis.train.summarize`,
  :func:`~tokis.analysis.train.learning_curves` and the optimizers ``adam``/``sgd``);
  :func:`tokis.analysis.coverage.coverage` (real coverage of confidence intervals);
  :func:`tokis.analysis.sweep.run_grid` (a TOML grid of configurations, ``tokis sweep``) and
  :func:`tokis.analysis.diagnose.diagnose_log` / :func:`~tokis.analysis.diagnose.diagnose_file`
  (how off-policy a real training run's log-probs are, ``tokis diagnose``). Every sweep takes
  ``scheduler="local"`` or ``"tcp://host:port"`` to run on Dask distributed.

The command modules are not imported here, so ``tokis.analysis.horizon`` is always the module
(``from tokis.analysis.horizon import horizon`` for the function) and ``python -m`` runs them
cleanly.
"""

import importlib

_EXPORTS = {
    "monte_carlo": "_harness",
    "replication_seeds": "_harness",
    "Family": "_config",
    "Behavior": "_config",
    "EstimatorConfig": "_config",
    "parse_estimator": "_config",
    "parse_estimators": "_config",
    "config_key": "_config",
    "ResultStore": "_store",
    "default_store_path": "_store",
    "to_markdown": "_output",
    "to_latex": "_output",
}

__all__ = [
    "monte_carlo",
    "replication_seeds",
    "Family",
    "Behavior",
    "EstimatorConfig",
    "parse_estimator",
    "parse_estimators",
    "config_key",
    "ResultStore",
    "default_store_path",
    "to_markdown",
    "to_latex",
]


def __getattr__(name):
    # lazy re-exports: the ``tokis`` command imports this package, and its start-up stays cheap
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"tokis.analysis.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tokis.analysis' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
