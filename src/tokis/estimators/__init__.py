"""Off-policy importance-sampling estimators as pure functions on per-token log-ratios.

Every estimator has the signature ``name(log_ratio, rewards, *, mask=None, backend="auto",
**params) -> Estimate`` (DESIGN section 4); :data:`REGISTRY` lists them with their metadata
and :func:`diagnose` reports the weight diagnostics practitioners log.
"""

from ._diagnose import Diagnostics, diagnose
from ._estimate import Estimate
from ._estimators import (
    clip_prod,
    clip_tok,
    geo,
    mask_seq,
    mask_tok,
    pdis,
    psis,
    seq,
    snis,
    tok,
    tok_mean,
    tok_sum,
    trunc_seq,
    wpdis,
)
from ._input import BACKENDS
from ._registry import REGISTRY, EstimatorSpec, get_estimator, list_estimators

__all__ = [
    "BACKENDS",
    "Diagnostics",
    "Estimate",
    "EstimatorSpec",
    "REGISTRY",
    "clip_prod",
    "clip_tok",
    "diagnose",
    "geo",
    "get_estimator",
    "list_estimators",
    "mask_seq",
    "mask_tok",
    "pdis",
    "psis",
    "seq",
    "snis",
    "tok",
    "tok_mean",
    "tok_sum",
    "trunc_seq",
    "wpdis",
]
