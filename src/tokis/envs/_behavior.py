r"""Behaviour-policy models: how the sampling policy mu differs from the target pi in practice.

Each function takes a :class:`~tokis.envs.Policy` (stationary (S, V) or time-dependent
(T, S, V)) and returns a new Policy of the same shape, transforming every row (context, and
step when time-dependent) independently:

* :func:`perturb` -- a random tilt to an exact per-row divergence, ``KL(pi || mu) = eps`` or
  ``chi2(pi || mu) = eps``;
* :func:`temperature` -- ``softmax(logits / tau)``;
* :func:`top_k`, :func:`top_p` -- truncated support (importance weights are undefined where
  ``mu = 0 < pi``, and the bias this causes is exact too);
* :func:`round_logits` -- logits rounded to bfloat16 / float16 (trainer vs sampler numerics).
"""

from __future__ import annotations

import numbers

import numpy as np

from .._core._validate import as_float_array, check_int
from ._policy import Policy, as_policy

__all__ = ["perturb", "temperature", "top_k", "top_p", "round_logits", "round_to_format", "FORMATS"]

#: Floating formats of :func:`round_logits`: name -> (significand bits incl. the implicit one,
#: exponent of the smallest normal number, largest finite value).
FORMATS = {
    "bfloat16": (8, -126, (2.0 - 2.0**-7) * 2.0**127),
    "float16": (11, -14, (2.0 - 2.0**-10) * 2.0**15),
    "float32": (24, -126, (2.0 - 2.0**-23) * 2.0**127),
}
_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "single": "float32"}

#: Relative accuracy to which :func:`perturb` hits its target divergence.
PERTURB_RTOL = 1e-11
# Newton stops once |F| (the divergence gap, in log(1 + chi2) for chi2) is below this
# times max(1, target).
_NEWTON_FTOL = 1e-14


