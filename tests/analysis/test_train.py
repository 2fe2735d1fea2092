"""``tokis train``: the optimizers, the clip fraction and one update against exact truth, the table, the store."""

import math

import numpy as np
import pandas as pd
import pytest

from tokis import envs, exact
from tokis.analysis import Behavior, Family
from tokis.analysis._cli import main
from tokis.analysis._train_loop import clip_fraction, iteration_seed
from tokis.analysis.gradient import parse_objective
from tokis.analysis.train import (
    DEFAULT_EPOCHS,
    DEFAULT_FAMILY,
    DEFAULT_HORIZON,
    DEFAULT_ITERATIONS,
    DEFAULT_LR,
    DEFAULT_MINIBATCHES,
    DEFAULT_N,
    DEFAULT_SEEDS,
    AdamState,
    TrainConfig,
    adam,
    learning_curves,
    make_optimizer,
    run_seed,
    sgd,
    summarize,
    train,
)
from tokis.objectives import get_objective

PNG = b"\x89PNG\r\n\x1a\n"
SMALL = Family(vocab=3, reward="count", threshold=2)  # T = 4: J(pi_0) = 0.54, J* = 1; no eos, so L = T
BUILTINS = ("seq", "tok", "ppo_clip", "cispo", "gspo")


# --------------------------------------------------------------------------- optimizers


def test_sgd_is_lr_times_gradient_and_momentum_accumulates():
    g = np.array([[1.0, -2.0], [0.5, 0.0]])
    opt = sgd(0.1)
    step, st = opt.update(g, opt.init(g))
    assert np.array_equal(step, 0.1 * g)
    opt = sgd(0.1, momentum=0.5)
    st = opt.init(g)
    s1, st = opt.update(g, st)
    s2, st = opt.update(g, st)
    assert np.allclose(s1, 0.1 * g) and np.allclose(s2, 0.1 * 1.5 * g)


def test_adam_matches_kingma_ba_by_hand():
    rng = np.random.default_rng(0)
    gs = rng.normal(size=(3, 2, 4))
    lr, b1, b2, eps = 0.05, 0.9, 0.999, 1e-8
    opt = adam(lr, b1, b2, eps)
    st = opt.init(gs[0])
    assert isinstance(st, AdamState) and st.count == 0
    m = v = np.zeros((2, 4))
    for k, g in enumerate(gs, start=1):
        step, st = opt.update(g, st)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        assert np.allclose(step, lr * (m / (1 - b1**k)) / (np.sqrt(v / (1 - b2**k)) + eps), rtol=1e-13, atol=0)
    assert st.count == 3
    # first step: the sign of the gradient times lr (up to eps)
    step, _ = opt.update(gs[0], opt.init(gs[0]))
    assert np.allclose(step, lr * np.sign(gs[0]), atol=1e-6)


@pytest.mark.parametrize("bad, err", [
    (dict(name="rmsprop", lr=0.1), ValueError), (dict(name="adam", lr=0.0), ValueError),
    (dict(name="sgd", lr=float("inf")), ValueError), (dict(name="sgd", lr="big"), TypeError)])
def test_make_optimizer_rejects_bad_input(bad, err):
    with pytest.raises(err, match="optimizer|lr"):
        make_optimizer(bad["name"], bad["lr"])


# --------------------------------------------------------------------------- clip fraction


def _tokens(mdp, theta, old, n, seed):
    ro = envs.sample(mdp, old, n, seed=seed)
    lp = envs.Policy(theta)
    from tokis.objectives._sampled import token_log_probs

    l = np.where(ro.mask, token_log_probs(lp, ro.tokens, ro.contexts, ro.mask) - ro.logp_behavior, 0.0)
    return ro, l


