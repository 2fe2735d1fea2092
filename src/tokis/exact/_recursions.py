r"""Forward moment recursions over (step, context) for estimators' per-sample statistics.

Every engine walks the steps ``t = 0..T-1`` once and carries, for each context ``c``, the mass
``P_t(c)`` of the sequences still running in ``c`` and the *conditional* means and central
moments of a few running accumulators given ``c`` (e.g. ``E[A | c]`` and
``E[(A - E[A | c])^i (R - E[R | c])^j | c]``). One step maps them onto the flows ``(c, a)``
(weight ``mu_t(a|c)``), then either pools the flows entering ``nxt(c, a)`` around their pooled
mean (Chan/Pébay pairwise-merge formulas) or, when the sequence terminates (``a = eos`` or
``t = T - 1``), merges the statistic's flow means and variances by the law of total variance.
Variances are therefore never formed as ``E[f^2] - E[f]^2``: they keep their relative accuracy
when ``Var f << E[f]^2`` (e.g. ``T = 10^4`` tokens at per-token chi^2 = 1e-6). Means of additive
accumulators are kept as deviations from a global offset that is re-centred every step, so
their spread is resolved to full precision however large they grow. The terminal reward ``Z``
enters only at termination, through its conditional mean ``m(c_f)`` and variance (``m (1 - m)``
under Bernoulli noise, else 0) given the final context. ``R`` is the running sum of step
rewards, so ``G = R + Z``. Each step costs O(S*V) times a small constant.

Engines
-------
additive
    ``f = kappa(L) (a0 + A) G`` with ``A = sum_t x_t(c_t, a_t)``; carries the conditional means
    of ``A, R`` and central moments ``C_ij`` of ``(A, R)``, ``i, j <= 2`` (tok, tok_sum,
    tok_mean, clip_tok, mask_tok). Returns ``(E[f], Var f)``.
multiplicative
    ``f = H G'`` with ``H = prod_t h_t(c_t, a_t)``, ``h >= 0`` given as ``log h``, ``G' = G - shift``;
    carries the same moments of ``(H, R)``, with log scales (max-shifting) for the mass, for
    ``H``'s mean and for ``H``'s central moments, so thousands of steps stay finite. Several
    batches, each collecting only sequences of one final length, give geo (``h = r^{1/L}``).
    Returns raw moments (``E[H], E[H G'], E[H^2], E[H^2 G'], E[H^2 G'^2]``) and each batch's
    mass, mean and variance (:class:`MultResult`).
pdis
    ``f = sum_t X_t u_t(c_t, a_t) + X_L (alpha_L Z + beta_L)`` with ``X_t = W_{<=t}``: carries
    the conditional means and central moments of ``(X, F)`` (``F`` the running sum) with log
    scales. Time-dependent ``u``, ``alpha``, ``beta`` give pdis and the wpdis influence
    function. Returns ``E[f]``, ``E[f^2]`` and ``Var f`` in log scale (:class:`PdisResult`).
wpdis_stats
    The per-step ratio quantities of wpdis: ``b_t = E[W_{<=t}]``, ``theta_t`` and
    ``E[W_{<=t}^2 (rew_t - theta_t)]`` (ended sequences keep ``W``, reward 0); raw moments
    with log scales.

Implementations
---------------
The engines run the numba kernels of :mod:`._moment_kernels`; the tests check them against
brute-force enumeration of every sequence of small MDPs. Per-step arrays may be given as
``(T, S, V)``, as a broadcast view of one ``(S, V)`` slice, as ``(1, S, V)`` or as ``(S, V)``;
stationary ones are never expanded to ``(T, S, V)`` (:func:`steps`).

All functions here are kernels: they trust their inputs (see ``_moments`` for validation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from ..envs._mdp import TokenMDP
from ..envs._policy import Policy
from .._core._interpret import interpreted, pick
from . import _moment_kernels as _k
from ._dp import _eos_index, _steps

__all__ = [
    "MultResult",
    "Pair",
    "PdisResult",
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


#: Problem size ``T * S * V`` from which the compiled moment kernels run. Compiling one costs
#: 5--15 s on a cold cache (about 0.3 s to load from numba's disk cache afterwards); the
#: interpreted twin (:mod:`tokis._core._interpret`: the same source, run by Python) takes about
#: 13 us per element, so below 2**14 elements a call takes under 0.25 s and never compiles. The
#: main job's largest MDP (T = 64, 9 contexts, 8 tokens) is 4608 elements. Measured on the
#: 2-core machine of this repository's CI; results agree to rounding (tests/exact/test_interpreted.py).
COMPILE_MIN_WORK = 1 << 14


def _kernels(T: int, S: int, V: int):
    """The moment-kernel module for a problem of size ``T * S * V``: compiled or its interpreted twin."""
    return pick(_k, T * S * V, COMPILE_MIN_WORK)


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
        graph=_kernels(mdp.horizon, mdp.num_contexts, mdp.vocab_size).incoming(
            np.ascontiguousarray(nxt, dtype=np.int64), _eos_index(mdp)),
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


# --------------------------------------------------------------------------- additive engine


def _z_var(pair: Pair) -> np.ndarray:
    """(S, V) variance of the terminal reward at ``nxt(c, a)``: ``m (1 - m)`` under Bernoulli noise, else 0."""
    mdp = pair.mdp
    if mdp.reward_noise != "bernoulli":
        return np.zeros((pair.S, pair.V))
    m = mdp.terminal_reward
    return np.ascontiguousarray((m * (1.0 - m))[mdp.next_context], dtype=np.float64)


def additive(pair: Pair, x, a0: float, per_length: bool = False, *, nch: int | None = None) -> tuple[float, float]:
    r"""Mean and variance of ``f = kappa(L) (a0 + A) G`` under mu.

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
        result does not depend on it (bit for bit).

    Returns
    -------
    (E[f], Var f) : floats
        ``Var f = sum_x p(x) (f(x) - fbar)^2`` with ``fbar`` the mean (``>= 0``; never formed as
        ``E[f^2] - E[f]^2``, so it keeps its relative accuracy when ``Var f << E[f]^2``).

    Notes
    -----
    Carries, per context ``c`` and step, the mass ``P(c)`` of the running sequences, the
    conditional means of ``A`` and ``R`` (as deviations from two global offsets, re-centred
    every step so that they stay of the size of their spread) and the conditional central
    moments ``C_ij = E[(A - abar)^i (R - rbar)^j | c]``, ``i, j <= 2`` (only ``C_20`` without
    step rewards). A token shifts the means and leaves the central moments unchanged; the
    flows entering a context are pooled around their pooled mean (pairwise-merge formulas:
    ``C_ij = sum_e p_e sum C(i,k) C(j,l) C_kl,e da_e^(i-k) dr_e^(j-l) / sum_e p_e``). At
    termination, a flow with ``B = a0 + A`` and ``G = R + Z`` has mean ``bbar gbar + C_11``
    and variance ``bbar^2 (C_02 + vz) + gbar^2 C_20 + 2 bbar gbar C_11 + 2 bbar C_12 +
    2 gbar C_21 + C_22 + C_20 vz - C_11^2`` (``vz`` the terminal reward's variance); flows
    are combined by the law of total variance around the step's mean, and steps by Chan's
    pairwise merge. Numba kernel: :func:`._moment_kernels.additive_kernel`.
    """
    T = pair.T
    mean, var = _kernels(pair.T, pair.S, pair.V).additive_kernel(
        *_common(pair), _kernel_steps(pair.mu, T), _kernel_steps(x, T), _rewards(pair),
        bool(pair.mdp.has_step_reward), _ro(pair.m_next), _ro(_z_var(pair)), float(a0), bool(per_length), int(T),
        _chunks(pair, nch),
    )
    return float(mean), float(var)


# --------------------------------------------------------------------------- multiplicative engine


@dataclass(frozen=True)
class MultResult:
    """Collected moments of ``f = H G'`` per batch, in log scale (``G' = G - shift``).

    Raw moments (sums over the batch's sequences, not normalised by its probability):

    - ``first`` (B, 2): ``E[H 1_b], E[H G' 1_b]``, times ``exp(scale1)`` (B,);
    - ``second`` (B, 3): ``E[H^2 1_b], E[H^2 G' 1_b], E[H^2 G'^2 1_b]``, times ``exp(scale2)`` (B,).

    Central moments, merged from conditional central moments (never formed as
    ``E[f^2] - E[f]^2``, so they keep their relative accuracy when ``Var f << E[f]^2``):

    - ``log_mass`` (B,): ``log P(b)`` (``-inf`` when the batch collects nothing);
    - ``mean`` (B,) times ``exp(mean_scale)``: ``E[f | b]``;
    - ``var`` (B,) times ``exp(var_scale)``: ``Var(f | b)`` (``>= 0``).

    :meth:`total` merges the batches.
    """

    first: np.ndarray
    scale1: np.ndarray
    second: np.ndarray
    scale2: np.ndarray
    log_mass: np.ndarray
    mean: np.ndarray
    mean_scale: np.ndarray
    var: np.ndarray
    var_scale: np.ndarray

    def total(self):
        """``((v1, s1), (vv, sv))``: ``E[f] = v1 e^{s1}`` and ``Var f = vv e^{sv}`` over all batches.

        ``f`` is ``H G'`` on every collected sequence (batch ``b``'s own ``H`` on its sequences);
        ``Var f = sum_x p(x) (f(x) - fbar)^2`` with ``fbar`` the mean over the collected
        sequences (law of total variance across batches, Chan's merge in log scale).
        """
        acc = np.array([-np.inf, 0.0, 0.0, 0.0, 0.0])
        for b in range(self.log_mass.shape[0]):
            interpreted(_k)._merge_log(acc, float(self.log_mass[b]), float(self.mean[b]), float(self.mean_scale[b]),
                          float(self.var[b]), float(self.var_scale[b]))
        v1, s1, _, _, vv, sv = interpreted(_k)._merged_moments(acc)
        return (float(v1), float(s1)), (float(vv), float(sv))


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
    r"""Moments of ``f = H G'`` with ``H = prod_t h_t(c_t, a_t)`` and ``G' = G - shift``.

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
        Context chunks per step (threads); the result does not depend on it (bit for bit).

    Returns
    -------
    MultResult

    Notes
    -----
    Carries, per context, the mass ``P`` of the running sequences, the conditional means of
    ``H`` and ``R`` (``R`` as a deviation from a global offset) and the conditional central
    moments ``C_ij`` of ``(H, R)``, ``i, j <= 2`` (only ``C_20`` without step rewards). A token
    multiplies ``H``'s mean by ``h`` and ``C_ij`` by ``h^i``, shifts ``R``'s mean; the flows
    entering a context are pooled around their pooled mean (pairwise merge). At termination a
    flow has mean ``hbar gbar + C_11`` and variance as in :func:`additive` (``B = H``). The mass,
    ``H``'s mean, the ``C_1j`` and the ``C_2j`` carry one log scale each (renormalised every
    step), with ``h = exp(log h - sh)`` shifted by the step's largest exponent, so thousands of
    steps stay finite (``E[H^2]`` far beyond the float range, and a covariance ``C_11`` far below
    ``sqrt(C_20 C_02)`` still resolved). A batch of length ``L`` costs ``L`` steps, so geo with eos
    (``lengths = 1..T``) costs ``T (T + 1) / 2`` steps. Numba kernel:
    :func:`._moment_kernels.multiplicative_kernel` (one batch at a time).
    """
    T = pair.T
    lengths, collect_all, div = _batches(pair, lengths, root)
    B = len(lengths)
    common = _common(pair)
    mu = _kernel_steps(pair.mu, T)
    lh = _kernel_steps(log_h, T)
    rho = _rewards(pair)
    mp = _ro(pair.m_next - shift)
    vz = _ro(_z_var(pair))
    nch = _chunks(pair, nch)
    first, second = np.zeros((B, 2)), np.zeros((B, 3))
    scale1, scale2 = np.full(B, -np.inf), np.full(B, -np.inf)
    central = np.zeros((B, 5))
    central[:, 0] = -np.inf
    for b in range(B):
        nsteps = T if collect_all else int(min(lengths[b], T))
        if nsteps < 1:
            continue
        kern = _kernels(pair.T, pair.S, pair.V).multiplicative_kernel
        first[b], scale1[b], second[b], scale2[b], central[b] = kern(
            *common, mu, lh, float(div[b]), rho, bool(pair.mdp.has_step_reward), mp, vz, nsteps,
            bool(collect_all), int(T), nch,
        )
    return MultResult(
        first=first, scale1=scale1, second=second, scale2=scale2, log_mass=central[:, 0].copy(),
        mean=central[:, 1].copy(), mean_scale=central[:, 2].copy(), var=np.maximum(central[:, 3], 0.0),
        var_scale=central[:, 4].copy(),
    )


# --------------------------------------------------------------------------- per-decision engine


def _pdis_u(pair: Pair, u, u_shift, u_div):
    T = pair.T
    u = steps(u, T)
    u_shift = np.zeros(T) if u_shift is None else np.ascontiguousarray(u_shift, dtype=np.float64)
    u_div = np.ones(T) if u_div is None else np.ascontiguousarray(u_div, dtype=np.float64)
    return u, u_shift, u_div


@dataclass(frozen=True)
class PdisResult:
    """Moments of the per-decision statistic ``f``, each as ``(value, log scale)``.

    ``first``: ``E[f] = v1 e^{s1}``; ``second``: ``E[f^2] = v2 e^{s2}``; ``variance``:
    ``Var f = vv e^{sv}`` (``vv >= 0``), merged from central moments (never formed as
    ``E[f^2] - E[f]^2``, so it keeps its relative accuracy when ``Var f << E[f]^2``).
    Iterating yields ``first, second`` (so ``(v1, s1), (v2, s2) = pdis(...)`` still works).
    """

    first: tuple
    second: tuple
    variance: tuple

    def __iter__(self):
        return iter((self.first, self.second))


def pdis(pair: Pair, u, alpha, beta, u_shift=None, u_div=None, *, nch: int | None = None) -> PdisResult:
    r"""Mean, second moment and variance of ``f = sum_t X_t u_t(c_t, a_t) + X_{L-1} (alpha_{L-1} Z + beta_{L-1})``.

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
        Context chunks per step (threads); the result does not depend on it (bit for bit).

    Returns
    -------
    PdisResult
        ``first = (v1, s1)``, ``second = (v2, s2)``, ``variance = (vv, sv)`` (floats) with
        ``E[f] = v1 e^{s1}``, ``E[f^2] = v2 e^{s2}``, ``Var f = vv e^{sv}``; a scale is ``-inf``
        when nothing terminates with positive probability.

    Notes
    -----
    Carries, per context, the mass ``P`` of the running sequences and the conditional means
    and central moments of ``(X, F)`` (``F`` the running sum): a step maps ``X -> r X``,
    ``F -> F + r u X``, hence means ``(r x, f + r u x)`` and ``Cxx -> r^2 Cxx``,
    ``Cxf -> r Cxf + r^2 u Cxx``, ``Cff -> Cff + 2 r u Cxf + r^2 u^2 Cxx``; the flows entering
    a context are pooled around their pooled mean (pairwise merge). At termination a flow's
    statistic ``F + X K`` (``K = alpha Z + beta`` independent given the final context) has
    variance ``Cff + 2 E[K] Cxf + E[K^2] Cxx + Var(K) x^2``; flows and steps are combined by
    the law of total variance. ``P``, the means and the central moments carry one log scale
    each (renormalised every step), and ``F``'s means are kept as deviations from a global
    offset, so long horizons stay finite and accurate. Numba kernel:
    :func:`._moment_kernels.pdis_kernel`.
    """
    T = pair.T
    u, u_shift, u_div = _pdis_u(pair, u, u_shift, u_div)
    v1, s1, v2, s2, vv, sv = _kernels(pair.T, pair.S, pair.V).pdis_kernel(
        *_common(pair), _kernel_steps(pair.mu, T), _kernel_steps(pair.log_r, T),
        _ro(u), _ro(u_shift), _ro(u_div), _ro(np.broadcast_to(np.asarray(alpha, dtype=np.float64), (T,))),
        _ro(np.broadcast_to(np.asarray(beta, dtype=np.float64), (T,))), _ro(pair.m_next), _ro(_z_var(pair)), int(T),
        _chunks(pair, nch),
    )
    return PdisResult(first=(float(v1), float(s1)), second=(float(v2), float(s2)), variance=(float(vv), float(sv)))


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
    Numba kernel: :func:`._moment_kernels.wpdis_kernel`.
    """
    T = pair.T
    b, theta, c_val, c_scale, bad = _kernels(pair.T, pair.S, pair.V).wpdis_kernel(
        *_common(pair), _kernel_steps(pair.log_mu, T), _kernel_steps(pair.log_r, T), _rewards(pair),
        _ro(pair.m_next), int(T), _chunks(pair, nch),
    )
    if bad >= 0:
        raise _wpdis_undefined(int(bad))
    return b, theta, c_val, c_scale
