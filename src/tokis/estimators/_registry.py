"""The registry: every estimator with its metadata, so tests and analysis loop over one list."""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import _estimators as E

__all__ = ["EstimatorSpec", "REGISTRY", "list_estimators", "get_estimator"]


@dataclass(frozen=True)
class EstimatorSpec:
    """Metadata of one estimator.

    Attributes
    ----------
    name : str
        Public name (``tokis.estimators.<name>``).
    func : callable
        ``func(log_ratio, rewards, *, mask=None, backend="auto", **params) -> Estimate``.
    unbiased : bool
        Unbiased for ``J(pi)`` at every n (given support): only ``seq`` and ``pdis``.
    self_normalized : bool
        A ratio estimator (``snis``, ``wpdis``, ``psis`` with its default
        ``self_normalized=True``): ``Estimate.numerator``/``denominator`` instead of ``samples``.
    params : Mapping[str, Any]
        Parameter names and their defaults.
    exact_moments : str
        How ``tokis.exact.moments`` gets the mean and variance: ``"exact"`` (a finite
        forward recursion), ``"asymptotic"`` (delta method, exact numbers for the leading
        order) or ``"enumeration"`` (no recursion; only by enumerating sequences).
    level : str
        ``"sequence"`` or ``"token"``: where the weights act.
    description : str
        One line.
    reference : str
        Citation.
    """

    name: str
    func: Callable
    unbiased: bool
    self_normalized: bool
    params: Mapping[str, Any]
    exact_moments: str
    level: str
    description: str
    reference: str

    def __post_init__(self):
        object.__setattr__(self, "params", types.MappingProxyType(dict(self.params)))


_SPECS = [
    EstimatorSpec("seq", E.seq, True, False, {}, "exact", "sequence",
                  "sequence-level IS: W G", "Precup, Sutton, Singh (2000), ICML"),
    EstimatorSpec("tok", E.tok, False, False, {}, "exact", "token",
                  "first-order token IS: (1 + sum_t (r_t - 1)) G (CPI surrogate)",
                  "Kakade & Langford (2002); Schulman et al. (2015), TRPO"),
    EstimatorSpec("tok_sum", E.tok_sum, False, False, {}, "exact", "token",
                  "token-sum IS: (sum_t r_t) G", "Schulman et al. (2017), PPO"),
    EstimatorSpec("tok_mean", E.tok_mean, False, False, {}, "exact", "token",
                  "token-mean IS: (sum_t r_t / L) G", "Shao et al. (2024), DeepSeekMath (GRPO)"),
    EstimatorSpec("pdis", E.pdis, True, False, {}, "exact", "sequence",
                  "per-decision IS: sum_t W_{<=t} rew_t", "Precup, Sutton, Singh (2000), ICML"),
    EstimatorSpec("wpdis", E.wpdis, False, True, {}, "asymptotic", "sequence",
                  "weighted per-decision IS: sum_t sum_i W_{i,<=t} rew_{i,t} / sum_i W_{i,<=t}",
                  "Precup, Sutton, Singh (2000); Thomas (2015), PhD thesis"),
    EstimatorSpec("snis", E.snis, False, True, {}, "asymptotic", "sequence",
                  "self-normalised IS: sum_i W_i G_i / sum_i W_i", "Owen (2013), Monte Carlo theory, ch. 9"),
    EstimatorSpec("trunc_seq", E.trunc_seq, False, False, {"c": "ionides"}, "enumeration", "sequence",
                  "truncated sequence IS: min(W, c) G, c = mean(W) sqrt(n) by default",
                  "Ionides (2008), JCGS 17(2)"),
    EstimatorSpec("clip_prod", E.clip_prod, False, False, {"c": 2.0}, "exact", "token",
                  "per-token truncated product: prod_t min(r_t, c) G",
                  "Munos et al. (2016), Retrace; Espeholt et al. (2018), IMPALA"),
    EstimatorSpec("clip_tok", E.clip_tok, False, False, {"c": 2.0}, "exact", "token",
                  "token-level TIS: (1 + sum_t (min(r_t, c) - 1)) G",
                  "Yao et al. (2025), truncated importance sampling for rollout mismatch"),
    EstimatorSpec("geo", E.geo, False, False, {}, "exact", "sequence",
                  "length-normalised sequence ratio: exp(sum_t l_t / L) G", "Zheng et al. (2025), GSPO"),
    EstimatorSpec("mask_seq", E.mask_seq, False, False, {"lo": 0.5, "hi": 2.0}, "enumeration", "sequence",
                  "sequence masking: W G 1{lo <= W <= hi}", "Liu et al. (2025), training-inference mismatch"),
    EstimatorSpec("mask_tok", E.mask_tok, False, False, {"lo": 0.5, "hi": 2.0}, "exact", "token",
                  "token masking: (1 + sum_t 1{lo <= r_t <= hi} (r_t - 1)) G", "Ling Team (2025), IcePop"),
    EstimatorSpec("psis", E.psis, False, True, {"self_normalized": True}, "enumeration", "sequence",
                  "Pareto-smoothed sequence IS (self-normalised by default), reports k-hat",
                  "Vehtari, Simpson, Gelman, Yao, Gabry (2024), JMLR 25(72)"),
]

#: Read-only mapping ``name -> EstimatorSpec`` in the DESIGN section 4 order.
REGISTRY: Mapping[str, EstimatorSpec] = types.MappingProxyType({s.name: s for s in _SPECS})


def list_estimators() -> tuple[str, ...]:
    """Names of every estimator, in a stable order (the DESIGN section 4 table's)."""
    return tuple(REGISTRY)


def get_estimator(estimator: str) -> EstimatorSpec:
    """Return the :class:`EstimatorSpec` of ``estimator``.

    Raises
    ------
    ValueError
        For an unknown name, listing the valid ones.
    """
    if not isinstance(estimator, str) or estimator not in REGISTRY:
        raise ValueError(f"estimator must be one of {', '.join(REGISTRY)}; got {estimator!r}")
    return REGISTRY[estimator]
