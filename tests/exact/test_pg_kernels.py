"""The numba kernels of the exact policy-gradient DPs (tokis.exact._pg_kernels) against the numpy engines.

The numpy programs of tokis.exact._pg_engines (per-step callables, Python loops over steps) are the
reference: on random small MDPs (eos, step rewards, several start contexts, Bernoulli noise,
time-dependent tables, zero-probability tokens) the table kernels must agree with them to 1e-12 for
the forward pass, every mode of the backward coefficients (the critic's advantage formed inside the
kernel, selected by its sign, to the powers 0 and 1) and the forward moments (with and without step
rewards in the return, a terminal factor, the critic to the powers 1 and 2, an initial X). The
results must not depend on the number of chunks or threads, bit for bit. Brute-force enumeration of
the objective's gradient itself is in test_objective_gradient.py.
"""

import numba
import numpy as np
import pytest
from _cases import random_cases

from tokis import exact
from tokis.exact import _pg_engines as eng
from tokis.exact._dp import _backward
from tokis.exact._objective import _Problem, _plan, _table_plan, _tok_split
from tokis.exact._pg_kernels import tok_split_kernel
from tokis.objectives import get_objective

TOL = 1e-12


def cases(seed, count, **over):
    rng = np.random.default_rng(seed + 7)
    for mdp, pi, mu, desc in random_cases(seed, count, **over):
        T = mdp.horizon
        mu_p = mu.expand_probs(T) if mu.time_dependent else mu.probs[None]
        kern = np.array(mu_p)
        kern[rng.uniform(size=kern.shape) < 0.15] = 0.0  # zero-probability tokens
        yield mdp, pi, mu, kern, rng, desc


CASES = list(cases(3, 32)) + list(cases(5, 8, S=6, V=4, T=6))


def close(got, ref, what):
    ref = np.asarray(ref, dtype=float)
    scale = max(1.0, float(np.abs(ref).max())) if ref.size else 1.0
    np.testing.assert_allclose(got, ref, rtol=TOL, atol=TOL * scale, err_msg=str(what))


def tables(rng, walk, tdep, count=2):
    """Random signed per-step tables ``(Tp, S, V)``."""
    Tp = walk.T if tdep else 1
    return [rng.normal(size=(Tp, walk.S, walk.V)) for _ in range(count)]


def advantage(walk, values, t):
    """The critic advantage of ``values`` (T + 1, S), written out."""
    cont = walk.cont(t)[None, :]
    q = walk.r + np.where(cont, values[t + 1][walk.nxt], walk.m[walk.nxt])
    return q - values[t][:, None]


def signed(walk, values, gp, gm, power):
    """``t -> A^power (gp where A > 0 else gm)`` (S, V)."""
    def at(t):
        A = advantage(walk, values, t)
        return np.where(A > 0, eng.Walk.at(gp, t), eng.Walk.at(gm, t)) * A ** power
    return at


@pytest.mark.parametrize("k", range(len(CASES)))
def test_forward_pass_matches_numpy(k):
    mdp, _, _, kern, _, desc = CASES[k]
    walk = eng.Walk(mdp)
    for second in (False, True):
        d, rho, rho2 = eng.forward_pass(walk, kern, second=second)
        d0, rho0, rho20 = eng.forward_pass_numpy(walk, kern, second=second)
        close(d, d0, desc)
        close(rho, rho0, desc)
        if second:
            close(rho2, rho20, desc)
        else:
            assert rho2 is None and rho20 is None
    d, rho, _ = eng.forward_pass(walk, kern, rewards=False)
    close(d, d0, desc)
    assert not rho.any()


@pytest.mark.parametrize("k", range(len(CASES)))
def test_backward_tables_match_numpy(k):
    mdp, _, _, kern, rng, desc = CASES[k]
    walk = eng.Walk(mdp)
    T, S, V = walk.T, walk.S, walk.V
    d, rho, _ = eng.forward_pass_numpy(walk, kern)
    psi = rng.uniform(0.2, 1.0, size=T)
    b = float(rng.uniform(0.0, 1.0))
    values = rng.normal(size=(T + 1, S))
    for tdep in (False, True):
        gp, gm = tables(rng, walk, tdep)
        for keep_t in (False, True):
            shape = (T, S, V) if keep_t else (S, V)
            same = lambda t: (eng.Walk.at(gp, t), eng.Walk.at(gp, t))  # noqa: E731
            both = lambda t: (eng.Walk.at(gp, t), eng.Walk.at(gm, t))  # noqa: E731
            runs = [("linear", {}, None, same), ("critic", {}, None, same)]  # critic without V: w = g_plus
            if not walk.has_r:
                zp, zm = rng.uniform(size=S), rng.uniform(size=S)
                runs += [("split", {}, gm, both), ("split", {"payoff": (zp, zm)}, gm, both)]
            for power in (0, 1):
                at = signed(walk, values, gp, gm, power)
                runs.append(("critic", {"critic": values, "power": power}, gm, lambda t, at=at: (at(t), at(t))))
            for mode, kw, g_minus, coef_at in runs:
                got = eng.backward_tables(walk, kern, d, rho, psi, gp, g_minus, baseline=b, mode=mode, keep_t=keep_t,
                                          **kw)
                ref = eng.backward_coefficients(walk, kern, d, rho, psi, coef_at, baseline=b, mode=mode,
                                                out_shape=shape, payoff=kw.get("payoff"))
                assert got.shape == shape
                close(got, ref, (desc, mode, kw.keys(), tdep, keep_t))


