r"""numba kernels of the forward moment recursions (numpy twins in :mod:`._recursions`).

Every kernel walks the steps ``t = 0..T-1`` and keeps, per context, a few moments of running
accumulators (see :mod:`._recursions` for the algebra). One step reads each flow ``(c, a)``
once. Routing uses a *pull* formulation: :func:`incoming` sorts the continuing flows
(``a != eos``) by their next context ``nxt(c, a)`` (counting sort, ascending ``(c, a)`` within
a target), and each next context sums its incoming flows in that fixed order. Targets are
independent, so they run in ``nch`` parallel chunks (``numba.prange``) without races, and
every collected sum over contexts is formed from per-context partial sums added serially in
context order. The results therefore do not depend on the number of threads or chunks (bit
for bit). With ``nch = 1`` no parallel region is entered at all (a parallel launch per step
costs more than a whole step of a small MDP, and much more when the cores are busy).

Per-step arrays come as ``(Tp, S, V)`` with ``Tp = 1`` (stationary: the one slice serves
every step; per-step kernels such as ``exp(log mu + k log h - shift)`` are then computed
once) or ``Tp = T``. The per-flow factors a pull reads are first gathered into pull order
(``_gather``: ``out[e] = a[src[e], tok[e]]``), once for stationary arrays and once per step
otherwise, so the inner loops stream them and only gather the (small) per-context state.
``eos = -1`` means no eos token.

Cost per step: O(S V) with a handful of flops per flow; at S = 4096, V = 64 a step of the
multiplicative engine takes about 0.2 ms on two cores.

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
def _renormalise(state, k0, k1, S):  # pragma: no cover - compiled
    """Divide columns ``k0..k1-1`` of ``state`` (S, K) by their max-abs; return its log (0 if none)."""
    mx = 0.0
    for c in range(S):
        for k in range(k0, k1):
            v = abs(state[c, k])
            if v > mx:
                mx = v
    if mx > 0.0 and np.isfinite(mx):
        for c in range(S):
            for k in range(k0, k1):
                state[c, k] /= mx
        return np.log(mx)
    return 0.0


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


# --------------------------------------------------------------------------- additive engine


@numba.njit(cache=True, inline="always")
def _shift_a(m0, m1, m2, x, x2):  # pragma: no cover - compiled
    # moments of A + x from those of A (stage 1 of the numpy twin)
    return m0, m1 + m0 * x, m2 + 2.0 * m1 * x + m0 * x2


@numba.njit(cache=True, inline="always")
def _add_flow(M, c, w, x, rho, has_rho):  # pragma: no cover - compiled
    """The 9 flow moments ``N_ij`` (i over powers of A, j of R) of context ``c`` for one token."""
    x2 = x * x
    u00, u10, u20 = _shift_a(M[c, 0], M[c, 1], M[c, 2], x, x2)
    if has_rho:
        u01, u11, u21 = _shift_a(M[c, 3], M[c, 4], M[c, 5], x, x2)
        u02, u12, u22 = _shift_a(M[c, 6], M[c, 7], M[c, 8], x, x2)
        rho2 = rho * rho
        return (
            u00 * w, u10 * w, u20 * w,
            (u01 + u00 * rho) * w, (u11 + u10 * rho) * w, (u21 + u20 * rho) * w,
            (u02 + 2.0 * u01 * rho + u00 * rho2) * w,
            (u12 + 2.0 * u11 * rho + u10 * rho2) * w,
            (u22 + 2.0 * u21 * rho + u20 * rho2) * w,
        )
    return u00 * w, u10 * w, u20 * w, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0


@numba.njit(cache=True)
def _add_pull(M, new, indptr, src, we, xe, re, has_rho, lo, hi):  # pragma: no cover - compiled
    K = M.shape[1]
    for cp in range(lo, hi):
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = 0.0
        for e in range(indptr[cp], indptr[cp + 1]):
            wt = we[e]
            xt = xe[e] if wt > 0.0 else 0.0
            n = _add_flow(M, src[e], wt, xt, re[e], has_rho)
            a0 += n[0]
            a1 += n[1]
            a2 += n[2]
            if has_rho:
                a3 += n[3]
                a4 += n[4]
                a5 += n[5]
                a6 += n[6]
                a7 += n[7]
                a8 += n[8]
        new[cp, 0] = a0
        new[cp, 1] = a1
        new[cp, 2] = a2
        if K == 9:
            new[cp, 3] = a3
            new[cp, 4] = a4
            new[cp, 5] = a5
            new[cp, 6] = a6
            new[cp, 7] = a7
            new[cp, 8] = a8


@numba.njit(cache=True)
def _add_collect(M, w, x, rho, has_rho, mn, mn2, a0, tok, part1, part2, lo, hi):  # pragma: no cover
    """Per-context sums of the terminating statistic's moments over token ``tok`` (all if -1)."""
    V = w.shape[1]
    for c in range(lo, hi):
        s1 = 0.0
        s2 = 0.0
        a_lo, a_hi = (0, V) if tok < 0 else (tok, tok + 1)
        for a in range(a_lo, a_hi):
            wt = w[c, a]
            xt = x[c, a] if wt > 0.0 else 0.0
            n = _add_flow(M, c, wt, xt, rho[c, a], has_rho)
            m, m2 = mn[c, a], mn2[c, a]
            # n = (N00, N10, N20, N01, N11, N21, N02, N12, N22)
            s1 += a0 * n[3] + n[4] + m * (a0 * n[0] + n[1])
            p0 = a0 * a0 * n[0] + 2.0 * a0 * n[1] + n[2]
            p1 = a0 * a0 * n[3] + 2.0 * a0 * n[4] + n[5]
            p2 = a0 * a0 * n[6] + 2.0 * a0 * n[7] + n[8]
            s2 += p2 + 2.0 * m * p1 + m2 * p0
        part1[c] = s1
        part2[c] = s2


