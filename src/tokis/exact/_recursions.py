r"""Forward moment recursions over (step, context) for estimators' per-sample statistics.

Every engine walks the steps ``t = 0..T-1`` once and carries, for each context ``c``, a few
joint moments of running accumulators *restricted to sequences still running in c*, e.g.
``E_mu[A^i R^j 1{c_t = c, running}]``. One step maps these moments linearly onto the flows
``(c, a)`` (weight ``mu_t(a|c)``), then either routes them to ``nxt(c, a)`` or, when the
sequence terminates (``a = eos`` or ``t = T - 1``), collects the statistic's first and second
moment. The terminal reward ``Z`` enters only at termination, through its conditional moments
given the final context: ``E[Z | c_f] = m(c_f)`` and ``E[Z^2 | c_f] = m2(c_f)`` with
``m2 = m`` under Bernoulli noise and ``m2 = m^2`` otherwise. ``R`` is the running sum of step
rewards, so ``G = R + Z``. Each step costs O(S*V) times a small constant.

Engines
-------
additive
    ``f = kappa(L) (a0 + A) G`` with ``A = sum_t x_t(c_t, a_t)``; carries ``E[A^i R^j 1{c}]``,
    ``i, j <= 2`` (tok, tok_sum, tok_mean, clip_tok, mask_tok).
multiplicative
    ``f = H G`` with ``H = prod_t h_t(c_t, a_t)``, ``h > 0`` given as ``log h``; carries
    ``E[H R^j 1{c}]`` (``j <= 1``) and ``E[H^2 R^j 1{c}]`` (``j <= 2``) with a common log scale
    per power of H (max-shifting), so thousands of steps stay finite. Several batches, each
    collecting only sequences of one final length, run such products at once
    (geo: ``h = r^{1/L}``).
pdis
    ``f = sum_t X_t u_t(c_t, a_t) + X_L (alpha_L Z + beta_L)`` with ``X_t = W_{<=t}``: carries
    ``E[X], E[F]`` and ``E[X^2], E[X F], E[F^2]`` (``F`` the running sum) with log scales.
    Time-dependent ``u``, ``alpha``, ``beta`` give pdis and the wpdis influence function.
wpdis_stats
    The per-step ratio quantities of wpdis: ``b_t = E[W_{<=t}]``, ``theta_t`` and
    ``E[W_{<=t}^2 (rew_t - theta_t)]`` (ended sequences keep ``W``, reward 0).

Implementations
---------------
The public engines (:func:`additive`, :func:`multiplicative`, :func:`pdis`,
:func:`wpdis_stats`) run the numba kernels of :mod:`._moment_kernels`. Each has a plain-numpy
twin (``_additive_numpy``, ``_multiplicative_numpy``, ``_pdis_numpy``,
``_wpdis_stats_numpy``) with the same signature, kept as the readable reference; the tests
check that the two agree. Per-step arrays may be given as ``(T, S, V)``, as a broadcast view
of one ``(S, V)`` slice, as ``(1, S, V)`` or as ``(S, V)``; stationary ones are never expanded
to ``(T, S, V)`` (:func:`steps`).

All functions here are kernels: they trust their inputs (see ``_moments`` for validation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from ..envs._mdp import TokenMDP
from ..envs._policy import Policy
from . import _moment_kernels as _k
from ._dp import _eos_index, _steps

__all__ = [
    "MultResult",
    "Pair",
    "additive",
    "log_add",
    "multiplicative",
    "pdis",
    "prepare",
    "steps",
    "to_float",
    "wpdis_stats",
]

#: Below this many flows per step (S * V) the kernels run on one thread.
PARALLEL_MIN_FLOWS = 1 << 15


@dataclass(frozen=True)
class Pair:
    """Per-step arrays of one (mdp, target, behaviour) triple, shapes (T, S, V) unless noted.

    ``log_r`` is ``log pi - log mu`` where ``mu > 0`` (``-inf`` where ``pi = 0``) and 0 where
    ``mu = 0`` (those tokens are never sampled; their weight ``mu`` is zero). ``m_next`` and
    ``m2_next`` (S, V) are the terminal reward's first and second moment at ``nxt(c, a)``.
    Arrays of a stationary policy are read-only broadcast views of one (S, V) slice
    (:func:`steps` recovers it). ``graph`` is :func:`._moment_kernels.incoming` of the MDP:
    the continuing flows sorted by next context.
    """

    mdp: TokenMDP
    mu: np.ndarray
    log_mu: np.ndarray
    pi: np.ndarray
    log_r: np.ndarray
    m_next: np.ndarray
    m2_next: np.ndarray
    graph: tuple = field(repr=False, default=())

    @property
    def T(self) -> int:
        return self.mdp.horizon

    @property
    def S(self) -> int:
        return self.mdp.num_contexts

    @property
    def V(self) -> int:
        return self.mdp.vocab_size

    def terminating(self, t: int) -> np.ndarray:
        """(V,) bool: tokens after which a sequence running at step ``t`` stops."""
        if t == self.T - 1:
            return np.ones(self.V, dtype=bool)
        tm = np.zeros(self.V, dtype=bool)
        if self.mdp.eos is not None:
            tm[self.mdp.eos] = True
        return tm


def steps(arr, horizon: int) -> np.ndarray:
    """Per-step array as C-contiguous float64 ``(Tp, S, V)``, ``Tp = 1`` when it does not vary in t.

    Accepts ``(S, V)``, ``(1, S, V)`` or ``(T, S, V)``; a broadcast view whose leading stride is
    0 (a stationary :class:`Pair` array) collapses to its one slice without copying T slices.
    """
    return _steps(arr, horizon)


def _full(a: np.ndarray, horizon: int) -> np.ndarray:
    """``(Tp, S, V)`` as ``(T, S, V)``: ``a`` itself or a read-only broadcast view."""
    return a if a.shape[0] == horizon else np.broadcast_to(a, (horizon,) + a.shape[1:])


def prepare(mdp: TokenMDP, target: Policy, behavior: Policy) -> Pair:
    """Build the per-step arrays used by every engine (stationary ones as broadcast views)."""
    T = mdp.horizon
    log_mu = _steps(behavior.expand_log_probs(T), T)
    log_pi = _steps(target.expand_log_probs(T), T)
    mu = np.exp(log_mu)
    support = mu > 0
    with np.errstate(invalid="ignore"):
        log_r = np.where(support, log_pi - log_mu, 0.0)
    m = mdp.terminal_reward
    m2 = m if mdp.reward_noise == "bernoulli" else m * m
    nxt = mdp.next_context
    return Pair(
        mdp=mdp,
        mu=_full(mu, T),
        log_mu=_full(log_mu, T),
        pi=_full(np.exp(log_pi), T),
        log_r=_full(log_r, T),
        m_next=np.ascontiguousarray(m[nxt], dtype=np.float64),
        m2_next=np.ascontiguousarray(m2[nxt], dtype=np.float64),
        graph=_k.incoming(np.ascontiguousarray(nxt, dtype=np.int64), _eos_index(mdp)),
    )


def _chunks(pair: Pair, nch: int | None) -> int:
    """Number of context chunks a kernel splits each step into (1: single-threaded)."""
    if nch is not None:
        return max(1, min(int(nch), pair.S))
    threads = numba.get_num_threads()
    if pair.S * pair.V < PARALLEL_MIN_FLOWS or threads < 2:
        return 1
    return min(pair.S, threads)


def _ro(a, dtype=np.float64) -> np.ndarray:
    """C-contiguous read-only view (no copy when already contiguous ``dtype``).

    Every array reaches the kernels read-only, so each kernel compiles one signature instead
    of one per mix of writable and read-only (policy, broadcast) inputs.
    """
    v = np.ascontiguousarray(a, dtype=dtype).view()
    v.setflags(write=False)
    return v


def _kernel_steps(arr, horizon: int) -> np.ndarray:
    return _ro(steps(arr, horizon))


def _common(pair: Pair):
    """Kernel arguments shared by every engine: start, the pull graph, eos."""
    indptr, src, tok = pair.graph
    return (_ro(pair.mdp.start), _ro(indptr, np.int64), _ro(src, np.int32), _ro(tok, np.int32),
            _eos_index(pair.mdp))


def _rewards(pair: Pair) -> np.ndarray:
    return _ro(pair.mdp.step_reward)


# --------------------------------------------------------------------------- log-scale helpers


def _safe_max(a: np.ndarray, axis) -> np.ndarray:
    """Max over ``axis`` with non-finite results (empty or all ``-inf``) replaced by 0."""
    mx = np.max(a, axis=axis) if a.size else np.zeros(np.delete(a.shape, axis))
    return np.where(np.isfinite(mx), mx, 0.0)


def log_add(val: np.ndarray, scale: np.ndarray, add: np.ndarray, add_scale: np.ndarray):
    """Return ``(v, s)`` with ``v e^s = val e^scale + add e^add_scale`` (scales broadcast on the last axis).

    ``scale`` may be ``-inf`` (an empty accumulator). ``val``/``add`` have shape ``scale.shape + (K,)``.
    """
    new = np.maximum(scale, add_scale)
    safe = np.where(np.isfinite(new), new, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        fa = np.where(np.isfinite(scale), np.exp(scale - safe), 0.0)
        fb = np.where(np.isfinite(add_scale), np.exp(add_scale - safe), 0.0)
    return val * fa[..., None] + add * fb[..., None], new


def to_float(val, scale):
    """``val * exp(scale)`` as floats (``inf`` only where not representable)."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.where(val == 0, 0.0, val * np.exp(np.where(np.isfinite(scale), scale, -np.inf)))
    return out


