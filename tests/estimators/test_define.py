"""A new estimator is one declaration: define() gives the function, the numba kernel, exact moments
and a row of every ``tokis`` command, with no other code (DESIGN section 4, issue "one definition").

The declaration used throughout is the two-sided token clip 1 + sum_t (clip(r_t, 1 - eps, 1 + eps) - 1),
written in user code; its exact moments are checked against brute-force enumeration of every
sequence (``_reference.enumerate_sequences``) with the statistic written out here per sequence.
"""

import math
import textwrap

import numpy as np
import pytest
from _cases import random_cases
from _reference import enumerate_sequences

import tokis.estimators as est
from tokis import exact
from tokis.analysis._cli import main as cli_main
from tokis.estimators import BatchTransform, PerDecision, SequenceTransform, TokenProduct, TokenSum, define

USER_MODULE = '''
import numpy as np
from tokis.estimators import TokenSum, define


def two_sided(l, eps):
    return np.clip(np.exp(l), 1.0 - eps, 1.0 + eps) - 1.0


clip2 = define("clip2", TokenSum(two_sided), params={"eps": 0.2},
               description="two-sided token clip: 1 + sum_t (clip(r_t, 1 - eps, 1 + eps) - 1)",
               reference="user code")
'''


def two_sided(l, eps):
    return np.clip(np.exp(l), 1.0 - eps, 1.0 + eps) - 1.0


CLIP2 = define("clip2_test", TokenSum(two_sided), params={"eps": 0.2}, description="two-sided token clip")


def _reference_moments(mdp, pi, mu, stat):
    """Mean and variance of ``stat(log_ratio_row, length) * G`` by enumerating every sequence."""
    e = enumerate_sequences(mdp, pi=pi, mu=mu)
    keep = e.prob["mu"] > 0
    p = e.prob["mu"][keep]
    lr = e.log_ratio()[keep]
    L = e.lengths[keep]
    y = np.array([stat(lr[i, : L[i]]) for i in range(len(p))])
    G, m = e.returns[keep], e.terminal[keep]
    f = y * G
    noise = y * y * m * (1.0 - m) if mdp.reward_noise == "bernoulli" else 0.0
    mean = float(p @ f)
    return mean, float(p @ ((f - mean) ** 2 + noise))


def _clip2_row(row, eps=0.2):
    return 1.0 + math.fsum(min(max(math.exp(x), 1.0 - eps), 1.0 + eps) - 1.0 for x in row)


CASES = list(random_cases(31, 12))


@pytest.mark.parametrize("k", range(len(CASES)))
def test_user_token_sum_has_exact_moments_equal_to_enumeration(k):
    mdp, pi, mu, desc = CASES[k]
    for eps in (0.2, 0.05):
        m = exact.moments(mdp, pi, mu, CLIP2, eps=eps)
        mean, var = _reference_moments(mdp, pi, mu, lambda row: _clip2_row(row, eps))
        assert m.method == "exact", desc
        assert m.mean == pytest.approx(mean, rel=1e-10, abs=1e-12), desc
        assert m.variance == pytest.approx(var, rel=1e-9, abs=1e-12), desc


@pytest.mark.parametrize("k", range(0, len(CASES), 3))
def test_user_product_and_per_decision_forms_are_exact(k):
    mdp, pi, mu, desc = CASES[k]
    half = define("half", TokenProduct(lambda l: 0.5 * l, per_length=False))
    mean, var = _reference_moments(mdp, pi, mu, lambda row: math.exp(0.5 * math.fsum(row)))
    m = exact.moments(mdp, pi, mu, half)
    assert m.method == "exact"
    assert m.mean == pytest.approx(mean, rel=1e-10, abs=1e-12) and m.variance == pytest.approx(var, rel=1e-9, abs=1e-12)
    # a per-decision form with a clipped factor, against forced enumeration (which runs the estimator itself)
    pd = define("pd_clip", PerDecision(lambda l, c: np.minimum(l, np.log(c))), params={"c": 1.3})
    a = exact.moments(mdp, pi, mu, pd)
    b = exact.moments(mdp, pi, mu, pd, method="enumeration")
    assert a.method == "exact" and b.method == "enumeration"
    assert a.mean == pytest.approx(b.mean, rel=1e-10, abs=1e-12)
    assert a.variance == pytest.approx(b.variance, rel=1e-9, abs=1e-12)


def test_user_sequence_transform_is_exact_by_enumeration():
    mdp, pi, mu, _ = CASES[2]
    capped = define("capped", SequenceTransform(TokenProduct(lambda l: l), lambda lw, c: np.minimum(lw, np.log(c))),
                    params={"c": 1.5})
    m = exact.moments(mdp, pi, mu, capped)
    mean, var = _reference_moments(mdp, pi, mu, lambda row: min(math.exp(math.fsum(row)), 1.5))
    assert m.method == "enumeration"
    assert m.mean == pytest.approx(mean, rel=1e-10, abs=1e-12) and m.variance == pytest.approx(var, rel=1e-9, abs=1e-12)


