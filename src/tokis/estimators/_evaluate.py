r"""Running a declared estimator on arrays: validate once, evaluate its form, reduce every batch.

:func:`evaluate` is what calling an :class:`~tokis.estimators.EstimatorSpec` does. The form is
evaluated by the numba family kernel with the token map compiled in (``backend="numba"``) or
by the array path of :mod:`._forms` in the inputs' namespace (``"numpy"``; ``"cupy"`` runs the
same array code on cupy arrays on the device). Per-row pieces are then reduced per batch in log
space: the mean of ``exp(b_i) h_i`` or a self-normalised ratio (:mod:`._reduce`; compiled for
numba in :mod:`tokis._backends._numba_reduce`).

Leading batch dimensions: ``log_ratio`` (..., n, T) holds ``R = prod(...)`` independent batches
(replications). Validation flattens them to ``R * n`` rows (a view), the form runs once over all
rows, and every reduction runs per batch; scalars of the :class:`Estimate` come back with shape
(...), per-sample arrays with shape (..., n) (or (..., n, T)). A batch's numbers never depend on
the other batches: each equals the plain call on that slice bit for bit.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .._backends import _numba_forms as nb
from .._backends import _numba_ratio as nbq
from .._backends import _numba_reduce as nbr
from .._backends._cupy import require_cupy
from .._core._xp import to_host
from ._estimate import Estimate
from ._forms import BatchTransform, PerDecision, SequenceTransform, TokenProduct, TokenSum, evaluate_map, map_params
from ._plan import plan
from ._prepared import Prepared, batch_of, load_batch
from ._reduce import host, kish, mean_reduce, ratio_reduce, sum_of_ratios_reduce

__all__ = ["evaluate", "resolve_backend", "load_batch"]  # load_batch: re-exported from ._prepared


def resolve_backend(backend: str, library: str = "numpy") -> str:
    """Map a valid backend name to the one that runs (for an input of unknown size).

    ``"auto"`` is ``"cupy"`` for cupy input (validated, computed and returned on the device)
    and ``"numba"`` otherwise (numpy input; torch tensors are converted to numpy); see
    :mod:`._plan` for the rule by size.

    Raises
    ------
    ValueError
        ``backend="cupy"`` without CuPy or a CUDA device.
    """
    if backend == "cupy" and library != "cupy":
        require_cupy("backend")
    return plan(backend, library, 1 << 62)[0] if backend == "auto" else backend


@functools.lru_cache(maxsize=None)
def _param_names(func) -> tuple:
    return map_params(func)


def _map_args(func, params) -> tuple:
    return tuple(float(params[p]) for p in _param_names(func))


@functools.lru_cache(maxsize=1024)
def _zero_at_zero(func, args: tuple) -> bool:
    return float(evaluate_map(func, 0.0, dict(zip(_param_names(func), args)))) == 0.0


def _skip_mask(func, batch, params) -> bool:
    """Whether a kernel may read every position: all are real, or the map is 0 at the zeroed padding."""
    return batch.full or _zero_at_zero(func, _map_args(func, params))


class _Run:
    """One call: the validated batch, the backend that runs, its threads, the parameters."""

    def __init__(self, spec, batch, be, threads, params):
        self.spec, self.batch, self.be, self.threads, self.params = spec, batch, be, threads, params
        self.xp = batch.xp
        self.R = batch.replications

    # -- form kernels (rows,) ------------------------------------------------------------

    def token_sum(self, form: TokenSum):
        b, p = self.batch, self.params
        if self.be == "numba":
            return nb.token_sum(form.token, b.log_ratio, b.mask, _skip_mask(form.token, b, p),
                                _map_args(form.token, p), form.offset, form.per_length, b.lengths, self.threads)
        return form.weights(self.xp, b, p)

    def token_product(self, form: TokenProduct):
        b, p = self.batch, self.params
        if self.be == "numba":
            return nb.token_product(form.token, b.log_ratio, b.mask, _skip_mask(form.token, b, p),
                                    _map_args(form.token, p), form.per_length, b.lengths, self.threads)
        return form.log_weights(self.xp, b, p)

    def log_weights(self, form):
        """Sequence log-weights of a TokenProduct, SequenceTransform or PerDecision form (rows,)."""
        if isinstance(form, SequenceTransform):
            return evaluate_map(form.transform, self.token_product(form.base), self.params)
        if isinstance(form, PerDecision):
            return self.token_product(TokenProduct(form.token))
        return self.token_product(form)

    # -- results ---------------------------------------------------------------------------

    def scalar(self, arr):
        """An (R,) host array as the Estimate's scalar: a float, or an array of the batch shape."""
        arr = np.asarray(arr)
        if self.batch.shape == ():
            return arr.reshape(()).item()
        return arr.reshape(self.batch.shape)

    def per_sample(self, arr, tail=()):
        """A (rows, *tail) or (R, n, *tail) array as (..., n, *tail) in the caller's library."""
        b = self.batch
        return b.output(arr.reshape(tuple(b.shape) + (b.n,) + tuple(tail)))

    def diagnostics(self, base_lw) -> dict:
        spec, b, xp, p = self.spec, self.batch, self.xp, self.params
        diag = {"backend": self.be}
        diag.update({k: v for k, v in p.items() if isinstance(v, (bool, int, float, str))})
        if spec.token_flags:
            total = host(b.per_batch(b.lengths).sum(axis=1), np.int64)
        for key, flag in spec.token_flags.items():
            if self.be == "numba":
                counts = nb.count_tokens(flag, b.log_ratio, b.mask, b.full, _map_args(flag, p), self.threads)
            else:
                counts = (b.mask & evaluate_map(flag, b.log_ratio, p)).sum(axis=1)
            count = host(b.per_batch(counts).sum(axis=1), np.int64)
            with np.errstate(invalid="ignore", divide="ignore"):
                frac = np.where(total > 0, count / np.maximum(total, 1), math.nan)
            diag[key] = self.scalar(frac)
        for key, flag in spec.sequence_flags.items():
            hit = evaluate_map(flag, base_lw, p)
            diag[key] = self.scalar(host(b.per_batch(hit).sum(axis=1), np.int64) / b.n)
        return diag

    def mean(self, diag, h, *, b=None, g=None, log_weights=None, weights=None) -> Estimate:
        """Mean of ``f_i = exp(b_i) h_i`` (or ``h_i g_i``) per batch; Kish ESS on ``exp(log_weights)`` (or ``weights``)."""
        if self.be == "numba":
            value, stderr, ess, log_scale, terms = nbr.mean_batches(h, self.R, b=b, g=g, log_weights=log_weights,
                                                                    weights=weights, threads=self.threads)
        else:
            batch, xp = self.batch, self.xp
            if b is None:
                b, h = xp.zeros_like(h), h * g
            res = mean_reduce(batch.per_batch(b), batch.per_batch(h))
            value, stderr, log_scale, terms = res.value, res.stderr, res.log_scale, res.terms
            if log_weights is None:
                log_weights, wh = xp.zeros_like(weights), weights
            else:
                wh = xp.ones_like(log_weights)
            ess = kish(batch.per_batch(log_weights), batch.per_batch(wh))
        return Estimate(value=self.scalar(value), stderr=self.scalar(stderr), n=self.batch.n, ess=self.scalar(ess),
                        diagnostics=diag, samples=self.per_sample(terms), log_scale=self.scalar(log_scale),
                        estimator=self.spec.name)

    def ratio(self, diag, lw) -> Estimate:
        batch = self.batch
        if self.be == "numba":
            value, stderr, ess, log_scale, num, den = nbq.ratio_batches(lw, batch.returns, self.R, self.threads)
        else:
            res = ratio_reduce(batch.per_batch(lw), batch.per_batch(batch.returns))
            value, stderr, log_scale, num, den = res.value, res.stderr, res.log_scale, res.numerator, res.denominator
            ess = kish(batch.per_batch(lw), self.xp.ones_like(batch.per_batch(lw)))
        return Estimate(value=self.scalar(value), stderr=self.scalar(stderr), n=batch.n, ess=self.scalar(ess),
                        diagnostics=diag, numerator=self.per_sample(num), denominator=self.per_sample(den),
                        log_scale=self.scalar(log_scale), estimator=self.spec.name)

    def per_decision_ratio(self, diag) -> Estimate:
        form, batch, xp, p = self.spec.form, self.batch, self.xp, self.params
        R, n, T = self.R, batch.n, batch.log_ratio.shape[1]
        if self.be == "numba":
            num, den, m = nb.per_decision_columns(form.token, batch.log_ratio, batch.mask, batch.full, batch.rewards,
                                                  _map_args(form.token, p), R, self.threads)
        else:
            prefix = form.prefix_log_weights(xp, batch, p).reshape(R, n, T)
            m = prefix.max(axis=1)
            m = xp.where(xp.isfinite(m), m, 0.0)
            den = xp.exp(prefix - m[:, None, :]).reshape(R * n, T)
            num = den * batch.rewards
        active = batch.per_batch(batch.rewards != 0).any(axis=1)
        value, stderr, ratios = sum_of_ratios_reduce(num.reshape(R, n, T), den.reshape(R, n, T), active)
        lw = self.log_weights(form)
        ess = kish(batch.per_batch(lw), xp.ones_like(batch.per_batch(lw)))
        diag = {**diag, "column_log_scale": batch.output(batch.unflatten(m)),
                "step_ratios": batch.output(batch.unflatten(ratios))}
        return Estimate(value=self.scalar(value), stderr=self.scalar(stderr), n=n, ess=self.scalar(ess),
                        diagnostics=diag, numerator=self.per_sample(num, (T,)), denominator=self.per_sample(den, (T,)),
                        log_scale=self.scalar(np.zeros(R)), estimator=self.spec.name)

    def batch_transform(self, reduce: BatchTransform, lw, diag):
        """Transform each batch's (n,) log-weights on the host; the diagnostics become (...) arrays."""
        b = self.batch
        blocks = b.per_batch(to_host(lw))
        if reduce.batched:  # every batch in one call (rows of the (R, n) blocks)
            out, extra = reduce.transform(blocks, **self.params)
            extras = {k: np.asarray(v) for k, v in extra.items()}
        else:
            out = np.empty(blocks.shape)
            each = []
            for r in range(self.R):
                out[r], extra = reduce.transform(blocks[r], **self.params)
                each.append(extra)
            extras = {k: np.asarray([e[k] for e in each]) for k in each[0]}
        if b.shape == ():
            diag.update({k: v.reshape(()).item() for k, v in extras.items()})
        else:
            diag.update({k: v.reshape(b.shape) for k, v in extras.items()})
        # whether the estimate depends on the batch as a whole (psis; trunc_seq with c="ionides"):
        # intervals that assume independent per-sample terms read this
        diag["batch_transform"] = not reduce.is_per_sample(self.params)
        return self.xp.asarray(out.reshape(-1))