def _renormalise(arrays: list[np.ndarray], scale: np.ndarray) -> np.ndarray:
    """Divide ``arrays`` (each (B, S)) by their common max-abs per batch; return the new scale."""
    mx = np.max(np.stack([np.abs(a) for a in arrays]), axis=(0, 2))
    ok = (mx > 0) & np.isfinite(mx)
    div = np.where(ok, mx, 1.0)
    for a in arrays:
        a /= div[:, None]
    return scale + np.where(ok, np.log(div), 0.0)


def _route(flow: np.ndarray, nxt_idx: np.ndarray, keep: np.ndarray, S: int) -> np.ndarray:
    """Sum flows (B, S, V) over the continuing tokens ``keep`` into their next context -> (B, S)."""
    B = flow.shape[0]
    sub = flow[:, :, keep].reshape(B, -1)
    idx = nxt_idx[:, keep].ravel()
    offs = (np.arange(B)[:, None] * S + idx[None, :]).ravel()
    return np.bincount(offs, weights=sub.ravel(), minlength=B * S).reshape(B, S)


# --------------------------------------------------------------------------- additive engine


def additive(pair: Pair, x, a0: float, per_length: bool = False, *, nch: int | None = None) -> tuple[float, float]:
    r"""First and second moment of ``f = kappa(L) (a0 + A) G`` under mu.

    Parameters
    ----------
    pair : Pair
    x : float array, shape (T, S, V), (1, S, V) or (S, V)
        Per-token increment ``x_t(c, a)`` of ``A = sum_t x_t(c_t, a_t)`` (ignored where mu = 0).
    a0 : float
        Offset (1 for tok, clip_tok, mask_tok; 0 for tok_sum, tok_mean).
    per_length : bool
        ``kappa(L) = 1 / L`` (tok_mean) instead of 1.
    nch : int, optional
        Context chunks per step (threads); default from ``numba.get_num_threads()``. The
        result does not depend on it.

    Returns
    -------
    (E[f], E[f^2]) : floats

    Notes
    -----
    Carries ``M_ij(c) = E[A^i R^j 1{c_t = c, running}]`` for ``i, j <= 2`` (``j = 0`` only
    without step rewards). A step maps ``M`` to
    ``N_ij(c, a) = mu_t(a|c) sum C(i,i') C(j,j') M_i'j'(c) x^{i-i'} rho^{j-j'}``; at
    termination ``E[(a0 + A) G] = a0 N_01 + N_11 + m (a0 N_00 + N_10)`` and
    ``E[(a0 + A)^2 G^2] = P_2 + 2 m P_1 + m2 P_0`` with ``P_j = a0^2 N_0j + 2 a0 N_1j + N_2j``.
    Numba kernel: :func:`._moment_kernels.additive_kernel`; numpy twin: :func:`_additive_numpy`.
    """
    T = pair.T
    mean, second = _k.additive_kernel(
        *_common(pair), _kernel_steps(pair.mu, T), _kernel_steps(x, T), _rewards(pair),
        bool(pair.mdp.has_step_reward), _ro(pair.m_next), _ro(pair.m2_next), float(a0), bool(per_length), int(T),
        _chunks(pair, nch),
    )
    return float(mean), float(second)