@numba.njit(cache=True, parallel=True)
def additive_kernel(start, indptr, src, tok, eos, mu, x, rho, has_rho, mn, mn2, a0, per_length, T, nch):  # pragma: no cover
    r"""``(E[f], E[f^2])`` of ``f = kappa(L) (a0 + A) G`` (twin: ``_recursions._additive_numpy``).

    The state ``M (S, K)`` holds ``E[A^i R^j 1{c}]`` at column ``3 j + i`` (``K = 9`` with step
    rewards, else ``K = 3``: the R moments vanish).
    """
    S = mu.shape[1]
    K = 9 if has_rho else 3
    M = np.zeros((S, K))
    M[:, 0] = start
    new = np.zeros((S, K))
    part1 = np.zeros(S)
    part2 = np.zeros(S)
    E = src.shape[0]
    we = np.empty(E)
    xe = np.empty(E)
    re = np.zeros(E)
    if has_rho:
        _gather_par(rho, src, tok, re, nch)
    mean = 0.0
    second = 0.0
    for t in range(T):
        w = mu[t if mu.shape[0] > 1 else 0]
        xt = x[t if x.shape[0] > 1 else 0]
        if t == 0 or mu.shape[0] > 1:
            _gather_par(w, src, tok, we, nch)
        if t == 0 or x.shape[0] > 1:
            _gather_par(xt, src, tok, xe, nch)
        last = t == T - 1
        if last or eos >= 0:
            tk = -1 if last else eos
            if last and nch > 1:
                for ch in numba.prange(nch):
                    lo, hi = _bounds(ch, nch, S)
                    _add_collect(M, w, xt, rho, has_rho, mn, mn2, a0, tk, part1, part2, lo, hi)
            else:
                _add_collect(M, w, xt, rho, has_rho, mn, mn2, a0, tk, part1, part2, 0, S)
            f1 = 0.0
            f2 = 0.0
            for c in range(S):
                f1 += part1[c]
                f2 += part2[c]
            kappa = 1.0 / (t + 1) if per_length else 1.0
            mean += kappa * f1
            second += kappa * kappa * f2
        if not last:
            if nch > 1:
                for ch in numba.prange(nch):
                    lo, hi = _bounds(ch, nch, S)
                    _add_pull(M, new, indptr, src, we, xe, re, has_rho, lo, hi)
            else:
                _add_pull(M, new, indptr, src, we, xe, re, has_rho, 0, S)
            M, new = new, M
    return mean, second


