"""The public estimators: each one a weight transform (``_weights``) then a reduction (``_reduce``).

Notation (DESIGN section 4): ``l_t = log pi(a_t|c_t) - log mu(a_t|c_t)`` for the sampled
tokens, ``r_t = exp(l_t)``, ``W = prod_t r_t``, ``W_{<=t}`` the prefix products, ``L`` the number
of real tokens, ``G`` the return (terminal reward, or the sum of per-step rewards). Padded
positions count as ``l = 0`` and reward 0. Everything is computed in log space with
max-shifting, so ``T = 10^4`` tokens with ``sd(l) = 1`` give finite, correct values wherever
the true value is representable in float64.
"""

from __future__ import annotations

import math

from .._core._xp import to_host
from .._backends._numba_prepare import prepare_numba
from ._estimate import Estimate
from .._core._batch import Batch, input_library, prepare
from .._core._validate import check_backend_name, check_band, check_c, check_flag
from ._input import check_backend
from ._psis import khat_threshold, psis_smooth
from ._reduce import kish, mean_reduce, ratio_reduce, sum_of_ratios_reduce
from ._weights import get_kernels

__all__ = [
    "seq",
    "tok",
    "tok_sum",
    "tok_mean",
    "pdis",
    "wpdis",
    "snis",
    "trunc_seq",
    "clip_prod",
    "clip_tok",
    "geo",
    "mask_seq",
    "mask_tok",
    "psis",
]

_COMMON = """log_ratio : array (n, T)
        Per-token ``log pi - log mu`` of the sampled tokens (numpy, cupy or torch; float32
        accepted, computed in float64). ``-inf`` (target probability 0) is allowed at real
        tokens; NaN or +inf there is an error. Masked positions are ignored.
    rewards : array (n,) or (n, T)
        Terminal-only rewards ``G_i`` or per-step rewards ``rew_{i,t}`` (``G_i = sum_t rew_{i,t}``
        over real tokens). Terminal rewards count as received at the last real token.
    mask : bool array (n, T), optional
        True where a token exists (default: all true). Rows may be empty (``L_i = 0``).
    backend : {"auto", "numpy", "numba", "cupy"}
        Kernel implementation of the (n, T) passes. ``"auto"`` is cupy for cupy input
        (validated and computed on the device; only scalars come to the host) and numba
        otherwise. Another backend with cupy input copies the input to the host and the
        per-sample arrays back. A backend whose kernels are not registered (cupy without
        CuPy installed) raises ValueError."""

_RETURNS = """Returns
    -------
    Estimate
        ``value``, ``stderr``, ``n``, ``ess``, ``diagnostics`` and the per-sample arrays
        (scaled by ``exp(-log_scale)``), in the input's array library (cupy stays cupy;
        torch tensors give numpy).

    Raises
    ------
    ValueError, TypeError
        Bad shapes, non-boolean mask, NaN/+inf at an unmasked position, parameters out of
        range, unknown backend; the message names the argument."""


def _doc(func):
    func.__doc__ = func.__doc__.replace("{common}", _COMMON).replace("{returns}", _RETURNS)
    return func


def _start(log_ratio, rewards, mask, backend):
    check_backend_name(backend)
    library = input_library(log_ratio, rewards, mask)
    name = check_backend(backend, library)
    if name == "numba" and library != "cupy":
        # one compiled validation pass (same Batch, same errors as ``prepare``)
        batch = prepare_numba(log_ratio, rewards, mask)
    else:
        # the cupy backend validates cupy input on the device and keeps it there
        batch = prepare(log_ratio, rewards, mask, device=name == "cupy")
    return batch, get_kernels(name), name


def _share(flags) -> float:
    """Fraction of true entries of a boolean array (``count / size``, as ``mean``)."""
    return float(flags.sum()) / flags.size


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf


def _fraction(count: int, total: int) -> float:
    return count / total if total > 0 else math.nan


def _mean_estimate(name, batch: Batch, backend, b, h, wb, wh, diag=None) -> Estimate:
    """Mean of ``f_i = exp(b_i) h_i``; ESS on the weights ``exp(wb_i) wh_i``."""
    res = mean_reduce(b, h)
    return Estimate(
        value=res.value,
        stderr=res.stderr,
        n=batch.n,
        ess=kish(wb, wh),
        diagnostics={"backend": backend, **(diag or {})},
        samples=batch.output(res.terms),
        log_scale=res.log_scale,
        estimator=name,
    )


def _weighted_mean(name, batch: Batch, backend, wb, wh, diag=None) -> Estimate:
    """Mean of ``w_i G_i`` with ``w_i = exp(wb_i) wh_i``."""
    return _mean_estimate(name, batch, backend, wb, wh * batch.returns, wb, wh, diag)