def evaluate(spec, log_ratio, rewards, mask=None, backend="auto", **given) -> Estimate:
    """Run estimator ``spec`` on one batch, or on many along leading dimensions (what ``spec(...)`` does).

    Parameters
    ----------
    spec : EstimatorSpec
    log_ratio : array (n, T) or (..., n, T), or Prepared
        A :class:`~._prepared.Prepared` batch (from ``tokis.estimators.prepare``) stands for
        all three arrays: ``rewards`` and ``mask`` are then omitted (TypeError otherwise).
    rewards : array (..., n) or (..., n, T)
    mask : bool array (..., n, T), optional
    backend : {"auto", "numpy", "numba", "cupy"}
        With a Prepared batch: ``"auto"`` or the backend it was prepared for.
    **given
        The estimator's parameters (checked by ``spec.check_params``; defaults filled in).

    Returns
    -------
    Estimate
        Scalars (value, stderr, ess, log_scale, per-call diagnostics) are floats for (n, T)
        input and arrays of shape (...) otherwise; per-sample arrays are (..., n).
    """
    params = spec.check_params(given)
    if isinstance(log_ratio, Prepared):
        batch, be, threads = batch_of(log_ratio, rewards, mask, backend)
    else:
        batch, be, threads = load_batch(log_ratio, rewards, mask, backend)
    run = _Run(spec, batch, be, threads, params)
    form, xp = spec.form, batch.xp
    if isinstance(form, TokenSum):
        s = run.token_sum(form)
        return run.mean(run.diagnostics(None), s, g=batch.returns, weights=s)
    if isinstance(form, PerDecision):
        diag = run.diagnostics(None)
        if spec.reduce == "ratio":
            return run.per_decision_ratio(diag)
        if batch.terminal_only:  # one reward, at the last step: exp(sum_t y) G
            lw = run.log_weights(form)
            return run.mean(diag, batch.returns, b=lw, log_weights=lw)
        if be == "numba":
            b, h, lw = nb.per_decision(form.token, batch.log_ratio, batch.mask, batch.full, batch.rewards,
                                       _map_args(form.token, params), threads)
        else:
            lw = run.log_weights(form)
            b, h = _per_decision_pieces(xp, form.prefix_log_weights(xp, batch, params), batch.rewards)
        return run.mean(diag, h, b=b, log_weights=lw)
    base_lw = run.token_product(form.base if isinstance(form, SequenceTransform) else form)
    lw = evaluate_map(form.transform, base_lw, params) if isinstance(form, SequenceTransform) else base_lw
    diag = run.diagnostics(base_lw)
    reduce = spec.reduce
    if isinstance(reduce, BatchTransform):
        lw = run.batch_transform(reduce, lw, diag)
        reduce = reduce.reduction(params)
    if reduce == "ratio":
        return run.ratio(diag, lw)
    return run.mean(diag, batch.returns, b=lw, log_weights=lw)


def _per_decision_pieces(xp, prefix, rewards):
    """``f_i = sum_t exp(P_{i,t}) rew_{i,t}`` as ``exp(b_i) h_i``, ``b_i`` the largest rewarded prefix."""
    active = rewards != 0
    b = xp.where(active, prefix, -xp.inf).max(axis=1)
    b = xp.where(xp.isfinite(b), b, 0.0)
    terms = xp.exp(xp.where(active, prefix - b[:, None], -xp.inf)) * rewards
    return b, terms.sum(axis=1)
