"""``tokis diagnose``: the command on the shipped example, its outputs, and one-line errors for bad files."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tokis.analysis._cli import main
from tokis.analysis.diagnose import diagnose_log, load_log, write_log

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "diagnose_example.parquet"
PNG = b"\x89PNG\r\n\x1a\n"


def _run(capsys, argv):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _error(capsys, argv) -> str:
    rc, out, err = _run(capsys, ["diagnose", *argv])
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tokis: error: "), err
    assert "Traceback" not in err
    return lines[0]


def _log(rng, n=40, T=12):
    """A small padded batch: lengths 1..T, log-probs of a softmax, a nearby sampler."""
    L = rng.integers(1, T + 1, size=n)
    mask = np.arange(T)[None, :] < L[:, None]
    tgt = np.where(mask, -rng.exponential(1.0, size=(n, T)), 0.0)
    beh = np.where(mask, tgt + 0.05 * rng.standard_normal((n, T)), 0.0)
    return tgt, beh, mask, rng.integers(0, 2, size=n).astype(float)


def test_example_file_is_what_the_script_writes(tmp_path):
    """The shipped example is reproduced bit for bit (as arrays) by examples/make_diagnose_example.py."""
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import make_diagnose_example as ex
    finally:
        sys.path.remove(str(ROOT / "examples"))
    fresh = load_log(ex.make(tmp_path / "again.parquet"))
    shipped = load_log(EXAMPLE)
    assert shipped.preset == "verl" and EXAMPLE.stat().st_size < 200_000
    for name in ("target", "behavior", "mask", "rewards", "groups"):
        np.testing.assert_array_equal(getattr(fresh, name), getattr(shipped, name))
    assert shipped.columns == {"target": "old_log_probs", "behavior": "rollout_log_probs", "mask": "response_mask",
                               "reward": "token_level_scores", "group": "uid"}


def test_command_on_the_example(tmp_path, capsys):
    out_dir = tmp_path / "out"
    rc, out, err = _run(capsys, ["diagnose", str(EXAMPLE), "--estimators", "seq,tok,snis,clip_tok:c=2",
                                 "--out", str(out_dir)])
    assert rc == 0
    assert "preset 'verl'" in err
    for heading in ("### Weights, whole batch", "### By response length", "### Outside the thresholds",
                    "### Growth of the log-weight variance with length", "### Estimates of J(pi)",
                    "### Within prompt groups (uid)"):
        assert heading in out
    assert "old_log_probs" in out and "rollout_log_probs" in out and "| clip_tok(c=2) " in out
    for name in ("overall", "by_length", "thresholds", "growth_fit", "growth_implied", "variance_by_length",
                 "histogram", "estimators", "groups"):
        assert (out_dir / f"diagnose_{name}.csv").stat().st_size > 0
    for name in ("log_ratio", "variance_growth"):
        assert (out_dir / f"diagnose_{name}.png").read_bytes()[:8] == PNG


def test_module_entry_point_error_is_one_line(tmp_path):
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"not a parquet file at all")
    p = subprocess.run([sys.executable, "-m", "tokis.analysis.diagnose", str(bad)], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().startswith("tokis: error: cannot read") and len(p.stderr.strip().splitlines()) == 1


def test_explicit_columns_and_presets(rng, tmp_path, capsys):
    tgt, beh, mask, rew = _log(rng)
    path = write_log(tmp_path / "x.jsonl", tgt, beh, mask, rew, preset="trl")
    rc, out, _ = _run(capsys, ["diagnose", str(path), "--estimators", "seq"])
    assert rc == 0 and "old_per_token_logps" in out
    # the same columns named explicitly, target and behaviour swapped: the log-ratio changes sign
    rc, out2, err = _run(capsys, ["diagnose", str(path), "--target", "sampling_per_token_logps", "--behavior",
                                  "old_per_token_logps", "--mask", "completion_mask"])
    assert rc == 0 and "preset" not in err and "Estimates of J(pi)" not in out2  # no reward column named
    a = load_log(path)
    b = load_log(path, target="sampling_per_token_logps", behavior="old_per_token_logps", mask="completion_mask")
    np.testing.assert_array_equal(a.log_ratio, -b.log_ratio)
    assert b.rewards is None and b.preset is None


def test_missing_columns(rng, tmp_path, capsys):
    tgt, beh, mask, rew = _log(rng)
    path = write_log(tmp_path / "x.parquet", tgt, beh, mask, rew, preset="verl")
    line = _error(capsys, [str(path), "--target", "logp"])
    assert "--target column 'logp' is not in the file" in line and "old_log_probs" in line
    line = _error(capsys, [str(path), "--preset", "trl"])
    assert "preset 'trl'" in line and "old_per_token_logps" in line and "rollout_log_probs" in line
    line = _error(capsys, [str(path), "--preset", "openrlhf"])
    assert "unknown preset 'openrlhf'" in line
    other = tmp_path / "other.npz"
    np.savez(other, a=tgt, b=beh)
    line = _error(capsys, [str(other)])
    assert "no target column" in line and "a, b" in line


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_ragged_rows_that_disagree(tmp_path, capsys):
    rows = [dict(old_log_probs=[-1.0] * k, rollout_log_probs=[-1.1] * k, response_mask=[1] * k) for k in (3, 4, 5, 2)]
    rows[2]["rollout_log_probs"] = [-1.0] * 4
    line = _error(capsys, [str(_jsonl(tmp_path / "a.jsonl", rows))])
    assert "row 2 has 5 entries in column 'old_log_probs' but 4 in column 'rollout_log_probs'" in line
    rows[2]["rollout_log_probs"] = [-1.0] * 5
    rows[3]["response_mask"] = [1, 1, 1]
    line = _error(capsys, [str(_jsonl(tmp_path / "b.jsonl", rows))])
    assert "row 3 has 2 entries in column 'old_log_probs' but 3 in column 'response_mask'" in line
    rows[3]["response_mask"] = [1, 2]
    line = _error(capsys, [str(_jsonl(tmp_path / "c.jsonl", rows))])
    assert "column 'response_mask' must hold 0/1" in line and "row 3, token 1" in line
    np.savez(tmp_path / "d.npz", old_log_probs=np.zeros((4, 6)), rollout_log_probs=np.zeros((3, 6)))
    line = _error(capsys, [str(tmp_path / "d.npz")])
    assert "has 4 rows but" in line and "has 3" in line


def test_non_finite_log_probs_are_counted_with_the_first_row(rng, tmp_path, capsys):
    tgt, beh, mask, rew = _log(rng)
    tgt[7, 0] = np.nan
    tgt[9, 0] = np.nan
    tgt[3, -1] = np.nan if not mask[3, -1] else tgt[3, -1]  # NaN in padding is ignored
    path = write_log(tmp_path / "x.parquet", tgt, beh, mask, rew, preset="verl")
    line = _error(capsys, [str(path)])
    assert "column 'old_log_probs' has 2 NaN log-probabilities at real tokens (first: row 7, token 0" in line
    tgt[7, 0] = tgt[9, 0] = -1.0
    beh[5, 0] = -np.inf
    path = write_log(tmp_path / "y.npz", tgt, beh, mask, rew, preset="verl")
    line = _error(capsys, [str(path)])
    assert "column 'rollout_log_probs' has 1 NaN/inf log-probabilities at real tokens (first: row 5, token 0" in line
    beh[5, 0] = -1.0
    rew[4] = np.nan
    path = write_log(tmp_path / "z.npz", tgt, beh, mask, rew, preset="verl")
    line = _error(capsys, [str(path)])
    assert "column 'token_level_scores' has 1 NaN/inf values (first: row 4)" in line


def test_unreadable_files(tmp_path, capsys):
    (tmp_path / "a.parquet").write_bytes(b"PAR1 garbage")
    assert "cannot read" in _error(capsys, [str(tmp_path / "a.parquet")])
    (tmp_path / "b.jsonl").write_text('{"old_log_probs": [-1.0]}\n{"old_log_probs": [-1.0\n')
    assert "line 2 is not JSON" in _error(capsys, [str(tmp_path / "b.jsonl")])
    (tmp_path / "c.jsonl").write_text("[1, 2]\n")
    assert "line 1 is not a JSON object" in _error(capsys, [str(tmp_path / "c.jsonl")])
    (tmp_path / "d.npz").write_bytes(b"\x00" * 64)
    assert "cannot read" in _error(capsys, [str(tmp_path / "d.npz")])
    np.savez(tmp_path / "e.npz", old_log_probs=np.array([np.zeros(2), np.zeros(3)], dtype=object),
             rollout_log_probs=np.zeros(2))
    assert "object arrays" in _error(capsys, [str(tmp_path / "e.npz"), "--preset", "verl"])
    (tmp_path / "f.csv").write_text("a,b\n")
    assert "cannot tell the format" in _error(capsys, [str(tmp_path / "f.csv")])
    assert "no such file" in _error(capsys, [str(tmp_path / "missing.parquet")])
    assert "cannot read" in _error(capsys, [str(tmp_path / "f.csv"), "--format", "parquet"])
    rows = [dict(old_log_probs=["a"], rollout_log_probs=[-1.0])]
    assert "not numbers" in _error(capsys, [str(_jsonl(tmp_path / "g.jsonl", rows))])
    (tmp_path / "h.pt").write_bytes(b"garbage")
    line = _error(capsys, [str(tmp_path / "h.pt")])
    assert ("needs torch" in line) or ("cannot read" in line)


def test_bad_options(rng, tmp_path, capsys):
    tgt, beh, mask, rew = _log(rng)
    path = str(write_log(tmp_path / "x.npz", tgt, beh, mask, rew, preset="verl"))
    assert "buckets must be an integer >= 1" in _error(capsys, [path, "--buckets", "0"])
    assert "level must lie in (0, 1)" in _error(capsys, [path, "--level", "1.5"])
    assert "unknown estimator" in _error(capsys, [path, "--estimators", "nope"]).lower()
    assert "unknown format" in _error(capsys, [path, "--format", "csv"])


def test_python_errors_name_the_argument(rng):
    tgt, beh, mask, rew = _log(rng)
    with pytest.raises(ValueError, match="target_logp has 40 rows but behavior_logp has 39"):
        diagnose_log(tgt, beh[:39])
    with pytest.raises(ValueError, match="rewards must have one value per row"):
        diagnose_log(tgt, beh, mask, rew[:3])
    with pytest.raises(ValueError, match="no real token"):
        diagnose_log(tgt, beh, np.zeros_like(mask))
    with pytest.raises(ValueError, match="target_logp must be 2-D"):
        diagnose_log(tgt[0], beh[0])
    with pytest.raises(ValueError, match="groups must have one value per row"):
        diagnose_log(tgt, beh, mask, groups=np.arange(3))
    with pytest.raises(TypeError, match="unknown column roles"):
        load_log("x.parquet", rewards="r")
