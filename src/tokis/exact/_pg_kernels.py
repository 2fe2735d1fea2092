r"""numba kernels of the exact policy-gradient dynamic programs (:mod:`._pg_engines`).

The per-step work of :func:`._pg_engines.forward_pass`, :func:`._pg_engines.backward_coefficients`
and :func:`._pg_engines.forward_moments`, with every per-step quantity given as a table
``(Tp, S, V)`` (``Tp = 1``: stationary, the one slice serves every step; or ``Tp = T``) instead
of a Python callable, and the exact critic advantage

    A_t(c, a) = r(c, a) + (continues ? V_{t+1}(nxt(c, a)) : m(nxt(c, a))) - V_t(c)

computed on the fly from the value table ``V`` (T + 1, S) where a coefficient depends on it. A
coefficient that is positively homogeneous of degree one in the advantage is
``w = A g_plus`` for ``A > 0`` and ``A g_minus`` otherwise, so the critic kernels take the two
tables and a power of the advantage (0: select by its sign only, 1, or 2 for a squared
coefficient).

Parallelism: the forward passes use a *pull* formulation (:func:`incoming` sorts the continuing
flows by their next context, ascending ``(c, a)`` within a target), so each next context sums
its incoming flows in a fixed order; the backward pass is per row (a context reads the next
step's values of its successors). Contexts run in ``nch`` chunks (``numba.prange``); a sum over
contexts is formed from per-context partial sums added serially in context order. The results
are therefore the same, bit for bit, for every ``nch`` and thread count. The step loops are
plain compiled functions; with ``nch > 1`` each step launches one parallel region
(``*_par``), with ``nch = 1`` none is compiled in or entered (a launch per step is cheap on idle
cores but can cost more than the step itself when the cores are busy). Stationary tables are
gathered into pull order once; a time-dependent table is gathered per step by the chunk that
reads it.

``eos = -1`` means no eos token. All kernels trust their inputs.
"""

from __future__ import annotations

import numba
import numpy as np

from .._backends._chunks import bounds
from ._moment_kernels import _gather, incoming  # re-exported: the one pull graph of the forward kernels

__all__ = ["incoming", "forward_kernel", "backward_kernel", "moments_kernel", "tok_split_kernel",
           "LINEAR", "SPLIT", "CRITIC"]

#: Modes of :func:`backward_kernel` (``w = g A`` with ``A = G - b``; ``g_plus A^+ - g_minus A^-``;
#: the exact critic).
LINEAR, SPLIT, CRITIC = 0, 1, 2


@numba.njit(cache=True, inline="always")
def _at(arr, t):  # pragma: no cover - compiled
    return arr[t] if arr.shape[0] > 1 else arr[0]


@numba.njit(cache=True, inline="always")
def _select(A, xp, xm, apow):  # pragma: no cover - compiled
    """``A^apow`` times ``xp`` (``A > 0``) or ``xm`` (otherwise)."""
    g = xp if A > 0.0 else xm
    if apow == 1:
        return A * g
    if apow == 2:
        return A * A * g
    return g


# --------------------------------------------------------------------------- forward pass


@numba.njit(cache=True)
def _fwd_chunk(d, rho, rho2, nd, nrho, nrho2, indptr, src, tok, k, ke, gk, re, has_r, second,
               lo, hi):  # pragma: no cover - compiled
    if gk:
        _gather(k, src, tok, ke, indptr[lo], indptr[hi])
    if not has_r:
        for cp in range(lo, hi):
            s0 = 0.0
            for e in range(indptr[cp], indptr[cp + 1]):
                s0 += d[src[e]] * ke[e]
            nd[cp] = s0
    elif not second:
        for cp in range(lo, hi):
            s0 = 0.0
            s1 = 0.0
            for e in range(indptr[cp], indptr[cp + 1]):
                c = src[e]
                w = ke[e]
                x = d[c]
                s0 += x * w
                s1 += (rho[c] + x * re[e]) * w
            nd[cp] = s0
            nrho[cp] = s1
    else:
        for cp in range(lo, hi):
            s0 = 0.0
            s1 = 0.0
            s2 = 0.0
            for e in range(indptr[cp], indptr[cp + 1]):
                c = src[e]
                w = ke[e]
                x = d[c]
                r = re[e]
                s0 += x * w
                s1 += (rho[c] + x * r) * w
                s2 += (rho2[c] + 2.0 * rho[c] * r + x * (r * r)) * w
            nd[cp] = s0
            nrho[cp] = s1
            nrho2[cp] = s2