def test_user_estimator_on_numpy_numba_and_torch(rng):
    n, T = 300, 40
    lr = rng.normal(scale=0.3, size=(n, T))
    mask = np.arange(T)[None, :] < rng.integers(0, T + 1, size=n)[:, None]
    g = rng.uniform(size=n)
    a = CLIP2(lr, g, mask=mask, backend="numpy")
    b = CLIP2(lr, g, mask=mask, backend="numba")
    by_hand = np.array([_clip2_row(lr[i][mask[i]]) for i in range(n)]) * g
    assert a.value == pytest.approx(by_hand.mean(), rel=1e-12)
    assert b.value == pytest.approx(a.value, rel=1e-12) and b.stderr == pytest.approx(a.stderr, rel=1e-10)
    assert b.diagnostics["backend"] == "numba" and a.diagnostics["eps"] == 0.2
    c = CLIP2(lr, g, mask=mask, eps=0.05)
    assert c.value == pytest.approx(np.mean([_clip2_row(lr[i][mask[i]], 0.05) for i in range(n)] * g), rel=1e-12)
    torch = pytest.importorskip("torch")
    t = CLIP2(torch.tensor(lr), torch.tensor(g), mask=torch.tensor(mask))
    assert t.value == pytest.approx(a.value, rel=1e-12) and isinstance(t.samples, np.ndarray)


@pytest.fixture
def isolated_registry():
    """Registrations made by a test are undone afterwards (the registry is a live view of one dict)."""
    from tokis.estimators import _define

    saved = dict(_define._REGISTRY)
    yield
    _define._REGISTRY.clear()
    _define._REGISTRY.update(saved)


def test_register_makes_it_usable_by_name(isolated_registry):
    spec = define("clip2_named", TokenSum(two_sided), params={"eps": 0.1})
    est.register(spec)
    assert est.REGISTRY["clip2_named"] is spec and est.get_estimator("clip2_named") is spec
    mdp, pi, mu, _ = CASES[0]
    assert exact.moments(mdp, pi, mu, "clip2_named").mean == exact.moments(mdp, pi, mu, spec).mean
    with pytest.raises(ValueError, match="already registered"):
        est.register(define("clip2_named", TokenSum(two_sided), params={"eps": 0.1}))
    with pytest.raises(ValueError, match="already registered"):
        est.register(define("seq", TokenProduct(lambda l: l)), replace=True)  # built-ins stay
    with pytest.raises(TypeError, match="takes an EstimatorSpec"):
        est.register("seq")


def test_cli_runs_a_user_declaration(tmp_path, monkeypatch, capsys, isolated_registry):
    (tmp_path / "my_estimators.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.chdir(tmp_path)
    code = cli_main(["horizon", "--horizons", "1,2", "--n", "64", "-R", "20", "--no-store", "--no-progress",
                     "--estimators", "seq,my_estimators:clip2,my_estimators:clip2:eps=0.05"])
    out = capsys.readouterr().out
    assert code == 0
    rows = [line for line in out.splitlines() if "clip2(eps=0.2)" in line and "±" in line]
    assert len(rows) == 2 and all("| exact " in r for r in rows)  # exact moments came from the declaration
    assert len([line for line in out.splitlines() if "clip2(eps=0.05)" in line and "±" in line]) == 2
    code = cli_main(["horizon", "--horizons", "1", "--n", "8", "-R", "2", "--no-store",
                     "--estimators", "my_estimators:nothing_here"])
    assert code == 2 and "must name an estimator made by tokis.estimators.define" in capsys.readouterr().err


def test_define_rejects_what_it_cannot_derive():
    with pytest.raises(ValueError, match="takes parameter 'eps'"):
        define("x", TokenSum(two_sided))
    with pytest.raises(TypeError, match="form must be one of"):
        define("x", lambda l: l)
    with pytest.raises(ValueError, match="reduce must be 'mean'"):
        define("x", TokenSum(lambda l: l), reduce="ratio")
    with pytest.raises(ValueError, match="BatchTransform acts on sequence weights"):
        define("x", PerDecision(lambda l: l), reduce=BatchTransform(lambda lw: (lw, {})))
    with pytest.raises(TypeError, match="no \\*args"):
        TokenSum(lambda *a: 0.0)
    with pytest.raises(ValueError, match="name must be an identifier"):
        define("two words", TokenSum(lambda l: l))
    spec = define("ok", TokenSum(two_sided), params={"eps": 0.2})
    with pytest.raises(TypeError, match="unexpected keyword argument 'c'"):
        spec(np.zeros((2, 2)), np.ones(2), c=1.0)
    with pytest.raises(ValueError, match="eps must not be NaN"):
        spec(np.zeros((2, 2)), np.ones(2), eps=float("nan"))


def test_a_batched_transform_runs_once_for_every_replication(rng):
    calls = []

    def halve(log_w, *, k):  # works along the last axis: (n,) or (R, n)
        calls.append(log_w.shape)
        return log_w - np.log(k), {"top": log_w.max(axis=-1)}

    batched = define("halve_b", TokenProduct(lambda l: l), reduce=BatchTransform(halve, batched=True),
                     params={"k": 2.0})
    looped = define("halve_l", TokenProduct(lambda l: l), reduce=BatchTransform(halve), params={"k": 2.0})
    lr, rew = rng.normal(scale=0.3, size=(5, 16, 4)), rng.random((5, 16))
    a = batched(lr, rew)
    assert calls == [(5, 16)]
    b = looped(lr, rew)
    assert calls[1:] == [(16,)] * 5
    np.testing.assert_array_equal(a.value, b.value)
    np.testing.assert_array_equal(a.diagnostics["top"], b.diagnostics["top"])
    assert isinstance(batched(lr[0], rew[0]).diagnostics["top"], float)
    with pytest.raises(TypeError, match="batched must be True or False"):
        BatchTransform(halve, batched="yes")