@pytest.mark.parametrize("k", range(len(CASES)))
def test_moments_tables_match_numpy(k):
    mdp, _, _, kern, rng, desc = CASES[k]
    walk = eng.Walk(mdp)
    T, S = walk.T, walk.S
    psi = rng.uniform(0.2, 1.0, size=T)
    b = float(rng.uniform(0.0, 1.0))
    values = rng.normal(size=(T + 1, S))
    for tdep in (False, True):
        xp, xm = tables(rng, walk, tdep)
        plain = lambda t: eng.Walk.at(xp, t)  # noqa: E731
        z = (rng.uniform(size=S), rng.uniform(size=S))
        runs = [({}, {}, plain), ({"z": z}, {"z": z}, plain), ({"unit_return": True}, {"unit_return": True}, plain)]
        for power in (1, 2):
            runs.append(({"unit_return": True, "critic": values, "power": power, "x_minus": xm},
                         {"unit_return": True}, signed(walk, values, xp, xm, power)))
        for kw, ref_kw, x_at in runs:
            got = eng.moments_tables(walk, kern, xp, psi, baseline=b, **kw)
            ref = eng.forward_moments(walk, kern, x_at, psi, baseline=b, **ref_kw)
            close(np.array(got), np.array(ref), (desc, list(kw), tdep))
    # an initial X: X = 1 from the start is x = 1 at step 0
    got = eng.moments_tables(walk, kern, np.zeros((1, S, walk.V)), psi, baseline=b, x_init=1.0)
    ref = eng.forward_moments(walk, kern, lambda t: np.full((S, walk.V), 1.0 if t == 0 else 0.0), psi, baseline=b)
    close(np.array(got), np.array(ref), desc)


@pytest.mark.parametrize("k", range(0, len(CASES), 3))
def test_tok_split_kernel_matches_numpy(k):
    mdp, pi, mu, _, _, desc = CASES[k]
    pb = _Problem(mdp, pi, mu, None, get_objective("tok"), get_objective("tok").settings())
    walk = pb.walk
    shape = pi.logits.shape
    state, value = _tok_split(pb, None, shape)
    # the loop over steps, written out in numpy
    d_mu, _, _ = eng.forward_pass_numpy(walk, pb.mu)
    d_pi, _, _ = eng.forward_pass_numpy(walk, pb.pi)
    V_pi, _ = _backward(mdp, pb.pi, want_q=False)
    s_ref, v_ref = np.zeros(shape), np.zeros(shape)
    for t in range(pb.T):
        cont = walk.cont(t)[None, :]
        pt = eng.Walk.at(pb.pi, t)
        q_mu = walk.r + np.where(cont, pb.V_mu[t + 1][walk.nxt], walk.m[walk.nxt])
        q_pi = walk.r + np.where(cont, V_pi[t + 1][walk.nxt], walk.m[walk.nxt])
        a_mu = q_mu - (pt * q_mu).sum(axis=1, keepdims=True)
        s_t = (d_mu[t] - d_pi[t])[:, None] * pt * a_mu
        v_t = d_pi[t][:, None] * pt * (a_mu - (q_pi - V_pi[t][:, None]))
        if len(shape) == 3:
            s_ref[t], v_ref[t] = s_t, v_t
        else:
            s_ref += s_t
            v_ref += v_t
    close(state, s_ref, desc)
    close(value, v_ref, desc)
    # the same sweep gives grad J as exact.gradient forms it, bit for bit
    s2, v2, g = _tok_split(pb, None, shape, want_gradient=True)
    assert np.array_equal(g, exact.gradient(mdp, pi)), desc
    assert np.array_equal(s2, state) and np.array_equal(v2, value)


