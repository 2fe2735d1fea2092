"""Off-policy importance-sampling estimators as pure functions on per-token log-ratios.

Every estimator has the signature ``name(log_ratio, rewards, *, mask=None, backend="auto",
**params) -> Estimate`` (DESIGN section 4); :data:`REGISTRY` lists them with their metadata
and :func:`diagnose` reports the weight diagnostics practitioners log.

Conventions
-----------
- ``log_ratio`` (n, T) holds ``log pi - log mu`` of the sampled tokens; ``mask`` (n, T) marks
  real tokens; padded positions count as log-ratio 0 and reward 0 and their values are
  ignored (even NaN). ``-inf`` (target probability 0) is legal at a real token: weight 0.
- ``rewards`` is (n,) (terminal, received at the last real token) or (n, T) per step.
- Empty rows are allowed: ``W = 1``; ``tok_mean`` and ``geo`` give them weight 1.
- Everything is computed in float64 log space with max-shifting; per-sample arrays are
  stored divided by ``exp(Estimate.log_scale)``.
- The array library is chosen once at the boundary (array-api-compat): numpy in, numpy
  out; cupy in, cupy out; torch tensors are converted and give numpy.
- ``backend="auto"`` is cupy for cupy input (validated, computed and returned on the
  device; only scalars come to the host) and numba otherwise; kernels live in
  ``_weights.KERNELS`` so a compiled backend replaces the (n, T) passes only.
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
from .._core._validate import BACKENDS
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
