r"""The dynamic programs behind exact expected policy gradients (:mod:`._objective`).

Both engines walk the steps of a token MDP under a non-negative *path kernel* ``k_t(a|c)``:
the sampler ``mu`` for token-level coefficients, or ``mu exp(y)`` (``mu exp(2y)``) for a
sequence weight ``W = exp(sum_t y_t)`` (``W^2``), since ``E_mu[W X] = sum_paths prod(mu e^y) X``.
A sequence terminates after eos or at ``t = T - 1``; the return is ``G = R + Z`` (step rewards
``R``, terminal reward ``Z`` with conditional moments ``m``, ``m2`` given the final context), and
``psi_t`` weights a sequence that terminates at step ``t`` (the aggregation: ``1``, ``1/L``, ...).

:func:`backward_coefficients` gives ``omega_t(c, a) = E_k[1{c_t = c, y_t = a} w_t psi(L)]`` for a
coefficient ``w_t = g_t(c, a) * A`` from the forward occupancy ``d`` and past rewards ``rho``
(stored, (T, S)) and the future functionals computed backward: because the past and the future are
independent given ``(c_t, y_t)``,

    E[1{c, a} (R_{<t} + r_t + R_{>t} + Z - b) psi] = k(a|c) [rho_t(c) P_t(c, a) + d_t(c) U_t(c, a)],

with ``P_t(c, a) = E[psi | c, a]`` and ``U_t(c, a) = E[(r_t + R_{>t} + Z - b) psi | c, a]`` (the
conditional sums are over the kernel's continuation weights). A sign-dependent coefficient
(clipping) needs ``E[(A)^+ psi | c, a]`` and ``E[(A)^- psi | c, a]``, which factorise only without
step rewards (``A = Z - b`` is then a function of the final context).

:func:`forward_moments` gives ``E[X F psi]``, ``E[X^2 F^2 psi^2]`` and ``E[X F^2 psi^2]`` for an
additive ``X = sum_t x_t(c_t, y_t)`` and ``F = R + Z - b``, carrying ``E[X^i R^j 1{c_t = c}]``
(``i, j <= 2``): the variance of the gradient along a direction and its trace.

All arrays are float64; kernels ``(Tp, S, V)`` with ``Tp`` 1 (stationary) or T.

:func:`forward_pass`, :func:`backward_tables` and :func:`moments_tables` run the numba kernels of
:mod:`._pg_kernels` on per-step *tables* (the coefficients, the moment increments, with the exact
critic advantage formed inside the kernel); :func:`backward_coefficients` and
:func:`forward_moments` are the plain-numpy programs over per-step callables, kept as the
readable reference (the tests check that the two agree) and for callers with per-step functions.
"""

from __future__ import annotations

import numpy as np

from .._backends._chunks import chunk_count
from . import _pg_kernels as _k
from ._dp import _steps

__all__ = ["Walk", "forward_pass", "backward_coefficients", "forward_moments", "split_payoffs", "sign_probabilities",
           "backward_tables", "moments_tables"]


#: Per-step flows (S * V) from which the step kernels split each step across threads. A step
#: kernel launches one parallel region per step: on idle cores that pays from about 1e5 flows,
#: but a busy machine can delay each launch by a scheduler slice (milliseconds, far more than a
#: step of 4096 x 64 flows), so by default only steps of milliseconds go parallel. The results
#: do not depend on it.
STEP_PARALLEL_MIN = 1 << 21


def _ro(a, dtype=np.float64) -> np.ndarray:
    """C-contiguous read-only view (one compiled signature per kernel, whatever the inputs' flags)."""
    v = np.ascontiguousarray(a, dtype=dtype).view()
    v.setflags(write=False)
    return v