def _ratio_estimate(name, batch: Batch, backend, log_w, diag=None) -> Estimate:
    res = ratio_reduce(log_w, batch.returns)
    return Estimate(
        value=res.value,
        stderr=res.stderr,
        n=batch.n,
        ess=kish(log_w, batch.xp.ones_like(log_w)),
        diagnostics={"backend": backend, **(diag or {})},
        numerator=batch.output(res.numerator),
        denominator=batch.output(res.denominator),
        log_scale=res.log_scale,
        estimator=name,
    )


@_doc
def seq(log_ratio, rewards, *, mask=None, backend="auto") -> Estimate:
    """Sequence-level importance sampling: ``f_i = W_i G_i``.

    Parameters
    ----------
    {common}

    {returns}

    Notes
    -----
    Unbiased for ``J(pi)`` when ``mu > 0`` wherever ``pi > 0``; its variance grows like
    ``E_mu[W^2]``, exponentially in T. ``ess`` is Kish's on ``W``.

    References
    ----------
    Kahn & Marshall (1953); Precup, Sutton, Singh (2000), Eligibility traces for off-policy
    policy evaluation, ICML.
    """
    batch, k, be = _start(log_ratio, rewards, mask, backend)
    lw = k.log_weight(batch.log_ratio)
    return _weighted_mean("seq", batch, be, lw, batch.xp.ones_like(lw))


@_doc
def tok(log_ratio, rewards, *, mask=None, backend="auto") -> Estimate:
    """Token-level (first-order) IS: ``f_i = (1 + sum_t (r_t - 1)) G_i``.

    Parameters
    ----------
    {common}

    {returns}

    Notes
    -----
    The linearisation of ``W`` around 1; its expectation is the CPI/TRPO surrogate
    ``J(mu) + sum_t E_{d^mu_t}[sum_a (pi - mu)(a|c) Q^mu_t(c, a)]``, biased for ``J(pi)``
    (bias second order in ``pi - mu``). ``ess`` is Kish's on the implied sequence weights
    ``1 + sum_t (r_t - 1)`` (which may be negative).

    References
    ----------
    Kakade & Langford (2002), Approximately optimal approximate reinforcement learning;
    Schulman et al. (2015), Trust region policy optimization.
    """
    batch, k, be = _start(log_ratio, rewards, mask, backend)
    b, h, _ = k.token_linear(batch.log_ratio, batch.mask)
    return _weighted_mean("tok", batch, be, b, h)


@_doc
def tok_sum(log_ratio, rewards, *, mask=None, backend="auto") -> Estimate:
    """Token-sum IS: ``f_i = (sum_t r_t) G_i`` over the real tokens.

    Parameters
    ----------
    {common}

    {returns}

    Notes
    -----
    The seed's ``L_tok`` literally (token-sum loss scale): with equal policies it gives
    ``E[L G]``, not ``J``. Biased. ``ess`` is Kish's on ``sum_t r_t``.

    References
    ----------
    Schulman et al. (2017), Proximal policy optimization algorithms (token-level ratios).
    """
    batch, k, be = _start(log_ratio, rewards, mask, backend)
    b, h, _ = k.token_linear(batch.log_ratio, batch.mask, offset=False)
    return _weighted_mean("tok_sum", batch, be, b, h)


@_doc
def tok_mean(log_ratio, rewards, *, mask=None, backend="auto") -> Estimate:
    """Token-mean IS: ``f_i = (sum_t r_t / L_i) G_i`` (GRPO's per-sequence token mean).

    Parameters
    ----------
    {common}

    {returns}

    Notes
    -----
    An empty row (``L_i = 0``) has weight 1 (``f_i = G_i``), the value the statistic takes
    for ``r = 1``. Biased. ``ess`` is Kish's on ``sum_t r_t / L``.

    References
    ----------
    Shao et al. (2024), DeepSeekMath (GRPO).
    """
    batch, k, be = _start(log_ratio, rewards, mask, backend)
    b, h, _ = k.token_linear(batch.log_ratio, batch.mask, offset=False)
    xp, L = batch.xp, batch.lengths
    empty = L == 0
    b = xp.where(empty, 0.0, b - xp.log(xp.maximum(L, 1)))
    h = xp.where(empty, 1.0, h)
    return _weighted_mean("tok_mean", batch, be, b, h)


