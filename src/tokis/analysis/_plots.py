"""PNG plots of the analysis tables (matplotlib, Agg backend, no display needed).

Sweep plots put the swept quantity on a log x axis, one colour per estimator: exact values as
solid lines, Monte Carlo values as points with their 95 % error bars. Delta-method values
(``method == "asymptotic"``: snis, wpdis) are dashed lines labelled "(asymptotic, delta
method)", never "(exact)", and points where the delta method broke down
(:func:`~tokis.analysis._harness.breakdown_mask`) are not drawn; the legend says where.
The per-horizon panels of ``tokis gradient`` and ``tokis coverage`` are in :mod:`._panel_plots`.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from ._harness import breakdown_mask

__all__ = ["plot_sweep", "draw_sweep", "plot_growth", "plot_models", "EXACT_LABEL", "ASYMPTOTIC_LABEL"]

#: Legend suffix of exact values (methods ``"exact"`` and ``"enumeration"``).
EXACT_LABEL = "(exact)"
#: Legend suffix of delta-method values (method ``"asymptotic"``).
ASYMPTOTIC_LABEL = "(asymptotic, delta method)"
#: Line styles of exact and delta-method series (the latter with small x markers, so that a
#: lone point between broken-down ones shows).
_STYLE = {False: dict(ls="-"), True: dict(ls="--", marker="x", ms=4)}

#: metric -> (exact column, MC column, MC lower, MC upper, y label)
_METRICS = {
    "bias": ("exact_bias", "mc_bias", "mc_bias_lo", "mc_bias_hi", "bias of the estimate"),
    "std": ("exact_std", "mc_std", "mc_std_lo", "mc_std_hi", "std of the estimate"),
    "mse": ("exact_mse", "mc_mse", "mc_mse_lo", "mc_mse_hi", "MSE of the estimate"),
    "ess": (None, "mean_ess", None, None, "ESS (Kish, per batch of n)"),
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


#: Horizontal offset factor between the Monte Carlo points of neighbouring estimators (log axis).
_DODGE = 1.025


def _xscale(ax, x):
    """Log x axis (symlog when a value is <= 0) with a tick at every swept value, labelled plainly (1, 2, 4, ...)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    x = np.asarray(x, dtype=float)
    x = np.unique(x[np.isfinite(x)])
    if x.size and (x > 0).all():
        ax.set_xscale("log")
    else:
        ax.set_xscale("symlog", linthresh=float(np.min(np.abs(x[x != 0]))) if (x != 0).any() else 1.0)
    if 0 < x.size <= 12:
        ax.xaxis.set_major_locator(FixedLocator(x))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.xaxis.set_minor_locator(NullLocator())


def _positive(v):
    v = np.asarray(v, dtype=float)
    return np.where(np.isfinite(v) & (v > 0), v, np.nan)


def _asymptotic(table) -> np.ndarray:
    """Rows whose exact columns hold delta-method values."""
    if "method" not in table:
        return np.zeros(len(table), dtype=bool)
    return (table["method"] == "asymptotic").to_numpy()


def _label(name: str, asymptotic: bool, broken_at=(), x: str = "x") -> str:
    """Legend label of an exact (or delta-method) series; ``broken_at``: values of ``x`` left out."""
    if not asymptotic:
        return f"{name} {EXACT_LABEL}"
    if len(broken_at) == 0:
        return f"{name} {ASYMPTOTIC_LABEL}"
    where = ", ".join(f"{v:g}" for v in broken_at)
    return f"{name} {ASYMPTOTIC_LABEL[:-1]}; broke down at {x} = {where}: not drawn)"


def _legend(ax, *, styles: bool = False) -> None:
    """Legend outside the axes on the right (it never covers data), 9 pt.

    With ``styles``, a grey entry says what the points are: Monte Carlo values with their 95 %
    error bars, in the colour of their estimator's line.
    """
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    if styles:
        handles = handles + [Line2D([], [], color="0.3", ls="none", marker="o", ms=4,
                                    label="points: Monte Carlo (95 % CI), colour of the line")]
        labels = labels + [h.get_label() for h in handles[len(labels):]]
    wrapped = ["\n".join(textwrap.wrap(lab, 34)) for lab in labels]
    ax.legend(handles, wrapped, fontsize=9, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
              frameon=False)


def _run_label(table) -> str:
    """``n=1024, R=1000`` from the table's ``n`` and ``replications`` columns ("" if absent or mixed)."""
    parts = []
    for col, short in (("n", "n"), ("replications", "R")):
        if col in table and table[col].nunique() == 1:
            parts.append(f"{short}={int(table[col].iloc[0])}")
    return ", ".join(parts)