def _check_real(value, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


# --------------------------------------------------------------------------------------------
# perturb
# --------------------------------------------------------------------------------------------


def _cgf(lp: np.ndarray, g: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise ``K(s) = log sum_a exp(lp_a + s g_a)`` and ``K'(s) = E_{mu_s}[g]`` (max-shifted)."""
    x = lp + s[:, None] * g
    m = np.max(x, axis=1)
    w = np.exp(x - m[:, None])
    z = w.sum(axis=1)
    return m + np.log(z), (w * g).sum(axis=1) / z


def _divergence_gap(kind: str, lp, g, m1, log_target, target, s):
    """``F(s)`` (zero at the solution, increasing and convex for s >= 0) and ``F'(s)``."""
    k, dk = _cgf(lp, g, s)
    if kind == "kl":
        return k - s * m1 - target, dk - m1
    k2, dk2 = _cgf(lp, g, -s)
    return k + k2 - log_target, dk - dk2


def _solve_tilt(kind: str, lp, g, m1, sd, target, bound) -> np.ndarray:
    """Smallest ``s >= 0`` with ``F(s) = 0``: bracket by doubling, then safeguarded Newton.

    ``F`` is convex and increasing on ``s >= 0`` with ``F(0) < 0`` and ``F(bound) >= 0``, so
    Newton from the right of the root decreases monotonically to it; the bracket ``[lo, hi]``
    guards against rounding. The start is the small-divergence approximation
    ``KL ~ s^2 Var/2``, ``log(1 + chi2) ~ s^2 Var``, doubled until ``F >= 0`` (at most to ``bound``).
    """
    log_target = np.log1p(target)
    guess = np.sqrt(2.0 * target) if kind == "kl" else np.sqrt(log_target)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        s = np.maximum(guess / sd, 1e-8)
    s = np.where(np.isfinite(s), s, bound)
    lo = np.zeros_like(s)
    hi = np.minimum(s, bound)
    for _ in range(1200):
        f, _df = _divergence_gap(kind, lp, g, m1, log_target, target, hi)
        short = (f < 0) & (hi < bound)
        if not short.any():
            break
        lo = np.where(short, hi, lo)
        hi = np.where(short, np.minimum(2.0 * hi, bound), hi)

    s = hi.copy()
    tol = _NEWTON_FTOL * np.maximum(1.0, target)
    eps = 4.0 * np.finfo(float).eps
    rows = np.arange(s.size)  # rows still iterating
    for _ in range(200):
        if rows.size == 0:
            break
        sr, lo_r, hi_r = s[rows], lo[rows], hi[rows]
        f, df = _divergence_gap(kind, lp[rows], g[rows], m1[rows], log_target[rows], target[rows], sr)
        pos = f >= 0
        hi_r = np.where(pos, sr, hi_r)
        lo_r = np.where(pos, lo_r, sr)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = f / df
        newton = sr - step
        converged = (np.abs(f) <= tol[rows]) | (np.abs(step) <= eps * sr) | (hi_r - lo_r <= eps * hi_r)
        bad = ~((newton > lo_r) & (newton < hi_r))
        s[rows] = np.where(converged, sr, np.where(bad, 0.5 * (lo_r + hi_r), newton))
        lo[rows], hi[rows] = lo_r, hi_r
        rows = rows[~converged]
    f, _df = _divergence_gap(kind, lp, g, m1, log_target, target, s)
    allowed = PERTURB_RTOL * np.maximum(1.0, target)
    if kind == "chi2":
        allowed = allowed / (1.0 + target)  # F is log(1 + chi2) - log(1 + eps)
    missed = ~(np.abs(f) <= allowed)
    if missed.any():  # e.g. chi2 = 1e5: the tilt needed leaves floating range before reaching it
        worst = float(target[missed].max())
        raise ValueError(f"perturb cannot reach {kind} = {worst:g} in {int(missed.sum())} row(s): the tilt it needs is "
                         "beyond floating-point range (mu would be numerically one-hot); use a smaller divergence")
    return s


def _orient(kind: str, lp, g, m1, supp, target):
    """Choose the tilt's sign and an upper bound on the root ``s``.

    With ``g`` of unit range on the support, ``K(s) >= s g_j + lp_j`` for every token ``j``.
    For chi2, ``K(s) + K(-s) >= s (g_max - g_min) + lp_argmax + lp_argmin`` is symmetric in
    ``s``, so ``s <= log(1 + eps) - lp_argmax - lp_argmin``. For KL,
    ``K(s) - s m1 >= s (g_max - m1) + lp_argmax``, so ``s <= (eps - lp_argmax) / (g_max - m1)``,
    and along ``-g`` the same with ``m1 - g_min``; the two slopes add up to 1, so the better
    side has a bound ``<= 2 (eps - lp)``. The side with the smaller bound is used (``-g`` is
    again a standard normal direction): along a side whose slope is tiny (``pi`` nearly
    one-hot on the extreme token) the root exists but is far beyond floating range.
    """
    rows = np.arange(g.shape[0])
    gmax_i = np.argmax(np.where(supp, g, -np.inf), axis=1)
    gmin_i = np.argmin(np.where(supp, g, np.inf), axis=1)
    lp_max, lp_min = lp[rows, gmax_i], lp[rows, gmin_i]
    width = g[rows, gmax_i] - g[rows, gmin_i]
    if kind == "chi2":
        return g, m1, (np.log1p(target) - lp_max - lp_min) / width
    up = g[rows, gmax_i] - m1
    down = m1 - g[rows, gmin_i]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        bound_up = np.where(up > 0, (target - lp_max) / up, np.inf)
        bound_down = np.where(down > 0, (target - lp_min) / down, np.inf)
    flip = bound_down < bound_up
    g = np.where(flip[:, None], -g, g)
    m1 = np.where(flip, -m1, m1)
    return g, m1, np.minimum(bound_up, bound_down)


def perturb(policy, *, kl=None, chi2=None, seed=0) -> Policy:
    r"""A behaviour policy at an exact divergence from ``policy`` in every context.

    In each row (context, and step for a time-dependent policy) a direction
    ``g ~ N(0, I_V)`` is drawn and ``pi`` is exponentially tilted along it,

    .. math:: \mu_s(a) = \pi(a)\, e^{s \tilde g_a} / Z(s), \qquad
              Z(s) = \textstyle\sum_a \pi(a) e^{s \tilde g_a},

    (``g~`` is ``g`` centred under ``pi`` and scaled to unit range on the support), with the
    scalar ``s >= 0`` solved per row so that

    .. math:: \mathrm{KL}(\pi\|\mu_s) = \log Z(s) - s\,E_\pi[\tilde g] = \varepsilon
              \quad\text{or}\quad
              \chi^2(\pi\|\mu_s) = \sum_a \pi^2/\mu_s - 1 = Z(s) Z(-s) - 1 = \varepsilon .

    With ``K(s) = log Z(s)`` (a cumulant generating function: convex, ``K'(0) = E_pi g~``)
    both ``K(s) - s K'(0)`` and ``K(s) + K(-s)`` are 0 at ``s = 0``, convex, increasing for
    ``s >= 0`` and unbounded unless ``g~`` is constant on the support of ``pi``; so the root is
    unique and found by doubling a bracket, then Newton's method from its right end (monotone
    for a convex increasing function), safeguarded by bisection. For KL the tilt may go along
    ``-g~`` instead (the divergence is also increasing in ``-s``; ``-g`` is again a standard
    normal draw): the side with the smaller proven bound on the root is used, which matters
    when ``pi`` is numerically one-hot on the token where ``g~`` is largest (that side's root
    lies beyond floating range). For chi2 the divergence is symmetric in ``s``.

    Parameters
    ----------
    policy : Policy
        The target ``pi``, logits (S, V) or (T, S, V).
    kl, chi2 : float or float array broadcastable to (S,) / (T, S)
        Exactly one: the target divergence (``>= 0``, finite) per row.
    seed : int
        Seed of ``np.random.default_rng``; the directions are
        ``default_rng(seed).standard_normal(policy.logits.shape)``.

    Returns
    -------
    Policy
        ``mu``, same shape, with logits ``log pi + s g~``. Its support equals that of ``pi``
        (tokens with ``pi = 0`` keep ``mu = 0``), so the weights ``pi/mu`` are bounded in every
        row. The divergence equals the target to a relative accuracy of about ``1e-11``
        (absolute for targets below 1; checked).

    Raises
    ------
    ValueError
        If both or neither of ``kl``/``chi2`` is given, a target is negative or not finite, or
        a row with a positive target has a single token of positive probability (no
        distribution with the same support differs from it), or a target is so large that the
        tilt reaching it leaves floating-point range (e.g. ``chi2=1e5``).
    """
    pol = as_policy(policy, "policy")
    if (kl is None) == (chi2 is None):
        raise ValueError("perturb needs exactly one of kl and chi2")
    kind, value = ("kl", kl) if kl is not None else ("chi2", chi2)
    seed = check_int(seed, "seed")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    batch = pol.logits.shape[:-1]
    V = pol.vocab_size
    target = as_float_array(value, kind)
    if np.isnan(target).any() or np.isinf(target).any():
        raise ValueError(f"{kind} must be finite, got {value!r}")
    if (target < 0).any():
        raise ValueError(f"{kind} must be >= 0, got {value!r}")
    try:
        target = np.broadcast_to(target, batch).reshape(-1)
    except ValueError:
        raise ValueError(f"{kind} must be a scalar or broadcastable to {batch}, got shape {target.shape}") from None

    g = np.random.default_rng(seed).standard_normal(pol.logits.shape).reshape(-1, V)
    lp = pol.log_probs.reshape(-1, V)
    supp = np.isfinite(lp)
    gmax = np.where(supp, g, -np.inf).max(axis=1)
    gmin = np.where(supp, g, np.inf).min(axis=1)
    width = gmax - gmin
    active = target > 0
    degenerate = active & ~(width > 0)
    if degenerate.any():
        raise ValueError(
            f"cannot perturb to {kind}>0: {int(degenerate.sum())} row(s) of the policy have a single token "
            "with positive probability (mu keeps pi's support)"
        )
    logits = lp.copy()
    if active.any():
        lpa, ga = lp[active], g[active]
        wa = width[active, None]
        pa = np.exp(lpa)
        centre = (pa * np.where(supp[active], ga, 0.0)).sum(axis=1) / pa.sum(axis=1)
        gt = np.where(supp[active], (ga - centre[:, None]) / wa, 0.0)
        m1 = (pa * gt).sum(axis=1)
        sd = np.sqrt((pa * (gt - m1[:, None]) ** 2).sum(axis=1))
        gt, m1, bound = _orient(kind, lpa, gt, m1, supp[active], target[active])
        s = _solve_tilt(kind, lpa, gt, m1, sd, target[active], bound)
        logits[active] = lpa + s[:, None] * gt
    return Policy(logits.reshape(pol.logits.shape))


# --------------------------------------------------------------------------------------------
# temperature, truncation
# --------------------------------------------------------------------------------------------


def temperature(policy, tau) -> Policy:
    r"""``mu = softmax(logits / tau)`` per row.

    The returned logits are ``log_softmax(logits) / tau`` (the same distribution, and no
    overflow for small ``tau`` since the largest entry is 0). ``tau -> 0`` tends to the
    uniform distribution over the arg-max tokens (greedy), ``tau -> inf`` to the uniform
    distribution over the support; ``-inf`` logits stay ``-inf``.

    Parameters
    ----------
    policy : Policy
    tau : float
        Temperature, finite and ``> 0``.
    """
    pol = as_policy(policy, "policy")
    tau = _check_real(tau, "tau")
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    with np.errstate(over="ignore"):
        return Policy(pol.log_probs / tau)


def _descending_order(x: np.ndarray) -> np.ndarray:
    """Indices sorting each row by decreasing ``x``; ties keep the lower token index first."""
    return np.argsort(-x, axis=-1, kind="stable")


def top_k(policy, k) -> Policy:
    r"""Keep the ``k`` largest logits of every row; the others get ``-inf`` (probability 0).

    Ties at the boundary are broken towards the lower token index, so exactly
    ``min(k, V)`` tokens are kept (fewer when a row has fewer finite logits). ``k >= V``
    returns the policy unchanged.

    Parameters
    ----------
    policy : Policy
    k : int
        ``>= 1``.
    """
    pol = as_policy(policy, "policy")
    k = check_int(k, "k")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    order = _descending_order(pol.logits)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(pol.vocab_size), axis=-1)
    return Policy(np.where(rank < k, pol.logits, -np.inf))


def top_p(policy, p) -> Policy:
    r"""Nucleus truncation: keep the smallest set of most probable tokens with mass ``>= p``.

    Tokens are ranked by decreasing probability (ties towards the lower index); the token of
    rank ``i`` is kept iff the mass of the tokens ranked before it is ``< p``. The kept mass is
    therefore ``>= p`` (up to rounding), the top token is always kept, and ``p = 1`` keeps the
    whole support. The other tokens get ``-inf`` logits; the kept ones keep their logits (so
    the kept probabilities are renormalised).

    Parameters
    ----------
    policy : Policy
    p : float
        ``0 < p <= 1``.
    """
    pol = as_policy(policy, "policy")
    p = _check_real(p, "p")
    if not 0 < p <= 1:
        raise ValueError(f"p must lie in (0, 1], got {p}")
    if p == 1.0:
        return Policy(pol.logits)
    probs = pol.probs
    order = _descending_order(probs)
    sorted_p = np.take_along_axis(probs, order, axis=-1)
    before = np.cumsum(sorted_p, axis=-1) - sorted_p
    before[..., 0] = 0.0
    keep_sorted = before < p
    keep = np.empty_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)
    return Policy(np.where(keep, pol.logits, -np.inf))


