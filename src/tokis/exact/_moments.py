r"""Exact moments of every estimator's per-sample statistic under the behaviour policy.

For ``n`` iid sequences from mu, an estimator that averages a per-sample statistic ``f`` has
``E[J_hat] = E_mu[f]`` and ``Var(J_hat) = Var_mu(f) / n`` exactly. :func:`moments` reads the
estimator's declaration (``tokis.estimators.define``) and picks the method from its form:

==================================  ==========================================================
declaration                         method
==================================  ==========================================================
``TokenSum``                        ``"exact"``: forward DP of the additive accumulator
``TokenProduct``                    ``"exact"``: forward DP with the tilted kernel ``mu e^{k y}``
``PerDecision``                     ``"exact"``: forward DP of the per-decision sum
``TokenProduct``/``PerDecision``    ``"asymptotic"`` with ``reduce="ratio"``: delta method
+ ``"ratio"``                       (:mod:`._asymptotic`)
``SequenceTransform``, batch        ``"enumeration"``: every sequence (or every multiset of
transforms                          ``n`` sequences for batch estimators), small MDPs only
==================================  ==========================================================

The form's token map is evaluated on the (T, S, V) table of ``log pi - log mu`` -- the same
function, on the same numbers, as the estimator applies to sampled log-ratios -- so a user's
declaration gets exact moments with no code of its own. Enumeration evaluates the estimator
itself on every enumerated outcome. Nothing here ever substitutes sampling.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .._core._validate import check_positive_int
from ..estimators import get_estimator
from ..estimators import PerDecision, TokenSum
from ..estimators._forms import evaluate_map
from ._asymptotic import per_decision_ratio_asymptotic, ratio_asymptotic
from ._dp import _backward, check_pair
from ._enumerate import enumerate_outcomes
from ._errors import NoExactMethodError
from ._finite_n import finite_n_moments
from ._recursions import additive, multiplicative, pdis, prepare, steps
from ._results import Moments, _signed_exp, _sum_batches, finish

__all__ = ["moments", "Moments", "METHODS"]

METHODS = ("exact", "asymptotic", "enumeration")


def _table(pair, func, params) -> np.ndarray:
    """A token map evaluated on the per-step log-ratio table ``(Tp, S, V)``."""
    return np.asarray(evaluate_map(func, steps(pair.log_r, pair.T), params), dtype=np.float64)


def _exact(pair, form, params):
    """``(mean, log_var, log_second)`` of a TokenSum, TokenProduct or PerDecision statistic by DP."""
    if isinstance(form, TokenSum):
        mean, var = additive(pair, _table(pair, form.token, params), form.offset, per_length=form.per_length)
        second = var + mean * mean
        return mean, (math.log(var) if var > 0 else -math.inf), (math.log(second) if second > 0 else -math.inf)
    if isinstance(form, PerDecision):
        T = pair.T
        y = _table(pair, form.token, params)
        tilted = dataclasses.replace(pair, log_r=np.broadcast_to(y, (T,) + y.shape[1:]))
        res = pdis(tilted, pair.mdp.step_reward, np.ones(T), np.zeros(T))
        (v1, s1), (v2, s2), (vv, sv) = res.first, res.second, res.variance
        return _central(v1, s1, vv, sv, v2, s2)
    log_h = _table(pair, form.token, params)
    if form.per_length:  # exp(sum y / L): one product per final length
        lengths = np.arange(1, pair.T + 1) if pair.mdp.eos is not None else np.array([pair.T])
        res = multiplicative(pair, log_h, lengths=lengths, root=True)
        f2, s2 = _sum_batches(res.second, res.scale2)
        (v1, s1), (vv, sv) = res.total()
        return _central(v1, s1, vv, sv, float(f2[2]), s2)
    res = multiplicative(pair, log_h)
    (v1, s1), (vv, sv) = res.total()
    return _central(v1, s1, vv, sv, float(res.second[0, 2]), float(res.scale2[0]))


def _central(v1, s1, vv, sv, v2, s2):
    """``(mean, log_var, log_second)`` from log-scaled mean, variance (central) and second moment."""
    mean = _signed_exp(float(v1), float(s1))
    log_var = float(sv) + math.log(vv) if vv > 0 and math.isfinite(sv) else -math.inf
    log_second = float(s2) + math.log(v2) if v2 > 0 and math.isfinite(s2) else -math.inf
    return mean, log_var, log_second


def _asymptotic(pair, form, params, name):
    """``(limit, log_var, bias_coef)`` of a self-normalised TokenProduct or PerDecision form."""
    y = _table(pair, form.token, params)
    if isinstance(form, PerDecision):
        tilted = dataclasses.replace(pair, log_r=np.broadcast_to(y, (pair.T,) + y.shape[1:]))
        return per_decision_ratio_asymptotic(tilted)
    return ratio_asymptotic(pair, y, name)


def _per_sample_enumeration(spec, outcomes, params):
    """``(mean, log_var, log_second)`` of a mean estimator's statistic over every outcome."""
    e = spec(outcomes.log_ratio, outcomes.rewards, mask=outcomes.mask, backend="numpy", **params)
    s, p, scale = np.asarray(e.samples), outcomes.prob, e.log_scale  # f = exp(scale) s, |s| <= 1
    ms = float(p @ s)
    vs = float(p @ (s - ms) ** 2)
    ss = float(p @ (s * s))
    mean = _signed_exp(ms, scale)
    log_var = 2.0 * scale + math.log(vs) if vs > 0 else -math.inf
    log_second = 2.0 * scale + math.log(ss) if ss > 0 else -math.inf
    return mean, log_var, log_second