class Walk:
    """The fixed pieces of one MDP walk: next contexts, termination masks, rewards."""

    def __init__(self, mdp):
        self.mdp = mdp
        self.T, self.S, self.V = mdp.horizon, mdp.num_contexts, mdp.vocab_size
        self.nxt = mdp.next_context
        self.flat = mdp.next_context.ravel()
        self.r = np.asarray(mdp.step_reward, dtype=np.float64)
        self.has_r = bool(mdp.has_step_reward)
        cont = np.ones(self.V, dtype=bool)
        if mdp.eos is not None:
            cont[mdp.eos] = False
        self.cont_mid = cont
        m = np.asarray(mdp.terminal_reward, dtype=np.float64)
        self.m = m
        self.m2 = m if mdp.reward_noise == "bernoulli" else m * m
        self.noisy = mdp.reward_noise == "bernoulli"

    @property
    def eos(self) -> int:
        return -1 if self.mdp.eos is None else int(self.mdp.eos)

    @property
    def nxt32(self) -> np.ndarray:
        """``next_context`` as read-only int32 (the step kernels stream it once per step)."""
        n = self.__dict__.get("_nxt32")
        if n is None:
            n = self.__dict__["_nxt32"] = _ro(self.nxt, np.int32)
        return n

    @property
    def graph(self):
        """The pull graph of the continuing flows ``(indptr, src, tok)`` (:func:`._moment_kernels.incoming`)."""
        g = self.__dict__.get("_graph")
        if g is None:
            indptr, src, tok = _k.incoming(_ro(self.nxt, np.int64), self.eos)
            g = self.__dict__["_graph"] = (_ro(indptr, np.int64), _ro(src, np.int32), _ro(tok, np.int32))
        return g

    def chunks(self, nch=None, *, steps: int = 1) -> int:
        """Context chunks of a kernel pass (1: on the calling thread).

        ``steps``: how many steps one parallel region covers (1 for the step kernels, whose
        regions are launched once per step; T for a kernel that runs every step in one region).
        """
        if nch is not None:
            return max(1, min(int(nch), self.S))
        if steps == 1:
            return chunk_count(self.S, self.V, minimum=STEP_PARALLEL_MIN)
        return chunk_count(self.S, steps * self.V)

    def table(self, arr) -> np.ndarray:
        """A per-step array as a read-only ``(Tp, S, V)`` table, ``Tp`` in ``{1, T}``."""
        return _ro(_steps(np.broadcast_to(arr, np.shape(arr)[:-2] + (self.S, self.V)), self.T))

    def cont(self, t: int) -> np.ndarray:
        """(V,) bool: tokens after which a sequence running at step t continues."""
        return np.zeros(self.V, dtype=bool) if t == self.T - 1 else self.cont_mid

    def route(self, flow: np.ndarray, t: int) -> np.ndarray:
        """Sum the continuing flows (S, V) into their next contexts (S,)."""
        w = np.where(self.cont(t)[None, :], flow, 0.0)
        return np.bincount(self.flat, weights=w.ravel(), minlength=self.S)

    @staticmethod
    def at(arr: np.ndarray, t: int) -> np.ndarray:
        return arr[t if arr.shape[0] > 1 else 0]


def forward_pass(walk: Walk, kern, *, second: bool = False, rewards: bool = True, nch: int | None = None):
    """Occupancy ``d`` (T, S), past rewards ``rho`` (T, S) and, with ``second``, ``rho2`` (T, S) under ``kern``.

    numba kernel (:func:`._pg_kernels.forward_kernel`); ``rho`` is 0 without step rewards (or
    with ``rewards=False``: occupancy only), ``rho2`` None without ``second``.
    """
    has_r = walk.has_r and rewards
    indptr, src, tok = walk.graph
    d, rho, rho2 = _k.forward_kernel(_ro(walk.mdp.start), walk.table(kern), _ro(walk.r), has_r,
                                     bool(second and has_r), indptr, src, tok, walk.T, walk.chunks(nch))
    if second:
        rho2 = rho2 if has_r else np.zeros((walk.T, walk.S))
    return d, rho, (rho2 if second else None)


