"""PNG plots of ``tokis diagnose`` (matplotlib, Agg backend): the log-ratio histogram and the variance growth."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ._plots import _pyplot

__all__ = ["plot_diagnosis"]

#: Bands drawn on the histogram (log of the ratio bounds), from the thresholds of the report.
_BANDS = (("TIS C=2 / mask hi=2", (math.log(2.0),)), ("mask lo=0.5", (math.log(0.5),)),
          ("PPO eps=0.2", (math.log(0.8), math.log(1.2))))


def _histogram(ax, hist) -> None:
    left, right, count = (hist[c].to_numpy() for c in ("left", "right", "count"))
    ax.bar(left, np.where(count > 0, count, np.nan), width=right - left, align="edge", color="C0", alpha=0.8)
    ax.set_yscale("log")
    lo, hi = float(left[0]), float(right[-1])
    for j, (label, xs) in enumerate(_BANDS):
        shown = [x for x in xs if lo <= x <= hi]
        for k, x in enumerate(shown):
            ax.axvline(x, color=f"C{j + 1}", ls="--", lw=1, label=label if k == 0 else None)
    ax.set_xlabel("per-token log-ratio  l = log pi(trainer) - log mu(sampler)")
    ax.set_ylabel("tokens")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _growth(ax, result) -> None:
    v, fit = result.variance_by_length, result.growth
    x, y = v["mean_length"].to_numpy(dtype=float), v["var_log_weight"].to_numpy(dtype=float)
    ax.plot(x, y, "o", color="C0", label="variance of log W per length bucket" + (" (around the mean line)"
                                                                                    if fit.fitted else ""))
    if fit.fitted:
        grid = np.linspace(0.0, float(x.max()), 100)
        ax.plot(grid, fit.intercept + fit.rate * grid, "-", color="C1",
                label=f"OLS: {fit.rate:.3g} per token [{fit.rate_lo:.3g}, {fit.rate_hi:.3g}]")
        ax.fill_between(grid, fit.intercept + fit.rate_lo * grid, fit.intercept + fit.rate_hi * grid, color="C1",
                        alpha=0.2)
    else:
        ax.text(0.5, 0.5, fit.reason, transform=ax.transAxes, ha="center", va="center", fontsize=8, wrap=True)
    if math.isfinite(fit.renyi_rate):
        grid = np.linspace(0.0, float(x.max()), 100)
        ax.plot(grid, fit.renyi_rate * grid, ":", color="C2", label=f"log(1 + token chi2) = {fit.renyi_rate:.3g} per token")
    ax.set_xlabel("response length L (tokens)")
    ax.set_ylabel("Var(log W | L)")
    ax.legend(fontsize=8)


def plot_diagnosis(result, out_dir, *, prefix: str = "diagnose", title: str = "") -> list[Path]:
    """Write ``PREFIX_log_ratio.png`` (histogram of the per-token log-ratios, log counts, with the
    framework thresholds) and ``PREFIX_variance_growth.png`` (variance of log W per length bucket,
    the fitted line with its band, and the Rényi-rate line).

    Parameters
    ----------
    result : LogDiagnosis
    out_dir : str or Path
        Created if missing.
    prefix, title : str

    Returns
    -------
    list of Path
    """
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in (("log_ratio", lambda ax: _histogram(ax, result.histogram)),
                       ("variance_growth", lambda ax: _growth(ax, result))):
        fig, ax = plt.subplots(figsize=(6.8, 4.4))
        draw(ax)
        if title:
            ax.set_title(title, fontsize=9)
        path = out / f"{prefix}_{name}.png"
        fig.savefig(path, dpi=150, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written
