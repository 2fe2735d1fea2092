"""``tokis sweep grid.toml``: grid files, their validation, expansion into cells, and identity with the single sweeps."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tokis.analysis import Behavior, Family, ResultStore
from tokis.analysis._cli import main
from tokis.analysis._grid import CONFIG_COLUMNS, KEYS, display_coords, grid_points, load_grid, parse_grid, run_grid
from tokis.analysis.horizon import horizon
from tokis.analysis.mismatch import mismatch

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "grid.toml"
SMALL = dict(vocab=3, horizons=[1, 3], estimators=["seq", "tok"], n=16, replications=4, seeds=[0, 5],
             backend="numpy")


def _write(tmp_path, text, name="g.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_example_grid_parses_and_counts_its_cells():
    g = load_grid(EXAMPLE)
    assert g.points == 2 * 2 * 2 * 3 * 2 == 48 and g.cells == 48 * 3 == 144  # as its comment says
    assert g.varying == ["vocab", "model", "values", "horizons", "seeds"]


def test_points_are_the_product_of_the_axes():
    g = parse_grid({**SMALL, "vocab": [3, 4], "model": ["perturb", "bf16"], "values": [0.01, 0.1], "n": [16, 32]})
    # perturb: 2 values; bf16 has no knob: one point per combination of the rest
    assert g.points == 2 * (2 + 1) * 2 * 2 * 2 == len(grid_points(g))
    pts = grid_points(g)
    coords = [dict(p.coords) for p in pts]
    assert len({(c["vocab"], c["model"], c["value"] if c["model"] == "perturb" else None, c["T"], c["seed"], p.n)
                for c, p in zip(coords, pts)}) == len(pts)
    assert all(math.isnan(c["value"]) and c["divergence"] == "none" for c in coords if c["model"] == "bf16")
    assert all(p.seed == dict(p.coords)["seed"] for p in pts)


def test_grid_cells_are_the_cells_of_the_single_sweeps(tmp_path):
    store = tmp_path / "s.sqlite"
    # perturb to a per-context KL: exactly the cells of tokis horizon --kl (same keys: read back from the store)
    h = [horizon(Family(vocab=3), Behavior(kl=0.05), horizons=[1, 3], estimators=["seq", "tok"], n=16,
                 replications=4, seed=s, backend="numpy", store=store) for s in (0, 5)]
    t = run_grid({**SMALL, "values": 0.05}, store=store)
    assert t.attrs["total"] == 8 and t.attrs["cached"] == 8 and t.attrs["computed"] == 0
    for s, hs in zip((0, 5), h):
        part = t[t["seed"] == s].reset_index(drop=True)
        cols = [c for c in hs.columns]
        pd.testing.assert_frame_equal(part[cols], hs, check_exact=True)
    assert list(t.columns[:len(CONFIG_COLUMNS) + 2]) == [*CONFIG_COLUMNS, "n", "replications"]
    assert (t["family"] == "ngram").all() and (t["pattern"] == "0,1").all() and (t["knob"] == 0.05).all()


def test_sampler_kl_is_the_mismatch_calibration(tmp_path):
    store = tmp_path / "s.sqlite"
    m = mismatch(Family(vocab=3), models=["perturb", "temperature", "bf16"], kl=0.02, horizon=3,
                 estimators=["seq", "tok"], n=16, replications=4, seed=0, backend="numpy", store=store)
    t = run_grid({**SMALL, "horizons": [3], "seeds": 0, "model": ["perturb", "temperature", "bf16"],
                  "divergence": "sampler_kl", "values": 0.02}, store=store)
    assert t.attrs["cached"] == t.attrs["total"] == 6
    np.testing.assert_array_equal(t["knob"].to_numpy(), m["knob"].to_numpy())
    np.testing.assert_array_equal(t["mc_mean"].to_numpy(), m["mc_mean"].to_numpy())
    calibrated = t[t["model"] != "bf16"]
    np.testing.assert_allclose(calibrated["token_kl_mu"], 0.02, rtol=1e-6)  # the bisection hits the sampler KL


def test_rerun_is_free(tmp_path):
    store = tmp_path / "s.sqlite"
    grid = {**SMALL, "model": ["perturb", "temperature"], "divergence": "sampler_kl", "values": [0.01, 0.05]}
    one = run_grid(grid, store=store)
    assert one.attrs["computed"] == one.attrs["total"] == 32
    again = run_grid(grid, store=store)
    assert again.attrs["computed"] == 0 and again.attrs["cached"] == 32
    pd.testing.assert_frame_equal(one, again, check_exact=True)
    with ResultStore(store) as db:
        assert len(db) == 32


@pytest.mark.parametrize("text, match", [
    ("colour = 1", "g.toml: unknown key 'colour'; the keys are family, vocab"),
    ("vocab = 0", "g.toml: vocab: must be >= 1, got 0"),
    ("vocab = [4, 'x']", "g.toml: vocab: must be an integer, got str 'x'"),
    ("vocab = []", "g.toml: vocab: an empty list"),
    ("n = 2.5", "g.toml: n: must be an integer"),
    ("replications = 1", "g.toml: replications: must be >= 2, got 1"),
    ("seeds = [-1]", "g.toml: seeds: must be >= 0, got -1"),
    ("values = [0.1, -0.1]", "g.toml: values: must be >= 0, got -0.1"),
    ("model = 'nucleus'", "g.toml: model: unknown value 'nucleus'; choose from perturb"),
    ("model = 'temperature'", "g.toml: model: 'temperature' is calibrated to a sampler KL: set divergence"),
    ("model = 'bf16'\ndivergence = 'chi2'", "g.toml: model: bf16/fp16 round the logits"),
    ("divergence = 'tv'", "g.toml: divergence: unknown value 'tv'; choose from kl, chi2, sampler_kl"),
    ("horizons = [0, 2]", "g.toml: horizons: T must be >= 1"),
    ("estimators = ['seq', 'nope']", "g.toml: estimators: unknown estimator 'nope'"),
    ("estimators = ['clip_tok:q=2']", "g.toml: estimators: estimator 'clip_tok' has no parameter 'q'"),
    ("backend = ['numpy', 'numba']", "g.toml: backend: one backend, not a list"),
    ("backend = 'gpu'", "g.toml: backend: unknown value 'gpu'"),
    ("pattern = [0, 'a']", "g.toml: pattern: must be a non-empty list of tokens"),
    ("vocab = [4, 2]\neos = 3", r"g.toml: family \(family='ngram', vocab=2, .*eos=3.*\): eos must be a token in \[0, 2\)"),
    ("vocab = = 3", "g.toml: not a valid TOML file"),
])
def test_bad_grids_name_the_file_and_the_key(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        load_grid(_write(tmp_path, text))


def test_missing_grid_file(tmp_path):
    with pytest.raises(ValueError, match="cannot read the grid file"):
        load_grid(tmp_path / "none.toml")


def test_defaults_are_the_flagship():
    g = parse_grid({})
    assert g.axis("horizons") == (1, 2, 4, 8, 16, 32, 64) and g.axis("values") == (0.05,)
    assert [e.name for e in g.estimators] == KEYS["estimators"] and g.backend == "auto"
    assert display_coords(g) == ["T"]


def test_sweep_command_prints_the_varying_keys_and_writes_the_combined_csv(tmp_path, capsys):
    grid = _write(tmp_path, "vocab = 3\nmodel = ['perturb', 'temperature']\ndivergence = 'sampler_kl'\n"
                            "values = 0.02\nestimators = ['seq', 'tok']\nhorizons = [2, 3]\nn = 16\n"
                            "replications = 4\nbackend = 'numpy'\n", name="tiny.toml")
    store = tmp_path / "s.sqlite"
    assert main(["sweep", str(grid), "--store", str(store), "--out", str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    assert "tiny.toml: 4 points x 2 estimators = 8 cells" in err and "8 computed" in err
    header = next(line for line in out.splitlines() if line.startswith("| model"))
    assert [h.strip() for h in header.strip("|").split("|")][:4] == ["model", "knob", "T", "estimator"]
    csv = pd.read_csv(tmp_path / "out" / "tiny.csv")
    assert len(csv) == 8 and list(csv.columns[:len(CONFIG_COLUMNS)]) == list(CONFIG_COLUMNS)
    assert main(["sweep", str(grid), "--store", str(store), "--out", str(tmp_path / "out")]) == 0
    assert "(8 from the store, 0 computed)" in capsys.readouterr().err


def test_sweep_command_errors_are_one_line(tmp_path, capsys):
    grid = _write(tmp_path, "vocab = -2\n")
    assert main(["sweep", str(grid), "--no-store", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"tokis: error: {grid}: vocab: must be >= 1, got -2\n"
