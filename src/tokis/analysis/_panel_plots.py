"""PNG plots of the per-horizon panels: exact policy gradients, the surrogate landscape, interval coverage.

One panel per KL step (``tokis gradient``) or interval method (``tokis coverage``), T on a log
x axis, one colour and marker per objective or estimator; the common pieces (the pyplot
import, axes, legends) are :mod:`._plots`'.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from ._plots import _positive, _pyplot

__all__ = ["plot_gradient", "plot_landscape", "plot_coverage"]


# ---------------------------------------------------------------------------------------------
# exact policy gradients (tokis gradient)
# ---------------------------------------------------------------------------------------------


#: Markers of the objectives in the gradient plots (with colours, so that overlapping series stay visible).
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _horizon_axis(ax, horizons) -> None:
    """Log-2 x axis with one labelled tick per horizon (no minor ticks)."""
    from matplotlib.ticker import FixedLocator, NullLocator

    hs = sorted({int(h) for h in horizons})
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(hs))
    ax.set_xticklabels([str(h) for h in hs])
    ax.xaxis.set_minor_locator(NullLocator())
    if len(hs) > 1:
        ax.set_xlim(hs[0] / 1.25, hs[-1] * 1.25)
    ax.set_xlabel("horizon T")


def _missing_label(name: str, sub) -> str:
    """``name``, with the horizons where the objective has no exact method (``method == "none"``)."""
    none = sorted(int(t) for t in sub.loc[sub["method"] == "none", "T"])
    if not none:
        return name
    have = sorted(int(t) for t in sub.loc[sub["method"] != "none", "T"])
    if have and max(have) < min(none):
        return f"{name} (exact only at T ≤ {max(have)})"
    return f"{name} (no exact method at T = {', '.join(map(str, none))})"


def _gradient_panels(plt, kls, title, height=3.6):
    fig, axes = plt.subplots(1, len(kls), figsize=(3.9 * len(kls) + 2.6, height), sharey=True, squeeze=False,
                             layout="constrained")
    fig.suptitle(title, fontsize=9)
    return fig, axes[0]


def plot_gradient(table, out_dir, *, prefix: str = "gradient", title: str = "") -> list[Path]:
    r"""Write ``PREFIX_cosine.png`` and ``PREFIX_snr.png`` from a ``tokis gradient`` table.

    One panel per ``kl`` (the per-token KL(π_old‖π_θ)), one colour per objective, horizons on
    a log x axis with a tick at each. ``cosine``: the cosine of the exact expected gradient to
    grad J (0 drawn: below it the expected update goes downhill). ``snr``: the signal-to-noise
    ratio at batch size n on a log y axis with the line SNR = 1; a negative SNR (the expected
    gradient points downhill) is drawn as |SNR| with an open marker. Horizons where an
    objective has no exact method (``method == "none"``) are left out and the legend says so.

    Returns
    -------
    list of Path
        The two files.
    """
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kls = list(dict.fromkeys(table["kl"]))
    names = list(dict.fromkeys(table["objective"]))
    n = table.attrs["n"]
    written = []
    for metric in ("cosine", "snr"):
        what = ("cosine of the exact expected gradient to ∇J" if metric == "cosine"
                else f"signal-to-noise ratio along ∇J at batch size n = {n}")
        fig, axes = _gradient_panels(plt, kls, f"{what}\n{title}" if title else what)
        negative_seen = False
        for ax, k in zip(axes, kls):
            for j, name in enumerate(names):
                sub = table[(table["kl"] == k) & (table["objective"] == name)].sort_values("T")
                T = sub["T"].to_numpy(dtype=float)
                y = sub[metric].to_numpy(dtype=float)
                c, m = f"C{j % 10}", _MARKERS[j % len(_MARKERS)]
                ms, lw = max(3.0, 7.5 - 1.0 * j), max(1.0, 2.6 - 0.35 * j)  # earlier series wider: overlaps show
                label = _missing_label(name, sub) if ax is axes[0] else None
                neg = y < 0 if metric == "snr" else np.zeros(y.shape, dtype=bool)
                negative_seen |= bool(neg.any())
                yy = y if metric == "cosine" else _positive(np.abs(y))
                ax.plot(T, yy, "-", color=c, lw=lw, marker=m, ms=ms, label=label, markevery=list(np.flatnonzero(~neg)))
                if neg.any():
                    ax.plot(T[neg], yy[neg], ls="none", marker=m, ms=ms, mfc="white", mec=c)
            _horizon_axis(ax, table["T"])
            ax.set_title(f"KL(π_old‖π_θ) = {k:g} per token", fontsize=9)
            ax.grid(True, which="major", alpha=0.3)
            if metric == "cosine":
                ax.axhline(0.0, color="0.4", lw=0.8)
            else:
                from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

                ax.set_yscale("log")
                ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.yaxis.set_minor_formatter(NullFormatter())
                ax.axhline(1.0, color="0.3", lw=0.9, ls="--", label="SNR = 1" if ax is axes[0] else None)
        if metric == "cosine":
            lo = np.nanmin(table["cosine"].to_numpy(dtype=float)) if table["cosine"].notna().any() else 0.0
            axes[0].set_ylim(min(-0.05, lo - 0.05), 1.03)
            axes[0].set_ylabel("cosine(E[ĝ], ∇J)")
        else:
            axes[0].set_ylabel(f"SNR at n = {n}")
            if negative_seen:
                axes[0].plot([], [], "o", ls="none", mfc="white", mec="0.3", label="open marker: SNR < 0, |SNR| drawn")
        fig.legend(loc="outside right center", fontsize=8, frameon=False)
        path = out / f"{prefix}_{metric}.png"
        fig.savefig(path, dpi=150, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written


def plot_landscape(curves, out_dir, *, prefix: str = "gradient", title: str = "") -> list[Path]:
    r"""Write ``PREFIX_landscape.png``: each objective's expected surrogate along θ_old + α d.

    One panel per objective (``curves``: the long table of
    :func:`tokis.analysis.gradient.landscape`), on a shared y axis: the surrogate (colour;
    the panel title names the objective's aggregation, which scales its slope), the exact
    J(θ_old + α d) (black) and the trust-region lower bound (grey dashed, named in the legend),
    against α. An objective without an exact method gets a panel that says so. The legend sits
    in an empty panel where the grid has one, else to the right of the panels.

    Returns
    -------
    list of Path
        The file written.
    """
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(dict.fromkeys(curves["objective"]))
    cols = min(3, max(1, len(names)))
    rows = -(-len(names) // cols)
    spare = rows * cols > len(names)
    fig, axes = plt.subplots(rows, cols, figsize=(3.5 * cols + (0.3 if spare else 3.0), 2.9 * rows + 0.7),
                             squeeze=False, sharey=True, layout="constrained")
    T = curves.attrs["T"]
    head = f"expected surrogates along θ_old + α·d, d = ∇J(θ_old) of unit norm, T = {T}"
    kl = curves["kl"].to_numpy(dtype=float)
    if np.isfinite(kl).any():
        head += f"; α reaches a per-token KL(π_old‖π_θ) of {np.nanmax(kl):.2g}"
    fig.suptitle(f"{head}\n{title}" if title else head, fontsize=9)
    bound_names = [b for b in dict.fromkeys(curves["bound_name"]) if isinstance(b, str) and b]
    bound_label = "lower bound on J" + (":\n" + textwrap.fill(", ".join(bound_names), 44) if bound_names else "")
    handles = {}
    for i, name in enumerate(names):
        ax = axes[i // cols][i % cols]
        sub = curves[curves["objective"] == name].sort_values("alpha")
        ax.set_title(f"{name}  (aggregation {sub['aggregation'].iloc[0]})", fontsize=8)
        if sub["alpha"].isna().all():
            note = textwrap.shorten(str(sub["note"].iloc[0]), 170, placeholder=" …")
            ax.text(0.5, 0.5, f"no exact method at T = {T}:\n\n" + textwrap.fill(note, 44), ha="center",
                    va="center", fontsize=9, transform=ax.transAxes)
            ax.tick_params(bottom=False, labelbottom=False)
            continue
        a = sub["alpha"].to_numpy(dtype=float)
        (handles["bound"],) = ax.plot(a, sub["bound"].to_numpy(dtype=float), "--", color="0.5", lw=1.0)
        (line,) = ax.plot(a, sub["surrogate"].to_numpy(dtype=float), "-", color=f"C{i % 10}", lw=2.4)
        handles.setdefault("surrogate", line)
        (handles["J"],) = ax.plot(a, sub["value"].to_numpy(dtype=float), "-", color="k", lw=1.0)  # on top: visible
        # where the surrogate equals J (seq with mu = pi_old)
        ax.axvline(0.0, color="0.7", lw=0.8)
        ax.set_xlabel("step size α")
        ax.grid(True, alpha=0.3)
    labels = {"J": "J(θ_old + α d), exact", "surrogate": "the objective's expected surrogate\n"
              "J(θ_old) + L(θ) − L(θ_old) (colour per panel)", "bound": bound_label}
    keys = [k for k in ("J", "surrogate", "bound") if k in handles]
    for j in range(len(names), rows * cols):
        axes[j // cols][j % cols].set_axis_off()
    if spare:
        axes[-1][-1].legend([handles[k] for k in keys], [labels[k] for k in keys], loc="center", fontsize=8,
                            frameon=False)
    else:
        fig.legend([handles[k] for k in keys], [labels[k] for k in keys], loc="outside right center", fontsize=8,
                   frameon=False)
    path = out / f"{prefix}_landscape.png"
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return [path]


def plot_coverage(table, out_dir, *, prefix: str = "coverage", title: str = "") -> list[Path]:
    """Write ``PREFIX.png``: coverage against T, one panel per interval method, one line per estimator.

    Each point is the coverage of the cell's target over R replications with its Wilson 95 %
    error bar; the nominal level is the black dashed line. Lower bounds (bernstein, hoeffding)
    are one-sided at the same level; panels say which. Cells where the method does not apply
    are not drawn (the legend lists only estimators with a value in the panel). Estimators whose
    target is the delta-method mean (ratio estimators) are dashed and labelled "(asymptotic
    target)".
    """
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    methods = list(dict.fromkeys(table["method"]))
    level = float(table["level"].iloc[0]) if len(table) else 0.95
    fig, axes = plt.subplots(1, len(methods), figsize=(3.6 * len(methods) + 0.6, 4.0), sharey=True, squeeze=False)
    colors = {e: f"C{i % 10}" for i, e in enumerate(dict.fromkeys(table["estimator"]))}
    for ax, m in zip(axes[0], methods):
        sub = table[table["method"] == m]
        for est, s in sub.groupby("estimator", sort=False):
            s = s[s["applicable"].astype(bool) & np.isfinite(s["coverage"].to_numpy(dtype=float))].sort_values("T")
            if not len(s):
                continue
            asym = (s["target"].astype(str).str.startswith("asymptotic")).any()
            c = s["coverage"].to_numpy(dtype=float)
            err = np.vstack([c - s["coverage_lo"].to_numpy(dtype=float), s["coverage_hi"].to_numpy(dtype=float) - c])
            ax.errorbar(s["T"].to_numpy(dtype=float), c, yerr=err, color=colors[est], marker="o", ms=3, capsize=2,
                        ls="--" if asym else "-", label=f"{est}{' (asymptotic target)' if asym else ''}")
        ax.axhline(level, color="black", ls="--", lw=1, label=f"nominal {level:g}")
        side = "lower bound" if (sub["side"] == "lower").any() else "two-sided"
        ax.set_title(f"{m} ({side})")
        _horizon_axis(ax, table["T"])  # a tick at every horizon, labelled 1, 2, 4, ... as in the other plots
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=9)
    axes[0][0].set_ylabel("coverage of the target (Wilson 95 %)")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = out / f"{prefix}.png"
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return [path]