# --------------------------------------------------------------------------------------------
# rounding
# --------------------------------------------------------------------------------------------


def _format(dtype) -> str:
    if isinstance(dtype, str):
        name = _ALIASES.get(dtype.lower(), dtype.lower())
        if name in FORMATS:
            return name
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = None
        if name in ("float16", "float32"):
            return name
    raise ValueError(f"dtype must be one of {sorted(FORMATS)} (or {sorted(_ALIASES)}), got {dtype!r}")


def round_to_format(x, dtype="bfloat16") -> np.ndarray:
    r"""Round float64 values to the nearest value of a binary floating format (ties to even).

    For finite ``x = m 2^e`` (``frexp``: ``1/2 <= |m| < 1``) and a format with ``p``
    significand bits and smallest normal ``2^{e_min}``, the spacing of representable values
    near ``x`` is ``2^q`` with ``q = max(e, e_min + 1) - p`` (subnormals included), and

    .. math:: \mathrm{round}(x) = \mathrm{rint}(x\,2^{-q})\,2^{q}

    (``rint`` rounds half to even; scaling by powers of two is exact). This is a single
    correct rounding from float64, so it equals numpy's ``astype(float16/float32)`` and, for
    inputs representable in float32, the usual bfloat16 bit trick on float32 (add ``0x7FFF``
    plus the lowest kept bit, clear the low 16 bits). Non-finite entries are returned as is.

    Parameters
    ----------
    x : float array
    dtype : {"bfloat16", "float16", "float32"} (aliases "bf16", "fp16", "fp32")

    Returns
    -------
    float64 array, same shape
        The rounded values; ``+-inf`` where a finite value overflows the format.
    """
    sig, emin, _vmax = FORMATS[_format(dtype)]
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    xf = np.where(finite, x, 0.0)
    _, e = np.frexp(xf)
    q = np.maximum(e, emin + 1) - sig
    r = np.ldexp(np.rint(np.ldexp(xf, -q)), q)
    r = np.where(np.abs(r) > _vmax, np.copysign(np.inf, xf), r)
    return np.where(finite, r, x)


def round_logits(policy, dtype="bfloat16") -> Policy:
    r"""Round the policy's logits (as stored in ``policy.logits``) to a lower-precision format.

    Models a sampler that computes logits in bf16/fp16 while the trainer uses float64
    (then softmax in full precision): ``mu = softmax(round(logits))``. See
    :func:`round_to_format`; ``-inf`` logits stay ``-inf`` and rounding is idempotent.

    Parameters
    ----------
    policy : Policy
    dtype : {"bfloat16", "float16", "float32"} (aliases "bf16", "fp16", "fp32")

    Raises
    ------
    ValueError
        On an unknown ``dtype``, or a finite logit beyond the format's range (it would
        become infinite).
    """
    pol = as_policy(policy, "policy")
    name = _format(dtype)
    r = round_to_format(pol.logits, name)
    overflow = np.isinf(r) & np.isfinite(pol.logits)
    if overflow.any():
        raise ValueError(
            f"logits exceed the range of dtype={name!r} (largest finite value {FORMATS[name][2]:.6g}); "
            "shift the logits first"
        )
    return Policy(r)
