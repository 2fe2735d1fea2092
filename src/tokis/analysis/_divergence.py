r"""Divergence sweep: every estimator against exact truth as the per-token divergence grows, at fixed T.

The behaviour policy is the target perturbed to a per-context KL(π‖μ) (``kind="kl"``) or
χ²(π‖μ) (``kind="chi2"``) equal to each swept value; the other options of the behaviour model
(temperature, truncation, rounding) apply on top. At fixed horizon the sequence weight's second
moment grows like :math:`(1+\chi^2)^T`, so this sweep shows the same trade-off as the horizon
sweep along the other axis.

Command line: ``tokis divergence`` or ``python -m tokis.analysis.divergence``.
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from ._common import as_behavior, as_family, parse_floats
from ._config import Behavior, _choice, _int
from ._sweep import Point, run_sweep

__all__ = ["divergence", "DEFAULT_VALUES", "DEFAULT_ESTIMATORS"]

#: Per-token divergences of the default sweep.
DEFAULT_VALUES = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
#: Estimators of the default sweep.
DEFAULT_ESTIMATORS = ("seq", "tok", "snis", "clip_tok", "geo", "clip_prod")


def divergence(family=None, behavior=None, *, kind="kl", values=DEFAULT_VALUES, horizon=16,
               estimators=DEFAULT_ESTIMATORS, n=1024, replications=500, seed=0, backend="auto", workers=1, store=None,
               progress=False, scheduler=None) -> pd.DataFrame:
    r"""Sweep the per-token divergence at a fixed horizon.

    Parameters
    ----------
    family : Family, str or dict, optional
        MDP family (default ``Family()``).
    behavior : Behavior or dict, optional
        Base behaviour model; its ``kl``/``chi2`` is replaced by each swept value (default: no
        other option).
    kind : {"kl", "chi2"}
        Which per-context divergence is swept.
    values : iterable of float or str
        The divergences (``>= 0``; comma-separated text allowed).
    horizon : int
        ``T >= 1``.
    estimators, n, replications, seed, backend, workers, store, progress, scheduler
        As in :func:`~tokis.analysis.horizon.horizon`.

    Returns
    -------
    pandas.DataFrame
        One row per (value, estimator); the first column is named ``kind`` (``kl`` or ``chi2``),
        then the columns of the horizon table. ``attrs`` as there.

    Raises
    ------
    ValueError, TypeError
        Unknown ``kind``, negative divergence, ``horizon < 1``, ...
    """
    family = as_family(family)
    base = as_behavior(behavior, Behavior())
    kind = _choice(kind, "kind", ("kl", "chi2"))
    vals = parse_floats(values, "values")
    T = _int(horizon, "horizon")
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    mdp, target = family.build(T)
    points = []
    for v in vals:
        b = dataclasses.replace(base, **{"kl": None, "chi2": None, kind: v})
        points.append(Point(((kind, v),), mdp, target, b.apply(target)))
    table = run_sweep(points, estimators, n=n, replications=replications, seed=seed, backend=backend, store=store,
                      workers=workers, progress=progress, desc="divergence", scheduler=scheduler)
    table.attrs.update(family=family.label, behavior=base.label, kind=kind, horizon=T)
    return table
