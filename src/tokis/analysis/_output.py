"""Text outputs of the analysis: markdown tables, LaTeX tabulars and CSV files.

Small self-contained writers (pandas' ``to_markdown`` and ``to_latex`` need optional
packages). Numbers are printed with 4 significant digits; NaN as ``nan``; :data:`BLANK`
(``—``, ``---`` in LaTeX) marks a value left out on purpose (a delta-method value that broke
down, see :func:`tokis.analysis._harness.breakdown_mask`). Notes (``notes=`` or the table's
``attrs["notes"]``, which :func:`~tokis.analysis._common.display_table` sets) are printed as
lines under the table.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path

import numpy as np
import pandas as pd

from ._outdir import check_out_dir

__all__ = ["BLANK", "format_value", "to_markdown", "to_latex", "write_tables"]

#: A cell left out on purpose (printed as is; ``---`` in LaTeX). A column of numbers and BLANKs
#: is still a numeric column (right-aligned).
BLANK = "—"


def format_value(value, digits: int = 4) -> str:
    """Format one cell: floats with ``digits`` significant digits, booleans as ``yes``/``no``."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (numbers.Integral, np.integer)):
        return str(int(value))
    if isinstance(value, (numbers.Real, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v == int(v) and abs(v) < 1e6:
            return str(int(v))
        return f"{v:.{digits}g}"
    return str(value)


def _cells(table: pd.DataFrame, digits: int) -> list[list[str]]:
    return [[format_value(v, digits) for v in row] for row in table.itertuples(index=False, name=None)]


def _is_number(v) -> bool:
    return isinstance(v, (numbers.Real, np.floating, np.integer)) and not isinstance(v, (bool, np.bool_))


def _numeric(table: pd.DataFrame) -> list[bool]:
    """Which columns hold numbers (right-aligned): numeric dtypes, or numbers mixed with BLANK."""
    out = []
    for c in table.columns:
        col = table[c]
        if pd.api.types.is_bool_dtype(col):
            out.append(False)
        elif pd.api.types.is_numeric_dtype(col):
            out.append(True)
        else:
            rest = [v for v in col if not (isinstance(v, str) and v == BLANK)]
            out.append(bool(rest) and all(_is_number(v) for v in rest))
    return out


def _notes(table: pd.DataFrame, notes) -> list[str]:
    return list(table.attrs.get("notes", ()) if notes is None else notes)


def to_markdown(table: pd.DataFrame, *, digits: int = 4, notes=None) -> str:
    """A GitHub-flavoured markdown table (numbers right-aligned), with notes under it.

    Parameters
    ----------
    table : pandas.DataFrame
    digits : int
        Significant digits of floats.
    notes : sequence of str, optional
        Lines printed under the table after a blank line (default: ``table.attrs["notes"]``,
        none if absent).

    Returns
    -------
    str
        Header, alignment row and one line per row, then the notes (no trailing newline).
    """
    header = [str(c) for c in table.columns]
    body = _cells(table, digits)
    numeric = _numeric(table)
    widths = [max([len(h), 3] + [len(r[j]) for r in body]) for j, h in enumerate(header)]

    def line(cells):
        out = []
        for j, c in enumerate(cells):
            out.append(c.rjust(widths[j]) if numeric[j] else c.ljust(widths[j]))
        return "| " + " | ".join(out) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if numeric[j] else ("-" * (w + 2)) for j, w in enumerate(widths)) + "|"
    text = "\n".join([line(header), rule] + [line(r) for r in body])
    notes = _notes(table, notes)
    return text + "\n\n" + "\n".join(notes) if notes else text


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    BLANK: "---",
}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(table: pd.DataFrame, *, digits: int = 4, caption: str | None = None, notes=None) -> str:
    """A LaTeX ``tabular`` (booktabs rules) of the table, special characters escaped.

    Parameters
    ----------
    table : pandas.DataFrame
    digits : int
        Significant digits of floats.
    caption : str, optional
        Wrap the tabular in a ``table`` environment with this caption.
    notes : sequence of str, optional
        Footnote paragraphs set in ``\\footnotesize`` under the tabular (default:
        ``table.attrs["notes"]``, none if absent).

    Returns
    -------
    str
    """
    numeric = _numeric(table)
    cols = "".join("r" if x else "l" for x in numeric)
    lines = [rf"\begin{{tabular}}{{{cols}}}", r"\toprule"]
    lines.append(" & ".join(_latex_escape(str(c)) for c in table.columns) + r" \\")
    lines.append(r"\midrule")
    for row in _cells(table, digits):
        lines.append(" & ".join(_latex_escape(c) for c in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    notes = _notes(table, notes)
    if notes:
        lines.append(r"\par\smallskip")
        lines += [r"{\footnotesize " + _latex_escape(note) + r"\par}" for note in notes]
    text = "\n".join(lines)
    if caption is not None:
        text = "\n".join([r"\begin{table}", r"\centering", text, rf"\caption{{{_latex_escape(caption)}}}",
                          r"\end{table}"])
    return text + "\n"


def write_tables(tables: dict, out_dir, *, digits: int = 4) -> list[Path]:
    """Write each table as ``NAME.csv`` (every column, full precision) and ``NAME.tex``.

    The LaTeX file carries the display table's notes (``attrs["notes"]``) under the tabular.

    Parameters
    ----------
    tables : dict of str to pandas.DataFrame or (DataFrame, DataFrame)
        A table, or a pair (full table for the CSV, display table for the LaTeX file).
    out_dir : str or Path
        Created if missing.

    Returns
    -------
    list of Path
        The files written.
    """
    out = check_out_dir(out_dir, "out_dir")
    written = []
    for name, table in tables.items():
        full, display = table if isinstance(table, tuple) else (table, table)
        csv = out / f"{name}.csv"
        full.to_csv(csv, index=False)
        tex = out / f"{name}.tex"
        tex.write_text(to_latex(display, digits=digits))
        written += [csv, tex]
    return written