@numba.njit(cache=True, parallel=True)
def _fwd_par(d, rho, rho2, nd, nrho, nrho2, indptr, src, tok, k, ke, gk, re, has_r, second,
             nch):  # pragma: no cover - compiled
    S = d.shape[0]
    for ch in numba.prange(nch):
        lo, hi = bounds(ch, nch, S)
        _fwd_chunk(d, rho, rho2, nd, nrho, nrho2, indptr, src, tok, k, ke, gk, re, has_r, second, lo, hi)


@numba.njit(cache=True)
def forward_kernel(start, kern, r, has_r, second, indptr, src, tok, T, nch):  # pragma: no cover - compiled
    r"""Occupancy ``d``, past rewards ``rho`` and (``second``) ``rho2``, each (T, S), under ``kern``.

    ``d_{t+1}(c') = sum_{nxt(c,a) = c', a continues} d_t(c) k_t(c, a)``,
    ``rho_{t+1}(c') = sum (rho_t(c) + d_t(c) r(c, a)) k_t(c, a)``,
    ``rho2_{t+1}(c') = sum (rho2_t(c) + 2 rho_t(c) r + d_t(c) r^2) k_t(c, a)``.
    Without ``has_r`` the reward arrays stay 0; without ``second`` ``rho2`` is (0, S).
    """
    S = kern.shape[1]
    d = np.zeros((T, S))
    rho = np.zeros((T, S))
    rho2 = np.zeros((T if second else 0, S))
    d[0, :] = start
    E = src.shape[0]
    ke = np.empty(E)
    re = np.zeros(E)
    gk = kern.shape[0] > 1
    if not gk:
        _gather(kern[0], src, tok, ke, 0, E)
    if has_r:
        _gather(r, src, tok, re, 0, E)
    dummy = np.zeros(S)
    for t in range(T - 1):
        k = _at(kern, t)
        r2 = rho2[t] if second else dummy
        nr2 = rho2[t + 1] if second else dummy
        if nch > 1:
            _fwd_par(d[t], rho[t], r2, d[t + 1], rho[t + 1], nr2, indptr, src, tok, k, ke, gk, re, has_r, second, nch)
        else:
            _fwd_chunk(d[t], rho[t], r2, d[t + 1], rho[t + 1], nr2, indptr, src, tok, k, ke, gk, re, has_r, second,
                       0, S)
    return d, rho, rho2


# --------------------------------------------------------------------------- backward coefficients


@numba.njit(cache=True)
def _bwd_linear(last, nxt, eos, k, dt, rt, ps, g, r, has_r, m, b, Vp, Vu, nVp, nVu, out, lo, hi):  # pragma: no cover
    V = nxt.shape[1]
    for c in range(lo, hi):
        sp = 0.0
        su = 0.0
        x = dt[c]
        y = rt[c]
        for a in range(V):
            n = nxt[c, a]
            kk = k[c, a]
            if not last and a != eos:
                P = Vp[n]
                U = Vu[n]
            else:
                P = ps
                U = (m[n] - b) * ps
            if has_r:
                U = U + r[c, a] * P
            out[c, a] += kk * g[c, a] * (y * P + x * U)
            su += kk * U
            sp += kk * P
        nVp[c] = sp
        nVu[c] = su


@numba.njit(cache=True)
def _bwd_split(last, nxt, eos, k, dt, ps, gp, gm, zp, zm, Vp, Vu, Vm, nVp, nVu, nVm, out, lo, hi):  # pragma: no cover
    V = nxt.shape[1]
    for c in range(lo, hi):
        sp = 0.0
        su = 0.0
        sm = 0.0
        x = dt[c]
        for a in range(V):
            n = nxt[c, a]
            kk = k[c, a]
            if not last and a != eos:
                P = Vp[n]
                Up = Vu[n]
                Um = Vm[n]
            else:
                P = ps
                Up = zp[n] * ps
                Um = zm[n] * ps
            out[c, a] += kk * x * (gp[c, a] * Up - gm[c, a] * Um)
            su += kk * Up
            sm += kk * Um
            sp += kk * P
        nVp[c] = sp
        nVu[c] = su
        nVm[c] = sm


