"""Markdown and LaTeX writers."""

import math

import numpy as np
import pandas as pd

from tokis.analysis import to_latex, to_markdown
from tokis.analysis._output import format_value, write_tables


def test_format_value():
    assert format_value(0.000123456) == "0.0001235"
    assert format_value(123456.7) == "1.235e+05"
    assert format_value(2.0) == "2" and format_value(np.int64(7)) == "7"
    assert format_value(math.nan) == "nan" and format_value(-math.inf) == "-inf"
    assert format_value(True) == "yes" and format_value(np.bool_(False)) == "no"
    assert format_value(None) == "" and format_value("a_b") == "a_b"
    assert format_value(1 / 3, digits=2) == "0.33"


def test_markdown_layout():
    t = pd.DataFrame({"T": [1, 16], "estimator": ["seq", "clip_tok(c=2)"], "mse": [0.5, 1.25e-5]})
    md = to_markdown(t).splitlines()
    assert md == [
        "|   T | estimator     |      mse |",
        "|----:|---------------|---------:|",  # numbers right-aligned
        "|   1 | seq           |      0.5 |",
        "|  16 | clip_tok(c=2) | 1.25e-05 |",
    ]


def test_latex_escapes_and_structure():
    t = pd.DataFrame({"mc_bias ± 95%": ["0.1 ± 0.2"], "x_y": [1.5], "ok": [True]})
    tex = to_latex(t)
    lines = tex.strip().splitlines()
    assert lines[0] == r"\begin{tabular}{lrl}" and lines[-1] == r"\end{tabular}"
    assert r"mc\_bias ± 95\%" in lines[2] and r"x\_y" in lines[2]
    assert lines[4] == r"0.1 ± 0.2 & 1.5 & yes \\"
    wrapped = to_latex(t, caption="a_b")
    assert wrapped.startswith(r"\begin{table}") and r"\caption{a\_b}" in wrapped


def test_write_tables(tmp_path):
    full = pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"], "c": [0.123456789, 2.0]})
    files = write_tables({"t": (full, full[["a", "b"]]), "u": full}, tmp_path / "out")
    assert sorted(p.name for p in files) == ["t.csv", "t.tex", "u.csv", "u.tex"]
    back = pd.read_csv(tmp_path / "out" / "t.csv")
    pd.testing.assert_frame_equal(back, full)  # CSV keeps full precision
    assert "0.1235" not in (tmp_path / "out" / "t.tex").read_text()
    assert "0.1235" in (tmp_path / "out" / "u.tex").read_text()