def _bias_linthresh(table) -> float:
    """Linear range of the symlog bias axis: the Monte Carlo resolution (smallest CI half-width).

    Below it the Monte Carlo cannot tell a bias from zero, and exact biases that are zero up to
    rounding (1e-17) stay on the linear part instead of stretching the axis over decades.
    """
    half = ((table["mc_bias_hi"] - table["mc_bias_lo"]) / 2).to_numpy(dtype=float)
    half = half[np.isfinite(half) & (half > 0)]
    if half.size:
        return float(10.0 ** np.floor(np.log10(half.min())))
    vals = np.abs(table["exact_bias"].to_numpy(dtype=float))
    vals = vals[np.isfinite(vals) & (vals > 0) & ~breakdown_mask(table)]
    return float(1e-3 * vals.max()) if vals.size else 1e-6


def draw_sweep(ax, table, x: str, metric: str) -> None:
    """Draw one metric of a sweep table on ``ax`` (what :func:`plot_sweep` saves, one file per metric).

    Parameters
    ----------
    ax : matplotlib Axes
    table : pandas.DataFrame
        A sweep table (column ``x``, ``estimator`` and the harness columns).
    x : str
        The swept column.
    metric : {"bias", "std", "mse", "ess"}

    Notes
    -----
    Per estimator, one colour: the exact values as a solid line labelled ``NAME (exact)``; for
    ``method == "asymptotic"`` rows the delta-method values as a dashed line labelled
    ``NAME (asymptotic, delta method)``, without the points that broke down (the label then
    says where); the Monte Carlo values as points with 95 % error bars.
    """
    plt = _pyplot()
    ex, mc, lo, hi, ylabel = _METRICS[metric]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    cols = [c for c in (ex, mc) if c is not None]
    vals = table[cols].to_numpy(dtype=float)
    logy = metric != "bias" and bool((np.isfinite(vals) & (vals > 0)).any())
    pos = _positive if logy else (lambda v: np.asarray(v, dtype=float))  # all zero: drawn on a linear axis
    names = list(dict.fromkeys(table["estimator"]))
    for j, name in enumerate(names):
        sub = table[table["estimator"] == name].sort_values(x)
        xs = sub[x].to_numpy(dtype=float)
        c = colors[j % len(colors)]
        has_exact = ex is not None and not ("method" in sub and (sub["method"] == "none").all())
        if has_exact:
            ye = sub[ex].to_numpy(dtype=float)
            if metric != "bias":
                ye = pos(ye)
            broken, asym = breakdown_mask(sub), _asymptotic(sub)
            for kind in (False, True):  # exact series, then delta-method series
                rows = asym == kind
                if rows.any():
                    yk = np.where(rows & ~broken, ye, np.nan)
                    ax.plot(xs, yk, **_STYLE[kind], color=c, label=_label(name, kind, xs[rows & broken], x))
        elif ex is not None:  # no exact value anywhere: the points alone, said in the legend
            ax.plot([], [], "o", ms=4, color=c, label=f"{name} (no exact method: Monte Carlo only)")
        # Monte Carlo points side by side (a small multiplicative shift on the log x axis)
        xs = xs * _DODGE ** (j - (len(names) - 1) / 2) if (xs > 0).all() else xs
        ym = sub[mc].to_numpy(dtype=float)
        if lo is not None:
            err = np.vstack([ym - sub[lo].to_numpy(dtype=float), sub[hi].to_numpy(dtype=float) - ym])
            err = np.where(np.isfinite(err), np.maximum(err, 0.0), 0.0)
            if logy:
                err[0] = np.minimum(err[0], 0.999 * np.nan_to_num(ym))  # stay above zero on a log axis
            ax.errorbar(xs, ym if metric == "bias" else pos(ym), yerr=err, fmt="o", ms=4, capsize=2,
                        color=c, label=name if ex is None else None)
        else:
            ax.plot(xs, ym if metric == "bias" else pos(ym), "o", ms=4, color=c,
                    label=name if ex is None else None)
    if metric == "ess" and "ess_fraction" in table and "n" in table:
        pts = table.drop_duplicates(x).sort_values(x)
        pop = pts["ess_fraction"].to_numpy(dtype=float) * pts["n"].to_numpy(dtype=float)
        ax.plot(pts[x].to_numpy(dtype=float), pos(pop), "k--", label="population ESS (seq)")
    _xscale(ax, table[x])
    if metric == "bias":
        ax.set_yscale("symlog", linthresh=_bias_linthresh(table))
        ax.axhline(0.0, color="0.6", lw=0.8)
    elif logy:
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.9, "every value is 0: linear axis", transform=ax.transAxes, ha="center", fontsize=9,
                color="0.4")
    ax.set_ylabel(ylabel)