def forward_pass_numpy(walk: Walk, kern, *, second: bool = False):
    """numpy twin of :func:`forward_pass` (the reference)."""
    T, S = walk.T, walk.S
    d = np.zeros((T, S))
    rho = np.zeros((T, S))
    rho2 = np.zeros((T, S)) if second else None
    d[0] = walk.mdp.start
    for t in range(T - 1):
        k = walk.at(kern, t)
        flow = d[t][:, None] * k
        d[t + 1] = walk.route(flow, t)
        if walk.has_r:
            rho[t + 1] = walk.route((rho[t][:, None] + d[t][:, None] * walk.r) * k, t)
            if second:
                rho2[t + 1] = walk.route((rho2[t][:, None] + 2 * rho[t][:, None] * walk.r
                                          + d[t][:, None] * walk.r ** 2) * k, t)
    return d, rho, rho2


def backward_coefficients(walk: Walk, kern, d, rho, psi, coef_at, *, baseline: float, mode: str, out_shape,
                          payoff=None):
    r"""Sum over steps of ``omega_t(c, a) = E_k[1{c_t = c, y_t = a} w_t psi(L)]``.

    Parameters
    ----------
    walk : Walk
    kern : (Tp, S, V)
    d, rho : (T, S)
        From :func:`forward_pass` under the same kernel.
    psi : (T,)
        Weight of a sequence terminating at step t.
    coef_at : callable
        ``coef_at(t) -> (g_plus, g_minus)`` (S, V): the coefficient per unit of positive and of
        negative advantage (equal for a linear coefficient).
    baseline : float
        ``b`` of ``A = G - b``.
    mode : {"linear", "split", "critic"}
        ``linear``: ``w = g A`` with ``A = G - b``; ``split``: ``w = g_plus A^+ - g_minus A^-``
        (requires no step rewards); ``critic``: ``w = g`` (the advantage is already in ``g``).
    out_shape : tuple
        ``(S, V)`` to sum over steps, or ``(T, S, V)`` to keep them.

    payoff : (zp, zm), optional
        Split mode: the terminal payoffs given the final context (default ``E[(Z - b)^+]`` and
        ``E[(b - Z)^+]``; probabilities ``P(Z > b)``, ``P(Z < b)`` count clipped tokens).

    Returns
    -------
    omega : float array of ``out_shape``
    """
    T, S = walk.T, walk.S
    out = np.zeros(out_shape)
    keep_t = len(out_shape) == 3
    Vp = np.zeros(S)   # E[psi | c_{t+1}] summed over continuations
    Vu = np.zeros(S)   # E[(R_{>t} + Z - b) psi | c_{t+1}] (linear) or E[A^+ psi | c_{t+1}] (split)
    Vm = np.zeros(S)   # split: E[A^- psi | c_{t+1}]
    zp, zm = split_payoffs(walk, baseline) if payoff is None else payoff
    split = mode == "split"
    for t in range(T - 1, -1, -1):
        k = walk.at(kern, t)
        cont = walk.cont(t)[None, :]
        nxt = walk.nxt
        P = np.where(cont, Vp[nxt], psi[t])
        gp, gm = coef_at(t)
        if split:
            Up = np.where(cont, Vu[nxt], zp[nxt] * psi[t])
            Um = np.where(cont, Vm[nxt], zm[nxt] * psi[t])
            omega = k * d[t][:, None] * (gp * Up - gm * Um)
            Vm = (k * Um).sum(axis=1)
        elif mode == "critic":
            U = P
            omega = k * d[t][:, None] * gp * P
        else:
            U = np.where(cont, Vu[nxt], (walk.m[nxt] - baseline) * psi[t])
            if walk.has_r:
                U = U + walk.r * P
            omega = k * gp * (rho[t][:, None] * P + d[t][:, None] * U)
        Vu = (k * (Up if split else U)).sum(axis=1)
        Vp = (k * P).sum(axis=1)
        if keep_t:
            out[t] = omega
        else:
            out += omega
    return out