# --------------------------------------------------------------------------- multiplicative engine


@numba.njit(cache=True)
def _mult_logs(log_mu, log_h, div, l1, l2, lo, hi):  # pragma: no cover - compiled
    """``l1 = log mu + log_h / div``, ``l2 = log mu + 2 log_h / div`` on rows lo..hi-1; their max."""
    V = log_mu.shape[1]
    m1 = -np.inf
    m2 = -np.inf
    for c in range(lo, hi):
        for a in range(V):
            lh = log_h[c, a] / div
            u = log_mu[c, a] + lh
            v = log_mu[c, a] + 2.0 * lh
            l1[c, a] = u
            l2[c, a] = v
            if u > m1 and u < np.inf:
                m1 = u
            if v > m2 and v < np.inf:
                m2 = v
    return m1, m2


@numba.njit(cache=True)
def _exp_shift(l, sh, lo, hi):  # pragma: no cover - compiled
    """In place ``l = exp(l - sh)`` on rows lo..hi-1."""
    V = l.shape[1]
    for c in range(lo, hi):
        for a in range(V):
            l[c, a] = np.exp(l[c, a] - sh)


@numba.njit(cache=True, parallel=True)
def _mult_factors(log_mu, log_h, div, f1, f2, pmax, nch):  # pragma: no cover - compiled
    """``f_k = exp(log mu + k log_h / div - sh_k)`` (k = 1, 2) with ``sh_k`` the max finite exponent."""
    S = f1.shape[0]
    if nch > 1:
        for ch in numba.prange(nch):
            lo, hi = _bounds(ch, nch, S)
            m1, m2 = _mult_logs(log_mu, log_h, div, f1, f2, lo, hi)
            pmax[0, ch] = m1
            pmax[1, ch] = m2
    else:
        m1, m2 = _mult_logs(log_mu, log_h, div, f1, f2, 0, S)
        pmax[0, 0] = m1
        pmax[1, 0] = m2
    sh1 = _chunk_max(pmax[0, :nch])
    sh2 = _chunk_max(pmax[1, :nch])
    if nch > 1:
        for ch in numba.prange(nch):
            lo, hi = _bounds(ch, nch, S)
            _exp_shift(f1, sh1, lo, hi)
            _exp_shift(f2, sh2, lo, hi)
    else:
        _exp_shift(f1, sh1, 0, S)
        _exp_shift(f2, sh2, 0, S)
    return sh1, sh2


@numba.njit(cache=True)
def _mult_pull(E1, E2, new1, new2, indptr, src, f1e, f2e, re, has_rho, lo, hi):  # pragma: no cover
    for cp in range(lo, hi):
        b10 = b11 = b20 = b21 = b22 = 0.0
        for e in range(indptr[cp], indptr[cp + 1]):
            c = src[e]
            g1 = f1e[e]
            g2 = f2e[e]
            a10 = E1[c, 0]
            a20 = E2[c, 0]
            b10 += a10 * g1
            b20 += a20 * g2
            if has_rho:
                r = re[e]
                a21 = E2[c, 1]
                b11 += (E1[c, 1] + r * a10) * g1
                b21 += (a21 + r * a20) * g2
                b22 += (E2[c, 2] + 2.0 * r * a21 + r * r * a20) * g2
        new1[cp, 0] = b10
        new1[cp, 1] = b11
        new2[cp, 0] = b20
        new2[cp, 1] = b21
        new2[cp, 2] = b22


