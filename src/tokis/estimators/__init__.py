"""Off-policy importance-sampling estimators as pure functions on per-token log-ratios.

Every estimator is an :class:`EstimatorSpec` declared once with :func:`define` -- a *form*
(:class:`TokenSum`, :class:`TokenProduct`, :class:`PerDecision`, :class:`SequenceTransform`)
plus a reduction (``"mean"``, ``"ratio"`` or a :class:`BatchTransform`) -- and is callable as
``name(log_ratio, rewards, *, mask=None, backend="auto", **params) -> Estimate`` (DESIGN
section 4). The numpy/cupy path, the numba kernel and the exact moments are all derived from
that declaration. :func:`register` makes a declaration usable by name in
``tokis.exact.moments``, the harness and the ``tokis`` commands; :data:`REGISTRY` lists them.

Conventions
-----------
- ``log_ratio`` (n, T) holds ``log pi - log mu`` of the sampled tokens; ``mask`` (n, T) marks
  real tokens; padded positions take no token and reward 0 and their values are ignored (even
  NaN). ``-inf`` (target probability 0) is legal at a real token: weight 0.
- ``rewards`` is (n,) (terminal, received at the last real token) or (n, T) per step.
- Empty rows are allowed: ``W = 1``; per-length forms (``tok_mean``, ``geo``) give them weight 1.
- Products of ratios are computed in float64 log space with max-shifting; per-sample arrays
  are stored divided by ``exp(Estimate.log_scale)``. Additive (TokenSum) weights are sums of
  plain float64 token values.
- The array library is chosen once at the boundary (array-api-compat): numpy in, numpy
  out; cupy in, cupy out; torch tensors are converted and give numpy.
- Leading batch dimensions are independent batches (replications): ``log_ratio`` (..., n, T),
  ``rewards`` (..., n) or (..., n, T), ``mask`` (..., n, T) give an :class:`Estimate` whose
  scalars have shape (...), each batch equal bit for bit to the call on its slice (``est[i]``).
- Several estimators on the same arrays: :func:`prepare` validates them once (for one
  backend) and every estimator takes the result in place of ``log_ratio``
  (``seq(prepare(log_ratio, rewards, mask=mask))``), giving the raw call's numbers bit for bit.
- ``backend="auto"`` is cupy for cupy input (the array path runs on the device, results stay
  there) and numba otherwise (one compiled kernel per form family with the token map inlined,
  on one thread below a measured size: see :mod:`tokis.estimators._plan`).
"""

from .._core._validate import BACKENDS
from ._builtins import (
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
from ._define import REGISTRY, EstimatorSpec, Param, define, get_estimator, list_estimators, register
from ._diagnose import Diagnostics, diagnose
from ._estimate import Estimate
from ._forms import BatchTransform, PerDecision, SequenceTransform, TokenProduct, TokenSum
from ._prepared import prepare

__all__ = [
    "BACKENDS",
    "BatchTransform",
    "Diagnostics",
    "Estimate",
    "EstimatorSpec",
    "Param",
    "PerDecision",
    "REGISTRY",
    "SequenceTransform",
    "TokenProduct",
    "TokenSum",
    "clip_prod",
    "clip_tok",
    "define",
    "diagnose",
    "geo",
    "get_estimator",
    "list_estimators",
    "mask_seq",
    "mask_tok",
    "pdis",
    "prepare",
    "psis",
    "register",
    "seq",
    "snis",
    "tok",
    "tok_mean",
    "tok_sum",
    "trunc_seq",
    "wpdis",
]