def test_clip_fraction_by_hand():
    mask = np.ones((2, 3), dtype=bool)
    l = np.log(np.array([[1.0, 1.3, 0.7], [1.1, 0.75, 1.25]]))
    A = np.array([[1.0], [-1.0]])
    zero = np.zeros_like(l)
    ppo = get_objective("ppo_clip")
    # A > 0 clips r > 1.2 (one token), A < 0 clips r < 0.8 (one token): 2 of 6
    assert clip_fraction(ppo, ppo.settings(), l, A, zero, mask) == pytest.approx(2 / 6)
    cispo = get_objective("cispo")  # eps_low = 1 (no lower bound), eps_high = 0.28: only r = 1.3 leaves the band
    assert clip_fraction(cispo, cispo.settings(), l, A, zero, mask) == pytest.approx(1 / 6)
    for name in ("seq", "tok"):
        spec = get_objective(name)
        assert clip_fraction(spec, spec.settings(), l, A, zero, mask) == 0.0
    gspo = get_objective("gspo")  # every token of a sequence whose mean log-ratio leaves the tiny band counts
    lg = np.log(np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 1.1]]))
    assert clip_fraction(gspo, gspo.settings(), lg, np.array([[1.0], [1.0]]), zero, mask) == pytest.approx(3 / 6)
    # A = 0: nothing to clip; a correction is not clipping of the objective
    assert clip_fraction(ppo, ppo.settings(), l, np.zeros((2, 1)), zero, mask) == 0.0
    assert clip_fraction(ppo, ppo.settings(correction="tis", c=1.0), l, A, zero + 1.0, mask) == pytest.approx(2 / 6)


@pytest.mark.parametrize("name", ["ppo_clip", "cispo", "gspo"])
def test_clip_fraction_mean_is_the_exact_clip_probability(name):
    """No eos (L = T): E[#clipped tokens / nT] is exact.objective_gradient's clip probability.

    Each sequence's clipped share lies in [0, 1], so its variance is at most p (1 - p), p the exact
    probability: the tolerance is 5 standard errors of that bound.
    """
    T = 4 if name == "gspo" else 6  # gspo is exact by enumeration only: 3^4 sequences
    mdp, old = SMALL.build(T)
    theta = envs.perturb(old, kl=0.05, seed=3)
    J_mu = exact.value(mdp, old)
    p = exact.objective_gradient(mdp, theta, old, name, anchor=old).clip_probability
    assert 0.02 < p < 0.98
    spec = get_objective(name)
    st = spec.settings()
    n, R = 400, 10
    fr = []
    for r in range(R):
        ro, l = _tokens(mdp, theta.logits, old, n, seed=100 + r)
        A = (ro.returns - J_mu)[:, None]
        fr.append(clip_fraction(spec, st, l, A, np.zeros_like(l), ro.mask))
    se = math.sqrt(p * (1 - p) / (n * R))
    assert abs(np.mean(fr) - p) < 5 * se


# --------------------------------------------------------------------------- one update against exact truth


CASES = [(o, Behavior(), False) for o in BUILTINS] + [
    ("tok", Behavior(), True),                          # time-dependent logits
    ("tok:advantage=critic", Behavior(), False),        # the exact critic Q^mu - V^mu
    ("ppo_clip", Behavior(kl=0.1), False),              # engine mismatch: mu != pi_old
    ("tok:correction=tis,c=1.05", Behavior(kl=0.1), False),
]