@_doc
def pdis(log_ratio, rewards, *, mask=None, backend="auto") -> Estimate:
    """Per-decision IS: ``f_i = sum_t W_{i,<=t} rew_{i,t}``.

    Parameters
    ----------
    {common}

    {returns}

    Notes
    -----
    Unbiased for ``J(pi)``; each reward is weighted only by the ratios of the actions that
    preceded it. Equals :func:`seq` for terminal-only rewards (bit for bit when they are
    given as (n,)). ``ess`` is Kish's on the full sequence weights ``W``.

    References
    ----------
    Precup, Sutton, Singh (2000), Eligibility traces for off-policy policy evaluation, ICML.
    """
    batch, k, be = _start(log_ratio, rewards, mask, backend)
    lw = k.log_weight(batch.log_ratio)
    ones = batch.xp.ones_like(lw)
    if batch.terminal_only:
        return _weighted_mean("pdis", batch, be, lw, ones)
    b, h = k.per_decision(batch.log_ratio, batch.rewards)
    return _mean_estimate("pdis", batch, be, b, h, lw, ones)


@_doc
def wpdis(log_ratio, rewards, *, mask=None, backend="auto") -> Estimate:
    """Weighted per-decision IS: ``sum_t [sum_i W_{i,<=t} rew_{i,t} / sum_i W_{i,<=t}]``.

    Parameters
    ----------
    {common}

    {returns}

    Notes
    -----
    Every row enters every step's denominator (an ended sequence keeps ``W_{<=t} = W``).
    Consistent, biased at finite n (O(1/n)); the standard error is the delta method on the
    sum of per-step ratios. With terminal-only rewards and full rows it equals :func:`snis`.
    ``numerator``/``denominator`` are (n, T) (see :class:`Estimate`); ``ess`` is Kish's on
    ``W``. ``nan`` when a step with rewards has zero total weight.

    References
    ----------
    Precup, Sutton, Singh (2000); Thomas (2015), Safe reinforcement learning, PhD thesis.
    """
    batch, k, be = _start(log_ratio, rewards, mask, backend)
    num, den, m = k.per_decision_columns(batch.log_ratio, batch.rewards)
    value, stderr, ratios = sum_of_ratios_reduce(num, den, (batch.rewards != 0).any(axis=0))
    lw = k.log_weight(batch.log_ratio)
    return Estimate(
        value=value,
        stderr=stderr,
        n=batch.n,
        ess=kish(lw, batch.xp.ones_like(lw)),
        diagnostics={"backend": be, "column_log_scale": batch.output(m), "step_ratios": batch.output(ratios)},
        numerator=batch.output(num),
        denominator=batch.output(den),
        log_scale=0.0,
        estimator="wpdis",
    )


@_doc
def snis(log_ratio, rewards, *, mask=None, backend="auto") -> Estimate:
    """Self-normalised (weighted) IS: ``sum_i W_i G_i / sum_i W_i``.

    Parameters
    ----------
    {common}

    {returns}

    Notes
    -----
    Consistent, biased at finite n (O(1/n)); always within the range of the returns.
    Standard error by the delta method; ``nan`` when every weight is zero. ``ess`` is
    Kish's on ``W``.

    References
    ----------
    Owen (2013), Monte Carlo theory, methods and examples, ch. 9.
    """
    batch, k, be = _start(log_ratio, rewards, mask, backend)
    return _ratio_estimate("snis", batch, be, k.log_weight(batch.log_ratio))


@_doc
def trunc_seq(log_ratio, rewards, *, mask=None, c="ionides", backend="auto") -> Estimate:
    """Truncated sequence IS: ``f_i = min(W_i, c) G_i``.

    Parameters
    ----------
    {common}
    c : float > 0 or "ionides"
        Truncation level (``inf`` allowed: plain :func:`seq`). ``"ionides"`` (default) uses
        ``c = mean(W) sqrt(n)`` from the batch, so the estimator is no longer a mean of
        independent terms.

    {returns}

    Notes
    -----
    Biased downwards for non-negative returns. With ``"ionides"`` the standard error treats
    the batch's ``c`` as fixed. ``ess`` is Kish's on ``min(W, c)``.
    Diagnostics: ``c`` and ``log_c`` used, ``truncated_fraction`` of sequences with ``W > c``.

    References
    ----------
    Ionides (2008), Truncated importance sampling, JCGS 17(2).
    """
    c = check_c(c, allow_ionides=True)
    batch, k, be = _start(log_ratio, rewards, mask, backend)
    xp = batch.xp
    lw = k.log_weight(batch.log_ratio)
    if c == "ionides":
        finite = xp.isfinite(lw)
        if bool(finite.any()):
            top = float(xp.where(finite, lw, -xp.inf).max())
            log_c = top + math.log(float(xp.exp(lw - top).mean())) + 0.5 * math.log(batch.n)
        else:
            log_c = -math.inf
    else:
        log_c = _log(c)
    truncated = lw > log_c
    lwt = xp.minimum(lw, log_c)
    diag = {
        "c": math.exp(log_c) if log_c < 709.0 else math.inf,
        "log_c": log_c,
        "truncated_fraction": _share(truncated),
    }
    return _weighted_mean("trunc_seq", batch, be, lwt, xp.ones_like(lwt), diag)


