"""Analysis: the Monte Carlo harness, sweeps, tables, plots, results store and ``tokis`` commands.

Python API (each command of the ``tokis`` console script wraps one function returning a
pandas DataFrame):

* :func:`monte_carlo` -- R replications of n samples, every estimator next to its exact moments;
* :func:`horizon` (with :func:`overtakes`), :func:`divergence`, :func:`mismatch`,
  :func:`growth` (with :func:`fit_growth`) -- the sweeps;
* :class:`Family`, :class:`Behavior`, :func:`parse_estimators` -- configurations;
* :class:`ResultStore` -- the SQLite store of finished cells; :func:`to_markdown`,
  :func:`to_latex` -- table writers.
"""

from ._config import Behavior, EstimatorSpec, Family, config_key, parse_estimator, parse_estimators
from ._harness import monte_carlo, replication_seeds
from ._output import to_latex, to_markdown
from ._store import ResultStore, default_store_path
from .divergence import divergence
from .growth import fit_growth, growth
from .horizon import horizon, overtakes
from .mismatch import calibrate, mismatch

__all__ = [
    "monte_carlo",
    "replication_seeds",
    "horizon",
    "overtakes",
    "divergence",
    "mismatch",
    "calibrate",
    "growth",
    "fit_growth",
    "Family",
    "Behavior",
    "EstimatorSpec",
    "parse_estimator",
    "parse_estimators",
    "config_key",
    "ResultStore",
    "default_store_path",
    "to_markdown",
    "to_latex",
]