def _additive_numpy(pair: Pair, x, a0: float, per_length: bool = False) -> tuple[float, float]:
    """numpy twin of :func:`additive` (the reference)."""
    T, S = pair.T, pair.S
    x = steps(x, T)
    nxt = pair.mdp.next_context
    rho = pair.mdp.step_reward
    rp = (None, rho, rho * rho)
    M = np.zeros((3, 3, S))
    M[0, 0] = pair.mdp.start
    mean = 0.0
    second = 0.0
    for t in range(T):
        w = pair.mu[t]
        xt = np.where(w > 0, x[t if x.shape[0] > 1 else 0], 0.0)
        xp = (None, xt, xt * xt)
        # stage 1: A -> A + x
        U = [[None] * 3 for _ in range(3)]
        for j in range(3):
            m0, m1, m2 = M[0, j][:, None], M[1, j][:, None], M[2, j][:, None]
            U[0][j] = np.broadcast_to(m0, w.shape)
            U[1][j] = m1 + m0 * xt
            U[2][j] = m2 + 2.0 * m1 * xt + m0 * xp[2]
        # stage 2: R -> R + rho, times the flow weight
        N = np.empty((3, 3) + w.shape)
        for i in range(3):
            N[i, 0] = U[i][0] * w
            N[i, 1] = (U[i][1] + U[i][0] * rp[1]) * w
            N[i, 2] = (U[i][2] + 2.0 * U[i][1] * rp[1] + U[i][0] * rp[2]) * w
        tm = pair.terminating(t)
        if tm.any():
            kappa = 1.0 / (t + 1) if per_length else 1.0
            mn, mn2 = pair.m_next[:, tm], pair.m2_next[:, tm]
            Nt = N[:, :, :, tm]
            f1 = a0 * Nt[0, 1] + Nt[1, 1] + mn * (a0 * Nt[0, 0] + Nt[1, 0])
            P = [a0 * a0 * Nt[0, j] + 2.0 * a0 * Nt[1, j] + Nt[2, j] for j in range(3)]
            f2 = P[2] + 2.0 * mn * P[1] + mn2 * P[0]
            mean += kappa * float(f1.sum())
            second += kappa * kappa * float(f2.sum())
        if t < T - 1:
            keep = ~tm
            M = _route(N.reshape(9, S, -1), nxt, keep, S).reshape(3, 3, S)
    return mean, second


