r"""Sampled policy gradients: an objective's batch gradient from Rollouts, in the logits' shape.

The coefficient ``w_{i,t}`` of every token is computed from the declaration
(:func:`coefficients`, also what the exact engine evaluates on enumerated outcomes), divided by
the aggregation's normaliser, and scattered into ``G[c, a] += w (1{a = y} - pi(a|c))``
(:func:`tokis._backends._numba_scatter.scatter_gradient`; a numpy reference is
:func:`scatter_numpy`). The result is the mean over the batch's sequences.
"""

from __future__ import annotations

import numpy as np

from .._backends._numba_scatter import scatter_gradient
from .._core._validate import check_backend_name
from ..envs import Policy, Rollouts
from ._coefficients import SequenceCoefficient
from ._define import Settings, get_objective

__all__ = ["gradient", "coefficients", "scatter_numpy", "token_log_probs"]


def _params(func_params, values):
    return [values[p] for p in func_params]


def coefficients(spec, settings: Settings, l, A, l_rho, mask):
    r"""Per-token coefficients ``w`` (n, T) of an objective, before aggregation; 0 at padding.

    Parameters
    ----------
    spec : ObjectiveSpec
    settings : Settings
    l : float (n, T)
        ``log pi_theta - log pi_old`` of each token (0 at padding).
    A : float (n, 1) or (n, T)
        Advantages.
    l_rho : float (n, T)
        ``log pi_old - log mu`` (0 at padding).
    mask : bool (n, T)
    """
    coef = spec.coefficient
    args = _params(coef.params, settings.params)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if isinstance(coef, SequenceCoefficient):
            lam = np.where(mask, l, 0.0).sum(axis=1)
            if coef.per_length:
                L = mask.sum(axis=1)
                lam = np.where(L > 0, lam / np.maximum(L, 1), 0.0)
            w = coef.fn(lam[:, None], A, *args)
        else:
            w = coef.fn(l, A, *args)
        corr = settings.correction
        if corr is not None:
            cargs = _params(corr.params, settings.correction_params)
            if settings.correction_level == "token":
                w = w * corr.factor(l_rho, *cargs)
            else:
                w = w * corr.factor(np.where(mask, l_rho, 0.0).sum(axis=1), *cargs)[:, None]
    return np.where(mask, np.broadcast_to(w, mask.shape), 0.0)


def token_log_probs(policy: Policy, tokens, contexts, mask):
    """``log pi(y_t | c_t)`` of the sampled tokens (n, T) (0 at padding)."""
    n, T = tokens.shape
    logp = policy.expand_log_probs(T)
    t = np.broadcast_to(np.arange(T), (n, T))
    c, y = np.where(mask, contexts, 0), np.where(mask, tokens, 0)
    return np.where(mask, logp[t, c, y], 0.0)


def scatter_numpy(w, tokens, contexts, mask, probs):
    """numpy reference of the numba scatter-add (same result to rounding)."""
    n, T = w.shape
    time_dependent = probs.ndim == 3
    K = probs.shape[0] if time_dependent else 1
    S, V = probs.shape[-2:]
    t = np.broadcast_to(np.arange(T), (n, T))[mask] if time_dependent else np.zeros(int(mask.sum()), int)
    c, y, ww = contexts[mask], tokens[mask], w[mask]
    acc = np.bincount((t * S + c) * V + y, weights=ww, minlength=K * S * V).reshape(K, S, V)
    tot = np.bincount(t * S + c, weights=ww, minlength=K * S).reshape(K, S)
    p = probs if time_dependent else probs[None]
    g = acc - tot[..., None] * p
    return g if time_dependent else g[0]


