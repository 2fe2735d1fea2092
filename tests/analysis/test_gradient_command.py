"""``tokis gradient``: the table equals direct exact calls, the command, its errors, the store, method none."""

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tokis import envs, exact
from tokis.analysis import Behavior, Family, ResultStore
from tokis.analysis._cli import main
from tokis.analysis.gradient import (DEFAULT_OBJECTIVES, display_gradient_table, gradient_sweep, landscape,
                                     parse_objectives, turning_points)

FAM = Family(vocab=3)
TINY = ["--vocab", "3", "--horizons", "1,3", "--kls", "0.02", "--no-progress"]
PNG = b"\x89PNG\r\n\x1a\n"
TABLE_HEADER = ["T", "kl", "objective", "method", "cosine", "relative_bias", "ascent", "variance_along", "snr",
                "clip_probability", "clip_mass", "state_share", "value_share"]


def _run(capsys, argv):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _header(out, title):
    lines = out.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(title))
    head = next(line for line in lines[i + 1:] if line.startswith("|"))
    return [c.strip() for c in head.strip("|").split("|")]


def _share(part, bias, true):
    nb = float(np.linalg.norm(bias))
    return math.nan if part is None or nb <= 1e-12 * np.linalg.norm(true) else float(np.linalg.norm(part)) / nb


def _same(a, b):
    if b is None:
        b = math.nan
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("behavior", [None, Behavior(kl=0.03, seed=2)], ids=["mu=pi_old", "engine-mismatch"])
def test_sweep_equals_direct_exact_calls(behavior):
    objs = ["seq", "tok", "ppo_clip:eps_high=0.28", "cispo:aggregation=seq_mean_token_sum"]
    table = gradient_sweep(FAM, behavior, objectives=objs, horizons=[1, 3], kls=[0.02, 0.1], n=16, theta_seed=3)
    assert list(table.columns[:4]) == ["T", "kl", "objective", "name"]
    assert len(table) == 2 * 2 * 4 and table.attrs["computed"] == 16 and table.attrs["cached"] == 0
    assert list(dict.fromkeys(table["objective"])) == ["seq", "tok", "ppo_clip(eps_high=0.28)",
                                                        "cispo(aggregation=seq_mean_token_sum)"]
    kwargs = {"seq": {}, "tok": {}, "ppo_clip": {"eps_high": 0.28}, "cispo": {"aggregation": "seq_mean_token_sum"}}
    for _, row in table.iterrows():
        mdp, old = FAM.build(int(row["T"]))
        mu = old if behavior is None else behavior.apply(old)
        theta = envs.perturb(old, kl=float(row["kl"]), seed=3)
        g = exact.objective_gradient(mdp, theta, mu, row["name"], anchor=old, n=16, **kwargs[row["name"]])
        assert row["method"] == g.method
        for col in ("cosine", "relative_bias", "ascent", "variance_along", "snr", "clip_probability", "clip_mass",
                    "trace", "baseline"):
            assert _same(row[col], getattr(g, col)), (col, row["objective"])
        assert _same(row["state_share"], _share(g.state_mismatch, g.bias, g.true))
        assert _same(row["value_share"], _share(g.value_mismatch, g.bias, g.true))
        assert row["grad_norm"] == pytest.approx(float(np.linalg.norm(g.true)))
        assert row["value_theta"] == pytest.approx(exact.value(mdp, theta))
    tok = table[(table["name"] == "tok") & (table["T"] == 3)]
    if behavior is None:  # tok's bias splits into state and value mismatch when the anchor is the sampler
        assert tok["state_share"].notna().all() and tok["value_share"].notna().all()
        at_1 = table[(table["name"] == "tok") & (table["T"] == 1)]  # no bias at T = 1: no shares
        assert at_1["relative_bias"].max() < 1e-12 and at_1["state_share"].isna().all()
    else:
        assert tok["state_share"].isna().all()


def test_workers_match_one_process():
    kw = dict(objectives=["tok", "ppo_clip:eps_high=0.28", "gspo"], horizons=[1, 2], kls=[0.05], n=8)
    one = gradient_sweep(FAM, **kw)
    two = gradient_sweep(FAM, workers=2, **kw)
    pd.testing.assert_frame_equal(one, two)