@pytest.mark.parametrize("objective, sampler, time_dependent", CASES, ids=lambda v: str(v))
def test_one_small_step_matches_the_exact_expected_gradient(objective, sampler, time_dependent):
    r"""One SGD step of one epoch, one minibatch: E[<grad J, step>] = lr <grad J, g_bar>, and J goes up.

    With the baseline fixed at J(mu) (the exact engine's), the batch gradient is the mean of n i.i.d.
    per-sequence gradients with mean g_bar = exact.objective_gradient(...).mean and variance along
    grad J equal to its variance_along: the recorded ascent of R runs must be within 5 exact
    standard errors of lr <grad J, g_bar>. On-policy every objective's expected step goes uphill,
    and so must the exact J: its mean gain over R runs is positive by more than 4 standard errors.
    """
    T, n, R, lr = 4, 32, 30, 0.02
    mdp, pi0 = SMALL.build(T)
    if time_dependent:
        pi0 = envs.Policy(np.broadcast_to(pi0.logits, (T,) + pi0.logits.shape))
    mu = sampler.apply(pi0)
    obj = parse_objective(objective)
    kw = obj.kwargs
    if kw.get("advantage") != "critic":
        kw["baseline"] = float(exact.value(mdp, mu))
    g = exact.objective_gradient(mdp, pi0, mu, obj.name, anchor=pi0, n=n, **kw)
    gJ = exact.gradient(mdp, pi0)
    expected = lr * float(np.sum(gJ * g.mean))
    se = lr * float(np.linalg.norm(gJ)) * math.sqrt(g.variance_along / n / R)
    cfg = TrainConfig(family=SMALL, horizon=T, sampler=sampler, objective=(obj.name, kw), n=n, epochs=1,
                      minibatches=1, iterations=1, optimizer="sgd", lr=lr, time_dependent=time_dependent)
    runs = [run_seed(cfg, s) for s in range(R)]
    ascent = np.array([r["ascent"][0] for r in runs])
    assert abs(ascent.mean() - expected) < 5 * se
    gain = np.array([r["J"][0] - r["J0"] for r in runs])
    if sampler == Behavior():
        assert g.ascent > 0 and expected > 10 * se
        assert gain.mean() > 4 * gain.std(ddof=1) / math.sqrt(R)
        # a small step: the exact gain is the first-order ascent up to a few per cent
        assert np.allclose(gain, ascent, rtol=0.05, atol=1e-9)
    assert all(0 < r["kl"][0] < 1e-2 for r in runs)


def test_a_run_is_deterministic_and_seeds_are_independent():
    cfg = TrainConfig(family=SMALL, horizon=6, objective="ppo_clip", n=16, epochs=2, minibatches=2, iterations=3)
    a, b, c = run_seed(cfg, 7), run_seed(cfg, 7), run_seed(cfg, 8)
    assert a == b and a["J"] != c["J"]
    assert len(a["J"]) == cfg.updates == 12 and len(a["tokens"]) == 3
    assert a["tokens"] == [16 * 6, 32 * 6, 48 * 6]
    assert a["J_star"] == pytest.approx(exact.optimal_value(cfg.build()[0])[0])
    assert iteration_seed(7, 0) != iteration_seed(7, 1) != iteration_seed(8, 0)


def test_seq_and_tok_are_one_algorithm_on_fresh_data():
    """With one epoch of one minibatch every step is on-policy: W = r_t = 1 and seq's coefficient W A is tok's r A."""
    kw = dict(family=SMALL, horizon=6, n=16, epochs=1, minibatches=1, iterations=4)
    assert run_seed(TrainConfig(objective="seq", **kw), 3) == run_seed(TrainConfig(objective="tok", **kw), 3)
    kw["epochs"] = 2  # a second pass over the batch: seq's sequence weight departs from tok's token ratios
    assert run_seed(TrainConfig(objective="seq", **kw), 3)["J"] != run_seed(TrainConfig(objective="tok", **kw), 3)["J"]