# --------------------------------------------------------------------------- multiplicative engine


@dataclass(frozen=True)
class MultResult:
    """Collected moments of ``H`` and ``G`` per batch, in log scale.

    ``first`` (B, 2): ``E[H], E[H G']``, times ``exp(scale1)`` (B,);
    ``second`` (B, 3): ``E[H^2], E[H^2 G'], E[H^2 G'^2]``, times ``exp(scale2)`` (B,),
    where ``G' = G - shift``.
    """

    first: np.ndarray
    scale1: np.ndarray
    second: np.ndarray
    scale2: np.ndarray


def _batches(pair: Pair, lengths, root: bool):
    """(lengths (B,), collect_all, divisors (B,)) of a multiplicative call."""
    if lengths is None:
        lengths = np.array([pair.T])
        collect_all = True
    else:
        lengths = np.asarray(lengths)
        collect_all = False
    div = lengths.astype(np.float64) if root else np.ones(len(lengths))
    return lengths, collect_all, div


def multiplicative(
    pair: Pair, log_h, lengths=None, shift: float = 0.0, root: bool = False, *, nch: int | None = None
) -> MultResult:
    r"""Moments of ``H G'`` with ``H = prod_t h_t(c_t, a_t)`` and ``G' = G - shift``.

    Parameters
    ----------
    pair : Pair
    log_h : float array, shape (T, S, V), (1, S, V) or (S, V)
        ``log h_t`` (``-inf`` allowed: h = 0).
    lengths : int array (B,), sorted ascending, optional
        Batch ``b`` collects only sequences that terminate with exactly ``lengths[b]`` tokens
        and stops after step ``lengths[b] - 1``. ``None``: one batch collecting all.
    shift : float
        ``G' = G - shift`` (enters only at termination, through the terminal reward).
    root : bool
        Batch ``b`` uses ``log h_t / lengths[b]`` (``h^{1/L}``, geo) instead of ``log h_t``.
    nch : int, optional
        Context chunks per step (threads); the result does not depend on it.

    Returns
    -------
    MultResult

    Notes
    -----
    Carries ``E[H R^j 1{c}]`` (``j = 0, 1``) scaled by ``exp(s1)`` and ``E[H^2 R^j 1{c}]``
    (``j = 0, 1, 2``) scaled by ``exp(s2)``; the per-step kernels ``mu h^k`` are evaluated as
    ``exp(log mu + k log h - shift_k)`` and every step renormalises by the max-abs moment.
    A batch of length ``L`` costs ``L`` steps, so geo with eos (``lengths = 1..T``) costs
    ``T (T + 1) / 2`` steps. Numba kernel: :func:`._moment_kernels.multiplicative_kernel` (one
    batch at a time); numpy twin: :func:`_multiplicative_numpy` (all batches at once).
    """
    T = pair.T
    lengths, collect_all, div = _batches(pair, lengths, root)
    B = len(lengths)
    common = _common(pair)
    log_mu = _kernel_steps(pair.log_mu, T)
    lh = _kernel_steps(log_h, T)
    rho = _rewards(pair)
    mp = _ro(pair.m_next - shift)
    mp2 = _ro(pair.m2_next - 2.0 * shift * pair.m_next + shift * shift)
    nch = _chunks(pair, nch)
    first, second = np.zeros((B, 2)), np.zeros((B, 3))
    scale1, scale2 = np.full(B, -np.inf), np.full(B, -np.inf)
    for b in range(B):
        nsteps = T if collect_all else int(min(lengths[b], T))
        if nsteps < 1:
            continue
        first[b], scale1[b], second[b], scale2[b] = _k.multiplicative_kernel(
            *common, log_mu, lh, float(div[b]), rho, bool(pair.mdp.has_step_reward), mp, mp2, nsteps,
            bool(collect_all), int(T), nch,
        )
    return MultResult(first=first, scale1=scale1, second=second, scale2=scale2)