@_doc
def clip_prod(log_ratio, rewards, *, mask=None, c=2.0, backend="auto") -> Estimate:
    """Per-token truncated product: ``f_i = prod_t min(r_t, c) G_i``.

    Parameters
    ----------
    {common}
    c : float > 0
        Per-token truncation level (default 2.0; ``inf`` gives :func:`seq`).

    {returns}

    Notes
    -----
    Biased (downwards for non-negative returns); variance bounded by ``c^(2T)``. ``ess`` is
    Kish's on ``prod_t min(r_t, c)``. Diagnostics: ``c``, ``clipped_fraction`` of real tokens
    with ``r_t > c``.

    References
    ----------
    Munos, Stepleton, Harutyunyan, Bellemare (2016), Safe and efficient off-policy
    reinforcement learning (Retrace); Espeholt et al. (2018), IMPALA (V-trace).
    """
    c = check_c(c)
    batch, k, be = _start(log_ratio, rewards, mask, backend)
    log_c = _log(c)
    lw = k.clipped_log_weight(batch.log_ratio, batch.mask, log_c)
    clipped = k.count_above(batch.log_ratio, batch.mask, log_c)
    diag = {"c": c, "clipped_fraction": _fraction(clipped, int(batch.lengths.sum()))}
    return _weighted_mean("clip_prod", batch, be, lw, batch.xp.ones_like(lw), diag)


@_doc
def clip_tok(log_ratio, rewards, *, mask=None, c=2.0, backend="auto") -> Estimate:
    """Token-level truncated IS (TIS): ``f_i = (1 + sum_t (min(r_t, c) - 1)) G_i``.

    Parameters
    ----------
    {common}
    c : float > 0
        Per-token truncation level (default 2.0; ``inf`` gives :func:`tok`).

    {returns}

    Notes
    -----
    Biased (the token surrogate, truncated). ``ess`` is Kish's on the implied sequence weights
    ``1 + sum_t (min(r_t, c) - 1)``. Diagnostics: ``c``, ``clipped_fraction``.

    References
    ----------
    Yao, Liu, et al. (2025), Your efficient RL framework secretly brings you off-policy RL
    training (truncated importance sampling for rollout/trainer mismatch).
    """
    c = check_c(c)
    batch, k, be = _start(log_ratio, rewards, mask, backend)
    log_c = _log(c)
    b, h, _ = k.token_linear(batch.log_ratio, batch.mask, log_c=log_c)
    clipped = k.count_above(batch.log_ratio, batch.mask, log_c)
    diag = {"c": c, "clipped_fraction": _fraction(clipped, int(batch.lengths.sum()))}
    return _weighted_mean("clip_tok", batch, be, b, h, diag)


@_doc
def geo(log_ratio, rewards, *, mask=None, backend="auto") -> Estimate:
    """Length-normalised (geometric-mean) sequence ratio: ``f_i = exp(sum_t l_t / L_i) G_i``.

    Parameters
    ----------
    {common}

    {returns}

    Notes
    -----
    GSPO's sequence ratio ``W^(1/L)``; an empty row has weight 1. Biased (a different
    surrogate) but with variance that does not grow with T. ``ess`` is Kish's on ``W^(1/L)``.

    References
    ----------
    Zheng et al. (2025), Group sequence policy optimization (GSPO).
    """
    batch, k, be = _start(log_ratio, rewards, mask, backend)
    lw = k.geo_log_weight(batch.log_ratio, batch.lengths)
    return _weighted_mean("geo", batch, be, lw, batch.xp.ones_like(lw))