@pytest.mark.parametrize("kw, match", [
    (dict(minibatches=5, n=4), "minibatches"), (dict(lr=-1.0), "lr"), (dict(optimizer="adamw"), "optimizer"),
    (dict(epochs=0), "epochs"), (dict(objective="nope"), "objective"), (dict(horizon=0), "horizon"),
    (dict(objective="ppo_clip:eps_hi=0.3"), "eps_hi"), (dict(time_dependent=1), "time_dependent"),
])
def test_config_rejects_bad_input(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        TrainConfig(**kw)


# --------------------------------------------------------------------------- table, store, summary


def _small_train(**kw):
    args = dict(objectives=["tok", "ppo_clip"], samplers=[Behavior(), Behavior(round="bf16")], horizon=6, n=16,
                epochs=2, minibatches=2, iterations=3, seeds=3, lr=0.1)
    args.update(kw)
    return train(SMALL, **args)


def test_table_layout_and_store_round_trip(tmp_path):
    store = tmp_path / "s.sqlite"
    t = _small_train(store=store)
    assert t.attrs["total"] == 12 and t.attrs["computed"] == 12 and t.attrs["cached"] == 0
    assert len(t) == 2 * 2 * 3 * (12 + 1)
    assert set(t["sampler"]) == {"pi_old", "round=bf16"}
    run = t[(t["objective"] == "tok") & (t["sampler"] == "pi_old") & (t["seed"] == 1)]
    assert list(run["update"]) == list(range(13)) and run["J"].iloc[0] == run["J0"].iloc[0]
    assert run["J_frac"].iloc[0] == 0.0 and math.isnan(run["kl"].iloc[0])
    assert list(run["iteration"]) == [0] + [1] * 4 + [2] * 4 + [3] * 4
    assert list(run["tokens"].iloc[[0, 1, 4, 5, 12]]) == [0, 96, 96, 192, 288]
    again = _small_train(store=store)
    assert again.attrs["cached"] == 12 and again.attrs["computed"] == 0
    pd.testing.assert_frame_equal(t, again, check_exact=True)
    # one more seed reuses the three stored ones (runs j < 3 keep their seeds)
    more = _small_train(store=store, seeds=4)
    assert more.attrs["cached"] == 12 and more.attrs["computed"] == 4
    pd.testing.assert_frame_equal(more[more["seed"] < 3].reset_index(drop=True), t, check_exact=True)


def _synthetic(curves):
    rows = []
    for seed, J in enumerate(curves):
        for u, j in enumerate(J):
            rows.append(dict(objective="x", sampler="pi_old", seed=seed, update=u, tokens=10 * u, J=j,
                             J_frac=(j - J[0]) / (1.0 - J[0]), J_star=1.0, J0=J[0], kl=0.1, clip_fraction=0.25,
                             cosine=0.5, sampler_kl=0.0))
    return pd.DataFrame(rows)


def test_summarize_and_curves_on_a_synthetic_table():
    t = _synthetic([[0.0, 0.5, 0.95, 0.7], [0.0, 0.2, 0.4, 0.6]])
    s = summarize(t).iloc[0]
    assert s["seeds"] == 2 and s["final_J"] == pytest.approx(0.65) and s["final_ratio"] == pytest.approx(0.65)
    # 95 % t interval of the mean of (0.7, 0.6): t_{0.975,1} sd / sqrt(2)
    assert s["final_J_ci"] == pytest.approx(12.706204736 * np.std([0.7, 0.6], ddof=1) / math.sqrt(2))
    assert s["reached"] == 0.5 and s["updates_to_reach"] == 2 and s["tokens_to_reach"] == 20
    assert s["max_drop"] == pytest.approx(0.25) and s["mean_max_drop"] == pytest.approx(0.125)
    assert s["peak_minus_final"] == pytest.approx(0.125)
    assert s["clip_fraction"] == 0.25 and s["kl"] == pytest.approx(0.1)
    c = learning_curves(t)
    assert list(c["mean"]) == pytest.approx([0.0, 0.35, 0.675, 0.65])
    assert c["lo"].iloc[0] == 0.0 and c["hi"].iloc[2] > c["mean"].iloc[2] > c["lo"].iloc[2]


# --------------------------------------------------------------------------- command line


def test_cli_defaults_are_the_python_defaults():
    from tokis.analysis import _cli_args as A
    from tokis.analysis._cli import build_parser

    a = build_parser().parse_args(["train"])
    assert A.family(a) == DEFAULT_FAMILY
    assert (a.horizon, a.n, a.epochs, a.minibatches, a.iterations, a.lr, a.seeds) == (
        DEFAULT_HORIZON, DEFAULT_N, DEFAULT_EPOCHS, DEFAULT_MINIBATCHES, DEFAULT_ITERATIONS, DEFAULT_LR, DEFAULT_SEEDS)
    mdp, pi0 = DEFAULT_FAMILY.build(DEFAULT_HORIZON)
    assert exact.value(mdp, pi0) / exact.optimal_value(mdp)[0] < 0.05  # the default task is far from solved


def test_cli_run_writes_tables_and_plots(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["train", "--vocab", "3", "--threshold", "2", "--horizon", "4", "--objectives", "tok,gspo", "--n", "8",
               "--epochs", "2", "--minibatches", "2", "--iterations", "2", "--seeds", "2", "--no-store",
               "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| tok" in text and "round=bf16" in text and "J* = 1" in text
    for name in ("train_curves.png", "train_diagnostics.png"):
        assert (out / name).read_bytes()[:8] == PNG
    full = pd.read_csv(out / "train.csv")
    assert len(full) == 2 * 2 * 2 * (8 + 1)
    assert set(pd.read_csv(out / "train_summary.csv")["objective"]) == {"tok", "gspo"}


@pytest.mark.parametrize("argv, match", [
    (["--samplers", "all"], "--samplers"), (["--optimizer", "lion"], "optimizer"), (["--lr", "0"], "lr"),
    (["--minibatches", "9", "--n", "8"], "minibatches"), (["--seeds", "0"], "--seeds"),
    (["--objectives", "tok:eps=1"], "eps"), (["--round", "fp8"], "round"),
])
def test_cli_errors_are_one_line(argv, match, capsys):
    assert main(["train", "--no-store", "--iterations", "1", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tokis: error:") and "\n" not in err and match in err


# --------------------------------------------------------------------------- resume after SIGKILL


RESUME = dict(vocab=3, threshold=2, horizon=8, n=32, epochs=2, minibatches=2, iterations=20, seeds=8)


def _stored(path):
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.OperationalError:
        return {}
    try:
        return dict(con.execute("SELECT key, created FROM cells").fetchall())
    except sqlite3.OperationalError:  # the table is not created yet
        return {}
    finally:
        con.close()


def test_resume_after_sigkill(tmp_path):
    """``tokis train --workers 2`` killed (SIGKILL, with its workers) after some runs are stored resumes.

    The rerun reads the stored runs back without recomputing them (their rows keep their creation
    time), computes the rest, and its table equals an uninterrupted run in this process, bit for bit
    (the killed runs came from worker processes).
    """
    import os
    import signal
    import subprocess
    import sys
    import time

    store = tmp_path / "store.sqlite"
    r = RESUME
    cmd = [sys.executable, "-m", "tokis.analysis.train", "--vocab", str(r["vocab"]), "--threshold",
           str(r["threshold"]), "--horizon", str(r["horizon"]), "--n", str(r["n"]), "--epochs", str(r["epochs"]),
           "--minibatches", str(r["minibatches"]), "--iterations", str(r["iterations"]), "--seeds", str(r["seeds"]),
           "--objectives", "tok", "--samplers", "pi_old", "--workers", "2", "--store", str(store), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(_stored(store)) < 2:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no run was stored in 120 s"
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the command and its worker processes
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = _stored(store)
    assert 2 <= len(before) < r["seeds"]
    kw = dict(objectives=["tok"], samplers=[Behavior()], horizon=r["horizon"], n=r["n"], epochs=r["epochs"],
              minibatches=r["minibatches"], iterations=r["iterations"], seeds=r["seeds"])
    fam = Family(vocab=r["vocab"], reward="count", threshold=r["threshold"])
    resumed = train(fam, store=store, **kw)
    assert resumed.attrs["cached"] == len(before) and resumed.attrs["computed"] == r["seeds"] - len(before)
    after = _stored(store)
    assert len(after) == r["seeds"] and all(after[k] == t for k, t in before.items())  # not recomputed
    pd.testing.assert_frame_equal(resumed, train(fam, **kw), check_exact=True)
