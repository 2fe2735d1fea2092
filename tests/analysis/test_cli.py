"""The ``tokis`` command: every subcommand end to end on tiny settings, outputs, help and errors."""

import math
import subprocess
import sys

import pandas as pd
import pytest

from tokis.analysis import Behavior, Family
from tokis.analysis.divergence import divergence
from tokis.analysis.mismatch import calibrate, mismatch
from tokis.analysis._cli import build_parser, main
from tokis import exact

TINY = ["--n", "8", "--replications", "3", "--vocab", "3", "--no-progress"]
PNG = b"\x89PNG\r\n\x1a\n"


def _run(capsys, argv):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _header(out, title):
    """Column names of the first markdown table after the line starting with ``title``."""
    lines = out.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(title))
    head = next(line for line in lines[i + 1:] if line.startswith("|"))
    return [c.strip() for c in head.strip("|").split("|")]


def _check_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 2000, path


def _check_table(csv, estimators, rows_per_estimator):
    t = pd.read_csv(csv)
    for e in estimators:
        sub = t[t["estimator"] == e]
        assert len(sub) == rows_per_estimator, e
        for c in ("exact_bias", "exact_std", "exact_mse", "mc_bias", "mc_bias_lo", "mc_bias_hi", "mc_std", "mean_ess",
                  "z", "method"):
            assert c in t.columns
        assert sub["mc_std"].notna().all() and sub["mean_ess"].notna().all()
    return t


def test_horizon_end_to_end(tmp_path, capsys):
    out_dir = tmp_path / "out"
    argv = ["horizon", *TINY, "--horizons", "1..4", "--estimators", "seq,tok,clip_tok:c=1.5", "--kl", "0.1",
            "--reward", "last", "--store", str(tmp_path / "s.sqlite"), "--out", str(out_dir)]
    rc, out, err = _run(capsys, argv)
    assert rc == 0, err
    assert _header(out, "## horizon sweep") == ["T", "estimator", "method", "exact_bias", "exact_std", "exact_mse",
                                                 "ess_fraction", "mc_bias ± 95%", "mc_std", "mean_ess", "z", "flag"]
    assert _header(out, "## where exact MSE overtakes")[:3] == ["estimator", "beats", "from"]
    for e in ("seq", "tok", "clip_tok(c=1.5)"):
        assert f"| {e} " in out
    assert "tokis: 9 cells (0 from the store, 9 computed)" in err
    t = _check_table(out_dir / "horizon.csv", ["seq", "tok", "clip_tok(c=1.5)"], 3)
    assert sorted(t["T"].unique()) == [1, 2, 4]
    assert (out_dir / "horizon.tex").read_text().startswith(r"\begin{tabular}")
    assert (out_dir / "horizon_overtakes.csv").exists()
    for m in ("bias", "std", "mse", "ess"):
        _check_png(out_dir / f"horizon_{m}.png")
    # the repeated table is read back from the store
    rc, out2, err2 = _run(capsys, argv)
    assert rc == 0 and "(9 from the store, 0 computed)" in err2 and out2 == out


def test_divergence_end_to_end(tmp_path, capsys):
    out_dir = tmp_path / "d"
    rc, out, err = _run(capsys, ["divergence", *TINY, "--values", "0.01,0.1", "--horizon", "3", "--estimators",
                                 "seq,snis", "--no-store", "--out", str(out_dir)])
    assert rc == 0, err
    t = _check_table(out_dir / "divergence.csv", ["seq", "snis"], 2)
    assert sorted(t["kl"]) == [0.01, 0.01, 0.1, 0.1]
    for m in ("bias", "std", "mse", "ess"):
        _check_png(out_dir / f"divergence_{m}.png")
    rc, out, err = _run(capsys, ["divergence", *TINY, "--kind", "chi2", "--values", "0.05,0.2", "--horizon", "2",
                                 "--estimators", "seq", "--no-store"])
    assert rc == 0 and _header(out, "## divergence sweep (chi2)")[:2] == ["chi2", "estimator"]


def test_divergence_api_hits_the_requested_divergence():
    t = divergence(Family(vocab=3), kind="chi2", values=[0.05, 0.2], horizon=2, estimators=["seq"], n=8,
                   replications=3)
    fam_mdp, pi = Family(vocab=3).build(2)
    for v in (0.05, 0.2):
        mu = Behavior(chi2=v).apply(pi)
        row = t[t["chi2"] == v].iloc[0]
        assert row["log_second_moment"] == pytest.approx(exact.log_second_moment(fam_mdp, pi, mu), rel=1e-12)
        assert row["log_second_moment"] == pytest.approx(2 * math.log1p(v), rel=1e-9)  # no eos: (1+chi2)^T