@pytest.mark.parametrize("objective, params", [("tok", {}), ("ppo_clip", {}), ("ppo_clip", {"advantage": "critic"}),
                                               ("seq", {"advantage": "critic"}), ("cispo", {"correction": "tis"})])
def test_compat_plan_runs_the_same_dp(objective, params):
    """``_plan``'s per-step callables (the numpy engine) give the table engine's coefficients."""
    for mdp, pi, mu, _, _, desc in CASES[::5]:
        spec = get_objective(objective)
        pb = _Problem(mdp, pi, mu, None, spec, spec.settings(**params))
        plan, tb = _plan(pb), _table_plan(pb)
        if plan is None:
            assert tb is None
            continue
        mode, kern, coef_at = plan
        d, rho, _ = eng.forward_pass(pb.walk, kern)
        shape = (pb.walk.S, pb.walk.V)
        ref = eng.backward_coefficients(pb.walk, kern, d, rho, pb.psi, coef_at, baseline=pb.b, mode=mode,
                                        out_shape=shape)
        got = eng.backward_tables(pb.walk, tb.kern, d, rho, pb.psi, tb.g_plus, tb.g_minus, baseline=pb.b,
                                  mode=tb.mode, critic=tb.critic)
        close(got, ref, desc)


def _all_kernels(walk, kern, tabs, values, psi, nch):
    gp, gm = tabs
    d, rho, rho2 = eng.forward_pass(walk, kern, second=True, nch=nch)
    out = [d, rho, rho2]
    for mode, kw in [("linear", {}), ("split", {}), ("critic", {"critic": values, "power": 1})]:
        if mode == "split" and walk.has_r:
            continue
        for keep_t in (False, True):
            out.append(eng.backward_tables(walk, kern, d, rho, psi, gp, gm, baseline=0.3, mode=mode, keep_t=keep_t,
                                           nch=nch, **kw))
    for kw in [{}, {"z": (walk.m, walk.m2)}, {"unit_return": True, "critic": values, "power": 2, "x_minus": gm}]:
        out.append(np.array(eng.moments_tables(walk, kern, gp, psi, baseline=0.3, nch=nch, **kw)))
    return out


def test_results_do_not_depend_on_chunks_or_threads():
    """Bit for bit: every kernel, every chunk count, one and two threads (larger MDPs, each feature)."""
    threads = numba.get_num_threads()
    try:
        for mdp, pi, mu, kern, rng, desc in cases(17, 8, S=40, V=5, T=7):
            walk = eng.Walk(mdp)
            tdep = kern.shape[0] > 1
            tabs = tables(rng, walk, tdep)
            values = rng.normal(size=(walk.T + 1, walk.S))
            psi = rng.uniform(0.2, 1.0, size=walk.T)
            ref = _all_kernels(walk, kern, tabs, values, psi, 1)
            for n_threads in sorted({1, min(2, threads)}):
                numba.set_num_threads(n_threads)
                for nch in (2, 3, 7, 40):
                    got = _all_kernels(walk, kern, tabs, values, psi, nch)
                    for a, b in zip(got, ref):
                        assert np.array_equal(a, b), (desc, nch, n_threads)
            pb = _Problem(mdp, pi, mu, None, get_objective("tok"), get_objective("tok").settings())
            d_pi = eng.forward_pass(walk, pb.pi)[0]
            V_pi, _ = _backward(mdp, pb.pi, want_q=False)
            args = (walk.nxt32, walk.eos, eng._ro(walk.r), eng._ro(walk.m), walk.table(pb.pi), eng._ro(pb.d_mu),
                    eng._ro(d_pi), eng._ro(pb.V_mu), eng._ro(V_pi), walk.T, tdep)
            s1, v1, g1 = tok_split_kernel(*args, True, 1)
            for nch in (2, 5):
                s2, v2, g2 = tok_split_kernel(*args, True, nch)
                assert np.array_equal(s1, s2) and np.array_equal(v1, v2) and np.array_equal(g1, g2), desc
    finally:
        numba.set_num_threads(threads)


def test_objective_gradient_does_not_depend_on_threads():
    mdp, pi, mu, _, _, _ = next(cases(23, 1, S=300, V=250, T=5, eos=True))
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = [exact.objective_gradient(mdp, pi, mu, o) for o in ("tok", "ppo_clip", "seq")]
        numba.set_num_threads(threads)
        many = [exact.objective_gradient(mdp, pi, mu, o) for o in ("tok", "ppo_clip", "seq")]
    finally:
        numba.set_num_threads(threads)
    for a, b in zip(one, many):
        assert np.array_equal(a.mean, b.mean)
        assert a.variance_along == b.variance_along and a.clip_probability == b.clip_probability