def _multiplicative_numpy(pair: Pair, log_h, lengths=None, shift: float = 0.0, root: bool = False) -> MultResult:
    """numpy twin of :func:`multiplicative` (the reference; every batch advances together)."""
    T, S = pair.T, pair.S
    nxt = pair.mdp.next_context
    rho = pair.mdp.step_reward
    log_h = steps(log_h, T)
    lengths, collect_all, div = _batches(pair, lengths, root)
    B = len(lengths)
    E1 = [np.zeros((B, S)) for _ in range(2)]
    E2 = [np.zeros((B, S)) for _ in range(3)]
    E1[0][:] = pair.mdp.start
    E2[0][:] = pair.mdp.start
    s1 = np.zeros(B)
    s2 = np.zeros(B)
    out1 = np.zeros((B, 2))
    out2 = np.zeros((B, 3))
    o1 = np.full(B, -np.inf)
    o2 = np.full(B, -np.inf)
    mp = pair.m_next - shift
    mp2 = pair.m2_next - 2.0 * shift * pair.m_next + shift * shift
    first_active = 0
    for t in range(T):
        if not collect_all:
            while first_active < B and lengths[first_active] <= t:
                first_active += 1
            if first_active >= B:
                break
        act = slice(first_active, B)
        lh = log_h[t if log_h.shape[0] > 1 else 0][None] / div[act][:, None, None]
        lw = pair.log_mu[t][None]
        l1 = lw + lh
        l2 = lw + 2.0 * lh
        sh1 = _safe_max(l1.reshape(l1.shape[0], -1), 1)
        sh2 = _safe_max(l2.reshape(l2.shape[0], -1), 1)
        f1 = np.exp(l1 - sh1[:, None, None])
        f2 = np.exp(l2 - sh2[:, None, None])
        a10, a11 = (e[act][:, :, None] for e in E1)
        a20, a21, a22 = (e[act][:, :, None] for e in E2)
        N10 = a10 * f1
        N11 = (a11 + rho * a10) * f1
        N20 = a20 * f2
        N21 = (a21 + rho * a20) * f2
        N22 = (a22 + 2.0 * rho * a21 + rho * rho * a20) * f2
        sc1 = s1[act] + sh1
        sc2 = s2[act] + sh2
        tm = pair.terminating(t)
        if tm.any():
            if collect_all:
                cb = np.ones(B - first_active, dtype=bool)
            else:
                cb = lengths[act] == t + 1
            if cb.any():
                mn, mn2 = mp[:, tm], mp2[:, tm]
                n10, n11, n20, n21, n22 = (a[cb][:, :, tm] for a in (N10, N11, N20, N21, N22))
                c1 = np.stack([n10, n11 + mn * n10], axis=1).sum(axis=(2, 3))
                c2 = np.stack([n20, n21 + mn * n20, n22 + 2.0 * mn * n21 + mn2 * n20], axis=1).sum(axis=(2, 3))
                idx = np.arange(first_active, B)[cb]
                out1[idx], o1[idx] = log_add(out1[idx], o1[idx], c1, sc1[cb])
                out2[idx], o2[idx] = log_add(out2[idx], o2[idx], c2, sc2[cb])
        if t < T - 1:
            keep = ~tm
            if not keep.any():
                break
            new1 = [_route(a, nxt, keep, S) for a in (N10, N11)]
            new2 = [_route(a, nxt, keep, S) for a in (N20, N21, N22)]
            s1[act] = _renormalise(new1, sc1)
            s2[act] = _renormalise(new2, sc2)
            for e, n in zip(E1, new1):
                e[act] = n
            for e, n in zip(E2, new2):
                e[act] = n
    return MultResult(first=out1, scale1=o1, second=out2, scale2=o2)