def test_mismatch_end_to_end(tmp_path, capsys):
    out_dir = tmp_path / "m"
    rc, out, err = _run(capsys, ["mismatch", *TINY, "--models", "perturb,temperature,top_p,top_k,bf16,fp16", "--kl",
                                 "0.02", "--horizon", "3", "--estimators", "seq,tok", "--no-store", "--out",
                                 str(out_dir)])
    assert rc == 0, err
    t = _check_table(out_dir / "mismatch.csv", ["seq", "tok"], 6)
    assert list(dict.fromkeys(t["model"])) == ["perturb", "temperature", "top_p", "top_k", "bf16", "fp16"]
    first = t.drop_duplicates("model").set_index("model")
    assert first.loc["perturb", "token_kl_mu"] == pytest.approx(0.02, rel=1e-6)
    assert first.loc["temperature", "token_kl_mu"] == pytest.approx(0.02, rel=1e-6)
    assert first.loc["temperature", "knob"] > 1
    top = first.loc["top_p"]
    assert top["missing_mass"] > 0 and math.isinf(top["token_kl"])
    # population ESS fraction E[W]^2 / E[W^2] with E_mu[W] = 1 - missing mass (at most 1)
    assert top["ess_fraction"] == pytest.approx((1 - top["missing_mass"]) ** 2 * math.exp(-top["log_second_moment"]))
    assert top["ess_fraction"] <= 1
    assert math.isnan(first.loc["bf16", "knob"])
    _check_png(out_dir / "mismatch_mse.png")


def test_calibrate_and_mismatch_api():
    mdp, pi = Family(vocab=4).build(4)

    def sampler_kl(top_p):  # KL(mu || pi) per token under mu, from the exact divergences
        return exact.token_divergence(mdp, Behavior(top_p=top_p).apply(pi), pi, kind="kl", under="target")

    knob, b, achieved = calibrate(mdp, pi, "top_p", 0.05)
    assert 0 < knob < 1 and b.top_p == knob
    assert achieved == pytest.approx(sampler_kl(knob), rel=1e-12)
    # top_p moves in jumps: the knob sits on a jump of the KL across 0.05 (the bisection bracket
    # is far narrower than 1e-7) and the achieved KL is the nearer side in log distance
    below, above = sampler_kl(knob - 1e-7), sampler_kl(min(knob + 1e-7, 1.0))
    assert below >= 0.05 > above
    nearer = min((below, above), key=lambda a: abs(math.log(a / 0.05)) if a > 0 else math.inf)
    assert achieved == pytest.approx(nearer, rel=1e-12)
    knob0, b0, a0 = calibrate(mdp, pi, "temperature", 0.0)
    assert knob0 == 1.0 and a0 == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(ValueError, match="top_p cannot reach a sampler KL of 50"):
        calibrate(mdp, pi, "top_p", 50.0)
    with pytest.raises(ValueError, match="unknown model 'beam'"):
        calibrate(mdp, pi, "beam", 0.1)
    with pytest.raises(ValueError, match="kl must be >= 0"):
        mismatch(Family(vocab=3), kl=-1.0, horizon=2, estimators=["seq"], n=4, replications=2)
    with pytest.raises(ValueError, match="no behaviour model given"):
        mismatch(Family(vocab=3), models="", horizon=2, estimators=["seq"], n=4, replications=2)


def test_growth_end_to_end(tmp_path, capsys):
    out_dir = tmp_path / "g"
    rc, out, err = _run(capsys, ["growth", *TINY, "--horizons", "1,2,3,4", "--no-store", "--out", str(out_dir)])
    assert rc == 0, err
    # the default behaviour of `tokis growth` is chi2 = 0.05 per token (4 significant digits printed)
    assert "OLS slope" in out and f"closed form log(1+chi2) = {math.log1p(0.05):.4g}" in out
    assert ("they agree" in out) != ("they disagree" in out)
    fit = pd.read_csv(out_dir / "growth_fit.csv")
    assert fit.loc[0, "exact_rate"] == pytest.approx(math.log(1.05), abs=1e-10)
    g = pd.read_csv(out_dir / "growth.csv")
    assert {"exact_log_second_moment", "mc_log_second_moment", "exact_std", "mc_std"} <= set(g.columns)
    _check_png(out_dir / "growth.png")


