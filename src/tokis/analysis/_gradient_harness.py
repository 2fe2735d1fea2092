r"""Monte Carlo check of sampled policy gradients against the exact expected gradient.

:func:`monte_carlo_gradient` draws ``R`` batches of ``n`` sequences from the sampler, computes the
batch gradient of an objective (:func:`tokis.objectives.gradient`, with the exact baseline
``J(mu)`` so that its expectation is the exact ``g_bar``), and compares the mean over batches with
``tokis.exact.objective_gradient`` along ``u = grad J / ||grad J||``: the z-score uses the exact
per-sample variance ``Var(<g_hat, u>)``, so ``|z| > 4`` is a real disagreement, not noise.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import envs, exact, objectives
from .._core._rng import check_seed
from .._core._validate import check_positive_int
from ._harness import replication_seeds

__all__ = ["monte_carlo_gradient"]


def monte_carlo_gradient(mdp, policy, behavior, objectives_=("seq", "tok", "ppo_clip", "cispo"), *, anchor=None,
                         n: int = 256, replications: int = 100, seed: int = 0, backend: str = "auto",
                         **params) -> pd.DataFrame:
    """One row per objective: exact and Monte Carlo component of the expected gradient along grad J.

    Parameters
    ----------
    mdp, policy, behavior : TokenMDP, Policy, Policy
        The MDP, the current policy pi_theta and the sampler mu.
    objectives_ : iterable of str or ObjectiveSpec
    anchor : Policy, optional
        pi_old (default mu).
    n, replications, seed : int
        Batch size, number of batches, master seed (batch seeds from ``replication_seeds``).
    backend : str
        Sampling backend.
    **params
        Objective settings, passed to both sides (``baseline`` is fixed to the exact ``J(mu)``).

    Returns
    -------
    pandas.DataFrame
        ``objective, method, exact_along, mc_along, mc_se, z, exact_sd_along, mc_sd_along`` where
        ``*_along`` is the component along ``u`` and ``*_sd_along`` the per-batch standard deviation.
    """
    n = check_positive_int(n, "n")
    replications = check_positive_int(replications, "replications", minimum=2)
    seed = check_seed(seed)
    seeds = replication_seeds(seed, replications)
    batches = envs.sample(mdp, behavior, n, seed=list(seeds), backend=backend)  # (R, n, T): one call
    rows = []
    for obj in objectives_:
        ex = exact.objective_gradient(mdp, policy, behavior, obj, anchor=anchor, n=n, **params)
        norm = float(np.linalg.norm(ex.true))
        u = ex.true / norm if norm > 0 else np.zeros_like(ex.true)
        kw = {**params, "baseline": ex.baseline}
        grads = objectives.gradient(obj, batches, policy, anchor=anchor, **kw)  # (R, *logits.shape)
        along = (grads * u).reshape(replications, -1).sum(axis=1)
        se = math.sqrt(ex.variance_along / (n * replications))
        exact_along = float((ex.mean * u).sum())
        rows.append(dict(objective=ex.objective, method=ex.method, exact_along=exact_along,
                         mc_along=float(along.mean()), mc_se=se,
                         z=(float(along.mean()) - exact_along) / se if se > 0 else math.nan,
                         exact_sd_along=math.sqrt(ex.variance_along / n), mc_sd_along=float(along.std(ddof=1))))
    return pd.DataFrame(rows)
