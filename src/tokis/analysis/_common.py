"""Helpers shared by the analysis commands: argument coercion and display tables."""

from __future__ import annotations

import math
import numbers

import numpy as np
import pandas as pd

from ._config import Behavior, Family
from ._harness import ASYMPTOTIC_COLUMNS, breakdown_mask
from ._output import BLANK, format_value

__all__ = ["as_family", "as_behavior", "parse_horizons", "parse_floats", "display_table", "exact_notes",
           "blank_breakdowns", "DISPLAY_COLUMNS", "ASYMPTOTIC_NOTE", "BREAKDOWN_NOTE"]

#: Columns of the printed sweep tables (after the sweep coordinates).
DISPLAY_COLUMNS = ("estimator", "method", "exact_bias", "exact_std", "exact_mse", "ess_fraction", "mc_bias ± 95%",
                   "mc_std", "mean_ess", "z", "flag")

#: Footnote of a printed table with ``method = asymptotic`` rows.
ASYMPTOTIC_NOTE = ("Note: on rows with method = asymptotic (snis, wpdis) the exact_* columns are not exact: they hold "
                   "the delta-method approximation (bias to O(1/n), std to first order in 1/sqrt(n)), and z is "
                   "measured against it.")
#: Footnote of a printed table with rows where the delta method broke down.
BREAKDOWN_NOTE = (f"Note: {BLANK} marks delta-method values left out because the expansion has broken down there (an "
                  "impossible mean or std for an estimate bounded by the rewards, an O(1/n) bias term above the std, "
                  "or a normaliser with coefficient of variation above 1); such rows carry the flag delta! (delta? "
                  "for asymptotic rows stored before these checks existed), and the raw numbers are in the CSV "
                  "(columns asymptotic_breakdown, breakdown_reason).")


#: Footnote of a printed table with rows that have no exact method.
NO_EXACT_NOTE = (f"Note: method = none ({{names}}): no exact method at this size (e.g. a truncation level that "
                 f"depends on the batch, or more sequences than enumeration allows); {BLANK} in the exact_* "
                 f"columns and z, the Monte Carlo columns stand alone.")


def as_family(family, default: Family | None = None) -> Family:
    """Coerce None (``default``, else ``Family()``), a family name, a dict of options or a Family into a Family."""
    if family is None:
        return Family() if default is None else default
    if isinstance(family, Family):
        return family
    if isinstance(family, str):
        return Family(name=family)
    if isinstance(family, dict):
        return Family(**family)
    raise TypeError(f"family must be a Family, a name or a dict of options, got {type(family).__name__}")


def as_behavior(behavior, default: Behavior) -> Behavior:
    """Coerce None (``default``), a dict of options or a Behavior into a Behavior."""
    if behavior is None:
        return default
    if isinstance(behavior, Behavior):
        return behavior
    if isinstance(behavior, dict):
        return Behavior(**behavior)
    raise TypeError(f"behavior must be a Behavior or a dict of options, got {type(behavior).__name__}")


def _int_item(v, name: str) -> int:
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            raise ValueError(f"{name}: {v!r} is not an integer") from None
        if not f.is_integer():
            raise ValueError(f"{name}: {v!r} is not an integer")
        return int(f)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be integers, got {type(v).__name__} {v!r}")
    return int(v)


def parse_horizons(spec, name: str = "horizons") -> list[int]:
    """Horizons from integers or text.

    Parameters
    ----------
    spec : int, iterable of int, or str
        Text is comma-separated; an item ``a..b`` stands for the powers of two times ``a`` up to
        ``b`` (``"1..64"`` is 1, 2, 4, ..., 64).

    Returns
    -------
    list of int
        Sorted, without duplicates.

    Raises
    ------
    ValueError
        Empty, or a horizon ``T < 1`` ("T must be >= 1").
    """
    items = []
    if isinstance(spec, str):
        for piece in spec.split(","):
            piece = piece.strip()
            if not piece:
                continue
            if ".." in piece:
                a, b = (_int_item(x.strip(), name) for x in piece.split("..", 1))
                if a < 1:
                    raise ValueError(f"T must be >= 1, got {a}")
                t = a
                while t <= b:
                    items.append(t)
                    t *= 2
            else:
                items.append(_int_item(piece, name))
    elif isinstance(spec, (numbers.Integral, np.integer)) and not isinstance(spec, (bool, np.bool_)):
        items = [int(spec)]
    else:
        items = [_int_item(v, name) for v in spec]
    if not items:
        raise ValueError(f"{name} is empty")
    for t in items:
        if t < 1:
            raise ValueError(f"T must be >= 1, got {t}")
    return sorted(set(items))