@numba.njit(cache=True)
def _mult_collect(E1, E2, f1, f2, rho, has_rho, mp, mp2, tok, part, lo, hi):  # pragma: no cover
    """Per-context sums (5, S) of ``E[H], E[H G'], E[H^2], E[H^2 G'], E[H^2 G'^2]`` at termination."""
    V = f1.shape[1]
    for c in range(lo, hi):
        s0 = s1 = s2 = s3 = s4 = 0.0
        a_lo, a_hi = (0, V) if tok < 0 else (tok, tok + 1)
        a10, a11 = E1[c, 0], E1[c, 1]
        a20, a21, a22 = E2[c, 0], E2[c, 1], E2[c, 2]
        for a in range(a_lo, a_hi):
            g1 = f1[c, a]
            g2 = f2[c, a]
            r = rho[c, a] if has_rho else 0.0
            n10 = a10 * g1
            n11 = (a11 + r * a10) * g1
            n20 = a20 * g2
            n21 = (a21 + r * a20) * g2
            n22 = (a22 + 2.0 * r * a21 + r * r * a20) * g2
            m, m2 = mp[c, a], mp2[c, a]
            s0 += n10
            s1 += n11 + m * n10
            s2 += n20
            s3 += n21 + m * n20
            s4 += n22 + 2.0 * m * n21 + m2 * n20
        part[0, c] = s0
        part[1, c] = s1
        part[2, c] = s2
        part[3, c] = s3
        part[4, c] = s4


@numba.njit(cache=True, parallel=True)
def multiplicative_kernel(start, indptr, src, tok, eos, log_mu, log_h, div, rho, has_rho, mp, mp2, nsteps,
                          collect_all, T, nch):  # pragma: no cover - compiled
    r"""Moments of ``H G'`` for ``H = prod_t h_t``, ``log h_t = log_h[t] / div`` (one batch).

    Runs steps ``0..nsteps-1``; collects at every terminating flow (``collect_all``) or only at
    step ``nsteps - 1`` (sequences of exactly ``nsteps`` tokens). ``mp, mp2`` (S, V) are the
    first and second moment of ``Z - shift`` at ``nxt(c, a)``.

    Returns
    -------
    first (2,), scale1, second (3,), scale2
        As one row of ``_recursions.MultResult``.
    """
    S, V = log_mu.shape[1], log_mu.shape[2]
    tdep = log_mu.shape[0] > 1 or log_h.shape[0] > 1
    f1 = np.empty((S, V))
    f2 = np.empty((S, V))
    pmax = np.empty((2, max(nch, 1)))
    E = src.shape[0]
    f1e = np.empty(E)
    f2e = np.empty(E)
    re = np.zeros(E)
    if has_rho:
        _gather_par(rho, src, tok, re, nch)
    sh1 = 0.0
    sh2 = 0.0
    if not tdep:
        sh1, sh2 = _mult_factors(log_mu[0], log_h[0], div, f1, f2, pmax, nch)
        _gather_par(f1, src, tok, f1e, nch)
        _gather_par(f2, src, tok, f2e, nch)
    E1 = np.zeros((S, 2))
    E2 = np.zeros((S, 3))
    E1[:, 0] = start
    E2[:, 0] = start
    new1 = np.zeros((S, 2))
    new2 = np.zeros((S, 3))
    part = np.zeros((5, S))
    out1 = np.zeros(2)
    out2 = np.zeros(3)
    c1 = np.zeros(2)
    c2 = np.zeros(3)
    o1 = -np.inf
    o2 = -np.inf
    s1 = 0.0
    s2 = 0.0
    for t in range(nsteps):
        if tdep:
            lm = log_mu[t if log_mu.shape[0] > 1 else 0]
            lh = log_h[t if log_h.shape[0] > 1 else 0]
            sh1, sh2 = _mult_factors(lm, lh, div, f1, f2, pmax, nch)
            if t < nsteps - 1 and t < T - 1:
                _gather_par(f1, src, tok, f1e, nch)
                _gather_par(f2, src, tok, f2e, nch)
        sc1 = s1 + sh1
        sc2 = s2 + sh2
        last = t == T - 1
        if (collect_all or t == nsteps - 1) and (last or eos >= 0):
            tk = -1 if last else eos
            if last and nch > 1:
                for ch in numba.prange(nch):
                    lo, hi = _bounds(ch, nch, S)
                    _mult_collect(E1, E2, f1, f2, rho, has_rho, mp, mp2, tk, part, lo, hi)
            else:
                _mult_collect(E1, E2, f1, f2, rho, has_rho, mp, mp2, tk, part, 0, S)
            c1[:] = 0.0
            c2[:] = 0.0
            for c in range(S):
                c1[0] += part[0, c]
                c1[1] += part[1, c]
                c2[0] += part[2, c]
                c2[1] += part[3, c]
                c2[2] += part[4, c]
            o1 = _log_add(out1, o1, c1, sc1)
            o2 = _log_add(out2, o2, c2, sc2)
        if last or t == nsteps - 1:
            continue
        if E == 0:
            break
        if nch > 1:
            for ch in numba.prange(nch):
                lo, hi = _bounds(ch, nch, S)
                _mult_pull(E1, E2, new1, new2, indptr, src, f1e, f2e, re, has_rho, lo, hi)
        else:
            _mult_pull(E1, E2, new1, new2, indptr, src, f1e, f2e, re, has_rho, 0, S)
        E1, new1 = new1, E1
        E2, new2 = new2, E2
        s1 = sc1 + _renormalise(E1, 0, 2, S)
        s2 = sc2 + _renormalise(E2, 0, 3, S)
    return out1, o1, out2, o2


