"""PNG plots of the analysis tables (matplotlib, Agg backend, no display needed).

Sweep plots put the swept quantity on a log x axis, one colour per estimator: exact values as
lines, Monte Carlo values as points with their 95 % error bars.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_sweep", "plot_growth", "plot_models"]

#: metric -> (exact column, MC column, MC lower, MC upper, y label)
_METRICS = {
    "bias": ("exact_bias", "mc_bias", "mc_bias_lo", "mc_bias_hi", "bias of the estimate"),
    "std": ("exact_std", "mc_std", "mc_std_lo", "mc_std_hi", "std of the estimate"),
    "mse": ("exact_mse", "mc_mse", None, None, "MSE of the estimate"),
    "ess": (None, "mean_ess", None, None, "ESS (Kish, per batch of n)"),
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _xscale(ax, x):
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if x.size and (x > 0).all():
        ax.set_xscale("log")
    else:
        ax.set_xscale("symlog", linthresh=float(np.min(np.abs(x[x != 0]))) if (x != 0).any() else 1.0)


def _positive(v):
    v = np.asarray(v, dtype=float)
    return np.where(np.isfinite(v) & (v > 0), v, np.nan)


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
    vals = vals[np.isfinite(vals) & (vals > 0)]
    return float(1e-3 * vals.max()) if vals.size else 1e-6


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
    sequence weights, ``n / E_mu[W^2]``, as a black dashed line.
    """
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ests = list(dict.fromkeys(table["estimator"]))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    written = []
    for metric, (ex, mc, lo, hi, ylabel) in _METRICS.items():
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        for j, name in enumerate(ests):
            sub = table[table["estimator"] == name].sort_values(x)
            xs = sub[x].to_numpy(dtype=float)
            c = colors[j % len(colors)]
            if ex is not None:
                ye = sub[ex].to_numpy(dtype=float)
                if metric != "bias":
                    ye = _positive(ye)
                ax.plot(xs, ye, "-", color=c, label=f"{name} (exact)")
            ym = sub[mc].to_numpy(dtype=float)
            if lo is not None:
                err = np.vstack([ym - sub[lo].to_numpy(dtype=float), sub[hi].to_numpy(dtype=float) - ym])
                err = np.where(np.isfinite(err), np.maximum(err, 0.0), 0.0)
                if metric != "bias":
                    err[0] = np.minimum(err[0], 0.999 * np.nan_to_num(ym))  # stay above zero on a log axis
                ax.errorbar(xs, ym if metric == "bias" else _positive(ym), yerr=err, fmt="o", ms=4, capsize=2,
                            color=c, label=f"{name} (MC)" if ex is None else None)
            else:
                ax.plot(xs, ym if metric == "bias" else _positive(ym), "o", ms=4, color=c,
                        label=f"{name} (MC)" if ex is None else None)
        if metric == "ess" and "ess_fraction" in table and "n" in table:
            pts = table.drop_duplicates(x).sort_values(x)
            pop = pts["ess_fraction"].to_numpy(dtype=float) * pts["n"].to_numpy(dtype=float)
            ax.plot(pts[x].to_numpy(dtype=float), _positive(pop), "k--", label="population ESS (seq)")
        _xscale(ax, table[x])
        if metric == "bias":
            ax.set_yscale("symlog", linthresh=_bias_linthresh(table))
            ax.axhline(0.0, color="0.6", lw=0.8)
        else:
            ax.set_yscale("log")
        ax.set_xlabel(xlabel or x)
        ax.set_ylabel(ylabel)
        ax.set_title(title or f"{metric} against {xlabel or x}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        path = out / f"{prefix}_{metric}.png"
        fig.savefig(path, dpi=110)
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
    """
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    T = table["T"].to_numpy(dtype=float)
    ax.plot(T, table[f"exact_{column}"], "-", color="C0", label="exact")
    ax.plot(T, table[f"mc_{column}"], "o", color="C1", label="Monte Carlo")
    ax.plot(T, fit["mc_intercept"] + fit["mc_slope"] * T, "--", color="C1",
            label=f"OLS fit, slope {fit['mc_slope']:.4g}")
    ax.set_xlabel("T")
    ax.set_ylabel(column.replace("_", " "))
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = out / f"{prefix}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def plot_models(table, out_dir, *, prefix: str = "mismatch") -> list[Path]:
    """Write ``PREFIX_mse.png``: exact MSE (bars) and Monte Carlo MSE (points) per behaviour model and estimator."""
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
        ax.bar(xs, _positive(sub["exact_mse"]), width=width * 0.9, color=f"C{j % 10}", alpha=0.6, label=f"{name} (exact)")
        ax.plot(xs, _positive(sub["mc_mse"]), "o", color=f"C{j % 10}", ms=4)
    ax.set_xticks(np.arange(len(models)))
    ax.set_xticklabels(models, rotation=20, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("MSE of the estimate (bars exact, points MC)")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = out / f"{prefix}_mse.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