@numba.njit(cache=True)
def _bwd_critic(last, nxt, eos, k, dt, ps, gp, gm, apow, r, m, vt, vn, Vp, nVp, out, lo, hi):  # pragma: no cover
    V = nxt.shape[1]
    for c in range(lo, hi):
        sp = 0.0
        x = dt[c]
        v = vt[c]
        for a in range(V):
            n = nxt[c, a]
            kk = k[c, a]
            if not last and a != eos:
                P = Vp[n]
                q = vn[n]
            else:
                P = ps
                q = m[n]
            A = r[c, a] + q - v
            out[c, a] += kk * x * _select(A, gp[c, a], gm[c, a], apow) * P
            sp += kk * P
        nVp[c] = sp


@numba.njit(cache=True)
def _bwd_chunk(mode, last, nxt, eos, k, dt, rt, ps, gp, gm, apow, r, has_r, m, b, zp, zm, vt, vn, Vp, Vu, Vm, nVp,
               nVu, nVm, out, lo, hi):  # pragma: no cover - compiled
    if mode == SPLIT:
        _bwd_split(last, nxt, eos, k, dt, ps, gp, gm, zp, zm, Vp, Vu, Vm, nVp, nVu, nVm, out, lo, hi)
    elif mode == CRITIC:
        _bwd_critic(last, nxt, eos, k, dt, ps, gp, gm, apow, r, m, vt, vn, Vp, nVp, out, lo, hi)
    else:
        _bwd_linear(last, nxt, eos, k, dt, rt, ps, gp, r, has_r, m, b, Vp, Vu, nVp, nVu, out, lo, hi)


@numba.njit(cache=True, parallel=True)
def _bwd_par(mode, last, nxt, eos, k, dt, rt, ps, gp, gm, apow, r, has_r, m, b, zp, zm, vt, vn, Vp, Vu, Vm, nVp,
             nVu, nVm, out, nch):  # pragma: no cover - compiled
    S = nxt.shape[0]
    for ch in numba.prange(nch):
        lo, hi = bounds(ch, nch, S)
        _bwd_chunk(mode, last, nxt, eos, k, dt, rt, ps, gp, gm, apow, r, has_r, m, b, zp, zm, vt, vn, Vp, Vu, Vm,
                   nVp, nVu, nVm, out, lo, hi)


@numba.njit(cache=True)
def backward_kernel(nxt, eos, kern, d, rho, psi, gp, gm, mode, apow, r, has_r, m, b, zp, zm, values, keep_t,
                    T, nch):  # pragma: no cover - compiled
    r"""``sum_t omega_t`` (1, S, V), or every ``omega_t`` (T, S, V) with ``keep_t``.

    ``omega_t(c, a) = E_k[1{c_t = c, y_t = a} w_t psi(L)]`` (see :func:`._pg_engines.backward_coefficients`):
    ``mode`` LINEAR (``w = g_plus (G - b)``), SPLIT (``g_plus (Z - b)^+ - g_minus (b - Z)^+`` with
    payoffs ``zp``, ``zm`` (S,) of the final context) or CRITIC (``w = A^apow`` times ``g_plus``
    where ``A > 0``, ``g_minus`` elsewhere, ``A`` the critic advantage of ``values`` (T + 1, S)).
    Row ``c`` of step ``t`` reads the step-``t + 1`` functionals of its successors only.
    """
    S, V = nxt.shape
    out = np.zeros((T if keep_t else 1, S, V))
    Vp = np.zeros(S)
    Vu = np.zeros(S)
    Vm = np.zeros(S)
    nVp = np.zeros(S)
    nVu = np.zeros(S)
    nVm = np.zeros(S)
    crit = mode == CRITIC
    for t in range(T - 1, -1, -1):
        last = t == T - 1
        k = _at(kern, t)
        g1 = _at(gp, t)
        g2 = _at(gm, t)
        o = out[t] if keep_t else out[0]
        vt = values[t] if crit else values[0]
        vn = values[t + 1] if crit else values[0]
        if nch > 1:
            _bwd_par(mode, last, nxt, eos, k, d[t], rho[t], psi[t], g1, g2, apow, r, has_r, m, b, zp, zm, vt, vn,
                     Vp, Vu, Vm, nVp, nVu, nVm, o, nch)
        else:
            _bwd_chunk(mode, last, nxt, eos, k, d[t], rho[t], psi[t], g1, g2, apow, r, has_r, m, b, zp, zm, vt, vn,
                       Vp, Vu, Vm, nVp, nVu, nVm, o, 0, S)
        Vp, nVp = nVp, Vp
        Vu, nVu = nVu, Vu
        Vm, nVm = nVm, Vm
    return out