# --------------------------------------------------------------------------- per-decision engine


@numba.njit(cache=True)
def _pdis_logs(log_mu, log_r, g, lo, hi):  # pragma: no cover - compiled
    """``g[k] = log mu + k log r`` (k = 0, 1, 2) on rows lo..hi-1; max of k <= 1 and of all."""
    V = log_mu.shape[1]
    m1 = -np.inf
    m2 = -np.inf
    for c in range(lo, hi):
        for a in range(V):
            lw = log_mu[c, a]
            lr = log_r[c, a]
            v0 = lw
            v1 = lw + lr
            v2 = lw + 2.0 * lr
            g[0, c, a] = v0
            g[1, c, a] = v1
            g[2, c, a] = v2
            for v in (v0, v1):
                if v > m1 and v < np.inf:
                    m1 = v
            for v in (v0, v1, v2):
                if v > m2 and v < np.inf:
                    m2 = v
    return m1, m2


@numba.njit(cache=True)
def _pdis_exps(g, sh1, sh2, lo, hi):  # pragma: no cover - compiled
    """From ``g[0..2]`` (logs) to ``g[0..4] = (e^{l0-sh1}, e^{l1-sh1}, e^{l0-sh2}, e^{l1-sh2}, e^{l2-sh2})``."""
    V = g.shape[2]
    for c in range(lo, hi):
        for a in range(V):
            l0, l1, l2 = g[0, c, a], g[1, c, a], g[2, c, a]
            g[0, c, a] = np.exp(l0 - sh1)
            g[1, c, a] = np.exp(l1 - sh1)
            g[2, c, a] = np.exp(l0 - sh2)
            g[3, c, a] = np.exp(l1 - sh2)
            g[4, c, a] = np.exp(l2 - sh2)


@numba.njit(cache=True, parallel=True)
def _pdis_factors(log_mu, log_r, g, pmax, nch):  # pragma: no cover - compiled
    S = g.shape[1]
    if nch > 1:
        for ch in numba.prange(nch):
            lo, hi = _bounds(ch, nch, S)
            m1, m2 = _pdis_logs(log_mu, log_r, g, lo, hi)
            pmax[0, ch] = m1
            pmax[1, ch] = m2
    else:
        m1, m2 = _pdis_logs(log_mu, log_r, g, 0, S)
        pmax[0, 0] = m1
        pmax[1, 0] = m2
    sh1 = _chunk_max(pmax[0, :nch])
    sh2 = _chunk_max(pmax[1, :nch])
    if nch > 1:
        for ch in numba.prange(nch):
            lo, hi = _bounds(ch, nch, S)
            _pdis_exps(g, sh1, sh2, lo, hi)
    else:
        _pdis_exps(g, sh1, sh2, 0, S)
    return sh1, sh2