def test_help_documents_every_option(capsys):
    rc, out, _ = _run(capsys, ["--help"])
    assert rc == 0
    for cmd in ("horizon", "divergence", "mismatch", "growth"):
        assert cmd in out
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for cmd, p in sub.choices.items():
        rc, out, _ = _run(capsys, [cmd, "--help"])
        assert rc == 0
        for action in p._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, (cmd, action.dest)
                assert action.option_strings[-1] in out, (cmd, action.option_strings)


@pytest.mark.parametrize("argv, match", [
    (["horizon", "--estimators", "seq,nope"], "unknown estimator 'nope'"),
    (["horizon", "--kl", "-0.1"], "kl must be >= 0"),
    (["horizon", "--horizons", "0,1"], "T must be >= 1"),
    (["horizon", "--family", "lattice"], "unknown family 'lattice'"),
    (["horizon", "--n", "abc"], "argument --n: invalid int value"),
    (["horizon", "--n", "0"], "--n must be >= 1"),
    (["horizon", "--replications", "1"], "--replications must be >= 2"),
    (["horizon", "--workers", "0"], "--workers must be >= 1"),
    (["horizon", "--backend", "gpu"], "unknown backend 'gpu'"),
    (["horizon", "--reward", "bleu"], "unknown reward 'bleu'"),
    (["horizon", "--round", "fp8"], "unknown round 'fp8'"),
    (["horizon", "--top-p", "2"], r"top_p must be in \(0, 1\]"),
    (["horizon", "--kl", "0.1", "--chi2", "0.1"], "at most one of kl and chi2"),
    (["horizon", "--eos", "9"], "eos must be a token"),
    (["horizon", "--pattern", "a,b"], "pattern must be comma-separated integers"),
    (["divergence", "--kind", "tv"], "unknown kind 'tv'"),
    (["divergence", "--values", "0.1,-1"], "kl must be >= 0"),
    (["divergence", "--horizon", "0"], "T must be >= 1"),
    (["mismatch", "--models", "perturb,beam"], "unknown model 'beam'"),
    (["mismatch", "--kl", "-1"], "kl must be >= 0"),
    (["growth", "--horizons", "1,2"], "at least 3 horizons"),
    (["growth", "--quantity", "std"], "unknown quantity 'std'"),
    (["growth", "--estimator", "nope"], "unknown estimator 'nope'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    ([], "required: COMMAND"),
])
def test_bad_options_give_one_line_and_exit_2(capsys, argv, match):
    import re

    rc, out, err = _run(capsys, argv + ["--no-store"] if argv else argv)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tokis: error: "), err
    assert re.search(match, lines[0]), lines[0]
    assert "Traceback" not in err and out == ""


def test_python_m_entry_points(tmp_path):
    cmd = [sys.executable, "-m", "tokis.analysis.horizon", *TINY, "--horizons", "1,2", "--estimators", "seq",
           "--no-store"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "| seq " in done.stdout
    bad = subprocess.run([sys.executable, "-m", "tokis.analysis.growth", "--kl", "-1"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == ["tokis: error: kl must be >= 0, got -1.0"]


@pytest.mark.parametrize("make_out, match", [
    (lambda d: (d / "file").write_text("x") and d / "file", "is an existing file"),
    (lambda d: (d / "file").write_text("x") and d / "file" / "sub", "lies under the file"),
])
def test_bad_out_fails_before_computing(tmp_path, capsys, make_out, match):
    import time

    out = make_out(tmp_path)
    t0 = time.perf_counter()
    rc, _out, err = _run(capsys, ["horizon", "--no-store", "--out", str(out)])
    assert rc == 2 and match in err and err.count("\n") == 1
    assert time.perf_counter() - t0 < 5.0  # refused before the (minutes-long) default sweep


def test_bad_parameter_type_is_one_line(capsys):
    rc, _out, err = _run(capsys, ["horizon", "--no-store", "--estimators", "clip_tok:c=abc"])
    assert rc == 2 and err.startswith("tokis: error: ") and "c must be" in err and "Traceback" not in err


def test_too_large_batch_is_refused_before_allocating(capsys):
    rc, _out, err = _run(capsys, ["horizon", "--no-store", "--n", "100000000"])
    assert rc == 2 and "GiB per batch" in err and "--n <=" in err