def gradient(objective, rollouts: Rollouts, policy: Policy, *, anchor: Policy | None = None, advantages=None,
             backend: str = "auto", **params) -> np.ndarray:
    r"""The batch gradient of an objective with respect to the current policy's logits.

    .. math::
        \hat g = \frac{1}{n} \sum_i \frac{1}{\nu_i} \sum_t w_{i,t}\, \nabla_\theta \log \pi_\theta(y_{i,t} \mid c_{i,t})

    Parameters
    ----------
    objective : str or ObjectiveSpec
        A registered objective (``seq``, ``tok``, ``ppo_clip``, ``cispo``, ``gspo``) or a declaration.
    rollouts : Rollouts
        Sampled from mu (``rollouts.logp_behavior``).
    policy : Policy
        The current policy pi_theta; the gradient has the shape of its logits ((S, V) or (T, S, V)).
    anchor : Policy, optional
        pi_old, the clipping reference; default mu (the sampler's own log-probs).
    advantages : float array (n, T), optional
        Per-token advantages for ``advantage="critic"`` (e.g. the exact ``Q^mu - V^mu`` of the
        sampled tokens); ignored otherwise.
    backend : {"auto", "numpy", "numba"}
        The scatter-add: numba (``"auto"``) or the numpy reference.
    **params
        The objective's parameters (``eps_low``, ``eps_high``, ``dual_clip``) and the shared
        settings: ``aggregation``, ``advantage`` (``"terminal"`` or ``"critic"``), ``baseline``
        (default: the batch mean of the returns, as GRPO; the exact engine's ``J(mu)`` is its
        n -> infinity limit), ``normalize_std`` (divide by the batch std of the returns),
        ``correction`` (``"tis"``, ``"mis"``), ``correction_level`` and the correction's ``c`` /
        ``lo``, ``hi``.

    Returns
    -------
    float64 array shaped like ``policy.logits``, or (R, *logits.shape) for Rollouts of R seeds
        (``tokis.envs.sample(..., seed=[...])``): replication ``r``'s gradient is the call on
        ``rollouts[r]`` (with ``advantages[r]``), bit for bit. The replications run one after the
        other (each is a scatter-add into its own logits-shaped accumulator).

    Notes
    -----
    ``token_mean`` divides the batch's sum by its number of tokens, as the frameworks do; its
    expectation differs from the exact engine's ``E[sum w] / E[L]`` by O(1/n).
    """
    spec = get_objective(objective)
    settings = spec.settings(**params)
    check_backend_name(backend)
    if backend == "cupy":
        raise ValueError("backend='cupy' is not available for sampled gradients: use 'numba' or 'numpy'")
    if not isinstance(rollouts, Rollouts):
        raise TypeError(f"rollouts must be tokis.envs.Rollouts, got {type(rollouts).__name__}")
    if not isinstance(policy, Policy):
        raise TypeError(f"policy must be a tokis.envs.Policy, got {type(policy).__name__}")
    if anchor is not None and not isinstance(anchor, Policy):
        raise TypeError(f"anchor must be a tokis.envs.Policy or None, got {type(anchor).__name__}")
    if rollouts.batch_shape:
        R = rollouts.batch_shape[0]
        if settings.advantage == "critic" and advantages is not None:
            adv = np.asarray(advantages, dtype=np.float64)
            want = (R, rollouts.n, rollouts.horizon)
            if adv.shape != want:
                raise ValueError(f"advantages must have shape {want} for Rollouts of {R} seeds, got {adv.shape}")
        else:
            adv = [advantages] * R
        return np.stack([_gradient(spec, settings, rollouts[r], policy, anchor, adv[r], backend) for r in range(R)])
    return _gradient(spec, settings, rollouts, policy, anchor, advantages, backend)


def _gradient(spec, settings, rollouts, policy, anchor, advantages, backend) -> np.ndarray:
    """:func:`gradient` of one batch (validated arguments)."""
    mask, tokens, contexts = rollouts.mask, rollouts.tokens, rollouts.contexts
    n, T = mask.shape
    lp_theta = token_log_probs(policy, tokens, contexts, mask)
    lp_old = rollouts.logp_behavior if anchor is None else token_log_probs(anchor, tokens, contexts, mask)
    with np.errstate(invalid="ignore"):
        l = np.where(mask, lp_theta - lp_old, 0.0)
        l_rho = np.where(mask, lp_old - rollouts.logp_behavior, 0.0)
    if settings.advantage == "critic":
        if advantages is None:
            raise ValueError("advantage='critic' needs advantages= (n, T) per-token advantages")
        A = np.asarray(advantages, dtype=np.float64)
        if A.shape != (n, T):
            raise ValueError(f"advantages must have shape ({n}, {T}), got {A.shape}")
    else:
        G = rollouts.returns
        b = float(G.mean()) if settings.baseline is None else settings.baseline
        A = (G - b)[:, None]
        if settings.normalize_std:
            sd = float(G.std())
            A = A / sd if sd > 0 else np.zeros_like(A)
    w = coefficients(spec, settings, l, A, l_rho, mask)
    L = mask.sum(axis=1)
    agg = settings.aggregation
    if agg == "seq_mean_token_mean":
        w = w / np.maximum(L, 1)[:, None]
    elif agg == "constant":
        w = w / T
    elif agg == "token_mean":
        w = w / max(float(L.sum()) / n, 1e-300)
    probs = np.exp(policy.expand_log_probs(T)) if policy.logits.ndim == 3 else np.exp(policy.log_probs)
    scatter = scatter_numpy if backend == "numpy" else scatter_gradient
    return scatter(w, tokens, contexts, mask, probs) / n