def split_payoffs(walk: Walk, baseline: float, power: int = 1):
    """``(E[((Z - b)^+)^power | c], E[((b - Z)^+)^power | c])`` (S,) given the final context."""
    if walk.noisy:  # Z = 1 with probability m, else 0
        up = walk.m * max(1.0 - baseline, 0.0) ** power + (1.0 - walk.m) * max(-baseline, 0.0) ** power
        dn = walk.m * max(baseline - 1.0, 0.0) ** power + (1.0 - walk.m) * max(baseline, 0.0) ** power
        return up, dn
    return np.maximum(walk.m - baseline, 0.0) ** power, np.maximum(baseline - walk.m, 0.0) ** power


def sign_probabilities(walk: Walk, baseline: float):
    """``(P(Z > b | c), P(Z < b | c))`` (S,) given the final context."""
    if walk.noisy:
        return walk.m * (1.0 > baseline) + (1.0 - walk.m) * (0.0 > baseline), \
            walk.m * (1.0 < baseline) + (1.0 - walk.m) * (0.0 < baseline)
    return (walk.m > baseline).astype(float), (walk.m < baseline).astype(float)


def forward_moments(walk: Walk, kern, x_at, psi, *, baseline: float, unit_return: bool = False, z=None):
    r"""``E[X F psi]``, ``E[X^2 F^2 psi^2]`` and ``E[X F^2 psi^2]`` under ``kern``.

    ``X = sum_t x_t(c_t, y_t)`` with ``x_at(t) -> (S, V)``; ``F = R + Z - b``, or ``F = 1`` with
    ``unit_return``, or (no step rewards) a terminal factor with conditional moments
    ``z = (z1, z2)`` (S,) given the final context.
    """
    T, S = walk.T, walk.S
    J = 1 if (unit_return or z is not None or not walk.has_r) else 3
    M = np.zeros((3, J, S))
    M[0, 0] = walk.mdp.start
    m1 = m2 = t1 = 0.0
    if unit_return:
        z1, z2 = np.ones(S), np.ones(S)
    elif z is not None:
        z1, z2 = z
    else:
        z1 = walk.m - baseline
        z2 = walk.m2 - 2.0 * baseline * walk.m + baseline * baseline
    r = walk.r
    for t in range(T):
        k = walk.at(kern, t)
        x = x_at(t)
        N = np.empty((3, J) + k.shape)
        for j in range(J):
            a0, a1, a2 = (M[i, j][:, None] for i in range(3))
            N[0, j] = a0
            N[1, j] = a1 + a0 * x
            N[2, j] = a2 + 2.0 * a1 * x + a0 * x * x
        if J == 3:  # R -> R + r
            for i in range(3):
                n0, n1, n2 = N[i, 0].copy(), N[i, 1].copy(), N[i, 2].copy()
                N[i, 1] = n1 + n0 * r
                N[i, 2] = n2 + 2.0 * n1 * r + n0 * r * r
        N *= k
        stop = ~walk.cont(t)
        if stop.any():
            c1 = z1[walk.nxt][:, stop]
            c2 = z2[walk.nxt][:, stop]
            Ns = N[:, :, :, stop]
            if J == 3:
                f1 = Ns[1, 1] + Ns[1, 0] * c1
                f2 = Ns[2, 2] + 2.0 * Ns[2, 1] * c1 + Ns[2, 0] * c2
                g1 = Ns[1, 2] + 2.0 * Ns[1, 1] * c1 + Ns[1, 0] * c2
            else:
                f1, f2, g1 = Ns[1, 0] * c1, Ns[2, 0] * c2, Ns[1, 0] * c2
            m1 += psi[t] * float(f1.sum())
            m2 += psi[t] ** 2 * float(f2.sum())
            t1 += psi[t] ** 2 * float(g1.sum())
        if t < T - 1:
            M = np.stack([np.stack([walk.route(N[i, j], t) for j in range(J)]) for i in range(3)])
    return m1, m2, t1


