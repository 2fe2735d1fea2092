r"""Running a declared estimator on arrays: validate once, evaluate its form, reduce.

:func:`evaluate` is what calling an :class:`~tokis.estimators.EstimatorSpec` does. The form is
evaluated by the numba family kernel with the token map compiled in (``backend="numba"``) or
by the array path of :mod:`._forms` in the inputs' namespace (``"numpy"``; ``"cupy"`` runs the
same array code on cupy arrays on the device). Per-row pieces are then reduced in log space
(:mod:`._reduce`): the mean of ``exp(b_i) h_i`` or a self-normalised ratio.
"""

from __future__ import annotations

import dataclasses
import math

from .._backends import _numba_forms as nb
from .._backends._numba_prepare import prepare_numba
from .._core._batch import input_library, prepare
from .._core._validate import check_backend_name
from .._core._xp import cupy_namespace, to_host
from .._backends._cupy import require_cupy
from ._estimate import Estimate
from ._forms import BatchTransform, PerDecision, SequenceTransform, TokenProduct, TokenSum, evaluate_map, map_params
from ._reduce import kish, mean_reduce, ratio_reduce, sum_of_ratios_reduce

__all__ = ["evaluate", "resolve_backend", "load_batch"]


def resolve_backend(backend: str, library: str = "numpy") -> str:
    """Map a valid backend name to the one that runs.

    ``"auto"`` is ``"cupy"`` for cupy input (validated, computed and returned on the device)
    and ``"numba"`` otherwise (numpy input; torch tensors are converted to numpy).

    Raises
    ------
    ValueError
        ``backend="cupy"`` without CuPy or a CUDA device.
    """
    if backend == "auto":
        return "cupy" if library == "cupy" else "numba"
    if backend == "cupy" and library != "cupy":
        require_cupy("backend")
    return backend


def load_batch(log_ratio, rewards, mask, backend):
    """Validate the inputs once; return ``(batch, backend run)``."""
    check_backend_name(backend)
    library = input_library(log_ratio, rewards, mask)
    be = resolve_backend(backend, library)
    if be == "numba" and library != "cupy":
        # one compiled validation pass (same Batch, same errors as ``prepare``)
        return prepare_numba(log_ratio, rewards, mask), be
    if be == "cupy" and library != "cupy":
        cp = cupy_namespace()
        host = prepare(log_ratio, rewards, mask)
        moved = {f: (cp.asarray(getattr(host, f)) if getattr(host, f) is not None else None)
                 for f in ("log_ratio", "returns", "mask", "lengths", "step_rewards", "last_step")}
        return dataclasses.replace(host, xp=cp, **moved), be
    # the cupy backend validates cupy input on the device and keeps it there
    return prepare(log_ratio, rewards, mask, device=be == "cupy"), be


def _map_args(func, params) -> tuple:
    return tuple(float(params[p]) for p in map_params(func))


def _skip_mask(func, batch, params) -> bool:
    """Whether a kernel may read every position: all are real, or the map is 0 at the zeroed padding."""
    return batch.full or float(evaluate_map(func, 0.0, params)) == 0.0


def _token_sum(form: TokenSum, batch, params, be):
    if be == "numba":
        return nb.token_sum(nb.compile_map(form.token), batch.log_ratio, batch.mask,
                            _skip_mask(form.token, batch, params), _map_args(form.token, params), form.offset,
                            form.per_length, batch.lengths)
    return form.weights(batch.xp, batch, params)


def _token_product(form: TokenProduct, batch, params, be):
    if be == "numba":
        return nb.token_product(nb.compile_map(form.token), batch.log_ratio, batch.mask,
                                _skip_mask(form.token, batch, params), _map_args(form.token, params),
                                form.per_length, batch.lengths)
    return form.log_weights(batch.xp, batch, params)


def _log_weights(form, batch, params, be):
    """Sequence log-weights of a TokenProduct, SequenceTransform or PerDecision form (n,)."""
    if isinstance(form, SequenceTransform):
        return evaluate_map(form.transform, _token_product(form.base, batch, params, be), params)
    if isinstance(form, PerDecision):
        return _token_product(TokenProduct(form.token), batch, params, be)
    return _token_product(form, batch, params, be)


def _fraction(count: int, total: int) -> float:
    return count / total if total > 0 else math.nan


def _diagnostics(spec, batch, params, be, base_lw) -> dict:
    xp = batch.xp
    diag = {"backend": be}
    diag.update({k: v for k, v in params.items() if isinstance(v, (bool, int, float, str))})
    total = int(batch.lengths.sum())
    for key, flag in spec.token_flags.items():
        if be == "numba":
            count = nb.count_tokens(nb.compile_map(flag), batch.log_ratio, batch.mask, batch.full,
                                    _map_args(flag, params))
        else:
            count = int(xp.count_nonzero(batch.mask & evaluate_map(flag, batch.log_ratio, params)))
        diag[key] = _fraction(count, total)
    for key, flag in spec.sequence_flags.items():
        diag[key] = float(xp.count_nonzero(evaluate_map(flag, base_lw, params))) / batch.n
    return diag