def plot_sweep(table, x: str, out_dir, *, prefix: str, xlabel: str | None = None, title: str = "") -> list[Path]:
    """Write ``PREFIX_bias.png``, ``PREFIX_std.png``, ``PREFIX_mse.png`` and ``PREFIX_ess.png``.

    Parameters
    ----------
    table : pandas.DataFrame
        A sweep table (column ``x``, ``estimator`` and the harness columns).
    x : str
        The swept column (``"T"``, ``"kl"``, ...), drawn on a log axis.
    out_dir : str or Path
    prefix : str
        File name prefix.
    xlabel, title : str
        Axis label (default ``x``) and figure title.

    Returns
    -------
    list of Path
        The files written.

    Notes
    -----
    Bias uses a symmetric-log y axis (it changes sign and is exactly 0 for unbiased
    estimators); the others a log axis. The ESS plot draws the exact population ESS of
    sequence weights, ``n / E_mu[W^2]``, as a black dashed line. Exact values are solid lines
    labelled :data:`EXACT_LABEL`; delta-method values (``method == "asymptotic"``) dashed lines
    labelled :data:`ASYMPTOTIC_LABEL`, without the points where the delta method broke down
    (the label lists them).
    """
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    run = _run_label(table)
    for metric in _METRICS:
        fig, ax = plt.subplots(figsize=(7.6, 4.4))
        draw_sweep(ax, table, x, metric)
        ax.set_xlabel(xlabel or x)
        head = title or f"{metric} against {xlabel or x}"
        ax.set_title("\n".join(textwrap.wrap(f"{head}; {run}" if run else head, 70)), fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        _legend(ax, styles=metric != "ess")
        fig.tight_layout()
        path = out / f"{prefix}_{metric}.png"
        fig.savefig(path, dpi=150, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written


def plot_growth(table, fit: dict, out_dir, *, prefix: str = "growth", column: str = "log_second_moment") -> list[Path]:
    """Write ``PREFIX.png``: exact and Monte Carlo log second moment (or log variance) against T with the fit.

    Parameters
    ----------
    table : pandas.DataFrame
        The :func:`~tokis.analysis.growth.growth` table (``T``, ``exact_<column>``,
        ``mc_<column>``).
    fit : dict
        ``mc_slope`` and ``mc_intercept`` of the fitted line.

    The exact line is labelled "asymptotic (delta method)" and dashed when the estimator's
    values come from the delta method, and leaves out horizons where it broke down.
    """
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    T = table["T"].to_numpy(dtype=float)
    asym = bool(_asymptotic(table).any())
    broken = breakdown_mask(table)
    exact_label = "asymptotic (delta method)" if asym else "exact"
    if broken.any():
        exact_label += f"; broke down at T = {', '.join(f'{v:g}' for v in T[broken])}: not drawn"
    ax.plot(T, np.where(broken, np.nan, table[f"exact_{column}"].to_numpy(dtype=float)), **_STYLE[asym], color="C0",
            label=exact_label)
    ax.plot(T, table[f"mc_{column}"], "o", color="C1", label="Monte Carlo")
    ax.plot(T, fit["mc_intercept"] + fit["mc_slope"] * T, "--", color="C1",
            label=f"OLS fit, slope {fit['mc_slope']:.4g}")
    ax.set_xlabel("T")
    ax.set_ylabel(column.replace("_", " "))
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = out / f"{prefix}.png"
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return [path]


def plot_models(table, out_dir, *, prefix: str = "mismatch") -> list[Path]:
    """Write ``PREFIX_mse.png``: exact MSE (bars) and Monte Carlo MSE (points) per behaviour model and estimator.

    Delta-method MSEs (``method == "asymptotic"``) are hatched bars labelled
    :data:`ASYMPTOTIC_LABEL`; where the delta method broke down the bar is left out and the
    legend says so.
    """
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    models = list(dict.fromkeys(table["model"]))
    ests = list(dict.fromkeys(table["estimator"]))
    width = 0.8 / max(1, len(ests))
    fig, ax = plt.subplots(figsize=(max(6.4, 1.3 * len(models) + 2), 4.4))
    for j, name in enumerate(ests):
        sub = table[table["estimator"] == name].set_index("model").reindex(models)
        xs = np.arange(len(models)) + (j - (len(ests) - 1) / 2) * width
        broken, asym = breakdown_mask(sub), _asymptotic(sub)
        mse = _positive(sub["exact_mse"])
        for kind in (False, True):  # exact bars, then hatched delta-method bars
            rows = asym == kind
            if rows.any():
                ax.bar(xs[rows], np.where(broken, np.nan, mse)[rows], width=width * 0.9, color=f"C{j % 10}",
                       alpha=0.6, hatch="//" if kind else None, label=_label(name, kind))
        if broken.any():
            ax.plot([], [], " ", label=f"{name}: delta method broke down for {', '.join(np.asarray(models)[broken])}, "
                                       "bar not drawn")
        ax.plot(xs, _positive(sub["mc_mse"]), "o", color=f"C{j % 10}", ms=4)
    ax.set_xticks(np.arange(len(models)))
    ax.set_xticklabels(models, rotation=20, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("MSE (bars: exact or delta method; points: MC)")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    _legend(ax)
    fig.tight_layout()
    path = out / f"{prefix}_mse.png"
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return [path]