# --------------------------------------------------------------------------- the table engines


_MODES = {"linear": _k.LINEAR, "split": _k.SPLIT, "critic": _k.CRITIC}


def _values(walk: Walk, critic):
    return _ro(np.zeros((1, 1)) if critic is None else critic)


def backward_tables(walk: Walk, kern, d, rho, psi, g_plus, g_minus=None, *, baseline: float, mode: str,
                    keep_t: bool = False, payoff=None, critic=None, power: int = 1, nch: int | None = None):
    r""":func:`backward_coefficients` with coefficient tables (numba, :func:`._pg_kernels.backward_kernel`).

    Parameters
    ----------
    g_plus, g_minus : (Tp, S, V) or (S, V)
        The coefficient per unit of positive and of negative advantage (``g_minus`` defaults to
        ``g_plus``). Mode ``critic`` with ``critic = V`` (T + 1, S), the values of the critic's
        policy: ``w = A^power g_plus`` where ``A = Q_t - V_t > 0`` and ``A^power g_minus``
        elsewhere (``power`` 0: select by the sign only). Mode ``critic`` without ``critic``:
        ``w = g_plus`` (the advantage is already in the table, as in :func:`backward_coefficients`).
    keep_t : bool
        Return every step (T, S, V) instead of the sum over steps (S, V).

    Other parameters as in :func:`backward_coefficients`.
    """
    gp = walk.table(g_plus)
    gm = gp if g_minus is None else walk.table(g_minus)
    crit = mode == "critic"
    if crit and critic is None:  # w = g_plus: select it whatever the sign
        critic, power, gm = np.zeros((walk.T + 1, walk.S)), 0, gp
    zp = zm = walk.m
    if mode == "split":
        zp, zm = split_payoffs(walk, baseline) if payoff is None else payoff
    out = _k.backward_kernel(walk.nxt32, walk.eos, walk.table(kern), _ro(d), _ro(rho), _ro(psi), gp, gm,
                             _MODES[mode], int(power), _ro(walk.r), walk.has_r, _ro(walk.m), float(baseline), _ro(zp),
                             _ro(zm), _values(walk, critic if crit else None), bool(keep_t), walk.T, walk.chunks(nch))
    return out if keep_t else out[0]


def moments_tables(walk: Walk, kern, x_plus, psi, *, baseline: float, x_minus=None, unit_return: bool = False, z=None,
                   critic=None, power: int = 1, x_init: float = 0.0, nch: int | None = None):
    r""":func:`forward_moments` with increment tables (numba, :func:`._pg_kernels.moments_kernel`).

    ``X = x_init + sum_t x_t(c_t, y_t)`` with ``x_t = x_plus[t]``; with ``critic = V`` (T + 1, S)
    ``x_t = A^power x_plus[t]`` where the critic advantage ``A > 0``, ``A^power x_minus[t]``
    elsewhere. ``F`` as in :func:`forward_moments`.
    """
    S = walk.S
    J = 1 if (unit_return or z is not None or not walk.has_r) else 3
    if unit_return:
        z1, z2 = np.ones(S), np.ones(S)
    elif z is not None:
        z1, z2 = z
    else:
        z1 = walk.m - baseline
        z2 = walk.m2 - 2.0 * baseline * walk.m + baseline * baseline
    xp = walk.table(x_plus)
    xm = xp if x_minus is None else walk.table(x_minus)
    crit = critic is not None
    indptr, src, tok = walk.graph
    m1, m2, t1 = _k.moments_kernel(_ro(walk.mdp.start), float(x_init), walk.table(kern), xp, xm, crit, int(power),
                                   _ro(walk.r), J, _ro(z1), _ro(z2), _ro(psi), _values(walk, critic), _ro(walk.m),
                                   walk.eos, walk.nxt32, indptr, src, tok, walk.T, walk.chunks(nch))
    return float(m1), float(m2), float(t1)