# --------------------------------------------------------------------------- forward moments
#
# State per context: M[c, i * J + j] = E[X^i R^j 1{c_t = c}] (i, j <= 2; J = 1 without step
# rewards in the return, J = 3 with them).


@numba.njit(cache=True, inline="always")
def _shift1(M, c, x, w):  # pragma: no cover - compiled
    """``k (E[1], E[X'], E[X'^2])`` of a flow, ``X' = X + x``."""
    a0 = M[c, 0]
    a1 = M[c, 1]
    a2 = M[c, 2]
    return a0 * w, (a1 + a0 * x) * w, (a2 + 2.0 * a1 * x + a0 * x * x) * w


@numba.njit(cache=True, inline="always")
def _rshift(n0, n1, n2, r):  # pragma: no cover - compiled
    return n0, n1 + n0 * r, n2 + 2.0 * n1 * r + n0 * r * r


@numba.njit(cache=True, inline="always")
def _shift3(M, c, x, r, w):  # pragma: no cover - compiled
    """``k E[X'^i R'^j]`` (9 values, ``i * 3 + j``) of a flow, ``X' = X + x``, ``R' = R + r``."""
    a0, a1, a2 = M[c, 0], M[c, 1], M[c, 2]
    b0, b1, b2 = M[c, 3], M[c, 4], M[c, 5]
    c0, c1, c2 = M[c, 6], M[c, 7], M[c, 8]
    x2 = x * x
    n00, n01, n02 = _rshift(a0, a1, a2, r)
    n10, n11, n12 = _rshift(b0 + a0 * x, b1 + a1 * x, b2 + a2 * x, r)
    n20, n21, n22 = _rshift(c0 + 2.0 * b0 * x + a0 * x2, c1 + 2.0 * b1 * x + a1 * x2, c2 + 2.0 * b2 * x + a2 * x2, r)
    return (n00 * w, n01 * w, n02 * w, n10 * w, n11 * w, n12 * w, n20 * w, n21 * w, n22 * w)


@numba.njit(cache=True)
def _mom_pull1(M, new, indptr, src, ke, xpe, lo, hi):  # pragma: no cover - compiled
    for cp in range(lo, hi):
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        for e in range(indptr[cp], indptr[cp + 1]):
            f0, f1, f2 = _shift1(M, src[e], xpe[e], ke[e])
            s0 += f0
            s1 += f1
            s2 += f2
        new[cp, 0] = s0
        new[cp, 1] = s1
        new[cp, 2] = s2


@numba.njit(cache=True)
def _mom_pull1c(M, new, indptr, src, ke, xpe, xme, re, apow, vt, vn, lo, hi):  # pragma: no cover - compiled
    for cp in range(lo, hi):
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        q = vn[cp]
        for e in range(indptr[cp], indptr[cp + 1]):
            c = src[e]
            x = _select(re[e] + q - vt[c], xpe[e], xme[e], apow)
            f0, f1, f2 = _shift1(M, c, x, ke[e])
            s0 += f0
            s1 += f1
            s2 += f2
        new[cp, 0] = s0
        new[cp, 1] = s1
        new[cp, 2] = s2


@numba.njit(cache=True)
def _mom_pull3(M, new, indptr, src, ke, xpe, xme, re, crit, apow, vt, vn, lo, hi):  # pragma: no cover - compiled
    acc = np.empty(9)
    for cp in range(lo, hi):
        for q in range(9):
            acc[q] = 0.0
        for e in range(indptr[cp], indptr[cp + 1]):
            c = src[e]
            if crit:
                x = _select(re[e] + vn[cp] - vt[c], xpe[e], xme[e], apow)
            else:
                x = xpe[e]
            f = _shift3(M, c, x, re[e], ke[e])
            for q in range(9):
                acc[q] += f[q]
        for q in range(9):
            new[cp, q] = acc[q]


