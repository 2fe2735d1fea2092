r"""Behaviour-model comparison: how estimators fare under different kinds of mismatch at matched KL.

The sampler's policy :math:`\mu` differs from the trainer's :math:`\pi` in different ways in
practice: a random perturbation, a sampling temperature, nucleus (top-p) or top-k truncation,
or logits rounded to bf16/fp16. To compare them fairly, each model with a knob is calibrated
(bisection) so that the per-token KL the sampler would log,

.. math:: \overline{KL}(\mu\|\pi) = \frac{\sum_t\sum_c d^\mu_t(c)\,KL(\mu_t(\cdot|c)\,\|\,\pi_t(\cdot|c))}
                                       {\sum_t\sum_c d^\mu_t(c)},

equals the requested ``kl`` (this direction stays finite under truncation, where
:math:`KL(\pi\|\mu) = \infty`). Rounding has no knob: it is reported at its natural KL.
Truncation's KL moves in jumps (one token more or less), so top-p and top-k hit it only
approximately; the achieved value is in the table (``token_kl_mu``).

Command line: ``tokis mismatch`` or ``python -m tokis.analysis.mismatch``.
"""

from __future__ import annotations

import math

import pandas as pd

from ._common import as_family
from ._config import Behavior, _choice, _float, _int
from ._sweep import Point, run_sweep

__all__ = ["mismatch", "calibrate", "MODELS", "DEFAULT_MODELS", "DEFAULT_ESTIMATORS"]

#: Behaviour models: name -> (Behavior field of the knob or None, knob range).
MODELS = {
    "perturb": ("kl", (0.0, math.inf)),
    "temperature": ("temperature", (1.0, math.inf)),
    "top_p": ("top_p", (0.0, 1.0)),
    "top_k": ("top_k", (1, None)),
    "bf16": (None, None),
    "fp16": (None, None),
}
#: Models compared by default.
DEFAULT_MODELS = ("perturb", "temperature", "top_p", "bf16")
#: Estimators of the default comparison.
DEFAULT_ESTIMATORS = ("seq", "tok", "snis", "clip_tok", "geo", "mask_tok")


def _sampler_kl(mdp, target, behavior) -> float:
    from .. import exact

    return float(exact.token_divergence(mdp, behavior, target, kind="kl", under="target"))


def _behavior(model: str, knob, seed: int) -> Behavior:
    field = MODELS[model][0]
    if field is None:
        return Behavior(round=model, seed=seed)
    return Behavior(**{field: knob}, seed=seed)


