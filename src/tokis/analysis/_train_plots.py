"""PNG plots of ``tokis train``: learning curves of the exact J, and the per-update diagnostics.

One colour per objective, one line style per sampler (solid: μ = π_old; dashed, dotted, ...:
behaviour models of π_old); lines are the mean over seeds, shaded bands the 95 % t interval of
that mean (:func:`~tokis.analysis._train.learning_curves`). Legends sit below the axes, so they
never cover a curve.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._plots import _pyplot
from ._train import learning_curves

__all__ = ["plot_train", "plot_train_diagnostics"]

_STYLES = ("-", "--", ":", "-.")
_FONT = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
         "xtick.labelsize": 9, "ytick.labelsize": 9}


def _styles(table):
    objs = list(dict.fromkeys(table["objective"]))
    smps = list(dict.fromkeys(table["sampler"]))
    colors = {o: f"C{i % 10}" for i, o in enumerate(objs)}
    styles = {s: _STYLES[i % len(_STYLES)] for i, s in enumerate(smps)}
    return objs, smps, colors, styles


def _subtitle(attrs: dict) -> str:
    return (f"{attrs.get('family', '')}, T={attrs.get('horizon', '?')}; n={attrs.get('n', '?')} sequences/batch, "
            f"E={attrs.get('epochs', '?')} epochs x M={attrs.get('minibatches', '?')} minibatches, "
            f"{attrs.get('iterations', '?')} batches, {attrs.get('optimizer', '?')} lr={attrs.get('lr', '?'):g}, "
            f"{attrs.get('seeds', '?')} seeds (mean, 95 % band)")


def _batch_ends(table) -> set:
    """Update indices at which a batch's last update has been taken (and 0, the initial policy)."""
    per_batch = int(table.attrs.get("epochs", 1)) * int(table.attrs.get("minibatches", 1))
    return {int(u) for u in table["update"].unique() if u % per_batch == 0}


def _draw(ax, curves, x, objs, smps, colors, styles, scale=1.0, marker=None, cap=np.inf):
    # cap: the largest attainable value (J*): a band of few seeds is not drawn past it
    for o in objs:
        for s in smps:
            c = curves[(curves["objective"] == o) & (curves["sampler"] == s)]
            if not len(c):
                continue
            xs = c[x].to_numpy(dtype=float)
            ax.plot(xs, c["mean"].to_numpy(dtype=float) / scale, color=colors[o], ls=styles[s], lw=1.5, marker=marker,
                    ms=3,
                    label=f"{o}, μ = {s}" if s != "pi_old" else f"{o}, μ = π_old")
            lo, hi = c["lo"].to_numpy(dtype=float), np.minimum(c["hi"].to_numpy(dtype=float), cap)
            if np.isfinite(lo).any():
                ax.fill_between(xs, lo / scale, hi / scale, color=colors[o], alpha=0.15, lw=0)


def _legend(fig, axes, ncol):
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False)


def plot_train(table, out_dir, *, prefix: str = "train", title: str = "") -> list[Path]:
    """Write ``PREFIX_curves.png``: J / J* against optimizer updates and against sampled tokens.

    Parameters
    ----------
    table : pandas.DataFrame
        A :func:`~tokis.analysis.train.train` table.
    out_dir : str or Path
    prefix, title : str
        File prefix; a first title line (the second lists n, E, M, the batches, optimizer and seeds).
    """
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    objs, smps, colors, styles = _styles(table)
    curves = learning_curves(table)
    J_star = float(table["J_star"].iloc[0])
    J0 = float(table["J0"].iloc[0])
    with plt.rc_context(_FONT):
        fig, axes = plt.subplots(1, 2, figsize=(12.0, 5.2), sharey=True)
        ends = _batch_ends(table)
        for ax, x, label, c in ((axes[0], "update", "optimizer updates", curves),
                                (axes[1], "tokens", "sampled tokens (J after each batch's E x M updates)",
                                 curves[curves["update"].isin(ends)])):
            _draw(ax, c, x, objs, smps, colors, styles, scale=J_star, marker="o" if x == "tokens" else None,
                  cap=J_star)
            ax.axhline(1.0, color="black", lw=0.8, ls="--")
            ax.axhline(J0 / J_star, color="grey", lw=0.8, ls=":")
            ax.set_xlabel(label)
            ax.grid(True, alpha=0.3)
        axes[1].ticklabel_format(axis="x", style="sci", scilimits=(0, 3))
        axes[0].set_ylabel(f"J(π_θ) / J*   (exact; J* = {J_star:.3g}, J(π_0) = {J0:.3g} dotted)")
        axes[0].set_ylim(min(0.0, J0 / J_star - 0.02), 1.03)
        _legend(fig, axes, ncol=min(len(objs) * len(smps), 5))
        rows = -(-len(objs) * len(smps) // 5)
        fig.suptitle("\n".join(t for t in (title, _subtitle(table.attrs)) if t), fontsize=11)
        fig.tight_layout(rect=(0, 0.045 * rows + 0.02, 1, 1))
        path = out / f"{prefix}_curves.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return [path]


def _per_batch(table):
    """Per (objective, sampler, seed, iteration): the last update's KL, the mean clip fraction and cosine."""
    upd = table[table["update"] > 0]
    g = upd.groupby(["objective", "sampler", "seed", "iteration"], sort=False)
    out = g.agg(update=("update", "max"), tokens=("tokens", "max"), kl=("kl", "last"),
                clip_fraction=("clip_fraction", "mean"), cosine=("cosine", "mean")).reset_index()
    out.attrs = dict(table.attrs)
    return out


def plot_train_diagnostics(table, out_dir, *, prefix: str = "train", title: str = "") -> list[Path]:
    """Write ``PREFIX_diagnostics.png``: per batch, KL to π_old, clip fraction and cos(step, ∇J) against updates.

    Per batch and seed: the KL(π_old‖π_θ) reached by the batch's last update (how far the
    epochs moved the policy from the sampler's), and the clip fraction and cosine averaged over
    the batch's updates; then the mean over seeds with its 95 % band (lower ends below 0 are
    not drawn on the log axis).
    """
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    objs, smps, colors, styles = _styles(table)
    per_batch = _per_batch(table)
    panels = (("kl", "KL(π_old ‖ π_θ) per token (nats)\nafter the batch's last update", True),
              ("clip_fraction", "clip fraction of the tokens\n(mean over the batch's updates)", False),
              ("cosine", "cos(step, ∇J)\n(mean over the batch's updates)", False))
    with plt.rc_context(_FONT):
        fig, axes = plt.subplots(1, 3, figsize=(15.0, 4.8))
        for ax, (col, label, log) in zip(axes, panels):
            curves = learning_curves(per_batch, value=col)
            if log:
                curves = curves.assign(lo=curves["lo"].where(curves["lo"] > 0))
            _draw(ax, curves, "update", objs, smps, colors, styles, marker="o")
            if log:
                ax.set_yscale("log")
            if col == "clip_fraction":
                ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("optimizer updates (end of each batch)")
            ax.set_ylabel(label)
            ax.grid(True, alpha=0.3)
        _legend(fig, axes, ncol=min(len(objs) * len(smps), 5))
        rows = -(-len(objs) * len(smps) // 5)
        fig.suptitle("\n".join(t for t in (title, _subtitle(table.attrs)) if t), fontsize=11)
        fig.tight_layout(rect=(0, 0.05 * rows + 0.02, 1, 1))
        path = out / f"{prefix}_diagnostics.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return [path]