@numba.njit(cache=True)
def _pdis_u(ubase, mu, shift, div, ut, lo, hi):  # pragma: no cover - compiled
    """``ut = (ubase - shift) / div`` where ``mu > 0``, else 0, on rows lo..hi-1."""
    V = ut.shape[1]
    for c in range(lo, hi):
        for a in range(V):
            ut[c, a] = (ubase[c, a] - shift) / div if mu[c, a] > 0.0 else 0.0


@numba.njit(cache=True, inline="always")
def _pdis_flow(X1, X2, c, g, ut, a):  # pragma: no cover - compiled
    """``(NX, NF, NXX, NXF, NFF)`` of context ``c`` for token ``a`` (state columns X, F / X^2, XF, F^2)."""
    u = ut[c, a]
    nx = X1[c, 0] * g[1, c, a]
    nf = X1[c, 1] * g[0, c, a] + nx * u
    nxx = X2[c, 0] * g[4, c, a]
    xf = X2[c, 1]
    nxf = xf * g[3, c, a] + nxx * u
    nff = X2[c, 2] * g[2, c, a] + 2.0 * xf * g[3, c, a] * u + nxx * u * u
    return nx, nf, nxx, nxf, nff


@numba.njit(cache=True)
def _pdis_pull(X1, X2, new1, new2, indptr, src, ge, ue, lo, hi):  # pragma: no cover - compiled
    # same algebra as _pdis_flow, on the per-flow factors in pull order
    for cp in range(lo, hi):
        b0 = b1 = b2 = b3 = b4 = 0.0
        for e in range(indptr[cp], indptr[cp + 1]):
            c = src[e]
            u = ue[e]
            nx = X1[c, 0] * ge[1, e]
            nxx = X2[c, 0] * ge[4, e]
            xf = X2[c, 1]
            b0 += nx
            b1 += X1[c, 1] * ge[0, e] + nx * u
            b2 += nxx
            b3 += xf * ge[3, e] + nxx * u
            b4 += X2[c, 2] * ge[2, e] + 2.0 * xf * ge[3, e] * u + nxx * u * u
        new1[cp, 0] = b0
        new1[cp, 1] = b1
        new2[cp, 0] = b2
        new2[cp, 1] = b3
        new2[cp, 2] = b4


@numba.njit(cache=True)
def _pdis_collect(X1, X2, g, ut, mn, mn2, al, be, tok, part, lo, hi):  # pragma: no cover - compiled
    V = g.shape[2]
    for c in range(lo, hi):
        s1 = 0.0
        s2 = 0.0
        a_lo, a_hi = (0, V) if tok < 0 else (tok, tok + 1)
        for a in range(a_lo, a_hi):
            n = _pdis_flow(X1, X2, c, g, ut, a)
            m, m2 = mn[c, a], mn2[c, a]
            k1 = al * m + be
            k2 = al * al * m2 + 2.0 * al * be * m + be * be
            s1 += n[1] + n[0] * k1
            s2 += n[4] + 2.0 * n[3] * k1 + n[2] * k2
        part[0, c] = s1
        part[1, c] = s2