# --------------------------------------------------------------------------- per-decision engine


def _pdis_u(pair: Pair, u, u_shift, u_div):
    T = pair.T
    u = steps(u, T)
    u_shift = np.zeros(T) if u_shift is None else np.ascontiguousarray(u_shift, dtype=np.float64)
    u_div = np.ones(T) if u_div is None else np.ascontiguousarray(u_div, dtype=np.float64)
    return u, u_shift, u_div


def pdis(pair: Pair, u, alpha, beta, u_shift=None, u_div=None, *, nch: int | None = None):
    r"""First and second moment of ``f = sum_t X_t u_t(c_t, a_t) + X_{L-1} (alpha_{L-1} Z + beta_{L-1})``.

    ``X_t = W_{<=t} = prod_{s<=t} r_s`` and ``L`` is the length (the last real step is ``L-1``).

    Parameters
    ----------
    pair : Pair
    u : float array, shape (T, S, V), (1, S, V) or (S, V)
        Per-step reward paid with weight ``X_t`` (``rho`` for pdis), before the affine map below.
    alpha, beta : float arrays, shape (T,)
        Terminal coefficients by termination step (pdis: 1 and 0).
    u_shift, u_div : float arrays, shape (T,), optional
        The reward actually paid is ``u_t = (u[t] - u_shift[t]) / u_div[t]`` (default 0 and 1);
        wpdis uses ``(rho - theta_t) / b_t`` without a (T, S, V) array.
    nch : int, optional
        Context chunks per step (threads); the result does not depend on it.

    Returns
    -------
    ((v1, s1), (v2, s2)) : ``E[f] = v1 e^{s1}``, ``E[f^2] = v2 e^{s2}`` (floats)

    Notes
    -----
    With ``F`` the running sum, a step maps ``X -> X r``, ``F -> F + X r u``, hence
    ``E[X'] = mu r X``, ``E[F'] = mu F + mu r u X``, ``E[X'^2] = mu r^2 X^2``,
    ``E[X'F'] = mu r XF + mu r^2 u X^2``, ``E[F'^2] = mu F^2 + 2 mu r u XF + mu r^2 u^2 X^2``.
    Order-1 moments share one log scale and order-2 moments another. Numba kernel:
    :func:`._moment_kernels.pdis_kernel`; numpy twin: :func:`_pdis_numpy`.
    """
    T = pair.T
    u, u_shift, u_div = _pdis_u(pair, u, u_shift, u_div)
    v1, s1, v2, s2 = _k.pdis_kernel(
        *_common(pair), _kernel_steps(pair.mu, T), _kernel_steps(pair.log_mu, T), _kernel_steps(pair.log_r, T),
        _ro(u), _ro(u_shift), _ro(u_div), _ro(alpha), _ro(beta), _ro(pair.m_next), _ro(pair.m2_next), int(T),
        _chunks(pair, nch),
    )
    return (float(v1), float(s1)), (float(v2), float(s2))