def parse_floats(spec, name: str) -> list[float]:
    """Floats from an iterable or comma-separated text (order kept, finite)."""
    if isinstance(spec, str):
        try:
            vals = [float(x) for x in spec.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"{name} must be comma-separated numbers, got {spec!r}") from None
    elif isinstance(spec, (numbers.Real, np.floating)) and not isinstance(spec, bool):
        vals = [float(spec)]
    else:
        vals = [float(v) for v in spec]
    if not vals:
        raise ValueError(f"{name} is empty")
    for v in vals:
        if not math.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v}")
    return vals


def _pm(row) -> str:
    b, lo, hi = row["mc_bias"], row["mc_bias_lo"], row["mc_bias_hi"]
    if not np.isfinite(b):
        return "nan"
    return f"{format_value(b)} ± {format_value((hi - lo) / 2, 2)}"


def exact_notes(table: pd.DataFrame) -> list[str]:
    """Footnotes for a printed table: :data:`ASYMPTOTIC_NOTE` when ``table`` has asymptotic rows,
    and :data:`BREAKDOWN_NOTE` when some of them broke down (:func:`~tokis.analysis._harness.breakdown_mask`)."""
    notes = []
    if "method" in table and (table["method"] == "asymptotic").any():
        notes.append(ASYMPTOTIC_NOTE)
    if breakdown_mask(table).any():
        notes.append(BREAKDOWN_NOTE)
    if "method" in table and (table["method"] == "none").any():
        names = ", ".join(dict.fromkeys(table.loc[table["method"] == "none", "estimator"]))
        notes.append(NO_EXACT_NOTE.format(names=names))
    return notes


def blank_breakdowns(table: pd.DataFrame, columns, broken=None) -> pd.DataFrame:
    """A copy of ``table`` whose ``columns`` read :data:`~tokis.analysis._output.BLANK` on broken-down rows.

    ``broken`` (bool array, one per row) defaults to
    :func:`~tokis.analysis._harness.breakdown_mask` of ``table``.
    """
    out = table.copy()
    broken = breakdown_mask(table) if broken is None else np.asarray(broken, dtype=bool)
    if broken.any():
        for c in columns:
            if c in out:
                out[c] = [BLANK if b else v for v, b in zip(out[c], broken)]
    return out


def _unchecked(table: pd.DataFrame) -> np.ndarray:
    """Asymptotic rows never checked for breakdown (cells stored before the checks existed)."""
    if "asymptotic_breakdown" not in table:
        return np.ones(len(table), dtype=bool)
    return table["asymptotic_breakdown"].isna().to_numpy()


def display_table(table: pd.DataFrame, coords) -> pd.DataFrame:
    """The printed form of a sweep table: coordinates, then :data:`DISPLAY_COLUMNS`.

    ``mc_bias ± 95%`` is the Monte Carlo bias with the half-width of its interval; ``flag`` is
    ``std!`` where the empirical std is far below the exact one (``std_underestimated``),
    ``z!`` where ``|z| > 4``, and ``delta!`` where the delta method of an asymptotic row broke
    down (``asymptotic_breakdown``; ``delta?`` where it was never checked). On such rows the
    ``exact_*`` columns and ``z`` read :data:`~tokis.analysis._output.BLANK` instead of the
    delta method's numbers, and neither ``std!`` nor ``z!`` is raised (there is no trustworthy
    value to compare with). ``attrs["notes"]`` holds the footnotes (:func:`exact_notes`) that
    :func:`~tokis.analysis._output.to_markdown` and ``to_latex`` print under the table.
    """
    out = pd.DataFrame({c: table[c] for c in coords})
    for c in ("estimator", "method", "exact_bias", "exact_std", "exact_mse", "ess_fraction"):
        out[c] = table[c]
    out["mc_bias ± 95%"] = [_pm(r) for _, r in table.iterrows()]
    out["mc_std"] = table["mc_std"]
    out["mean_ess"] = table["mean_ess"]
    out["z"] = table["z"]
    broken = breakdown_mask(table)
    unchecked = _unchecked(table)
    flags = []
    for i, (_, r) in enumerate(table.iterrows()):
        f = []
        if broken[i]:
            f.append("delta?" if unchecked[i] else "delta!")
        else:
            if bool(r["std_underestimated"]):
                f.append("std!")
            if np.isfinite(r["z"]) and abs(r["z"]) > 4 or np.isinf(r["z"]):
                f.append("z!")
        flags.append(" ".join(f))
    out["flag"] = flags
    out = blank_breakdowns(out, [*ASYMPTOTIC_COLUMNS, "z"], broken).reset_index(drop=True)
    if "method" in table:
        out = blank_breakdowns(out, ["exact_bias", "exact_std", "exact_mse", "z"],
                               (table["method"] == "none").to_numpy())
    out.attrs["notes"] = exact_notes(table)
    return out