def _method(spec, params, method, n):
    """The method that runs, or NoExactMethodError when the one asked for does not apply."""
    default = spec.exact_method(params)
    if method is None:
        method = default
    elif method not in METHODS:
        raise ValueError(f"method must be one of {METHODS} or None, got {method!r}")
    if method != "enumeration" and method != default:
        raise NoExactMethodError(f"method={method!r} does not apply to {spec.name!r}: its moments are {default!r} "
                                 "(or 'enumeration' on small MDPs)")
    if method == "enumeration" and spec.is_batch(params) and n is None:
        raise NoExactMethodError(f"{spec.name} is a batch estimator (the estimate is not a mean of independent "
                                 "per-sample terms): its exact moments depend on the sample size, pass n")
    return method


def moments(mdp, target, behavior, estimator, *, n: int | None = None, method: str | None = None,
            max_sequences: int = 200_000, max_multisets: int = 200_000, **params) -> Moments:
    r"""Exact moments under mu of an estimator's per-sample statistic (or of its estimate at ``n``).

    Parameters
    ----------
    mdp : TokenMDP
    target, behavior : Policy
        ``pi`` and ``mu`` (stationary (S, V) or time-dependent (T, S, V) logits).
    estimator : str or EstimatorSpec
        A name in ``tokis.estimators.REGISTRY`` or a declaration from ``tokis.estimators.define``
        (registered or not). The method follows from its form (module docstring).
    n : int, optional
        Sample size: fills ``estimate_variance``, ``estimate_std``, ``bias_n`` and ``mse``.
        Required for batch estimators enumerated exactly (psis, trunc_seq with ``c="ionides"``,
        ratio estimators with ``method="enumeration"``).
    method : {"exact", "asymptotic", "enumeration"}, optional
        Force a method. Default: the declaration's. ``"enumeration"`` applies to every
        estimator on small MDPs (for ratio estimators it gives the exact finite-``n``
        distribution, by enumerating every multiset of ``n`` sequences).
    max_sequences : int
        Largest number of sequences (times 2 under Bernoulli noise) enumeration may sum over.
    max_multisets : int
        Largest number of multisets ``C(N + n - 1, n)`` finite-``n`` enumeration may sum over.
    **params
        Estimator parameters, checked by the estimator's own ``check_params`` (the same check as
        a call of the estimator); missing ones take the declared defaults.

    Returns
    -------
    Moments

    Raises
    ------
    NoExactMethodError
        No exact method applies: a method the estimator does not have, an MDP too large to
        enumerate, a batch estimator without ``n``. (A subclass of ValueError.)
    ValueError, TypeError
        Unknown estimator or method, ``n < 1``, parameters out of range, an undefined
        estimator (e.g. a self-normalised one whose weights are all zero).

    Notes
    -----
    Under Bernoulli reward noise the noise variance is included. The statistic of each
    built-in is in its declaration (``tokis.estimators.REGISTRY[name].form``).
    """
    spec = get_estimator(estimator)
    if n is not None:
        n = check_positive_int(n, "n")
    max_sequences = check_positive_int(max_sequences, "max_sequences")
    max_multisets = check_positive_int(max_multisets, "max_multisets")
    target = check_pair(mdp, target, "target")
    behavior = check_pair(mdp, behavior, "behavior")
    params = spec.check_params(params)
    method = _method(spec, params, method, n)

    pair = prepare(mdp, target, behavior)
    values, _ = _backward(mdp, pair.pi, want_q=False)
    target_value = float(mdp.start @ values[0])
    name, form = spec.name, spec.form

    if method == "exact":
        mean, log_var, log_second = _exact(pair, form, params)
        return finish(name, params, "exact", mean, log_var, target_value, n, log_second_moment=log_second)
    if method == "asymptotic":
        mean, log_var, coef = _asymptotic(pair, form, params, name)
        return finish(name, params, "asymptotic", mean, log_var, target_value, n, bias_coef=coef)

    what = f"{name} has no finite recursion" if spec.exact_method(params) == "enumeration" else name
    outcomes = enumerate_outcomes(pair, max_sequences, what=what)
    if spec.is_batch(params):
        mean, var_est = finite_n_moments(spec, outcomes, n, params, max_multisets)
        log_var = math.log(var_est * n) if var_est > 0 else -math.inf
        return finish(name, params, "enumeration", mean, log_var, target_value, n)
    mean, log_var, log_second = _per_sample_enumeration(spec, outcomes, params)
    return finish(name, params, "enumeration", mean, log_var, target_value, n, log_second_moment=log_second)