def _pdis_numpy(pair: Pair, u, alpha, beta, u_shift=None, u_div=None):
    """numpy twin of :func:`pdis` (the reference)."""
    T, S = pair.T, pair.S
    nxt = pair.mdp.next_context
    u, u_shift, u_div = _pdis_u(pair, u, u_shift, u_div)
    X1 = pair.mdp.start[None].copy()
    F1 = np.zeros((1, S))
    X2 = pair.mdp.start[None].copy()
    XF = np.zeros((1, S))
    F2 = np.zeros((1, S))
    s1 = np.zeros(1)
    s2 = np.zeros(1)
    acc1, o1 = np.zeros((1, 1)), np.full(1, -np.inf)
    acc2, o2 = np.zeros((1, 1)), np.full(1, -np.inf)
    for t in range(T):
        lw, lr = pair.log_mu[t], pair.log_r[t]
        ls = [lw, lw + lr, lw + 2.0 * lr]
        sh1 = float(_safe_max(np.stack(ls[:2]).reshape(1, -1), 1)[0])
        sh2 = float(_safe_max(np.stack(ls).reshape(1, -1), 1)[0])
        g1 = [np.exp(ls[k] - sh1) for k in range(2)]
        g2 = [np.exp(ls[k] - sh2) for k in range(3)]
        ut = np.where(pair.mu[t] > 0, (u[t if u.shape[0] > 1 else 0] - u_shift[t]) / u_div[t], 0.0)
        x1, f1 = X1[0][:, None], F1[0][:, None]
        x2, xf, f2 = X2[0][:, None], XF[0][:, None], F2[0][:, None]
        NX = x1 * g1[1]
        NF = f1 * g1[0] + NX * ut
        NXX = x2 * g2[2]
        NXF = xf * g2[1] + NXX * ut
        NFF = f2 * g2[0] + 2.0 * xf * g2[1] * ut + NXX * ut * ut
        sc1 = s1 + sh1
        sc2 = s2 + sh2
        tm = pair.terminating(t)
        if tm.any():
            m, m2 = pair.m_next[:, tm], pair.m2_next[:, tm]
            al, be = float(alpha[t]), float(beta[t])
            k1 = al * m + be
            k2 = al * al * m2 + 2.0 * al * be * m + be * be
            c1 = (NF[:, tm] + NX[:, tm] * k1).sum()
            c2 = (NFF[:, tm] + 2.0 * NXF[:, tm] * k1 + NXX[:, tm] * k2).sum()
            acc1, o1 = log_add(acc1, o1, np.array([[c1]]), sc1)
            acc2, o2 = log_add(acc2, o2, np.array([[c2]]), sc2)
        if t < T - 1:
            keep = ~tm
            new1 = [_route(a[None], nxt, keep, S) for a in (NX, NF)]
            new2 = [_route(a[None], nxt, keep, S) for a in (NXX, NXF, NFF)]
            s1 = _renormalise(new1, sc1)
            s2 = _renormalise(new2, sc2)
            X1, F1 = new1
            X2, XF, F2 = new2
    return (float(acc1[0, 0]), float(o1[0])), (float(acc2[0, 0]), float(o2[0]))