@numba.njit(cache=True)
def _mom_chunk(M, new, part, J, last, eos, nxt, indptr, src, tok, k, xp, xm, r, ke, xpe, xme, re, gk, gx,
               crit, apow, vt, vn, m, z1, z2, lo, hi):  # pragma: no cover - compiled
    V = nxt.shape[1]
    if not last:
        e0, e1 = indptr[lo], indptr[hi]
        if gk:
            _gather(k, src, tok, ke, e0, e1)
        if gx:
            _gather(xp, src, tok, xpe, e0, e1)
            if crit:
                _gather(xm, src, tok, xme, e0, e1)
        if J == 3:
            _mom_pull3(M, new, indptr, src, ke, xpe, xme, re, crit, apow, vt, vn, lo, hi)
        elif crit:
            _mom_pull1c(M, new, indptr, src, ke, xpe, xme, re, apow, vt, vn, lo, hi)
        else:
            _mom_pull1(M, new, indptr, src, ke, xpe, lo, hi)
    if last or eos >= 0:  # the terminating flows: per-context partial sums
        a0 = 0 if last else eos
        a1 = V if last else eos + 1
        for c in range(lo, hi):
            p1 = 0.0
            p2 = 0.0
            p3 = 0.0
            for a in range(a0, a1):
                n = nxt[c, a]
                if crit:
                    x = _select(r[c, a] + m[n] - vt[c], xp[c, a], xm[c, a], apow)
                else:
                    x = xp[c, a]
                c1 = z1[n]
                c2 = z2[n]
                if J == 1:
                    f0, f1, f2 = _shift1(M, c, x, k[c, a])
                    p1 += f1 * c1
                    p2 += f2 * c2
                    p3 += f1 * c2
                else:
                    f = _shift3(M, c, x, r[c, a], k[c, a])
                    p1 += f[4] + f[3] * c1
                    p2 += f[8] + 2.0 * f[7] * c1 + f[6] * c2
                    p3 += f[5] + 2.0 * f[4] * c1 + f[3] * c2
            part[0, c] = p1
            part[1, c] = p2
            part[2, c] = p3


@numba.njit(cache=True, parallel=True)
def _mom_par(M, new, part, J, last, eos, nxt, indptr, src, tok, k, xp, xm, r, ke, xpe, xme, re, gk, gx,
             crit, apow, vt, vn, m, z1, z2, nch):  # pragma: no cover - compiled
    S = nxt.shape[0]
    for ch in numba.prange(nch):
        lo, hi = bounds(ch, nch, S)
        _mom_chunk(M, new, part, J, last, eos, nxt, indptr, src, tok, k, xp, xm, r, ke, xpe, xme, re, gk, gx,
                   crit, apow, vt, vn, m, z1, z2, lo, hi)


@numba.njit(cache=True)
def moments_kernel(start, x_init, kern, xp, xm, crit, apow, r, J, z1, z2, psi, values, m, eos, nxt, indptr, src,
                   tok, T, nch):  # pragma: no cover - compiled
    r"""``(E[X F psi], E[X^2 F^2 psi^2], E[X F^2 psi^2])`` under ``kern``.

    ``X = x_init + sum_t x_t(c_t, y_t)`` with ``x_t = xp[t]`` (``crit``: ``A^apow`` times ``xp``
    where the critic advantage ``A > 0``, else ``xm``); ``F = R + Z'`` with ``J = 3`` (step
    rewards ``r`` accumulated) or ``F = Z'`` with ``J = 1``, ``Z'`` a terminal factor with
    conditional moments ``z1``, ``z2`` (S,) given the final context.
    """
    S, V = nxt.shape
    K = 3 * J
    M = np.zeros((S, K))
    new = np.zeros((S, K))
    part = np.zeros((3, S))
    for c in range(S):
        M[c, 0] = start[c]
        M[c, J] = x_init * start[c]
        M[c, 2 * J] = x_init * x_init * start[c]
    E = src.shape[0]
    ke = np.empty(E)
    xpe = np.empty(E)
    xme = np.empty(E if crit else 0)
    re = np.zeros(E)
    gk = kern.shape[0] > 1
    gx = xp.shape[0] > 1
    if not gk:
        _gather(kern[0], src, tok, ke, 0, E)
    if not gx:
        _gather(xp[0], src, tok, xpe, 0, E)
        if crit:
            _gather(xm[0], src, tok, xme, 0, E)
    if J == 3 or crit:
        _gather(r, src, tok, re, 0, E)
    m1 = 0.0
    m2 = 0.0
    t1 = 0.0
    for t in range(T):
        last = t == T - 1
        k = _at(kern, t)
        x1 = _at(xp, t)
        x2 = _at(xm, t)
        vt = values[t] if crit else values[0]
        vn = values[t + 1] if crit else values[0]
        if nch > 1:
            _mom_par(M, new, part, J, last, eos, nxt, indptr, src, tok, k, x1, x2, r, ke, xpe, xme, re, gk, gx,
                     crit, apow, vt, vn, m, z1, z2, nch)
        else:
            _mom_chunk(M, new, part, J, last, eos, nxt, indptr, src, tok, k, x1, x2, r, ke, xpe, xme, re, gk, gx,
                       crit, apow, vt, vn, m, z1, z2, 0, S)
        if last or eos >= 0:
            s1 = 0.0
            s2 = 0.0
            s3 = 0.0
            for c in range(S):
                s1 += part[0, c]
                s2 += part[1, c]
                s3 += part[2, c]
            ps = psi[t]
            m1 += ps * s1
            m2 += ps * ps * s2
            t1 += ps * ps * s3
        M, new = new, M
    return m1, m2, t1


