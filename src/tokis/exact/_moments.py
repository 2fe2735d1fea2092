r"""Exact moments of every estimator's per-sample statistic under the behaviour policy.

For ``n`` iid sequences from mu, an estimator that averages a per-sample statistic ``f`` has
``E[J_hat] = E_mu[f]`` and ``Var(J_hat) = Var_mu(f) / n`` exactly. :func:`moments` computes
these by the forward recursions of :mod:`._recursions` (method ``"exact"``), by the delta
method for the ratio estimators snis and wpdis (``"asymptotic"``), or by summing over every
sequence where no recursion exists (``"enumeration"``). It never substitutes sampling.

Notation: ``r_t = pi/mu`` of the sampled token, ``W = prod_t r_t``, ``W_{<=t}`` its prefix
products (an ended sequence keeps ``W``), ``L`` the length, ``G`` the return (step rewards plus
the observed terminal reward), ``rew_t`` the step reward at ``t`` plus the terminal reward at
the last real step.

Delta method (snis, wpdis)
--------------------------
snis is ``N/D`` with ``N = mean_i W_i G_i``, ``D = mean_i W_i``; with ``b = E[W]``,
``theta = E[WG]/b`` and ``N/D = theta + (N - theta D)/b - (N - theta D)(D - b)/b^2 + ...``:

- limit ``theta``; per-sample asymptotic variance ``E[W^2 (G - theta)^2] / b^2``
  (``n Var(snis) -> `` this);
- ``E[N/D] = theta + (theta E[W^2] - E[W^2 G]) / (n b^2) + O(n^-2)``, because
  ``Cov(N - theta D, D) = (E[W^2 G] - theta E[W^2]) / n``.

wpdis is ``sum_t N_t / D_t`` with ``N_t = mean_i W_{i,<=t} rew_{i,t}`` and ``D_t = mean_i W_{i,<=t}``.
Each term linearises as above with ``b_t = E[W_{<=t}]``, ``theta_t = E[W_{<=t} rew_t]/b_t``, so the
influence function is ``psi = sum_t W_{<=t} (rew_t - theta_t) / b_t`` (mean 0): the pdis
statistic with per-step rewards ``(rew_t - theta_t)/b_t``, including the steps after a sequence
ended (reward 0, weight ``W``). Limit ``sum_t theta_t``, variance ``E[psi^2]``, O(1/n) bias
``sum_t (theta_t E[W_{<=t}^2] - E[W_{<=t}^2 rew_t]) / (n b_t^2)``.

References
----------
Precup, Sutton, Singh (2000), per-decision importance sampling; Owen (2013), *Monte Carlo
theory*, ch. 9 (ratio estimators and the delta method); Kakade & Langford (2002) and
Schulman et al. (2015) for the surrogate in :func:`tok_bias_decomposition`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from .._core._validate import check_positive_int
from ._dp import _backward, _forward, check_pair
from ._enumerate import enumerate_outcomes, statistic
from ._finite_n import finite_n_moments
from ._recursions import additive, log_add, multiplicative, pdis, prepare, steps, to_float, wpdis_stats

__all__ = ["moments", "Moments", "population_ess", "tok_bias_decomposition", "TokBiasDecomposition"]

METHODS = ("exact", "asymptotic", "enumeration")

def _estimator_table() -> dict:
    """name -> (parameter names, default method, batch estimator), read from the one registry.

    ``tokis.estimators.REGISTRY`` is the single source of truth: its ``params`` name the
    parameters, ``exact_moments`` the default method, and ratio (self-normalised) estimators
    are batch estimators whose finite-n moments need multisets of sequences.
    """
    from tokis.estimators import REGISTRY

    return {k: (tuple(s.params), s.exact_moments, s.self_normalized) for k, s in REGISTRY.items()}


@dataclass(frozen=True)
class Moments:
    r"""Exact (or labelled asymptotic) moments of an estimator under the behaviour policy.

    Attributes
    ----------
    estimator : str
        Estimator name (``tokis.estimators.REGISTRY`` key).
    params : Mapping
        The parameters used (defaults filled in), read-only.
    method : {"exact", "asymptotic", "enumeration"}
        ``"exact"``: finite forward recursion; ``"asymptotic"``: delta method for a ratio
        estimator (``mean`` is the n -> infinity limit); ``"enumeration"``: every sequence (or,
        for batch estimators at a given ``n``, every multiset of ``n`` sequences) summed.
    mean : float
        ``E_mu[f]`` of the per-sample statistic ``f``; for asymptotic the limit of the estimate;
        for a batch estimator enumerated at ``n``, ``E[estimate]`` at that ``n``.
    variance : float
        Per-sample variance, scaled so that ``Var(estimate) = variance / n`` (exactly for
        per-sample estimators and enumerated batch estimators, to first order for asymptotic).
        ``inf`` only where not representable (see ``log_variance``).
    bias : float
        ``mean - target_value``.
    target_value : float
        ``J(pi)``, the quantity estimated.
    n : int or None
        Sample size, when given.
    estimate_variance, estimate_std : float or None
        ``variance / n`` and its square root (None without ``n``).
    bias_n : float or None
        Bias of the estimate at ``n``: ``bias`` plus ``bias_coef / n`` for asymptotic
        (None without ``n``).
    mse : float or None
        ``bias_n**2 + variance / n`` (None without ``n``).
    bias_coef : float
        Coefficient of the O(1/n) bias term of a ratio estimator (0 otherwise).
    log_second_moment : float or None
        ``log E_mu[f^2]`` for per-sample statistics (finite even where ``E[f^2]`` overflows);
        None for asymptotic and finite-n batch results.
    log_variance : float
        ``log(variance)`` (``-inf`` for zero variance), finite where ``variance`` overflows.
    """

    estimator: str
    params: Mapping
    method: str
    mean: float
    variance: float
    bias: float
    target_value: float
    n: int | None = None
    estimate_variance: float | None = None
    estimate_std: float | None = None
    bias_n: float | None = None
    mse: float | None = None
    bias_coef: float = 0.0
    log_second_moment: float | None = None
    log_variance: float = float("nan")


@dataclass(frozen=True)
class TokBiasDecomposition:
    r"""Exact bias of the token-level surrogate ``f = (1 + sum_t (r_t - 1)) G``, decomposed two ways.

    Sums run over steps ``t``, contexts ``c`` and tokens ``a``; ``rho^mu_t(c) = E_mu[R_{<t} 1{c_t = c}]``
    is the step reward collected before ``t`` by sequences running in ``c``. Since
    ``E_mu[(r_t - 1) G] = sum_c sum_{a: mu(a|c) > 0} (pi - mu)(a|c) (d^mu_t(c) Q^mu_t(c, a) + rho^mu_t(c))``,

    .. math::
        \text{surrogate} = E_\mu[f] = J(\mu) + \sum_{t,c} \sum_{a:\, \mu(a|c) > 0}
            (\pi - \mu)(a|c)\, \big(d^\mu_t(c)\, Q^\mu_t(c, a) + \rho^\mu_t(c)\big).

    Under full support (``mu > 0`` wherever ``pi > 0``) ``sum_a (pi - mu) = 0`` removes the
    ``rho`` term and this is the CPI / TRPO surrogate ``J(mu) + sum d^mu (pi - mu) Q^mu``.
    Sampled tokens always have ``mu > 0``, so under support mismatch the sum misses the tokens
    ``mu`` never emits, and ``E_mu[r_t - 1 | c_t] = -pi(mu = 0 | c_t)`` also weights the past
    rewards. Using ``J(pi) - J(mu) = sum d^mu (pi - mu) Q^pi`` and the performance-difference
    identity ``J(pi) - J(mu) = sum d^pi (pi - mu) Q^mu`` (both over all tokens):

    .. math::
        \text{bias} = \text{value\_mismatch} + \text{support\_mismatch}
                    = \text{state\_mismatch} + \text{support\_mismatch}

    Attributes
    ----------
    target_value, behavior_value : float
        ``J(pi)`` and ``J(mu)``.
    surrogate : float
        ``E_mu[f]`` (the CPI / TRPO surrogate under full support).
    bias : float
        ``surrogate - J(pi)``.
    value_mismatch : float
        ``sum_t sum_c d^mu_t(c) sum_a (pi - mu)(a|c) (Q^mu_t - Q^pi_t)(c, a)``: states from mu,
        the value of the continuation is mu's instead of pi's.
    state_mismatch : float
        ``sum_t sum_c (d^mu_t - d^pi_t)(c) sum_a (pi - mu)(a|c) Q^mu_t(c, a)``: advantages under
        Q^mu, weighted by mu's occupancy instead of pi's.
    support_mismatch : float
        ``-sum_t sum_c sum_{a: mu(a|c) = 0} pi(a|c) (d^mu_t(c) Q^mu_t(c, a) + rho^mu_t(c))``: the
        part of the first-order correction that sampling from mu never sees (0 when mu > 0
        wherever pi > 0).
    """

    target_value: float
    behavior_value: float
    surrogate: float
    bias: float
    value_mismatch: float
    state_mismatch: float
    support_mismatch: float


# --------------------------------------------------------------------------- parameters


def _registry_defaults(name: str):
    """Default parameters from ``tokis.estimators.REGISTRY[name].params`` or None if unavailable."""
    try:
        from tokis.estimators import REGISTRY
    except ImportError:
        return None
    try:
        spec = REGISTRY[name]
    except (KeyError, TypeError):
        return None
    params = getattr(spec, "params", None)
    if params is None and isinstance(spec, Mapping):
        params = spec.get("params")
    return dict(params) if params is not None else {}


def _check_real(value, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if math.isnan(v):
        raise ValueError(f"{name} must not be NaN")
    return v


def _resolve_params(name: str, given: dict) -> dict:
    allowed = _estimator_table()[name][0]
    if allowed is not None:
        extra = [k for k in given if k not in allowed]
        if extra:
            takes = ", ".join(allowed) if allowed else "no parameters"
            raise ValueError(f"estimator {name!r} does not take parameter {extra[0]!r} (it takes: {takes})")
        missing = [k for k in allowed if k not in given]
    else:
        missing = []
    params = dict(given)
    defaults = None
    if missing or allowed is None:
        defaults = _registry_defaults(name)
    if missing:
        if defaults is None:
            raise ValueError(
                f"estimator {name!r} needs parameter(s) {', '.join(missing)}: pass them as keywords "
                f"(e.g. moments(..., {missing[0]}=...)); defaults come from tokis.estimators.REGISTRY, "
                "which is not importable"
            )
        for k in missing:
            if k not in defaults:
                raise ValueError(f"estimator {name!r} needs parameter {k!r} and REGISTRY has no default for it: pass {k}=...")
            params[k] = defaults[k]
    elif allowed is None and defaults:
        for k, v in defaults.items():
            params.setdefault(k, v)
    if "c" in params and allowed is not None:
        c = params["c"]
        if name == "trunc_seq" and isinstance(c, str):
            if c != "ionides":
                raise ValueError(f"c must be a positive number or 'ionides' for trunc_seq, got {c!r}")
        else:
            cv = _check_real(c, "c")
            if not cv > 0:
                raise ValueError(f"c must be > 0, got {c!r}")
            params["c"] = cv
    if "lo" in params and allowed is not None:
        lo = _check_real(params["lo"], "lo")
        hi = _check_real(params["hi"], "hi")
        if lo < 0:
            raise ValueError(f"lo must be >= 0 (ratios are non-negative), got {lo!r}")
        if lo > hi:
            raise ValueError(f"lo must be <= hi, got lo={lo!r} > hi={hi!r}")
        params["lo"], params["hi"] = lo, hi
    return params


# --------------------------------------------------------------------------- results


def _exp(x: float) -> float:
    """``exp(x)`` as a float, ``inf`` where it overflows."""
    with np.errstate(over="ignore"):
        return float(np.exp(x))


def _signed_exp(val: float, log_factor: float) -> float:
    """``val * exp(log_factor)`` without intermediate overflow (``+-inf`` only if not representable)."""
    if val == 0:
        return 0.0
    return math.copysign(_exp(math.log(abs(val)) + log_factor), val)


def _log_of(val: float, scale: float) -> float:
    return float(scale + math.log(val)) if val > 0 else -math.inf


def _finish(
    name, params, method, mean, log_var, target_value, n, *, bias_coef=0.0, log_second_moment=None
) -> Moments:
    variance = _exp(log_var)
    bias = mean - target_value
    kw = {}
    if n is not None:
        ev = variance / n
        bias_n = bias + bias_coef / n
        kw = dict(estimate_variance=ev, estimate_std=math.sqrt(ev), bias_n=bias_n, mse=bias_n * bias_n + ev)
    return Moments(
        estimator=name,
        params=MappingProxyType(dict(params)),
        method=method,
        mean=float(mean),
        variance=float(variance),
        bias=float(bias),
        target_value=float(target_value),
        n=n,
        bias_coef=float(bias_coef),
        log_second_moment=log_second_moment,
        log_variance=float(log_var),
        **kw,
    )


def _from_log_moments(v1: float, s1: float, v2: float, s2: float):
    """(mean, log_var, log_second) from ``E[f] = v1 e^s1``, ``E[f^2] = v2 e^s2``."""
    mean = float(to_float(np.array(v1), np.array(s1)))
    log_second = _log_of(v2, s2)
    if v2 <= 0:
        return mean, -math.inf, log_second
    # log(mean^2 / second) <= 0; variance = second * (1 - mean^2 / second)
    lq = 2.0 * math.log(abs(v1)) + 2.0 * s1 - math.log(v2) - s2 if v1 != 0 else -math.inf
    rel = -math.expm1(lq)
    log_var = log_second + math.log(rel) if rel > 0 else -math.inf
    return mean, log_var, log_second


def _sum_batches(val: np.ndarray, scale: np.ndarray):
    """Sum per-batch log-scaled rows (B, K) into one (K,) row with one scale."""
    acc, s = np.zeros((1, val.shape[1])), np.full(1, -np.inf)
    for b in range(val.shape[0]):
        acc, s = log_add(acc, s, val[b : b + 1], scale[b : b + 1])
    return acc[0], float(s[0])


# --------------------------------------------------------------------------- exact recursions


def _exact(pair, name: str, params):
    """(v1, s1, v2, s2) with ``E[f] = v1 e^s1`` and ``E[f^2] = v2 e^s2``."""
    log_r = pair.log_r
    if name in ("tok", "tok_sum", "tok_mean", "clip_tok", "mask_tok"):
        with np.errstate(over="ignore"):
            r = np.exp(steps(log_r, pair.T))  # (1, S, V) for stationary policies
        if name == "tok":
            x, a0 = r - 1.0, 1.0
        elif name in ("tok_sum", "tok_mean"):
            x, a0 = r, 0.0
        elif name == "clip_tok":
            x, a0 = np.minimum(r, params["c"]) - 1.0, 1.0
        else:
            inside = (r >= params["lo"]) & (r <= params["hi"])
            x, a0 = np.where(inside, r - 1.0, 0.0), 1.0
        mean, second = additive(pair, x, a0, per_length=(name == "tok_mean"))
        return mean, 0.0, second, 0.0
    if name == "pdis":
        T = pair.T
        (v1, s1), (v2, s2) = pdis(pair, pair.mdp.step_reward, np.ones(T), np.zeros(T))
        return v1, s1, v2, s2
    if name == "seq":
        res = multiplicative(pair, log_r)
    elif name == "clip_prod":
        lc = math.log(params["c"]) if params["c"] < math.inf else math.inf
        res = multiplicative(pair, np.minimum(steps(log_r, pair.T), lc))
    elif name == "geo":
        T = pair.T
        lengths = np.arange(1, T + 1) if pair.mdp.eos is not None else np.array([T])
        res = multiplicative(pair, log_r, lengths=lengths, root=True)  # h = r^(1/L) per final length
        f1, s1 = _sum_batches(res.first, res.scale1)
        f2, s2 = _sum_batches(res.second, res.scale2)
        return float(f1[1]), s1, float(f2[2]), s2
    else:  # pragma: no cover - dispatch is exhaustive
        raise AssertionError(name)
    return float(res.first[0, 1]), float(res.scale1[0]), float(res.second[0, 2]), float(res.scale2[0])


def _snis_asymptotic(pair):
    """(theta, log_var, bias_coef) of snis by the delta method."""
    log_r = pair.log_r
    res = multiplicative(pair, log_r)
    w1, wg = float(res.first[0, 0]), float(res.first[0, 1])
    if not w1 > 0:
        raise ValueError("snis is undefined: E_mu[W] = 0 (the target puts no mass on the behaviour's support)")
    theta = wg / w1
    log_b = float(res.scale1[0]) + math.log(w1)
    res2 = multiplicative(pair, log_r, shift=theta)
    v21, v22, s2 = float(res2.second[0, 1]), float(res2.second[0, 2]), float(res2.scale2[0])
    log_var = (s2 + math.log(v22) - 2.0 * log_b) if v22 > 0 else -math.inf
    coef = _signed_exp(-v21, s2 - 2.0 * log_b)
    return theta, log_var, coef


def _wpdis_asymptotic(pair):
    """(sum theta_t, log_var, bias_coef) of wpdis by the delta method."""
    b, theta, c_val, c_scale = wpdis_stats(pair)
    coef = float(sum(_signed_exp(-float(v), float(s) - 2.0 * math.log(bt)) for v, s, bt in zip(c_val, c_scale, b)))
    q = theta / b
    beta = -(np.cumsum(q[::-1])[::-1] - q)  # -sum_{s > t} theta_s / b_s
    # per-step reward (rho - theta_t) / b_t, passed as an affine map of rho (no (T, S, V) array)
    (v1, s1), (v2, s2) = pdis(pair, pair.mdp.step_reward, 1.0 / b, beta, u_shift=theta, u_div=b)
    _, log_var, _ = _from_log_moments(v1, s1, v2, s2)
    return float(theta.sum()), log_var, coef


# --------------------------------------------------------------------------- public API


def moments(
    mdp,
    target,
    behavior,
    estimator: str,
    *,
    n: int | None = None,
    method: str | None = None,
    max_sequences: int = 200_000,
    max_multisets: int = 200_000,
    **params,
) -> Moments:
    r"""Exact moments under mu of ``estimator``'s per-sample statistic (or of its estimate at ``n``).

    Parameters
    ----------
    mdp : TokenMDP
    target, behavior : Policy
        ``pi`` and ``mu`` (stationary (S, V) or time-dependent (T, S, V) logits).
    estimator : str
        A name in ``tokis.estimators.REGISTRY``: seq, tok, tok_sum, tok_mean, pdis, clip_prod, clip_tok, geo,
        mask_tok (finite recursions, ``"exact"``); snis, wpdis (delta method, ``"asymptotic"``);
        trunc_seq, mask_seq, psis (``"enumeration"``).
    n : int, optional
        Sample size: fills ``estimate_variance``, ``estimate_std``, ``bias_n`` and ``mse``.
        Required for batch estimators enumerated exactly (psis, trunc_seq with
        ``c="ionides"``, and snis / wpdis with ``method="enumeration"``).
    method : {"exact", "asymptotic", "enumeration"}, optional
        Force a method. Default: the estimator's own. ``"enumeration"`` applies to every
        estimator on small MDPs (for snis and wpdis it gives the exact finite-``n``
        distribution, by enumerating every multiset of ``n`` sequences).
    max_sequences : int
        Largest number of sequences (times 2 under Bernoulli noise) enumeration may sum over.
    max_multisets : int
        Largest number of multisets ``C(N + n - 1, n)`` finite-``n`` enumeration may sum over.
    **params
        Estimator parameters: ``c`` (clip_prod, clip_tok, trunc_seq; ``c="ionides"`` for
        trunc_seq), ``lo`` and ``hi`` (mask_seq, mask_tok); psis parameters are passed to
        ``tokis.estimators.psis``. Missing ones default to ``tokis.estimators.REGISTRY[name].params``.

    Returns
    -------
    Moments

    Raises
    ------
    ValueError
        Unknown ``estimator`` or ``method``; ``n < 1``; parameters out of range (``c <= 0``,
        ``lo > hi``); a method that does not apply (no recursion for this estimator, an MDP too
        large to enumerate, a batch estimator without ``n``).

    Notes
    -----
    Per-sample statistics (``G`` observed return, ``rew_t`` step reward plus terminal at the end):
    seq ``W G``; tok ``(1 + sum (r_t - 1)) G``; tok_sum ``(sum r_t) G``; tok_mean
    ``(sum r_t / L) G``; pdis ``sum_t W_{<=t} rew_t``; clip_prod ``prod min(r_t, c) G``;
    clip_tok ``(1 + sum (min(r_t, c) - 1)) G``; geo ``exp(sum log r_t / L) G``; mask_seq
    ``W G 1{lo <= W <= hi}``; mask_tok ``(1 + sum 1{lo <= r_t <= hi} (r_t - 1)) G``;
    trunc_seq ``min(W, c) G``. Under Bernoulli reward noise the noise variance is included.
    The delta-method formulas for snis and wpdis are derived in the module docstring.
    """
    table = _estimator_table()
    if not isinstance(estimator, str) or estimator not in table:
        raise ValueError(f"estimator must be one of {sorted(table)}, got {estimator!r}")
    if method is not None and method not in METHODS:
        raise ValueError(f"method must be one of {METHODS} or None, got {method!r}")
    if n is not None:
        n = check_positive_int(n, "n")
    max_sequences = check_positive_int(max_sequences, "max_sequences")
    max_multisets = check_positive_int(max_multisets, "max_multisets")
    target = check_pair(mdp, target, "target")
    behavior = check_pair(mdp, behavior, "behavior")
    params = _resolve_params(estimator, params)
    default_method = table[estimator][1]
    batch = table[estimator][2] or (estimator == "trunc_seq" and params["c"] == "ionides")
    if method is None:
        method = default_method
    if method != "enumeration" and method != default_method:
        raise ValueError(
            f"method={method!r} does not apply to {estimator!r}: its moments are {default_method!r} "
            "(or 'enumeration' on small MDPs)"
        )

    if method == "enumeration" and batch and n is None:
        if estimator == "trunc_seq":
            why = "c='ionides' makes trunc_seq a batch estimator"
        else:
            why = f"{estimator} is a batch estimator"
        raise ValueError(f"{why}: its exact moments depend on the sample size, pass n")

    pair = prepare(mdp, target, behavior)
    values, _ = _backward(mdp, pair.pi, want_q=False)
    target_value = float(mdp.start @ values[0])

    if method == "exact":
        v1, s1, v2, s2 = _exact(pair, estimator, params)
        mean, log_var, log_second = _from_log_moments(v1, s1, v2, s2)
        return _finish(estimator, params, "exact", mean, log_var, target_value, n, log_second_moment=log_second)
    if method == "asymptotic":
        if estimator == "snis":
            mean, log_var, coef = _snis_asymptotic(pair)
        else:
            mean, log_var, coef = _wpdis_asymptotic(pair)
        return _finish(estimator, params, "asymptotic", mean, log_var, target_value, n, bias_coef=coef)

    # enumeration
    what = f"{estimator} has no finite recursion" if default_method == "enumeration" else estimator
    outcomes = enumerate_outcomes(pair, max_sequences, what=what)
    if batch:
        mean, var_est = finite_n_moments(estimator, outcomes, n, params, max_multisets)
        log_var = math.log(var_est * n) if var_est > 0 else -math.inf
        return _finish(estimator, params, "enumeration", mean, log_var, target_value, n)
    f = statistic(estimator, outcomes, params)
    p = outcomes.prob
    mean = float(p @ f)
    var = float(p @ (f - mean) ** 2)
    second = float(p @ (f * f))
    log_var = math.log(var) if var > 0 else -math.inf
    log_second = math.log(second) if second > 0 else -math.inf
    return _finish(estimator, params, "enumeration", mean, log_var, target_value, n, log_second_moment=log_second)


def population_ess(mdp, target, behavior, *, log: bool = False) -> float:
    r"""Population effective-sample-size fraction of sequence weights, ``E_mu[W]^2 / E_mu[W^2]``.

    Kish's ESS of n samples, ``(sum w)^2 / sum w^2``, concentrates at ``n E_mu[W]^2 / E_mu[W^2]``.
    With full support ``E_mu[W] = 1`` and this is ``1 / E_mu[W^2]``; where mu misses part of
    pi's support, ``E_mu[W] = 1 - missing mass`` (:func:`support_mismatch`) and the fraction
    stays in (0, 1]. ``log E_mu[W^2]`` comes from :func:`log_second_moment` (log space), so long
    horizons give tiny but correct fractions (0.0 only below the smallest float).

    Parameters
    ----------
    mdp : TokenMDP
    target, behavior : Policy
    log : bool
        Return the natural log of the fraction instead (finite where the fraction underflows).

    Returns
    -------
    float
        In (0, 1].
    """
    from ._divergence import log_second_moment, support_mismatch

    log_m2 = log_second_moment(mdp, target, behavior)
    mean_w = 1.0 - support_mismatch(mdp, target, behavior)
    if not (mean_w > 0 and math.isfinite(log_m2)):
        raise ValueError("population_ess is undefined: E_mu[W] = 0 (the target puts no mass on the behaviour's support)")
    log_frac = 2.0 * math.log(mean_w) - log_m2
    return log_frac if log else math.exp(log_frac)


def _past_rewards(mdp, probs: np.ndarray, d: np.ndarray) -> np.ndarray:
    r"""``rho_t(c) = E[R_{<t} 1{c_t = c, running}]`` (T, S) for per-step probabilities (T, S, V)."""
    T, S = d.shape
    nxt = mdp.next_context.ravel()
    cont = np.ones(mdp.vocab_size)
    if mdp.eos is not None:
        cont[mdp.eos] = 0.0
    rho = np.zeros((T, S))
    for t in range(T - 1):
        flow = (rho[t][:, None] + d[t][:, None] * mdp.step_reward) * probs[t] * cont
        rho[t + 1] = np.bincount(nxt, weights=flow.ravel(), minlength=S)
    return rho


def tok_bias_decomposition(mdp, target, behavior) -> TokBiasDecomposition:
    r"""Exact bias of the tok statistic, decomposed as value mismatch and as state mismatch.

    See :class:`TokBiasDecomposition` for the formulas. All terms come from one forward pass
    (occupancies ``d^mu``, ``d^pi``) and one backward pass (``Q^mu``, ``Q^pi``) per policy.
    """
    target = check_pair(mdp, target, "target")
    behavior = check_pair(mdp, behavior, "behavior")
    T = mdp.horizon
    pi = target.expand_probs(T)
    mu = behavior.expand_probs(T)
    d_mu, _ = _forward(mdp, mu)
    d_pi, _ = _forward(mdp, pi)
    v_mu, q_mu = _backward(mdp, mu)
    v_pi, q_pi = _backward(mdp, pi)
    j_mu = float(mdp.start @ v_mu[0])
    j_pi = float(mdp.start @ v_pi[0])
    diff = pi - mu
    on = mu > 0
    rho = _past_rewards(mdp, mu, d_mu)
    off_pi = np.where(on, 0.0, pi)
    value_mismatch = float(np.einsum("tc,tca,tca->", d_mu, diff, q_mu - q_pi))
    state_mismatch = float(np.einsum("tc,tca,tca->", d_mu - d_pi, diff, q_mu))
    support = -float(np.einsum("tc,tca,tca->", d_mu, off_pi, q_mu) + np.einsum("tc,tca->", rho, off_pi))
    surrogate = j_mu + float(np.einsum("tc,tca,tca->", d_mu, diff, q_mu)) + support
    return TokBiasDecomposition(
        target_value=j_pi,
        behavior_value=j_mu,
        surrogate=surrogate,
        bias=surrogate - j_pi,
        value_mismatch=value_mismatch,
        state_mismatch=state_mismatch,
        support_mismatch=support,
    )