@numba.njit(cache=True, parallel=True)
def pdis_kernel(start, indptr, src, tok, eos, mu, log_mu, log_r, ubase, ushift, udiv, alpha, beta, mn, mn2, T,
                nch):  # pragma: no cover - compiled
    r"""Moments of the per-decision statistic (twin: ``_recursions._pdis_numpy``).

    ``u_t = (ubase[t] - ushift[t]) / udiv[t]``; returns ``(v1, s1, v2, s2)`` with
    ``E[f] = v1 e^{s1}``, ``E[f^2] = v2 e^{s2}``.
    """
    S, V = mu.shape[1], mu.shape[2]
    tdep = log_mu.shape[0] > 1 or log_r.shape[0] > 1
    g = np.empty((5, S, V))
    ut = np.empty((S, V))
    pmax = np.empty((2, max(nch, 1)))
    E = src.shape[0]
    ge = np.empty((5, E))
    ue = np.empty(E)
    sh1 = 0.0
    sh2 = 0.0
    if not tdep:
        sh1, sh2 = _pdis_factors(log_mu[0], log_r[0], g, pmax, nch)
        for k in range(5):
            _gather_par(g[k], src, tok, ge[k], nch)
    X1 = np.zeros((S, 2))  # X, F
    X2 = np.zeros((S, 3))  # X^2, XF, F^2
    X1[:, 0] = start
    X2[:, 0] = start
    new1 = np.zeros((S, 2))
    new2 = np.zeros((S, 3))
    part = np.zeros((2, S))
    acc1 = np.zeros(1)
    acc2 = np.zeros(1)
    add = np.zeros(1)
    o1 = -np.inf
    o2 = -np.inf
    s1 = 0.0
    s2 = 0.0
    have_u = False
    for t in range(T):
        tm = t if mu.shape[0] > 1 else 0
        if tdep:
            sh1, sh2 = _pdis_factors(log_mu[t if log_mu.shape[0] > 1 else 0], log_r[t if log_r.shape[0] > 1 else 0],
                                     g, pmax, nch)
            if t < T - 1:
                for k in range(5):
                    _gather_par(g[k], src, tok, ge[k], nch)
        tu = t if ubase.shape[0] > 1 else 0
        if not have_u or ubase.shape[0] > 1 or mu.shape[0] > 1 or ushift[t] != ushift[t - 1] or udiv[t] != udiv[t - 1]:
            if nch > 1:
                for ch in numba.prange(nch):
                    lo, hi = _bounds(ch, nch, S)
                    _pdis_u(ubase[tu], mu[tm], ushift[t], udiv[t], ut, lo, hi)
            else:
                _pdis_u(ubase[tu], mu[tm], ushift[t], udiv[t], ut, 0, S)
            if t < T - 1:
                _gather_par(ut, src, tok, ue, nch)
            have_u = True
        sc1 = s1 + sh1
        sc2 = s2 + sh2
        last = t == T - 1
        if last or eos >= 0:
            tk = -1 if last else eos
            if last and nch > 1:
                for ch in numba.prange(nch):
                    lo, hi = _bounds(ch, nch, S)
                    _pdis_collect(X1, X2, g, ut, mn, mn2, alpha[t], beta[t], tk, part, lo, hi)
            else:
                _pdis_collect(X1, X2, g, ut, mn, mn2, alpha[t], beta[t], tk, part, 0, S)
            v1 = 0.0
            v2 = 0.0
            for c in range(S):
                v1 += part[0, c]
                v2 += part[1, c]
            add[0] = v1
            o1 = _log_add(acc1, o1, add, sc1)
            add[0] = v2
            o2 = _log_add(acc2, o2, add, sc2)
        if last:
            break
        if nch > 1:
            for ch in numba.prange(nch):
                lo, hi = _bounds(ch, nch, S)
                _pdis_pull(X1, X2, new1, new2, indptr, src, ge, ue, lo, hi)
        else:
            _pdis_pull(X1, X2, new1, new2, indptr, src, ge, ue, 0, S)
        X1, new1 = new1, X1
        X2, new2 = new2, X2
        s1 = sc1 + _renormalise(X1, 0, 2, S)
        s2 = sc2 + _renormalise(X2, 0, 3, S)
    return acc1[0], o1, acc2[0], o2


# --------------------------------------------------------------------------- wpdis statistics


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
    r"""Per-step wpdis quantities (twin: ``_recursions._wpdis_stats_numpy``).

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