def test_no_exact_method_is_reported_not_raised():
    table = gradient_sweep(FAM, objectives=["tok", "gspo"], horizons=[1, 4], kls=[0.05], n=8, max_sequences=20)
    none = table[table["method"] == "none"]
    assert list(none["objective"]) == ["gspo"] and list(none["T"]) == [4]  # 3^4 = 81 sequences > 20
    row = none.iloc[0]
    assert "max_sequences=20" in row["note"]
    assert all(math.isnan(row[c]) for c in ("cosine", "ascent", "snr", "variance_along"))
    assert row["grad_norm"] > 0
    assert table.loc[(table["objective"] == "gspo") & (table["T"] == 1), "method"].item() == "enumeration"
    shown = display_gradient_table(table)
    assert (shown.loc[shown["method"] == "none", "cosine"] == "—").all()
    assert any("gspo has no exact method at T = 4" in note for note in shown.attrs["notes"])
    turns = turning_points(table)
    assert turns.set_index("objective").loc["gspo", "exact_through"] == 1


def test_other_errors_are_raised():
    with pytest.raises(ValueError, match="unknown objective 'nope'"):
        gradient_sweep(FAM, objectives=["nope"], horizons=[1])
    with pytest.raises(ValueError, match="has no parameter 'c'"):
        gradient_sweep(FAM, objectives=["ppo_clip:c=2"], horizons=[1])
    with pytest.raises(ValueError, match="kl must be >= 0"):
        gradient_sweep(FAM, horizons=[1], kls=[-0.1])


def test_parse_objectives():
    objs = parse_objectives("tok,ppo_clip:eps_low=0.1,eps_high=0.28,cispo tok:correction=tis,c=2")
    assert [o.label for o in objs] == ["tok", "ppo_clip(eps_high=0.28,eps_low=0.1)", "cispo",
                                       "tok(c=2,correction=tis)"]
    assert objs[1].kwargs == {"eps_high": 0.28, "eps_low": 0.1}
    # the same validated settings count once; the settings (defaults filled in) are what the store key hashes
    again = parse_objectives(["ppo_clip", "ppo_clip:eps_high=0.2", ("ppo_clip", {"dual_clip": None})])
    assert [o.label for o in again] == ["ppo_clip"]
    assert parse_objectives("ppo_clip")[0].settings != parse_objectives("ppo_clip:eps_high=0.28")[0].settings
    assert [o.name for o in parse_objectives(DEFAULT_OBJECTIVES)] == list(DEFAULT_OBJECTIVES)
    for bad, match in [("", "no objective"), ("eps_high=0.2", "does not follow"),
                       ("tok:aggregation=sum", "aggregation"), ("ppo_clip:eps_high=-1", "eps_high"),
                       ("ppo_clip:eps_high", "malformed"), ("ppo_clip:eps_high=abc", "eps_high must be a real"),
                       ("tok:c=2", "has no parameter 'c'"), ("tok:correction=foo", "correction")]:
        with pytest.raises(ValueError, match=match):
            parse_objectives(bad)


def test_command_prints_the_table(capsys):
    rc, out, err = _run(capsys, ["gradient", *TINY, "--no-store", "--objectives", "seq,tok,gspo", "--n", "64"])
    assert rc == 0, err
    assert _header(out, "## exact policy gradients") == TABLE_HEADER
    assert "pi_theta = perturb(pi_old, kl) (theta seed 1), mu: pi_old, anchor pi_old, n=64" in out
    assert _header(out, "## where the expected gradient")[:3] == ["kl", "objective", "exact_through"]
    rows = [line for line in out.splitlines() if line.startswith("|   3 | 0.02 |")]
    assert [r.split("|")[3].strip() for r in rows] == ["seq", "tok", "gspo"]
    assert "tokis: 6 cells (0 from the store, 6 computed)" in err


def test_command_outputs_and_store(tmp_path, capsys):
    out_dir = tmp_path / "out"
    store = tmp_path / "s.sqlite"
    argv = ["gradient", *TINY, "--objectives", "seq,tok,ppo_clip", "--store", str(store), "--out", str(out_dir)]
    rc, out, err = _run(capsys, argv)
    assert rc == 0, err
    assert "(0 from the store, 6 computed)" in err
    t = pd.read_csv(out_dir / "gradient.csv")
    assert len(t) == 6 and {"cosine", "snr", "note", "trace"} <= set(t.columns)
    assert (out_dir / "gradient.tex").read_text().startswith(r"\begin{tabular}")
    assert (out_dir / "gradient_turning_points.csv").exists()
    for name in ("cosine", "snr"):
        data = (out_dir / f"gradient_{name}.png").read_bytes()
        assert data[:8] == PNG and len(data) > 5000
    assert (out_dir / "gradient_landscape.png").read_bytes()[:8] == PNG
    landscape_csv = pd.read_csv(out_dir / "gradient_landscape.csv")
    assert set(landscape_csv["objective"]) == {"seq", "tok", "ppo_clip"}  # at T = 3, where every cell is exact
    with ResultStore(store) as db:
        assert len(db) == 6
    # a repeated run reads every cell back and prints the same table
    rc, out2, err2 = _run(capsys, argv)
    assert rc == 0 and "(6 from the store, 0 computed)" in err2 and out2 == out
    # another setting of an objective is another cell
    rc, _, err3 = _run(capsys, ["gradient", *TINY, "--objectives", "seq,tok,ppo_clip:eps_high=0.28", "--store",
                                str(store)])
    assert rc == 0 and "(4 from the store, 2 computed)" in err3


