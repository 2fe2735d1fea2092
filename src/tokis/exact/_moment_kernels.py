r"""numba kernels of the forward moment recursions (algebra in :mod:`._recursions`).

Every kernel walks the steps ``t = 0..T-1`` and keeps, per context, the mass of the running
sequences and the conditional means and central moments of a few running accumulators.
Routing uses a *pull* formulation: :func:`incoming` sorts the continuing flows (``a != eos``)
by their next context ``nxt(c, a)`` (counting sort, ascending ``(c, a)`` within a target), and
each next context pools its incoming flows in that fixed order, in two passes over them (mass
and means, then the spread of the flow means around the pooled mean; the flows' values are kept
in a per-chunk scratch buffer between the passes). Targets are independent, so they run in
``nch`` parallel chunks (``numba.prange``) without races, and every collected sum over contexts
is formed from per-context partial sums added serially in context order (as are the per-step
re-centring and renormalisation). The results therefore do not depend on the number of threads
or chunks (bit for bit). With ``nch = 1`` no parallel region is entered at all (a parallel
launch per step costs more than a whole step of a small MDP, and much more when the cores are
busy).

Per-step arrays come as ``(Tp, S, V)`` with ``Tp = 1`` (stationary: the one slice serves
every step; per-step factors such as ``exp(log h - sh)`` are then computed once) or ``Tp = T``.
The per-flow factors a pull reads are first gathered into pull order (``_gather``:
``out[e] = a[src[e], tok[e]]``), once for stationary arrays and once per step otherwise, so the
inner loops stream them and only gather the (small) per-context state. ``eos = -1`` means no
eos token.

Cost per step: O(S V) with a few dozen flops per flow at most; at T = 1024, S = 4096, V = 64
on two (busy) cores the additive engine takes about 0.4 s without step rewards.

All kernels trust their inputs (validated in ``_moments``).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["additive_kernel", "incoming", "multiplicative_kernel", "pdis_kernel", "wpdis_kernel"]


# --------------------------------------------------------------------------- shared pieces


@numba.njit(cache=True)
def incoming(nxt, eos):  # pragma: no cover - compiled
    """CSR of the continuing flows by next context: ``(indptr (S+1,), src (E,), tok (E,))``.

    Flows into context ``c'`` are ``(src[e], tok[e])`` for ``e in indptr[c']..indptr[c'+1]-1``,
    in ascending ``(c, a)`` order; flows with ``a == eos`` are left out.
    """
    S, V = nxt.shape
    indptr = np.zeros(S + 1, np.int64)
    for c in range(S):
        for a in range(V):
            if a != eos:
                indptr[nxt[c, a] + 1] += 1
    for s in range(S):
        indptr[s + 1] += indptr[s]
    E = indptr[S]
    src = np.empty(E, np.int32)
    tok = np.empty(E, np.int32)
    fill = indptr[:S].copy()
    for c in range(S):
        for a in range(V):
            if a != eos:
                n = nxt[c, a]
                k = fill[n]
                src[k] = c
                tok[k] = a
                fill[n] = k + 1
    return indptr, src, tok


@numba.njit(cache=True, inline="always")
def _bounds(ch, nch, S):  # pragma: no cover - compiled
    size = (S + nch - 1) // nch
    lo = min(S, ch * size)
    return lo, min(S, lo + size)


@numba.njit(cache=True)
def _log_add(acc, scale, add, add_scale):  # pragma: no cover - compiled
    """In place ``acc e^scale += add e^add_scale`` (shared scale); returns the new scale."""
    new = max(scale, add_scale)
    safe = new if np.isfinite(new) else 0.0
    fa = np.exp(scale - safe) if np.isfinite(scale) else 0.0
    fb = np.exp(add_scale - safe) if np.isfinite(add_scale) else 0.0
    for k in range(acc.shape[0]):
        acc[k] = acc[k] * fa + add[k] * fb
    return new


@numba.njit(cache=True)
def _chunk_max(pmax):  # pragma: no cover - compiled
    m = -np.inf
    for v in pmax:
        if v > m:
            m = v
    return m if np.isfinite(m) else 0.0


@numba.njit(cache=True)
def _gather(a, src, tok, out, lo, hi):  # pragma: no cover - compiled
    """``out[e] = a[src[e], tok[e]]`` for edges lo..hi-1 (per-flow values in pull order)."""
    for e in range(lo, hi):
        out[e] = a[src[e], tok[e]]


@numba.njit(cache=True, parallel=True)
def _gather_par(a, src, tok, out, nch):  # pragma: no cover - compiled
    E = src.shape[0]
    if nch > 1:
        for ch in numba.prange(nch):
            lo, hi = _bounds(ch, nch, E)
            _gather(a, src, tok, out, lo, hi)
    else:
        _gather(a, src, tok, out, 0, E)


@numba.njit(cache=True)
def _lg(v, s):  # pragma: no cover - compiled
    """``log |v e^s|`` (``-inf`` for ``v = 0``): the common scale of several scaled values is their max."""
    return s + np.log(abs(v)) if v != 0.0 else -np.inf


@numba.njit(cache=True)
def _merge_log(acc, logp, fm, fs, vm, vs):  # pragma: no cover - compiled
    """Chan's pairwise merge in log scale.

    Merges a group of mass ``e^logp``, mean ``fm e^fs`` and variance (per unit mass)
    ``vm e^vs`` into ``acc = [log P, mean, mean scale, variance, variance scale]``.
    """
    if not logp > -np.inf:
        return
    if not acc[0] > -np.inf:
        acc[0], acc[1], acc[2], acc[3], acc[4] = logp, fm, fs, vm, vs
        return
    m = max(acc[0], logp)
    lp = m + np.log(np.exp(acc[0] - m) + np.exp(logp - m))
    wa = np.exp(acc[0] - lp)
    wt = np.exp(logp - lp)
    sf = max(_lg(acc[1], acc[2]), _lg(fm, fs))
    if not sf > -np.inf:
        sf = 0.0
    fa = acc[1] * np.exp(acc[2] - sf) if acc[1] != 0.0 else 0.0
    ft = fm * np.exp(fs - sf) if fm != 0.0 else 0.0
    d = ft - fa
    sv = max(_lg(acc[3], acc[4]), _lg(vm, vs), _lg(d, 2.0 * sf))
    if not sv > -np.inf:
        sv = 0.0
    va = acc[3] * np.exp(acc[4] - sv) if acc[3] != 0.0 else 0.0
    vt = vm * np.exp(vs - sv) if vm != 0.0 else 0.0
    vd = d * d * np.exp(2.0 * sf - sv) if d != 0.0 else 0.0
    acc[0] = lp
    acc[1] = fa + d * wt
    acc[2] = sf
    acc[3] = wa * va + wt * vt + wa * wt * vd
    acc[4] = sv


@numba.njit(cache=True)
def _merged_moments(acc):  # pragma: no cover - compiled
    """``(v1, s1, v2, s2, vv, sv)``: ``E[f] = v1 e^s1``, ``E[f^2] = v2 e^s2``, ``Var f = vv e^sv`` from ``acc``."""
    lp = acc[0]
    if not lp > -np.inf:
        return 0.0, -np.inf, 0.0, -np.inf, 0.0, -np.inf
    fm, fs, vm, vs = acc[1], acc[2], max(acc[3], 0.0), acc[4]
    m = max(_lg(vm, vs), _lg(fm, 2.0 * fs))
    if not m > -np.inf:
        return 0.0, lp + fs, 0.0, lp, 0.0, lp
    v2 = (vm * np.exp(vs - m) if vm != 0.0 else 0.0) + (fm * fm * np.exp(2.0 * fs - m) if fm != 0.0 else 0.0)
    return fm, lp + fs, v2, lp + m, vm, lp + vs


# --------------------------------------------------------------------------- additive engine
#
# State per context (columns of M): P (mass of the running sequences in c), the conditional
# means of A and R as deviations dA, dR from the global offsets baseA, baseR (scalars), and the
# conditional central moments C20, C11, C02, C21, C12, C22 of (A, R) (Cij = E[(A-a)^i (R-r)^j | c]).
# Without step rewards R = 0 and only P, dA, C20 are kept (K = 3).

_P, _DA, _DR, _C20, _C11, _C02, _C21, _C12, _C22 = 0, 1, 2, 3, 4, 5, 6, 7, 8


@numba.njit(cache=True)
def _add_pull(M, new, indptr, src, we, xe, buf, lo, hi):  # pragma: no cover - compiled
    """Pool the incoming flows of contexts lo..hi-1 around their pooled mean (no step rewards).

    Pass 1 over the edges sums the mass, the mean of ``A`` and the flows' own ``C20`` and keeps
    each flow's ``(p, mean)`` in the rows of ``buf`` (>= in-degree rows); pass 2 adds the spread
    of the flow means around the pooled mean. Branch-free (a flow of mass 0 adds 0): a branch
    in the edge loop costs about a quarter of the step.
    """
    for cp in range(lo, hi):
        e0 = indptr[cp]
        n = indptr[cp + 1] - e0
        s0 = s1 = s2 = 0.0
        for k in range(n):
            e = e0 + k
            wt = we[e]
            c = src[e]
            p = M[c, 0] * wt
            va = M[c, 1] + (xe[e] if wt > 0.0 else 0.0)
            s0 += p
            s1 += p * va
            s2 += p * M[c, 2]
            buf[k, 0] = p
            buf[k, 1] = va
        if not s0 > 0.0:
            new[cp, 0] = 0.0
            new[cp, 1] = 0.0
            new[cp, 2] = 0.0
            continue
        ma = s1 / s0
        q = 0.0
        for k in range(n):
            d = buf[k, 1] - ma
            q += buf[k, 0] * d * d
        new[cp, 0] = s0
        new[cp, 1] = ma
        new[cp, 2] = (s2 + q) / s0


@numba.njit(cache=True)
def _add_pull_rho(M, new, indptr, src, we, xe, re, buf, lo, hi):  # pragma: no cover - compiled
    """:func:`_add_pull` with step rewards: the 9 columns of ``(A, R)`` (pairwise-merge formulas)."""
    for cp in range(lo, hi):
        e0 = indptr[cp]
        n = indptr[cp + 1] - e0
        s0 = s1 = s2 = 0.0
        for k in range(n):
            e = e0 + k
            wt = we[e]
            c = src[e]
            p = M[c, _P] * wt
            va = M[c, _DA] + (xe[e] if wt > 0.0 else 0.0)
            vr = M[c, _DR] + re[e]
            s0 += p
            s1 += p * va
            s2 += p * vr
            buf[k, _P] = p
            buf[k, _DA] = va
            buf[k, _DR] = vr
            for j in range(_C20, 9):
                buf[k, j] = M[c, j]
        if not s0 > 0.0:
            for j in range(9):
                new[cp, j] = 0.0
            continue
        ma = s1 / s0
        mr = s2 / s0
        q20 = q11 = q02 = q21 = q12 = q22 = 0.0
        for k in range(n):
            p = buf[k, _P]
            da = buf[k, _DA] - ma
            dr = buf[k, _DR] - mr
            c20, c11, c02 = buf[k, _C20], buf[k, _C11], buf[k, _C02]
            c21, c12 = buf[k, _C21], buf[k, _C12]
            da2 = da * da
            dr2 = dr * dr
            dadr = da * dr
            q20 += p * (c20 + da2)
            q11 += p * (c11 + dadr)
            q02 += p * (c02 + dr2)
            q21 += p * (c21 + 2.0 * da * c11 + dr * c20 + da2 * dr)
            q12 += p * (c12 + 2.0 * dr * c11 + da * c02 + da * dr2)
            q22 += p * (buf[k, _C22] + 2.0 * (dr * c21 + da * c12) + dr2 * c20 + da2 * c02
                        + 4.0 * dadr * c11 + da2 * dr2)
        new[cp, _P] = s0
        new[cp, _DA] = ma
        new[cp, _DR] = mr
        new[cp, _C20] = q20 / s0
        new[cp, _C11] = q11 / s0
        new[cp, _C02] = q02 / s0
        new[cp, _C21] = q21 / s0
        new[cp, _C12] = q12 / s0
        new[cp, _C22] = q22 / s0


@numba.njit(cache=True)
def _add_recentre(M, col, S):  # pragma: no cover - compiled
    """Subtract the mass-weighted mean of column ``col`` (serially, in context order); return it."""
    tot = 0.0
    acc = 0.0
    for c in range(S):
        p = M[c, _P]
        tot += p
        acc += p * M[c, col]
    if not tot > 0.0:
        return 0.0
    shift = acc / tot
    for c in range(S):
        if M[c, _P] > 0.0:
            M[c, col] -= shift
    return shift


@numba.njit(cache=True, inline="always")
def _add_group(M, c, wt, x, rho, mn, has_rho):  # pragma: no cover - compiled
    """Mass and mean deviations ``(p, db, dg)`` of the terminating flow ``(c, a)`` (p = 0: none)."""
    p = M[c, _P] * wt if wt > 0.0 else 0.0
    if p == 0.0:
        return 0.0, 0.0, 0.0
    db = M[c, _DA] + x
    dg = (M[c, _DR] + rho + mn) if has_rho else mn
    return p, db, dg


@numba.njit(cache=True)
def _add_collect(M, w, x, rho, has_rho, mn, vz, tok, stage, ref, fl, part, lo, hi):  # pragma: no cover
    r"""Per-context partial sums over the terminating flows (token ``tok``; all if -1).

    ``stage`` 0: ``sum p, sum p db, sum p dg``, keeping each flow's ``(p, db, dg, Var Z)`` in the
    rows of ``fl`` (flow ``(c, a)`` at row ``c`` for one token, ``c V + a`` for all: the later
    stages then read them contiguously instead of gathering columns of ``(S, V)`` arrays); 1:
    ``sum p e`` with ``e = (db - DB) gbar + B* (dg - DG) + C11`` (the flow mean of ``B G`` minus
    ``B* G*``); 2: ``sum p (Var(B G | flow) + (e - ebar)^2)``. ``ref = (DB, DG, B*, G*, ebar)``.
    """
    V = w.shape[1]
    DB, DG, Bs, Gs, eb = ref[0], ref[1], ref[2], ref[3], ref[4]
    for c in range(lo, hi):
        s0 = s1 = s2 = 0.0
        a_lo, a_hi = (0, V) if tok < 0 else (tok, tok + 1)
        for a in range(a_lo, a_hi):
            k = c * V + a if tok < 0 else c
            if stage == 0:
                wt = w[c, a]
                p, db, dg = _add_group(M, c, wt, x[c, a] if wt > 0.0 else 0.0, rho[c, a], mn[c, a], has_rho)
                fl[k, 0] = p
                fl[k, 1] = db
                fl[k, 2] = dg
                fl[k, 3] = vz[c, a]
                s0 += p
                s1 += p * db
                s2 += p * dg
                continue
            p = fl[k, 0]
            if p == 0.0:
                continue
            ddb = fl[k, 1] - DB
            ddg = fl[k, 2] - DG
            gbar = Gs + ddg
            c11 = M[c, _C11] if has_rho else 0.0
            e = ddb * gbar + Bs * ddg + c11
            if stage == 1:
                s0 += p * e
                continue
            bbar = Bs + ddb
            v = fl[k, 3]
            if has_rho:
                c20, c02, c21, c12 = M[c, _C20], M[c, _C02], M[c, _C21], M[c, _C12]
                var = (bbar * bbar * (c02 + v) + gbar * gbar * c20 + 2.0 * bbar * gbar * c11 + 2.0 * bbar * c12
                       + 2.0 * gbar * c21 + M[c, _C22] + c20 * v - c11 * c11)
            else:
                c20 = M[c, 2]
                var = bbar * bbar * v + gbar * gbar * c20 + c20 * v
            d = e - eb
            s0 += p * (var + d * d)
        part[0, c] = s0
        part[1, c] = s1
        part[2, c] = s2


@numba.njit(cache=True, parallel=True)
def _add_collect_par(M, w, x, rho, has_rho, mn, vz, tok, stage, ref, fl, part, nch):  # pragma: no cover
    S = M.shape[0]
    if nch > 1:
        for ch in numba.prange(nch):
            lo, hi = _bounds(ch, nch, S)
            _add_collect(M, w, x, rho, has_rho, mn, vz, tok, stage, ref, fl, part, lo, hi)
    else:
        _add_collect(M, w, x, rho, has_rho, mn, vz, tok, stage, ref, fl, part, 0, S)


@numba.njit(cache=True, inline="always")
def _add_collect_any(M, w, x, rho, has_rho, mn, vz, tok, stage, ref, fl, part, nch):  # pragma: no cover - compiled
    """:func:`_add_collect` over all contexts: in ``nch`` parallel chunks, or serially (no parallel launch) if 1."""
    if nch > 1:
        _add_collect_par(M, w, x, rho, has_rho, mn, vz, tok, stage, ref, fl, part, nch)
    else:
        _add_collect(M, w, x, rho, has_rho, mn, vz, tok, stage, ref, fl, part, 0, M.shape[0])


@numba.njit(cache=True)
def _chan_merge(acc, p, mean, m2):  # pragma: no cover - compiled
    """Merge a group ``(mass p, mean, central second moment m2)`` into ``acc = [P, mean, M2]``."""
    if not p > 0.0:
        return
    P = acc[0]
    tot = P + p
    d = mean - acc[1]
    acc[1] += d * (p / tot)
    acc[2] += m2 + d * d * (P * (p / tot))
    acc[0] = tot


@numba.njit(cache=True, parallel=True)
def additive_kernel(start, indptr, src, tok, eos, mu, x, rho, has_rho, mn, vz, a0, per_length, T, nch):  # pragma: no cover
    r"""``(E[f], Var f)`` of ``f = kappa(L) (a0 + A) G`` without forming ``E[f^2] - E[f]^2``.

    Carries per context the mass, conditional means and conditional central moments of
    ``(A, R)`` (``_add_pull``: pairwise pooling of the incoming flows around their pooled mean),
    and merges the terminating flows by the law of total variance (``_add_collect``, three
    passes per termination step, then :func:`_chan_merge` across steps). ``mn``, ``vz`` (S, V):
    mean and variance of the terminal reward at ``nxt(c, a)``.
    """
    S = mu.shape[1]
    K = 9 if has_rho else 3
    M = np.zeros((S, K))
    M[:, _P] = start
    new = np.zeros((S, K))
    part = np.zeros((3, S))
    ref = np.zeros(5)
    fl = np.empty((S * mu.shape[2], 4))
    E = src.shape[0]
    we = np.empty(E)
    xe = np.empty(E)
    re = np.zeros(E)
    if has_rho:
        _gather_par(rho, src, tok, re, nch)
    deg = 0
    for c in range(S):
        deg = max(deg, indptr[c + 1] - indptr[c])
    bufs = np.empty((max(nch, 1), deg, K))
    base_a = 0.0
    base_r = 0.0
    acc = np.zeros(3)  # mass, mean, M2 of the terminated statistic
    for t in range(T):
        w = mu[t if mu.shape[0] > 1 else 0]
        xt = x[t if x.shape[0] > 1 else 0]
        last = t == T - 1
        if not last:
            if t == 0 or mu.shape[0] > 1:
                _gather_par(w, src, tok, we, nch)
            if t == 0 or x.shape[0] > 1:
                _gather_par(xt, src, tok, xe, nch)
        if last or eos >= 0:
            tk = -1 if last else eos
            ncol = nch if last else 1
            ref[:] = 0.0
            _add_collect_any(M, w, xt, rho, has_rho, mn, vz, tk, 0, ref, fl, part, ncol)
            p_t = 0.0
            s_b = 0.0
            s_g = 0.0
            for c in range(S):
                p_t += part[0, c]
                s_b += part[1, c]
                s_g += part[2, c]
            if p_t > 0.0:
                ref[0] = s_b / p_t
                ref[1] = s_g / p_t
                ref[2] = a0 + base_a + ref[0]
                ref[3] = base_r + ref[1]
                _add_collect_any(M, w, xt, rho, has_rho, mn, vz, tk, 1, ref, fl, part, ncol)
                s_e = 0.0
                for c in range(S):
                    s_e += part[0, c]
                ref[4] = s_e / p_t
                _add_collect_any(M, w, xt, rho, has_rho, mn, vz, tk, 2, ref, fl, part, ncol)
                m2 = 0.0
                for c in range(S):
                    m2 += part[0, c]
                kappa = 1.0 / (t + 1) if per_length else 1.0
                _chan_merge(acc, p_t, kappa * (ref[2] * ref[3] + ref[4]), kappa * kappa * m2)
        if last:
            break
        if nch > 1:
            for ch in numba.prange(nch):
                lo, hi = _bounds(ch, nch, S)
                if has_rho:
                    _add_pull_rho(M, new, indptr, src, we, xe, re, bufs[ch], lo, hi)
                else:
                    _add_pull(M, new, indptr, src, we, xe, bufs[ch], lo, hi)
        elif has_rho:
            _add_pull_rho(M, new, indptr, src, we, xe, re, bufs[0], 0, S)
        else:
            _add_pull(M, new, indptr, src, we, xe, bufs[0], 0, S)
        M, new = new, M
        base_a += _add_recentre(M, _DA, S)
        if has_rho:
            base_r += _add_recentre(M, _DR, S)
    return acc[0] * acc[1], max(acc[2], 0.0)


# --------------------------------------------------------------------------- per-decision engine
#
# State per context (columns of ``st``): the mass P of the running sequences (global log scale
# sP), the conditional means of X = W_{<=t} and of the running sum F (F as a deviation dF from a
# global offset ``base``), both with log scale s1, and the conditional central moments Cxx, Cxf,
# Cff (log scale s2). A token multiplies X by r = g e^{sh} (``g <= 1``, ``sh >= 0`` the step's
# largest log-ratio) and adds X r u to F.

_XM, _FM, _CXX, _CXF, _CFF = 1, 2, 3, 4, 5


@numba.njit(cache=True)
def _pd_logmax(mu, log_r, div, lo, hi):  # pragma: no cover - compiled
    """Largest finite ``log r / div`` over the flows of rows lo..hi-1 with ``mu > 0``."""
    m = -np.inf
    for c in range(lo, hi):
        for a in range(log_r.shape[1]):
            if mu[c, a] > 0.0:
                v = log_r[c, a] / div
                if v > m and v < np.inf:
                    m = v
    return m


@numba.njit(cache=True)
def _pd_exp(mu, log_r, div, sh, ga, lo, hi):  # pragma: no cover - compiled
    """``ga = exp(log r / div - sh)`` on rows lo..hi-1 (0 where ``mu = 0``: never sampled, and the
    branch-free pulls multiply it by a zero mass, which must not meet an overflowed factor)."""
    for c in range(lo, hi):
        for a in range(log_r.shape[1]):
            ga[c, a] = np.exp(log_r[c, a] / div - sh) if mu[c, a] > 0.0 else 0.0


@numba.njit(cache=True, parallel=True)
def _pd_factors(mu, log_r, div, clamp, ga, pmax, nch):  # pragma: no cover - compiled
    """``ga = exp(log r / div - sh)``, ``sh`` the largest finite exponent where ``mu > 0`` (0 if none;
    at least 0 with ``clamp``), so ``ga <= 1`` on the support; returns ``sh``."""
    S = ga.shape[0]
    if nch > 1:
        for ch in numba.prange(nch):
            lo, hi = _bounds(ch, nch, S)
            pmax[ch] = _pd_logmax(mu, log_r, div, lo, hi)
    else:
        pmax[0] = _pd_logmax(mu, log_r, div, 0, S)
    sh = _chunk_max(pmax[:nch])
    if clamp:
        sh = max(0.0, sh)
    if nch > 1:
        for ch in numba.prange(nch):
            lo, hi = _bounds(ch, nch, S)
            _pd_exp(mu, log_r, div, sh, ga, lo, hi)
    else:
        _pd_exp(mu, log_r, div, sh, ga, 0, S)
    return sh


@numba.njit(cache=True)
def _pdis_u(ubase, mu, shift, div, ut, lo, hi):  # pragma: no cover - compiled
    """``ut = (ubase - shift) / div`` where ``mu > 0``, else 0, on rows lo..hi-1."""
    V = ut.shape[1]
    for c in range(lo, hi):
        for a in range(V):
            ut[c, a] = (ubase[c, a] - shift) / div if mu[c, a] > 0.0 else 0.0


@numba.njit(cache=True, parallel=True)
def _pdis_u_par(ubase, mu, shift, div, ut, nch):  # pragma: no cover - compiled
    S = ut.shape[0]
    if nch > 1:
        for ch in numba.prange(nch):
            lo, hi = _bounds(ch, nch, S)
            _pdis_u(ubase, mu, shift, div, ut, lo, hi)
    else:
        _pdis_u(ubase, mu, shift, div, ut, 0, S)


@numba.njit(cache=True, inline="always")
def _pd_flow(st, c, g, u, q):  # pragma: no cover - compiled
    """``(x, f, cxx, cxf, cff)`` of context ``c`` after a token with ``r = g e^sh``, reward ``u``, ``q = e^-sh``.

    Means in units of ``e^(s1 + sh)`` (``f`` relative to ``q base``), central moments in units
    of ``e^(s2 + 2 sh)``: ``X' = r X``, ``F' = F + r u X``.
    """
    xm = st[c, _XM]
    cxx = st[c, _CXX]
    cxf = st[c, _CXF]
    gu = g * u
    return (g * xm, q * st[c, _FM] + gu * xm, g * g * cxx, q * g * cxf + g * gu * cxx,
            q * q * st[c, _CFF] + 2.0 * q * gu * cxf + gu * gu * cxx)


@numba.njit(cache=True)
def _pd_pull(st, new, indptr, src, we, ge, ue, q, cq, dq, buf, lo, hi):  # pragma: no cover - compiled
    """Pool the incoming flows of contexts lo..hi-1 around their pooled means.

    Pass 1 sums the masses, the means and the flows' own central moments, and keeps each
    flow's ``(p, x, f)`` in the rows of ``buf``; pass 2 adds the spread of the flow means around
    the pooled mean. Pooled central moments are in units of the working scale: the flows' own
    moments times ``cq``, the spread times ``dq``.
    """
    for cp in range(lo, hi):
        e0 = indptr[cp]
        n = indptr[cp + 1] - e0
        s0 = sx = sf = 0.0
        bxx = bxf = bff = 0.0
        for k in range(n):
            e = e0 + k
            c = src[e]
            p = st[c, _P] * we[e]
            x, f, cxx, cxf, cff = _pd_flow(st, c, ge[e], ue[e], q)
            s0 += p
            sx += p * x
            sf += p * f
            bxx += p * cxx
            bxf += p * cxf
            bff += p * cff
            buf[k, 0] = p
            buf[k, 1] = x
            buf[k, 2] = f
        if not s0 > 0.0:
            for j in range(6):
                new[cp, j] = 0.0
            continue
        mx = sx / s0
        mf = sf / s0
        axx = axf = aff = 0.0
        for k in range(n):
            p = buf[k, 0]
            dx = buf[k, 1] - mx
            df = buf[k, 2] - mf
            axx += p * dx * dx
            axf += p * dx * df
            aff += p * df * df
        new[cp, _P] = s0
        new[cp, _XM] = mx
        new[cp, _FM] = mf
        new[cp, _CXX] = (cq * bxx + dq * axx) / s0
        new[cp, _CXF] = (cq * bxf + dq * axf) / s0
        new[cp, _CFF] = (cq * bff + dq * aff) / s0


@numba.njit(cache=True)
def _pd_collect(st, mu, ga, ut, q, mn, vz, al, be, cq, dq, tok, stage, eb, part, lo, hi):  # pragma: no cover
    r"""Per-context sums over the terminating flows (token ``tok``; all if -1).

    The statistic of a flow is ``F + X K``, ``K = al Z + be``: mean ``q base + e`` with
    ``e = f + x E[K]``, variance ``Cff + 2 E[K] Cxf + E[K^2] Cxx + Var(K) x^2``. Stage 0:
    ``sum p, sum p e``; stage 1: ``sum p (Var + (e - eb)^2)`` in units of the working scale.
    """
    V = mu.shape[1]
    for c in range(lo, hi):
        s0 = s1 = 0.0
        a_lo, a_hi = (0, V) if tok < 0 else (tok, tok + 1)
        for a in range(a_lo, a_hi):
            p = st[c, _P] * mu[c, a]
            x, f, cxx, cxf, cff = _pd_flow(st, c, ga[c, a], ut[c, a], q)
            k1 = al * mn[c, a] + be
            vk = al * al * vz[c, a]
            e = f + x * k1
            if stage == 0:
                s0 += p
                s1 += p * e
            else:
                var = cff + 2.0 * k1 * cxf + (k1 * k1 + vk) * cxx
                d = e - eb
                s0 += p * (var * cq + (vk * x * x + d * d) * dq)
        part[0, c] = s0
        part[1, c] = s1


@numba.njit(cache=True, parallel=True)
def _pd_collect_par(st, mu, ga, ut, q, mn, vz, al, be, cq, dq, tok, stage, eb, part, nch):  # pragma: no cover
    S = st.shape[0]
    if nch > 1:
        for ch in numba.prange(nch):
            lo, hi = _bounds(ch, nch, S)
            _pd_collect(st, mu, ga, ut, q, mn, vz, al, be, cq, dq, tok, stage, eb, part, lo, hi)
    else:
        _pd_collect(st, mu, ga, ut, q, mn, vz, al, be, cq, dq, tok, stage, eb, part, 0, S)


@numba.njit(cache=True, inline="always")
def _pd_collect_any(st, mu, ga, ut, q, mn, vz, al, be, cq, dq, tok, stage, eb, part, nch):  # pragma: no cover - compiled
    """:func:`_pd_collect` over all contexts: in ``nch`` parallel chunks, or serially (no parallel launch) if 1."""
    if nch > 1:
        _pd_collect_par(st, mu, ga, ut, q, mn, vz, al, be, cq, dq, tok, stage, eb, part, nch)
    else:
        _pd_collect(st, mu, ga, ut, q, mn, vz, al, be, cq, dq, tok, stage, eb, part, 0, st.shape[0])


@numba.njit(cache=True)
def _pd_renormalise(st, base, S):  # pragma: no cover - compiled
    """Re-centre ``dF`` on its mass-weighted mean, then divide P, the means (with ``base``) and the
    central moments by their max-abs. Returns ``(base, log P factor, log mean factor, log C factor)``."""
    tot = 0.0
    acc = 0.0
    for c in range(S):
        p = st[c, _P]
        tot += p
        acc += p * st[c, _FM]
    if tot > 0.0:
        shift = acc / tot
        for c in range(S):
            if st[c, _P] > 0.0:
                st[c, _FM] -= shift
        base += shift
    mp = 0.0
    mm = abs(base)
    mc = 0.0
    for c in range(S):
        mp = max(mp, st[c, _P])
        mm = max(mm, abs(st[c, _XM]), abs(st[c, _FM]))
        mc = max(mc, abs(st[c, _CXX]), abs(st[c, _CXF]), abs(st[c, _CFF]))
    lp = lm = lc = 0.0
    if mp > 0.0 and np.isfinite(mp):
        lp = np.log(mp)
    else:
        mp = 1.0
    if mm > 0.0 and np.isfinite(mm):
        lm = np.log(mm)
    else:
        mm = 1.0
    if mc > 0.0 and np.isfinite(mc):
        lc = np.log(mc)
    else:
        mc = 1.0
    for c in range(S):
        st[c, _P] /= mp
        st[c, _XM] /= mm
        st[c, _FM] /= mm
        st[c, _CXX] /= mc
        st[c, _CXF] /= mc
        st[c, _CFF] /= mc
    return base / mm, lp, lm, lc


@numba.njit(cache=True, parallel=True)
def pdis_kernel(start, indptr, src, tok, eos, mu, log_r, ubase, ushift, udiv, alpha, beta, mn, vz, T,
                nch):  # pragma: no cover - compiled
    r"""Mean, second moment and variance of the per-decision statistic, in log scale.

    ``f = sum_t X_t u_t + X_L (alpha_L Z + beta_L)`` with ``X_t = W_{<=t}`` and
    ``u_t = (ubase[t] - ushift[t]) / udiv[t]``; returns ``(v1, s1, v2, s2, vv, sv)`` with
    ``E[f] = v1 e^{s1}``, ``E[f^2] = v2 e^{s2}`` and ``Var f = vv e^{sv}`` (the variance is merged
    from central moments, never formed as ``E[f^2] - E[f]^2``). ``mn``, ``vz`` (S, V): mean and
    variance of the terminal reward at ``nxt(c, a)``.
    """
    S, V = mu.shape[1], mu.shape[2]
    st = np.zeros((S, 6))
    st[:, _P] = start
    st[:, _XM] = 1.0
    new = np.zeros((S, 6))
    ga = np.empty((S, V))
    ut = np.empty((S, V))
    pmax = np.empty(max(nch, 1))
    E = src.shape[0]
    we = np.empty(E)
    ge = np.empty(E)
    ue = np.empty(E)
    deg = 0
    for c in range(S):
        deg = max(deg, indptr[c + 1] - indptr[c])
    bufs = np.empty((max(nch, 1), deg, 3))
    part = np.zeros((2, S))
    acc = np.zeros(5)
    acc[0] = -np.inf
    sP = 0.0
    s1 = 0.0
    s2 = 0.0
    base = 0.0
    sh = 0.0
    for t in range(T):
        last = t == T - 1
        wt = mu[t if mu.shape[0] > 1 else 0]
        if t == 0 or mu.shape[0] > 1 or log_r.shape[0] > 1:
            sh = _pd_factors(wt, log_r[t if log_r.shape[0] > 1 else 0], 1.0, True, ga, pmax, nch)
            if not last:
                _gather_par(ga, src, tok, ge, nch)
                if t == 0 or mu.shape[0] > 1:
                    _gather_par(wt, src, tok, we, nch)
        if t == 0 or ubase.shape[0] > 1 or mu.shape[0] > 1 or ushift[t] != ushift[t - 1] or udiv[t] != udiv[t - 1]:
            _pdis_u_par(ubase[t if ubase.shape[0] > 1 else 0], wt, ushift[t], udiv[t], ut, nch)
            if not last:
                _gather_par(ut, src, tok, ue, nch)
        q = np.exp(-sh)
        s1n = s1 + sh
        s2n = s2 + 2.0 * sh
        s2w = max(s2n, 2.0 * s1n)
        cq = np.exp(s2n - s2w)
        dq = np.exp(2.0 * s1n - s2w)
        if last or eos >= 0:
            tk = -1 if last else eos
            ncol = nch if last else 1
            _pd_collect_any(st, wt, ga, ut, q, mn, vz, alpha[t], beta[t], cq, dq, tk, 0, 0.0, part, ncol)
            p_t = 0.0
            s_e = 0.0
            for c in range(S):
                p_t += part[0, c]
                s_e += part[1, c]
            if p_t > 0.0:
                eb = s_e / p_t
                _pd_collect_any(st, wt, ga, ut, q, mn, vz, alpha[t], beta[t], cq, dq, tk, 1, eb, part, ncol)
                v_t = 0.0
                for c in range(S):
                    v_t += part[0, c]
                _merge_log(acc, np.log(p_t) + sP, q * base + eb, s1n, v_t / p_t, s2w)
        if last:
            break
        if nch > 1:
            for ch in numba.prange(nch):
                lo, hi = _bounds(ch, nch, S)
                _pd_pull(st, new, indptr, src, we, ge, ue, q, cq, dq, bufs[ch], lo, hi)
        else:
            _pd_pull(st, new, indptr, src, we, ge, ue, q, cq, dq, bufs[0], 0, S)
        st, new = new, st
        base, lp, lm, lc = _pd_renormalise(st, q * base, S)
        sP += lp
        s1 = s1n + lm
        s2 = s2w + lc
    return _merged_moments(acc)


# --------------------------------------------------------------------------- multiplicative engine
#
# State per context: the mass P (log scale sP), the conditional mean of H (log scale s1) and,
# with step rewards, of R (a deviation dR from the global offset base_r), and the conditional
# central moments C_ij of (H, R): C_2j with log scale s2, C_1j with log scale s1c (a covariance
# of H and R may be far smaller than sqrt(C20 C02) and still matter for the mean), C_0j
# unscaled (columns as in the additive engine; K = 3 without step rewards: P, H mean, C20).
# A token multiplies H by h = g e^{sh} (g <= 1): the mean by h, C_ij by h^i. Per step, the
# pooled moments are formed in working scales s11w (C_1j) and s2w (C_2j); ``fac`` holds the
# factors from each source scale to them (see :func:`_mul_factors`).

_K1C, _K1D, _KCQ, _KDQ, _K2X, _KCC, _KD2 = 0, 1, 2, 3, 4, 5, 6


@numba.njit(cache=True)
def _mul_factors(s1n, s1cn, s2n, fac):  # pragma: no cover - compiled
    """Working scales ``(s11w, s2w)`` of a step and, in ``fac``, the factors from each source scale.

    ``s11w = max(s1n, s1cn)`` for first-order-in-H central moments, ``s2w = max(s2n, 2 s1n,
    2 s1cn)`` for second-order ones; ``fac = (C_1j, H-mean spread) -> s11w`` and ``(C_2j,
    spread^2, spread x C_1j, C_1j^2, (s11w units)^2) -> s2w``.
    """
    s11w = max(s1n, s1cn)
    s2w = max(s2n, 2.0 * s11w)
    fac[_K1C] = np.exp(s1cn - s11w)
    fac[_K1D] = np.exp(s1n - s11w)
    fac[_KCQ] = np.exp(s2n - s2w)
    fac[_KDQ] = np.exp(2.0 * s1n - s2w)
    fac[_K2X] = np.exp(s1n + s1cn - s2w)
    fac[_KCC] = np.exp(2.0 * s1cn - s2w)
    fac[_KD2] = np.exp(2.0 * s11w - s2w)
    return s11w, s2w


@numba.njit(cache=True)
def _mul_pull(M, new, indptr, src, we, he, cq, dq, buf, lo, hi):  # pragma: no cover - compiled
    """Pool the incoming flows of contexts lo..hi-1 (no step rewards; two passes as in :func:`_add_pull`).

    Flow means stay in units of ``e^(s1 + sh)``; the pooled ``C20`` is in working units: the
    flows' own ``h^2 C20`` times ``cq``, the spread of their means times ``dq``.
    """
    for cp in range(lo, hi):
        e0 = indptr[cp]
        n = indptr[cp + 1] - e0
        s0 = s1 = s2 = 0.0
        for k in range(n):
            e = e0 + k
            c = src[e]
            p = M[c, 0] * we[e]
            h = he[e]
            b = h * M[c, 1]
            s0 += p
            s1 += p * b
            s2 += p * (h * h * M[c, 2])
            buf[k, 0] = p
            buf[k, 1] = b
        if not s0 > 0.0:
            new[cp, 0] = 0.0
            new[cp, 1] = 0.0
            new[cp, 2] = 0.0
            continue
        mb = s1 / s0
        q = 0.0
        for k in range(n):
            d = buf[k, 1] - mb
            q += buf[k, 0] * d * d
        new[cp, 0] = s0
        new[cp, 1] = mb
        new[cp, 2] = (cq * s2 + dq * q) / s0


@numba.njit(cache=True, inline="always")
def _mul_flow(M, c, h):  # pragma: no cover - compiled
    """Central moments of (H, R) of context ``c`` after a token with ``h = g e^sh`` (C_ij times g^i)."""
    h2 = h * h
    return (h2 * M[c, _C20], h * M[c, _C11], M[c, _C02], h2 * M[c, _C21], h * M[c, _C12], h2 * M[c, _C22])


@numba.njit(cache=True)
def _mul_pull_rho(M, new, indptr, src, we, he, re, fac, buf, lo, hi):  # pragma: no cover - compiled
    """:func:`_mul_pull` with step rewards: the pairwise-merge formulas of the additive engine,
    each term brought to its working scale by the factors ``fac`` (:func:`_mul_factors`)."""
    k1c, k1d, cq, dq, k2x = fac[_K1C], fac[_K1D], fac[_KCQ], fac[_KDQ], fac[_K2X]
    for cp in range(lo, hi):
        e0 = indptr[cp]
        n = indptr[cp + 1] - e0
        s0 = s1 = s2 = 0.0
        for k in range(n):
            e = e0 + k
            c = src[e]
            p = M[c, _P] * we[e]
            h = he[e]
            b = h * M[c, _DA]
            vr = M[c, _DR] + re[e]
            s0 += p
            s1 += p * b
            s2 += p * vr
            c20, c11, c02, c21, c12, c22 = _mul_flow(M, c, h)
            buf[k, _P] = p
            buf[k, _DA] = b
            buf[k, _DR] = vr
            buf[k, _C20] = c20
            buf[k, _C11] = c11
            buf[k, _C02] = c02
            buf[k, _C21] = c21
            buf[k, _C12] = c12
            buf[k, _C22] = c22
        if not s0 > 0.0:
            for j in range(9):
                new[cp, j] = 0.0
            continue
        mb = s1 / s0
        mr = s2 / s0
        q20 = q11 = q02 = q21 = q12 = q22 = 0.0
        for k in range(n):
            p = buf[k, _P]
            db = buf[k, _DA] - mb
            dr = buf[k, _DR] - mr
            c20, c11, c02 = buf[k, _C20], buf[k, _C11], buf[k, _C02]
            c21, c12 = buf[k, _C21], buf[k, _C12]
            db2 = db * db
            dr2 = dr * dr
            q20 += p * (c20 * cq + db2 * dq)
            q11 += p * (c11 * k1c + db * dr * k1d)
            q02 += p * (c02 + dr2)
            q21 += p * ((c21 + dr * c20) * cq + 2.0 * db * c11 * k2x + db2 * dr * dq)
            q12 += p * ((c12 + 2.0 * dr * c11) * k1c + (db * c02 + db * dr2) * k1d)
            q22 += p * ((buf[k, _C22] + 2.0 * dr * c21 + dr2 * c20) * cq + (2.0 * db * c12 + 4.0 * db * dr * c11) * k2x
                        + (db2 * c02 + db2 * dr2) * dq)
        new[cp, _P] = s0
        new[cp, _DA] = mb
        new[cp, _DR] = mr
        new[cp, _C20] = q20 / s0
        new[cp, _C11] = q11 / s0
        new[cp, _C02] = q02 / s0
        new[cp, _C21] = q21 / s0
        new[cp, _C12] = q12 / s0
        new[cp, _C22] = q22 / s0


@numba.njit(cache=True)
def _mul_collect(M, w, hg, rho, has_rho, mp, vz, tok, stage, ref, fac, part, lo, hi):  # pragma: no cover
    r"""Per-context sums over the terminating flows (token ``tok``; all if -1) for ``f = H G'``.

    A flow's mean is ``B* G* + D + C11`` with ``D = (b - B*) gbar + B* (dg - DG)`` (units of
    H's mean) and ``C11`` (units of C_1j). Stage 0: ``sum p, sum p b, sum p dg, sum p C11``;
    stage 1: ``sum p D``; stage 2, in units of ``s2w``: ``sum p (Var(f | flow) + dev^2)`` with
    ``dev`` the flow mean minus the step mean, ``sum p E[H^2 | flow]`` and
    ``sum p E[H^2 G' | flow]``. ``ref = (B*, DG, G*, C11 bar, D bar)``.
    """
    V = w.shape[1]
    Bs, DG, Gs, C11b, Db = ref[0], ref[1], ref[2], ref[3], ref[4]
    k1c, k1d, cq, dq, k2x, kcc, kd2 = fac[_K1C], fac[_K1D], fac[_KCQ], fac[_KDQ], fac[_K2X], fac[_KCC], fac[_KD2]
    for c in range(lo, hi):
        s0 = s1 = s2 = s3 = 0.0
        a_lo, a_hi = (0, V) if tok < 0 else (tok, tok + 1)
        for a in range(a_lo, a_hi):
            p = M[c, _P] * w[c, a]
            h = hg[c, a]
            b = h * M[c, 1]
            if has_rho:
                c20, c11, c02, c21, c12, c22 = _mul_flow(M, c, h)
                dg = M[c, _DR] + rho[c, a] + mp[c, a]
            else:
                c20 = h * h * M[c, 2]
                c11 = c02 = c21 = c12 = c22 = 0.0
                dg = mp[c, a]
            if stage == 0:
                s0 += p
                s1 += p * b
                s2 += p * dg
                s3 += p * c11
                continue
            ddg = dg - DG
            gbar = Gs + ddg
            dd = (b - Bs) * gbar + Bs * ddg
            if stage == 1:
                s0 += p * dd
                continue
            v = vz[c, a]
            var = (b * b * (c02 + v) * dq + (gbar * gbar * c20 + 2.0 * gbar * c21 + c22 + c20 * v) * cq
                   + 2.0 * b * (gbar * c11 + c12) * k2x - c11 * c11 * kcc)
            dev = (dd - Db) * k1d + (c11 - C11b) * k1c
            s0 += p * (var + dev * dev * kd2)
            s1 += p * (b * b * dq + c20 * cq)
            s2 += p * (b * b * gbar * dq + 2.0 * b * c11 * k2x + (gbar * c20 + c21) * cq)
        part[0, c] = s0
        part[1, c] = s1
        part[2, c] = s2
        part[3, c] = s3


@numba.njit(cache=True, parallel=True)
def _mul_collect_par(M, w, hg, rho, has_rho, mp, vz, tok, stage, ref, fac, part, nch):  # pragma: no cover
    S = M.shape[0]
    if nch > 1:
        for ch in numba.prange(nch):
            lo, hi = _bounds(ch, nch, S)
            _mul_collect(M, w, hg, rho, has_rho, mp, vz, tok, stage, ref, fac, part, lo, hi)
    else:
        _mul_collect(M, w, hg, rho, has_rho, mp, vz, tok, stage, ref, fac, part, 0, S)


@numba.njit(cache=True, inline="always")
def _mul_collect_any(M, w, hg, rho, has_rho, mp, vz, tok, stage, ref, fac, part, nch):  # pragma: no cover - compiled
    """:func:`_mul_collect` over all contexts: in ``nch`` parallel chunks, or serially (no parallel launch) if 1."""
    if nch > 1:
        _mul_collect_par(M, w, hg, rho, has_rho, mp, vz, tok, stage, ref, fac, part, nch)
    else:
        _mul_collect(M, w, hg, rho, has_rho, mp, vz, tok, stage, ref, fac, part, 0, M.shape[0])


@numba.njit(cache=True)
def _mul_renormalise(M, has_rho, S):  # pragma: no cover - compiled
    """Re-centre ``dR``; divide P, H's mean, the C_2j and the C_1j by their max-abs.

    Returns ``(R shift, log factor of P, of H's mean, of C_1j, of C_2j)``.
    """
    shift = _add_recentre(M, _DR, S) if has_rho else 0.0
    mp = 0.0
    mb = 0.0
    m1 = 0.0
    m2 = 0.0
    for c in range(S):
        mp = max(mp, M[c, _P])
        mb = max(mb, abs(M[c, 1]))
        if has_rho:
            m1 = max(m1, abs(M[c, _C11]), abs(M[c, _C12]))
            m2 = max(m2, abs(M[c, _C20]), abs(M[c, _C21]), abs(M[c, _C22]))
        else:
            m2 = max(m2, abs(M[c, 2]))
    lp = lb = l1 = l2 = 0.0
    if mp > 0.0 and np.isfinite(mp):
        lp = np.log(mp)
    else:
        mp = 1.0
    if mb > 0.0 and np.isfinite(mb):
        lb = np.log(mb)
    else:
        mb = 1.0
    if m1 > 0.0 and np.isfinite(m1):
        l1 = np.log(m1)
    else:
        m1 = 1.0
    if m2 > 0.0 and np.isfinite(m2):
        l2 = np.log(m2)
    else:
        m2 = 1.0
    for c in range(S):
        M[c, _P] /= mp
        M[c, 1] /= mb
        if has_rho:
            M[c, _C20] /= m2
            M[c, _C21] /= m2
            M[c, _C22] /= m2
            M[c, _C11] /= m1
            M[c, _C12] /= m1
        else:
            M[c, 2] /= m2
    return shift, lp, lb, l1, l2


@numba.njit(cache=True)
def _add2(v1, s1, v2, s2):  # pragma: no cover - compiled
    """``(v, s)`` with ``v e^s = v1 e^s1 + v2 e^s2``."""
    s = max(_lg(v1, s1), _lg(v2, s2))
    if not s > -np.inf:
        return 0.0, 0.0
    return (v1 * np.exp(s1 - s) if v1 != 0.0 else 0.0) + (v2 * np.exp(s2 - s) if v2 != 0.0 else 0.0), s


@numba.njit(cache=True, parallel=True)
def multiplicative_kernel(start, indptr, src, tok, eos, mu, log_h, div, rho, has_rho, mp, vz, nsteps,
                          collect_all, T, nch):  # pragma: no cover - compiled
    r"""Moments of ``f = H G'`` for ``H = prod_t h_t``, ``log h_t = log_h[t] / div`` (one batch).

    Runs steps ``0..nsteps-1``; collects at every terminating flow (``collect_all``) or only at
    step ``nsteps - 1`` (sequences of exactly ``nsteps`` tokens). ``mp``, ``vz`` (S, V) are the
    mean of ``Z - shift`` and the variance of ``Z`` at ``nxt(c, a)``.

    Returns
    -------
    first (2,), scale1, second (3,), scale2, central (5,)
        As one row of ``_recursions.MultResult``; ``central = (log P, mean, mean scale,
        variance, variance scale)`` of ``f`` given the batch (Chan's merge, log scale).
    """
    S, V = mu.shape[1], mu.shape[2]
    K = 9 if has_rho else 3
    M = np.zeros((S, K))
    M[:, _P] = start
    M[:, 1] = 1.0
    new = np.zeros((S, K))
    hg = np.empty((S, V))
    pmax = np.empty(max(nch, 1))
    E = src.shape[0]
    we = np.empty(E)
    he = np.empty(E)
    re = np.zeros(E)
    if has_rho:
        _gather_par(rho, src, tok, re, nch)
    deg = 0
    for c in range(S):
        deg = max(deg, indptr[c + 1] - indptr[c])
    bufs = np.empty((max(nch, 1), deg, K))
    part = np.zeros((4, S))
    ref = np.zeros(5)
    acc = np.zeros(5)
    acc[0] = -np.inf
    raw = np.zeros(3)  # E[H], E[H^2], E[H^2 G'] with their log scales below
    raw_s = np.full(3, -np.inf)
    add = np.zeros(1)
    fac = np.zeros(7)
    sP = 0.0
    s1 = 0.0
    s1c = 0.0
    s2 = 0.0
    base_r = 0.0
    sh = 0.0
    for t in range(nsteps):
        last = t == T - 1
        stop = last or t == nsteps - 1
        w = mu[t if mu.shape[0] > 1 else 0]
        if t == 0 or mu.shape[0] > 1 or log_h.shape[0] > 1:
            sh = _pd_factors(w, log_h[t if log_h.shape[0] > 1 else 0], div, False, hg, pmax, nch)
            if not stop:
                _gather_par(hg, src, tok, he, nch)
                if t == 0 or mu.shape[0] > 1:
                    _gather_par(w, src, tok, we, nch)
        s1n = s1 + sh
        s1cn = (s1c + sh) if has_rho else s1n
        s2n = s2 + 2.0 * sh
        s11w, s2w = _mul_factors(s1n, s1cn, s2n, fac)
        if (collect_all or t == nsteps - 1) and (last or eos >= 0):
            tk = -1 if last else eos
            ncol = nch if last else 1
            _mul_collect_any(M, w, hg, rho, has_rho, mp, vz, tk, 0, ref, fac, part, ncol)
            p_t = s_b = s_g = s_c = 0.0
            for c in range(S):
                p_t += part[0, c]
                s_b += part[1, c]
                s_g += part[2, c]
                s_c += part[3, c]
            if p_t > 0.0:
                ref[0] = s_b / p_t
                ref[1] = s_g / p_t
                ref[2] = base_r + ref[1]
                ref[3] = s_c / p_t
                _mul_collect_any(M, w, hg, rho, has_rho, mp, vz, tk, 1, ref, fac, part, ncol)
                s_d = 0.0
                for c in range(S):
                    s_d += part[0, c]
                ref[4] = s_d / p_t
                _mul_collect_any(M, w, hg, rho, has_rho, mp, vz, tk, 2, ref, fac, part, ncol)
                m2 = s_h2 = s_h2g = 0.0
                for c in range(S):
                    m2 += part[0, c]
                    s_h2 += part[1, c]
                    s_h2g += part[2, c]
                fv, fs = _add2(ref[0] * ref[2] + ref[4], s1n, ref[3], s1cn)
                _merge_log(acc, np.log(p_t) + sP, fv, fs, m2 / p_t, s2w)
                add[0] = s_b
                raw_s[0] = _log_add(raw[0:1], raw_s[0], add, sP + s1n)
                add[0] = s_h2
                raw_s[1] = _log_add(raw[1:2], raw_s[1], add, sP + s2w)
                add[0] = s_h2g
                raw_s[2] = _log_add(raw[2:3], raw_s[2], add, sP + s2w)
        if stop:
            break
        if E == 0:
            break
        if nch > 1:
            for ch in numba.prange(nch):
                lo, hi = _bounds(ch, nch, S)
                if has_rho:
                    _mul_pull_rho(M, new, indptr, src, we, he, re, fac, bufs[ch], lo, hi)
                else:
                    _mul_pull(M, new, indptr, src, we, he, fac[_KCQ], fac[_KDQ], bufs[ch], lo, hi)
        elif has_rho:
            _mul_pull_rho(M, new, indptr, src, we, he, re, fac, bufs[0], 0, S)
        else:
            _mul_pull(M, new, indptr, src, we, he, fac[_KCQ], fac[_KDQ], bufs[0], 0, S)
        M, new = new, M
        shift, lp, lb, l1, l2 = _mul_renormalise(M, has_rho, S)
        base_r += shift
        sP += lp
        s1 = s1n + lb
        s1c = s11w + l1
        s2 = s2w + l2
    v1, ls1, v2, ls2, vv, sv = _merged_moments(acc)
    first = np.zeros(2)
    second = np.zeros(3)
    sc1 = max(_lg(raw[0], raw_s[0]), _lg(v1, ls1))
    if not sc1 > -np.inf:
        sc1 = -np.inf if not acc[0] > -np.inf else 0.0
    if sc1 > -np.inf:
        first[0] = raw[0] * np.exp(raw_s[0] - sc1) if raw[0] != 0.0 else 0.0
        first[1] = v1 * np.exp(ls1 - sc1) if v1 != 0.0 else 0.0
    sc2 = max(_lg(raw[1], raw_s[1]), _lg(raw[2], raw_s[2]), _lg(v2, ls2))
    if not sc2 > -np.inf:
        sc2 = -np.inf if not acc[0] > -np.inf else 0.0
    if sc2 > -np.inf:
        second[0] = raw[1] * np.exp(raw_s[1] - sc2) if raw[1] != 0.0 else 0.0
        second[1] = raw[2] * np.exp(raw_s[2] - sc2) if raw[2] != 0.0 else 0.0
        second[2] = v2 * np.exp(ls2 - sc2) if v2 != 0.0 else 0.0
    return first, sc1, second, sc2, acc


# --------------------------------------------------------------------------- wpdis statistics


@numba.njit(cache=True)
def _exp_shift(l, sh, lo, hi):  # pragma: no cover - compiled
    """In place ``l = exp(l - sh)`` on rows lo..hi-1."""
    V = l.shape[1]
    for c in range(lo, hi):
        for a in range(V):
            l[c, a] = np.exp(l[c, a] - sh)


@numba.njit(cache=True)
def _wp_logs(log_mu, log_r, pis, l2, lo, hi):  # pragma: no cover - compiled
    """``pis = exp(log mu + log r)`` (pi on mu's support), ``l2 = log mu + 2 log r``; max of l2."""
    V = log_mu.shape[1]
    m = -np.inf
    for c in range(lo, hi):
        for a in range(V):
            lw = log_mu[c, a]
            lr = log_r[c, a]
            pis[c, a] = np.exp(lw + lr)
            v = lw + 2.0 * lr
            l2[c, a] = v
            if v > m and v < np.inf:
                m = v
    return m


@numba.njit(cache=True, parallel=True)
def _wp_factors(log_mu, log_r, pis, g2, pmax, nch):  # pragma: no cover - compiled
    S = pis.shape[0]
    if nch > 1:
        for ch in numba.prange(nch):
            lo, hi = _bounds(ch, nch, S)
            pmax[0, ch] = _wp_logs(log_mu, log_r, pis, g2, lo, hi)
    else:
        pmax[0, 0] = _wp_logs(log_mu, log_r, pis, g2, 0, S)
    sh2 = _chunk_max(pmax[0, :nch])
    if nch > 1:
        for ch in numba.prange(nch):
            lo, hi = _bounds(ch, nch, S)
            _exp_shift(g2, sh2, lo, hi)
    else:
        _exp_shift(g2, sh2, 0, S)
    return sh2


@numba.njit(cache=True)
def _wp_sums1(X1, pis, rho, mn, eos, last, part, lo, hi):  # pragma: no cover - compiled
    """Per context: ``sum_a P1``, ``sum_a P1 rew`` and ``sum_{a terminating} P1``."""
    V = pis.shape[1]
    for c in range(lo, hi):
        s0 = 0.0
        s1 = 0.0
        x = X1[c]
        for a in range(V):
            p = x * pis[c, a]
            ends = last or a == eos
            rew = rho[c, a] + mn[c, a] if ends else rho[c, a] + 0.0
            s0 += p
            s1 += p * rew
        part[0, c] = s0
        part[1, c] = s1
        if last:
            part[2, c] = s0
        elif eos >= 0:
            part[2, c] = x * pis[c, eos]
        else:
            part[2, c] = 0.0


@numba.njit(cache=True)
def _wp_sums2(X2, g2, rho, mn, eos, last, theta, part, lo, hi):  # pragma: no cover - compiled
    """Per context: ``sum_a P2 (rew - theta)`` and ``sum_{a terminating} P2``."""
    V = g2.shape[1]
    for c in range(lo, hi):
        s0 = 0.0
        s1 = 0.0
        x = X2[c]
        for a in range(V):
            p = x * g2[c, a]
            ends = last or a == eos
            rew = rho[c, a] + mn[c, a] if ends else rho[c, a] + 0.0
            s0 += p * (rew - theta)
            if ends:
                s1 += p
        part[3, c] = s0
        part[4, c] = s1


@numba.njit(cache=True)
def _wp_pull(X1, X2, new1, new2, indptr, src, pe, ge, lo, hi):  # pragma: no cover - compiled
    for cp in range(lo, hi):
        b1 = 0.0
        b2 = 0.0
        for e in range(indptr[cp], indptr[cp + 1]):
            c = src[e]
            b1 += X1[c] * pe[e]
            b2 += X2[c] * ge[e]
        new1[cp] = b1
        new2[cp] = b2


@numba.njit(cache=True, parallel=True)
def wpdis_kernel(start, indptr, src, tok, eos, log_mu, log_r, rho, mn, T, nch):  # pragma: no cover - compiled
    r"""Per-step wpdis quantities (see ``_recursions.wpdis_stats``).

    Returns ``(b, theta, c_val, c_scale, bad)``; ``bad`` is the first step with ``b_t <= 0``
    (then the other arrays are only filled before it), or -1.
    """
    S, V = log_mu.shape[1], log_mu.shape[2]
    tdep = log_mu.shape[0] > 1 or log_r.shape[0] > 1
    pis = np.empty((S, V))
    g2 = np.empty((S, V))
    pmax = np.empty((1, max(nch, 1)))
    E = src.shape[0]
    pe = np.empty(E)
    ge = np.empty(E)
    sh2 = 0.0
    if not tdep:
        sh2 = _wp_factors(log_mu[0], log_r[0], pis, g2, pmax, nch)
        _gather_par(pis, src, tok, pe, nch)
        _gather_par(g2, src, tok, ge, nch)
    X1 = start.copy()
    X2 = start.copy()
    new1 = np.zeros(S)
    new2 = np.zeros(S)
    part = np.zeros((5, S))
    s2 = 0.0
    ended1 = 0.0
    ended2 = np.zeros(1)
    e2s = -np.inf
    add = np.zeros(1)
    run = np.zeros(1)
    b = np.zeros(T)
    theta = np.zeros(T)
    c_val = np.zeros(T)
    c_scale = np.full(T, -np.inf)
    for t in range(T):
        if tdep:
            sh2 = _wp_factors(log_mu[t if log_mu.shape[0] > 1 else 0], log_r[t if log_r.shape[0] > 1 else 0], pis,
                              g2, pmax, nch)
            if t < T - 1:
                _gather_par(pis, src, tok, pe, nch)
                _gather_par(g2, src, tok, ge, nch)
        last = t == T - 1
        if nch > 1:
            for ch in numba.prange(nch):
                lo, hi = _bounds(ch, nch, S)
                _wp_sums1(X1, pis, rho, mn, eos, last, part, lo, hi)
        else:
            _wp_sums1(X1, pis, rho, mn, eos, last, part, 0, S)
        p_all = 0.0
        p_rew = 0.0
        p_end = 0.0
        for c in range(S):
            p_all += part[0, c]
            p_rew += part[1, c]
            p_end += part[2, c]
        b[t] = p_all + ended1
        if not b[t] > 0.0:
            return b, theta, c_val, c_scale, t
        th = p_rew / b[t]
        theta[t] = th
        if nch > 1:
            for ch in numba.prange(nch):
                lo, hi = _bounds(ch, nch, S)
                _wp_sums2(X2, g2, rho, mn, eos, last, th, part, lo, hi)
        else:
            _wp_sums2(X2, g2, rho, mn, eos, last, th, part, 0, S)
        r_run = 0.0
        r_end = 0.0
        for c in range(S):
            r_run += part[3, c]
            r_end += part[4, c]
        sc2 = s2 + sh2
        run[0] = r_run
        add[0] = ended2[0] * (-th)
        c_scale[t] = _log_add(run, sc2, add, e2s)
        c_val[t] = run[0]
        ended1 += p_end
        add[0] = r_end
        e2s = _log_add(ended2, e2s, add, sc2)
        if last:
            break
        if nch > 1:
            for ch in numba.prange(nch):
                lo, hi = _bounds(ch, nch, S)
                _wp_pull(X1, X2, new1, new2, indptr, src, pe, ge, lo, hi)
        else:
            _wp_pull(X1, X2, new1, new2, indptr, src, pe, ge, 0, S)
        X1, new1 = new1, X1
        X2, new2 = new2, X2
        mx = 0.0
        for c in range(S):
            v = abs(X2[c])
            if v > mx:
                mx = v
        if mx > 0.0 and np.isfinite(mx):
            for c in range(S):
                X2[c] /= mx
            s2 = sc2 + np.log(mx)
        else:
            s2 = sc2
    return b, theta, c_val, c_scale, -1