def _wpdis_undefined(t: int) -> ValueError:
    return ValueError(
        f"wpdis is undefined: E_mu[W_<=t] = 0 at step t={t} (the target puts no mass on the "
        "behaviour's support)"
    )


def wpdis_stats(pair: Pair, *, nch: int | None = None):
    r"""Per-step quantities of the weighted per-decision estimator.

    With ``X_t = W_{<=t}`` (an ended sequence keeps its full ``W`` and has reward 0 after its end),
    ``rew_t`` the step reward plus the mean terminal reward at the last real step:

    - ``b_t = E_mu[X_t]``,
    - ``theta_t = E_mu[X_t rew_t] / b_t``,
    - ``c_t = E_mu[X_t^2 (rew_t - theta_t)]`` as ``(value, log scale)``.

    Returns
    -------
    b, theta : float arrays (T,)
    c_val, c_scale : float arrays (T,) with ``c_t = c_val e^{c_scale}``

    Raises
    ------
    ValueError
        If some ``b_t = 0`` (wpdis undefined).

    Notes
    -----
    Numba kernel: :func:`._moment_kernels.wpdis_kernel`; numpy twin: :func:`_wpdis_stats_numpy`.
    """
    T = pair.T
    b, theta, c_val, c_scale, bad = _k.wpdis_kernel(
        *_common(pair), _kernel_steps(pair.log_mu, T), _kernel_steps(pair.log_r, T), _rewards(pair),
        _ro(pair.m_next), int(T), _chunks(pair, nch),
    )
    if bad >= 0:
        raise _wpdis_undefined(int(bad))
    return b, theta, c_val, c_scale


def _wpdis_stats_numpy(pair: Pair):
    """numpy twin of :func:`wpdis_stats` (the reference)."""
    T, S = pair.T, pair.S
    nxt = pair.mdp.next_context
    rho = pair.mdp.step_reward
    X1 = pair.mdp.start.copy()
    X2 = pair.mdp.start[None].copy()
    s2 = np.zeros(1)
    ended1 = 0.0
    ended2, e2s = np.zeros((1, 1)), np.full(1, -np.inf)
    b = np.zeros(T)
    theta = np.zeros(T)
    c_val = np.zeros(T)
    c_scale = np.full(T, -np.inf)
    for t in range(T):
        lw, lr = pair.log_mu[t], pair.log_r[t]
        pi_s = np.exp(lw + lr)  # pi on mu's support, 0 elsewhere
        l2 = lw + 2.0 * lr
        sh2 = float(_safe_max(l2.reshape(1, -1), 1)[0])
        g2 = np.exp(l2 - sh2)
        tm = pair.terminating(t)
        rew = rho + np.where(tm[None, :], pair.m_next, 0.0)
        P1 = X1[:, None] * pi_s
        P2 = X2[0][:, None] * g2
        sc2 = s2 + sh2
        b[t] = P1.sum() + ended1
        if not b[t] > 0:
            raise _wpdis_undefined(t)
        theta[t] = float((P1 * rew).sum()) / b[t]
        run = np.array([[float((P2 * (rew - theta[t])).sum())]])
        v, s = log_add(run, sc2, ended2 * (-theta[t]), e2s)
        c_val[t], c_scale[t] = v[0, 0], s[0]
        ended1 += float(P1[:, tm].sum())
        ended2, e2s = log_add(ended2, e2s, np.array([[float(P2[:, tm].sum())]]), sc2)
        if t < T - 1:
            keep = ~tm
            X1 = _route(P1[None], nxt, keep, S)[0]
            new2 = [_route(P2[None], nxt, keep, S)]
            s2 = _renormalise(new2, sc2)
            X2 = new2[0]
    return b, theta, c_val, c_scale