def test_command_reports_no_exact_method(capsys):
    rc, out, err = _run(capsys, ["gradient", *TINY, "--no-store", "--objectives", "tok,gspo", "--max-sequences", "10"])
    assert rc == 0, err
    assert any(line.startswith("|   3 | 0.02 | gspo      | none ") for line in out.splitlines()), out
    assert "Note: gspo has no exact method at T = 3" in out


@pytest.mark.parametrize("args, message", [
    (["--objectives", "nope"], "unknown objective 'nope'"),
    (["--objectives", "ppo_clip:c=2"], "has no parameter 'c'"),
    (["--objectives", "ppo_clip:eps_high=-0.1"], "eps_high must be >= 0"),
    (["--objectives", "tok:aggregation=sum"], "aggregation"),
    (["--kls", "-0.1"], "kl must be >= 0"),
    (["--kls", "a,b"], "kls must be comma-separated numbers"),
    (["--objectives", "ppo_clip:eps_high=abc"], "eps_high must be a real number"),
    (["--horizons", "0,2"], "T must be >= 1"),
    (["--n", "0"], "--n must be >= 1"),
    (["--max-sequences", "0"], "--max-sequences must be >= 1"),
    (["--family", "tree"], "family"),
    (["--bogus"], "unrecognized arguments"),
])
def test_bad_options_exit_2_with_one_line(capsys, args, message):
    rc, out, err = _run(capsys, ["gradient", "--vocab", "3", "--horizons", "1", "--no-store", *args])
    assert rc == 2 and out == ""
    assert err.startswith("tokis: error: ") and err.count("\n") == 1 and message in err, err


def test_landscape_equals_direct_surrogate_calls(tmp_path):
    curves = landscape(FAM, objectives=["seq", "ppo_clip:eps_high=0.28", "gspo"], horizon=3, max_sequences=10)
    assert curves.attrs["T"] == 3 and list(dict.fromkeys(curves["objective"])) == ["seq", "ppo_clip(eps_high=0.28)",
                                                                                   "gspo"]
    mdp, old = FAM.build(3)
    c = exact.surrogate(mdp, old, old, "ppo_clip", direction="gradient", anchor=old, eps_high=0.28)
    sub = curves[curves["objective"] == "ppo_clip(eps_high=0.28)"]
    for col in ("alphas", "surrogate", "value", "bound", "kl"):
        np.testing.assert_allclose(sub["alpha" if col == "alphas" else col], getattr(c, col), rtol=1e-12)
    assert (sub["aggregation"] == "token_mean").all()
    gspo = curves[curves["objective"] == "gspo"]  # 3^3 = 27 sequences > max_sequences: reported, not raised
    assert len(gspo) == 1 and gspo["method"].item() == "none" and "max_sequences=10" in gspo["note"].item()
    from tokis.analysis._panel_plots import plot_landscape

    (path,) = plot_landscape(curves, tmp_path, prefix="g", title="test")
    assert path.name == "g_landscape.png" and path.read_bytes()[:8] == PNG


def test_python_dash_m_help():
    r = subprocess.run([sys.executable, "-m", "tokis.analysis.gradient", "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "--objectives" in r.stdout and "--kls" in r.stdout


def test_damaged_stored_gradient_row_is_recomputed(tmp_path):
    import sqlite3

    from tokis.analysis._store import StoreWarning

    kw = dict(objectives=["tok", "seq"], horizons=[2], kls=[0.05], n=8)
    path = tmp_path / "g.sqlite"
    first = gradient_sweep(FAM, store=path, **kw)
    conn = sqlite3.connect(path)
    (key, row), *_ = conn.execute("SELECT key, row FROM cells").fetchall()
    conn.execute("UPDATE cells SET row = ? WHERE key = ?", (row.replace('"method": ', '"method": 3, "x": '), key))
    conn.commit()
    conn.close()
    with pytest.warns(StoreWarning, match="'method' holds 3"):
        again = gradient_sweep(FAM, store=path, **kw)
    assert again.attrs["computed"] == 1 and again.attrs["cached"] == 1
    pd.testing.assert_frame_equal(again, first, check_exact=True)