def calibrate(mdp, target, model: str, kl: float, *, seed: int = 0, iterations: int = 60):
    r"""Find the knob of a behaviour model whose sampler KL :math:`\overline{KL}(\mu\|\pi)` equals ``kl``.

    Parameters
    ----------
    mdp : TokenMDP
    target : Policy
    model : {"perturb", "temperature", "top_p", "top_k", "bf16", "fp16"}
        ``perturb`` searches its per-context KL(π‖μ), ``temperature`` a ``tau >= 1``, ``top_p``
        a ``p`` in (0, 1], ``top_k`` an integer ``k``; ``bf16``/``fp16`` have no knob.
    kl : float
        Target sampler KL, ``>= 0``.
    seed : int
        Perturbation direction.
    iterations : int
        Bisection steps.

    Returns
    -------
    (knob, Behavior, achieved) : tuple
        The knob (None for rounding), the calibrated behaviour model and the achieved
        :math:`\overline{KL}(\mu\|\pi)`.

    Raises
    ------
    ValueError
        Unknown model, negative ``kl``, or a ``kl`` the model cannot reach (the message gives
        the largest reachable value).
    """
    model = _choice(model, "model", tuple(MODELS))
    kl = _float(kl, "kl")
    if kl < 0:
        raise ValueError(f"kl must be >= 0, got {kl}")
    field = MODELS[model][0]

    def f(knob):
        b = _behavior(model, knob, seed)
        return _sampler_kl(mdp, target, b.apply(target)), b

    if field is None:
        achieved, b = f(None)
        return None, b, achieved
    if model == "top_k":  # KL grows as k shrinks: scan k = V, V-1, ... until it reaches kl
        cands = []
        for k in range(target.vocab_size, 0, -1):
            achieved, b = f(k)
            cands.append((k, b, achieved))
            if achieved >= kl:
                break

        def gap(a):
            return abs(math.log(max(a, 1e-300) / kl)) if kl > 0 else a

        return min(cands, key=lambda c: gap(c[2]))
    if kl == 0:
        knob = {"kl": 0.0, "temperature": 1.0, "top_p": 1.0}[field]
        achieved, b = f(knob)
        return knob, b, achieved
    if model == "top_p":
        lo, hi = 1e-9, 1.0  # f decreasing in p: f(lo) = largest, f(hi) = 0
        flo, _ = f(lo)
        if flo < kl:
            raise ValueError(f"top_p cannot reach a sampler KL of {kl:g} (at most {flo:.4g})")
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            if f(mid)[0] >= kl:
                lo = mid
            else:
                hi = mid
        (a_lo, b_lo), (a_hi, b_hi) = f(lo), f(hi)
        if a_hi > 0 and abs(math.log(a_hi / kl)) < abs(math.log(a_lo / kl)):
            return hi, b_hi, a_hi
        return lo, b_lo, a_lo
    # increasing knobs: perturb's KL and temperature
    lo = 0.0 if model == "perturb" else 1.0
    hi = max(2 * kl, 1e-6) if model == "perturb" else 2.0
    for _ in range(200):
        if f(hi)[0] >= kl:
            break
        lo, hi = hi, 2 * hi
        if model == "temperature" and hi > 1e6:
            raise ValueError(f"temperature cannot reach a sampler KL of {kl:g} (at most {f(hi)[0]:.4g})")
    else:  # pragma: no cover - guarded by the doubling above
        raise ValueError(f"{model} cannot reach a sampler KL of {kl:g}")
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if f(mid)[0] >= kl:
            hi = mid
        else:
            lo = mid
        if hi - lo <= 1e-12 * hi:
            break
    achieved, b = f(hi)
    return hi, b, achieved


def mismatch(family=None, *, models=DEFAULT_MODELS, kl=0.01, horizon=16, estimators=DEFAULT_ESTIMATORS, n=1024,
             replications=500, seed=0, backend="auto", workers=1, store=None, progress=False,
             scheduler=None) -> pd.DataFrame:
    r"""Compare behaviour models at a matched per-token sampler KL.

    Parameters
    ----------
    family : Family, str or dict, optional
        MDP family (default ``Family()``); its ``seed`` also seeds the perturbation direction.
    models : iterable of str
        Names from :data:`MODELS` (comma-separated text allowed).
    kl : float
        Per-token :math:`\overline{KL}(\mu\|\pi)` every model with a knob is calibrated to.
    horizon : int
        ``T >= 1``.
    estimators, n, replications, seed, backend, workers, store, progress, scheduler
        As in :func:`~tokis.analysis.horizon.horizon`.

    Returns
    -------
    pandas.DataFrame
        One row per (model, estimator): ``model``, ``knob`` (calibrated value; NaN for
        rounding), the exact point columns (``token_kl_mu`` is the achieved sampler KL,
        ``token_kl`` the KL(π‖μ), infinite under truncation, ``missing_mass``,
        ``ess_fraction``, ...) and the harness columns.
    """
    family = as_family(family)
    if isinstance(models, str):
        models = [m.strip() for m in models.split(",") if m.strip()]
    models = [_choice(m, "model", tuple(MODELS)) for m in models]
    if not models:
        raise ValueError("no behaviour model given")
    T = _int(horizon, "horizon")
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    kl = _float(kl, "kl")
    if kl < 0:
        raise ValueError(f"kl must be >= 0, got {kl}")
    mdp, target = family.build(T)
    points = []
    for m in dict.fromkeys(models):
        knob, b, _ = calibrate(mdp, target, m, kl, seed=family.seed)
        points.append(Point((("model", m), ("knob", float("nan") if knob is None else float(knob))), mdp, target,
                            b.apply(target)))
    table = run_sweep(points, estimators, n=n, replications=replications, seed=seed, backend=backend, store=store,
                      workers=workers, progress=progress, desc="mismatch", scheduler=scheduler)
    table.attrs.update(family=family.label, kl=kl, horizon=T)
    return table