# --------------------------------------------------------------------------- tok's bias split


@numba.njit(cache=True)
def _split_rows(nxt, eos, r, m, pi, d_mu, d_pi, v_mu, v_pi, T, keep_t, state, value, grad, want_grad,
                lo, hi):  # pragma: no cover - compiled
    V = nxt.shape[1]
    q1 = np.empty(V)
    q2 = np.empty(V)
    for t in range(T):
        last = t == T - 1
        p = _at(pi, t)
        j = t if keep_t else 0
        st = state[j]
        vl = value[j]
        gr = grad[j] if want_grad else grad[0]
        vm = v_mu[t + 1] if not last else v_mu[t]
        vq = v_pi[t + 1] if not last else v_pi[t]
        for c in range(lo, hi):
            s = 0.0
            for a in range(V):
                n = nxt[c, a]
                if not last and a != eos:
                    q1[a] = r[c, a] + vm[n]
                    q2[a] = r[c, a] + vq[n]
                else:
                    q1[a] = r[c, a] + m[n]
                    q2[a] = r[c, a] + m[n]
                s += p[c, a] * q1[a]
            dd = d_mu[t, c] - d_pi[t, c]
            dp = d_pi[t, c]
            vp = v_pi[t, c]
            for a in range(V):
                a_mu = q1[a] - s
                a_pi = q2[a] - vp
                st[c, a] += dd * p[c, a] * a_mu
                vl[c, a] += dp * p[c, a] * (a_mu - a_pi)
                if want_grad:
                    gr[c, a] += dp * p[c, a] * a_pi


@numba.njit(cache=True, parallel=True)
def _split_par(nxt, eos, r, m, pi, d_mu, d_pi, v_mu, v_pi, T, keep_t, state, value, grad, want_grad,
               nch):  # pragma: no cover - compiled
    S = nxt.shape[0]
    for ch in numba.prange(nch):
        lo, hi = bounds(ch, nch, S)
        _split_rows(nxt, eos, r, m, pi, d_mu, d_pi, v_mu, v_pi, T, keep_t, state, value, grad, want_grad, lo, hi)


@numba.njit(cache=True)
def tok_split_kernel(nxt, eos, r, m, pi, d_mu, d_pi, v_mu, v_pi, T, keep_t, want_grad, nch):  # pragma: no cover
    r"""tok's ``(state, value)`` mismatches and (``want_grad``) the true gradient.

    Each (1, S, V), summed over steps, or (T, S, V) with ``keep_t``:

    ``state_t = (d^mu_t - d^pi_t) pi_t (Q^mu_t - pi_t.Q^mu_t)``,
    ``value_t = d^pi_t pi_t ((Q^mu_t - pi_t.Q^mu_t) - (Q^pi_t - V^pi_t))`` and
    ``grad_t = d^pi_t pi_t (Q^pi_t - V^pi_t)`` (:func:`._gradient.gradient`'s sweep, same order of
    operations), with ``Q`` recomputed from the values ``v_mu``, ``v_pi`` (T + 1, S). Rows are
    independent: one parallel region. Without ``want_grad`` the gradient is (0, S, V).
    """
    S, V = nxt.shape
    Tout = T if keep_t else 1
    state = np.zeros((Tout, S, V))
    value = np.zeros((Tout, S, V))
    grad = np.zeros((Tout if want_grad else 0, S, V))
    if nch > 1:
        _split_par(nxt, eos, r, m, pi, d_mu, d_pi, v_mu, v_pi, T, keep_t, state, value, grad, want_grad, nch)
    else:
        _split_rows(nxt, eos, r, m, pi, d_mu, d_pi, v_mu, v_pi, T, keep_t, state, value, grad, want_grad, 0, S)
    return state, value, grad