@_doc
def mask_seq(log_ratio, rewards, *, mask=None, lo=0.5, hi=2.0, backend="auto") -> Estimate:
    """Sequence masking (rejection): ``f_i = W_i G_i 1{lo <= W_i <= hi}``.

    Parameters
    ----------
    {common}
    lo, hi : float
        Band of kept sequence weights, ``0 <= lo <= hi`` (defaults 0.5 and 2.0; ``lo = 0``,
        ``hi = inf`` gives :func:`seq`).

    {returns}

    Notes
    -----
    Biased. ``ess`` is Kish's on ``W 1{lo <= W <= hi}``. Diagnostics: ``masked_fraction`` of
    sequences outside the band.

    References
    ----------
    Sequence-level masking of mismatched rollouts, e.g. Liu et al. (2025), When speed kills
    stability: demystifying RL collapse from the training-inference mismatch.
    """
    lo, hi = check_band(lo, hi)
    batch, k, be = _start(log_ratio, rewards, mask, backend)
    lw = k.log_weight(batch.log_ratio)
    xp = batch.xp
    inside = (lw >= _log(lo)) & (lw <= _log(hi))
    lwm = xp.where(inside, lw, -xp.inf)
    diag = {"lo": lo, "hi": hi, "masked_fraction": 1.0 - _share(inside)}
    return _weighted_mean("mask_seq", batch, be, lwm, xp.ones_like(lwm), diag)


@_doc
def mask_tok(log_ratio, rewards, *, mask=None, lo=0.5, hi=2.0, backend="auto") -> Estimate:
    """Token masking: ``f_i = (1 + sum_t 1{lo <= r_t <= hi} (r_t - 1)) G_i``.

    Parameters
    ----------
    {common}
    lo, hi : float
        Band of kept token ratios, ``0 <= lo <= hi`` (defaults 0.5 and 2.0, as in IcePop;
        ``lo = 0``, ``hi = inf`` gives :func:`tok`).

    {returns}

    Notes
    -----
    Tokens outside the band drop out of the token surrogate. Biased. ``ess`` is Kish's on
    the implied sequence weights. Diagnostics: ``masked_fraction`` of real tokens outside.

    References
    ----------
    Ling Team (2025), IcePop: token-level masking of training-inference mismatch (Ring-1T).
    """
    lo, hi = check_band(lo, hi)
    batch, k, be = _start(log_ratio, rewards, mask, backend)
    b, h, inside = k.token_linear(batch.log_ratio, batch.mask, log_lo=_log(lo), log_hi=_log(hi))
    total = int(batch.lengths.sum())
    diag = {"lo": lo, "hi": hi, "masked_fraction": _fraction(total - int(inside.sum()), total)}
    return _weighted_mean("mask_tok", batch, be, b, h, diag)


@_doc
def psis(log_ratio, rewards, *, mask=None, self_normalized=True, backend="auto") -> Estimate:
    """Pareto-smoothed sequence IS.

    The sequence weights ``W`` are Pareto-smoothed (the largest ``M = ceil(min(n/5, 3 sqrt n))``
    replaced by expected order statistics of a fitted generalized Pareto, truncated at the
    largest raw weight), then averaged: ``sum_i w~_i G_i / sum_i w~_i`` (self-normalised,
    the default) or ``mean(w~_i G_i)``.

    Parameters
    ----------
    {common}
    self_normalized : bool
        Self-normalise (default True, as PSIS is normally used; the ratio is then bounded by
        the returns' range and the standard error is the delta method's).

    {returns}

    Notes
    -----
    Biased, consistent. Diagnostics: ``khat`` (the Pareto shape estimate; ``> 0.7`` or above
    ``khat_threshold = min(1 - 1/log10 n, 0.7)`` means unreliable; ``inf`` when n < 21,
    too few to assess), ``tail_length`` smoothed, ``reliable``, ``self_normalized``.
    ``ess`` is Kish's on the smoothed weights. For cupy input the (n, T) pass and the
    reductions run on the device; the n sequence log-weights are sorted and smoothed on the
    host (one (n,) copy each way).

    References
    ----------
    Vehtari, Simpson, Gelman, Yao, Gabry (2024), Pareto smoothed importance sampling,
    JMLR 25(72); Zhang & Stephens (2009), Technometrics 51(3).
    """
    self_normalized = check_flag(self_normalized, "self_normalized")
    batch, k, be = _start(log_ratio, rewards, mask, backend)
    lw = k.log_weight(batch.log_ratio)
    # the Pareto fit sorts the n log-weights on the host (for cupy input: one (n,) copy each
    # way; the (n, T) data stays on the device)
    smoothed, khat, tail = psis_smooth(to_host(lw))
    smoothed = batch.xp.asarray(smoothed)
    threshold = khat_threshold(batch.n)
    diag = {
        "khat": khat,
        "khat_threshold": threshold,
        "reliable": bool(khat <= threshold),
        "tail_length": tail,
        "self_normalized": self_normalized,
    }
    if self_normalized:
        return _ratio_estimate("psis", batch, be, smoothed, diag)
    return _weighted_mean("psis", batch, be, smoothed, batch.xp.ones_like(smoothed), diag)