def _mean(spec, batch, be, diag, b, h, wb, wh) -> Estimate:
    """Mean of ``f_i = exp(b_i) h_i``; Kish ESS on the weights ``exp(wb_i) wh_i``."""
    res = mean_reduce(b, h)
    return Estimate(value=res.value, stderr=res.stderr, n=batch.n, ess=kish(wb, wh), diagnostics=diag,
                    samples=batch.output(res.terms), log_scale=res.log_scale, estimator=spec.name)


def _ratio(spec, batch, be, diag, lw) -> Estimate:
    res = ratio_reduce(lw, batch.returns)
    return Estimate(value=res.value, stderr=res.stderr, n=batch.n, ess=kish(lw, batch.xp.ones_like(lw)),
                    diagnostics=diag, numerator=batch.output(res.numerator),
                    denominator=batch.output(res.denominator), log_scale=res.log_scale, estimator=spec.name)


def _per_decision_ratio(spec, batch, be, diag, params) -> Estimate:
    form, xp = spec.form, batch.xp
    if be == "numba":
        num, den, m = nb.per_decision_columns(nb.compile_map(form.token), batch.log_ratio, batch.mask, batch.full,
                                              batch.rewards, _map_args(form.token, params))
    else:
        prefix = form.prefix_log_weights(xp, batch, params)
        m = prefix.max(axis=0)
        m = xp.where(xp.isfinite(m), m, 0.0)
        den = xp.exp(prefix - m[None, :])
        num = den * batch.rewards
    value, stderr, ratios = sum_of_ratios_reduce(num, den, (batch.rewards != 0).any(axis=0))
    lw = _log_weights(form, batch, params, be)
    diag = {**diag, "column_log_scale": batch.output(m), "step_ratios": batch.output(ratios)}
    return Estimate(value=value, stderr=stderr, n=batch.n, ess=kish(lw, xp.ones_like(lw)), diagnostics=diag,
                    numerator=batch.output(num), denominator=batch.output(den), log_scale=0.0, estimator=spec.name)


def evaluate(spec, log_ratio, rewards, mask=None, backend="auto", **given) -> Estimate:
    """Run estimator ``spec`` on one batch (what ``spec(log_ratio, rewards, ...)`` does).

    Parameters
    ----------
    spec : EstimatorSpec
    log_ratio : array (n, T)
    rewards : array (n,) or (n, T)
    mask : bool array (n, T), optional
    backend : {"auto", "numpy", "numba", "cupy"}
    **given
        The estimator's parameters (checked by ``spec.check_params``; defaults filled in).

    Returns
    -------
    Estimate
    """
    params = spec.check_params(given)
    batch, be = load_batch(log_ratio, rewards, mask, backend)
    form, xp = spec.form, batch.xp
    if isinstance(form, TokenSum):
        s = _token_sum(form, batch, params, be)
        zeros = xp.zeros_like(s)
        diag = _diagnostics(spec, batch, params, be, None)
        return _mean(spec, batch, be, diag, zeros, s * batch.returns, zeros, s)
    if isinstance(form, PerDecision):
        diag = _diagnostics(spec, batch, params, be, None)
        if spec.reduce == "ratio":
            return _per_decision_ratio(spec, batch, be, diag, params)
        lw = _log_weights(form, batch, params, be)
        ones = xp.ones_like(lw)
        if batch.terminal_only:  # one reward, at the last step: exp(sum_t y) G
            return _mean(spec, batch, be, diag, lw, batch.returns, lw, ones)
        if be == "numba":
            b, h, _ = nb.per_decision(nb.compile_map(form.token), batch.log_ratio, batch.mask, batch.full,
                                      batch.rewards, _map_args(form.token, params))
        else:
            b, h = _per_decision_pieces(xp, form.prefix_log_weights(xp, batch, params), batch.rewards)
        return _mean(spec, batch, be, diag, b, h, lw, ones)
    base_lw = _token_product(form.base if isinstance(form, SequenceTransform) else form, batch, params, be)
    lw = evaluate_map(form.transform, base_lw, params) if isinstance(form, SequenceTransform) else base_lw
    diag = _diagnostics(spec, batch, params, be, base_lw)
    reduce = spec.reduce
    if isinstance(reduce, BatchTransform):
        # the batch transform sorts/fits the n log-weights on the host (one (n,) copy each way)
        new, extra = reduce.transform(to_host(lw), **params)
        lw = xp.asarray(new)
        diag.update(extra)
        # whether the estimate depends on the batch as a whole (psis; trunc_seq with c="ionides"):
        # intervals that assume independent per-sample terms read this
        diag["batch_transform"] = not reduce.is_per_sample(params)
        reduce = reduce.reduction(params)
    if reduce == "ratio":
        return _ratio(spec, batch, be, diag, lw)
    ones = xp.ones_like(lw)
    return _mean(spec, batch, be, diag, lw, batch.returns, lw, ones)


def _per_decision_pieces(xp, prefix, rewards):
    """``f_i = sum_t exp(P_{i,t}) rew_{i,t}`` as ``exp(b_i) h_i``, ``b_i`` the largest rewarded prefix."""
    active = rewards != 0
    b = xp.where(active, prefix, -xp.inf).max(axis=1)
    b = xp.where(xp.isfinite(b), b, 0.0)
    terms = xp.exp(xp.where(active, prefix - b[:, None], -xp.inf)) * rewards
    return b, terms.sum(axis=1)
