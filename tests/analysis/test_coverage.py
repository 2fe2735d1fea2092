"""``tokis coverage``: coverage against exact truth, the store, the command, its errors."""

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tokis import exact
from tokis.analysis import Behavior, Family
from tokis.analysis._cli import main
from tokis.analysis.coverage import coverage, display_coverage_table, parse_methods, wilson_interval

PNG = b"\x89PNG\r\n\x1a\n"
FAM = Family(vocab=8)


def _row(table, T, est, method):
    sub = table[(table["T"] == T) & (table["estimator"] == est) & (table["method"] == method)]
    assert len(sub) == 1
    return sub.iloc[0]


def test_wilson_interval():
    lo, hi = wilson_interval(95, 100)
    assert lo == pytest.approx(0.88825, abs=1e-4) and hi == pytest.approx(0.97845, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0


@pytest.fixture(scope="module")
def heavy():
    """seq at T = 16 with per-token KL 0.1 and n = 64: rare huge weights carry the mean."""
    return coverage(FAM, Behavior(kl=0.1), estimators=["seq", "tok"], methods=["normal", "t"], horizons=[16], n=64,
                    replications=300, seed=0)


def test_normal_interval_of_seq_under_covers_with_heavy_tails(heavy):
    r = _row(heavy, 16, "seq", "normal")
    assert r["target"] == "J(pi)"
    mdp, pi = FAM.build(16)
    assert r["target_value"] == pytest.approx(float(exact.value(mdp, pi)))
    # the whole binomial 95 % interval lies clearly below the nominal level ...
    assert r["coverage_hi"] < 0.9
    # ... and the misses are on the low side: a batch without the rare huge weights under-estimates
    assert r["miss_low"] > 5 * r["miss_high"]
    assert r["covered"] == round(r["coverage"] * 300)
    assert r["miss_low"] + r["miss_high"] + r["coverage"] == pytest.approx(1.0)


def test_t_is_at_least_as_wide_as_normal(heavy):
    for est in ("seq", "tok"):
        assert _row(heavy, 16, est, "t")["mean_width"] >= _row(heavy, 16, est, "normal")["mean_width"]
        assert _row(heavy, 16, est, "t")["coverage"] >= _row(heavy, 16, est, "normal")["coverage"]
    assert _row(heavy, 16, "tok", "normal")["target"] == "E_mu[f] (exact)"


def test_bounded_hoeffding_and_bernstein_cover_their_level():
    """clip_prod (c = 2) at T = 1 is bounded by 2: Hoeffding's and Bernstein's guarantees hold."""
    t = coverage(FAM, Behavior(kl=0.1), estimators=["clip_prod"], methods=["hoeffding", "bernstein"], horizons=[1],
                 n=512, replications=300, level=0.9, seed=1)
    for m in ("hoeffding", "bernstein"):
        r = _row(t, 1, "clip_prod(c=2)", m)
        assert r["applicable"] and r["side"] == "lower" and r["target"] == "E_mu[f] (exact)"
        assert r["coverage_hi"] >= 0.9  # at least the nominal level, within the binomial error of R = 300
        assert r["miss_low"] == 0.0 and math.isnan(r["mean_width"])
        # not trivially 0: the mean bound sits above 0, below the target
        assert 0.0 < r["mean_shortfall"] < r["target_value"]


def test_inapplicable_cells_and_targets():
    t = coverage(FAM, Behavior(kl=0.05), estimators=["seq", "tok", "snis", "psis"], horizons=[2], n=16,
                 replications=5, n_resamples=49)
    na = {(r.name, r.method) for r in t.itertuples() if not r.applicable}
    assert na == {("seq", "hoeffding"), ("tok", "bernstein"), ("tok", "hoeffding"), ("snis", "bernstein"),
                  ("snis", "hoeffding"), ("psis", "bca"), ("psis", "bernstein"), ("psis", "hoeffding")}
    for r in t.itertuples():
        if not r.applicable:
            assert f"'{r.method}' does not apply" in r.note and math.isnan(r.coverage)
    assert set(t.loc[t["estimator"] == "snis", "target"]) == {"asymptotic mean (delta method)"}
    assert set(t.loc[t["name"] == "psis", "exact_method"]) <= {"none", "enumeration"}
    shown = display_coverage_table(t)
    assert list(shown.columns)[:3] == ["T", "estimator", "method"]
    assert (shown.loc[~t["applicable"].to_numpy(), "flag"] == "n/a").all()
    assert any("does not apply to psis(" in n for n in shown.attrs["notes"])


def test_reproducible_store_and_workers(tmp_path):
    kw = dict(estimators=["seq", "snis"], methods=["bca", "normal"], horizons=[2, 4], n=16, replications=20,
              n_resamples=99, seed=5)
    a = coverage(FAM, **kw)
    b = coverage(FAM, **kw, store=tmp_path / "s.sqlite")
    pd.testing.assert_frame_equal(a, b)
    assert b.attrs["computed"] == 8 and b.attrs["cached"] == 0
    c = coverage(FAM, **kw, store=tmp_path / "s.sqlite", workers=2)
    assert c.attrs["computed"] == 0 and c.attrs["cached"] == 8
    pd.testing.assert_frame_equal(a, c)
    d = coverage(FAM, **{**kw, "seed": 6}, workers=2)
    assert not np.array_equal(a["mean_width"].to_numpy(), d["mean_width"].to_numpy())


def test_errors():
    with pytest.raises(ValueError, match="unknown interval method 'wald'"):
        coverage(methods="normal,wald")
    with pytest.raises(ValueError, match="methods is empty"):
        parse_methods("")
    with pytest.raises(ValueError, match="level"):
        coverage(level=1.0)
    with pytest.raises(TypeError, match="level"):
        coverage(level="0.9")
    with pytest.raises(ValueError, match="n must be >= 2"):
        coverage(n=1)
    with pytest.raises(ValueError, match="replications"):
        coverage(replications=1)
    with pytest.raises(ValueError, match="n_resamples"):
        coverage(n_resamples=1)
    with pytest.raises(ValueError, match="backend"):
        coverage(backend="torch")
    with pytest.raises(ValueError, match="unknown estimator"):
        coverage(estimators=["nope"])


TINY = ["--n", "8", "--replications", "3", "--vocab", "3", "--no-progress", "--horizons", "2", "--resamples", "19"]


def test_command_outputs(tmp_path, capsys):
    out_dir = tmp_path / "out"
    rc = main(["coverage", *TINY, "--no-store", "--estimators", "seq,snis,clip_prod", "--out", str(out_dir)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert out.startswith("## interval coverage:") and "coverage [95% Wilson]" in out
    assert "tokis: 15 cells (0 from the store, 15 computed)" in err
    t = pd.read_csv(out_dir / "coverage.csv")
    assert len(t) == 15 and {"coverage_lo", "coverage_hi", "miss_low", "miss_high", "target"} <= set(t.columns)
    assert (out_dir / "coverage.tex").exists()
    data = (out_dir / "coverage.png").read_bytes()
    assert data[:8] == PNG and len(data) > 2000


@pytest.mark.parametrize("argv, message", [
    (["--level", "1.5"], "--level must lie in (0, 1)"),
    (["--methods", "wald"], "unknown interval method 'wald'"),
    (["--resamples", "1"], "--resamples must be >= 2"),
    (["--n", "1"], "--n must be >= 2"),
    (["--replications", "1"], "--replications must be >= 2"),
])
def test_command_errors(capsys, argv, message):
    rc = main(["coverage", "--no-store", "--no-progress", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("tokis: error:") and message in err and len(err.strip().splitlines()) == 1


def test_module_entry_point_help():
    res = subprocess.run([sys.executable, "-m", "tokis.analysis.coverage", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and "--resamples" in res.stdout and "--methods" in res.stdout


def test_damaged_stored_coverage_row_is_recomputed(tmp_path):
    import sqlite3

    from tokis.analysis._store import StoreWarning

    kw = dict(estimators=["seq"], methods=["normal", "t"], horizons=[2], n=16, replications=20, seed=5)
    path = tmp_path / "c.sqlite"
    first = coverage(FAM, **kw, store=path)
    conn = sqlite3.connect(path)
    (key, row), *_ = conn.execute("SELECT key, row FROM cells").fetchall()
    conn.execute("UPDATE cells SET row = ? WHERE key = ?", (row.replace('"coverage": ', '"coverage": "banana", "x": '), key))
    conn.commit()
    conn.close()
    with pytest.warns(StoreWarning, match="'coverage' holds 'banana'"):
        again = coverage(FAM, **kw, store=path)
    assert again.attrs["computed"] == 1 and again.attrs["cached"] == 1
    pd.testing.assert_frame_equal(again, first, check_exact=True)
