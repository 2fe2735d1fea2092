"""Plots a researcher can use as they are: legend outside the data, plain ticks, error bars, run size in titles, no crash on zero series."""

from __future__ import annotations

import subprocess
import sys

import matplotlib

matplotlib.use("Agg", force=True)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tokis.analysis import Behavior, Family  # noqa: E402
from tokis.analysis._plots import _legend, _run_label, _xscale, draw_sweep, plot_sweep  # noqa: E402
from tokis.analysis.horizon import horizon  # noqa: E402


@pytest.fixture(scope="module")
def table():
    return horizon(Family(vocab=3), Behavior(kl=0.1), estimators=["seq", "tok", "snis"], horizons=[1, 2, 4, 8],
                   n=16, replications=6, seed=3)


def test_sweep_plot_anatomy(table):
    fig, ax = plt.subplots()
    try:
        draw_sweep(ax, table, "T", "mse")
        _legend(ax, styles=True)
        fig.canvas.draw()
        # Monte Carlo MSE points carry 95 % error bars (one errorbar container per estimator)
        assert len(ax.containers) == 3
        # a tick at every swept T, labelled plainly
        assert list(ax.get_xticks()) == [1.0, 2.0, 4.0, 8.0]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "8"]
        leg = ax.get_legend()
        # outside the axes (to the right), readable, and the points have an entry
        assert leg.get_window_extent().x0 >= ax.get_window_extent().x1
        assert min(t.get_fontsize() for t in leg.get_texts()) >= 9
        assert any("Monte Carlo" in t.get_text() for t in leg.get_texts())
    finally:
        plt.close(fig)
    assert _run_label(table) == "n=16, R=6"


def test_all_zero_series_draws_on_a_linear_axis(table, tmp_path):
    zero = table.copy()
    for col in ("exact_std", "mc_std", "mc_std_lo", "mc_std_hi", "exact_mse", "mc_mse", "mc_mse_lo", "mc_mse_hi"):
        zero[col] = 0.0
    written = plot_sweep(zero, "T", tmp_path, prefix="z", title="zeros")  # used to raise "cannot be log-scaled"
    assert sorted(p.name for p in written) == ["z_bias.png", "z_ess.png", "z_mse.png", "z_std.png"]
    fig, ax = plt.subplots()
    try:
        draw_sweep(ax, zero, "T", "std")
        assert ax.get_yscale() == "linear"
        ys = np.concatenate([np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()])
        assert np.nanmax(np.abs(ys)) == 0.0 and np.isfinite(ys).any()  # the zeros are drawn, not dropped
    finally:
        plt.close(fig)


def test_xscale_of_a_divergence_sweep():
    fig, ax = plt.subplots()
    try:
        ax.plot([0.001, 0.01, 0.1], [1, 2, 3])
        _xscale(ax, [0.001, 0.01, 0.1])
        fig.canvas.draw()
        assert [t.get_text() for t in ax.get_xticklabels()] == ["0.001", "0.01", "0.1"]
    finally:
        plt.close(fig)


def test_start_up_imports_no_numerics():
    code = ("import sys, contextlib, io\n"
            "from tokis.analysis._cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    rc = main(['--help'])\n"
            "heavy = [m for m in ('numpy', 'numba', 'pandas', 'scipy', 'matplotlib') if m in sys.modules]\n"
            "assert rc == 0 and not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_python_horizon_checks_parameter_types_up_front(monkeypatch):
    import tokis.analysis._sweep as sw

    monkeypatch.setattr(sw, "compute_point", lambda *a: pytest.fail("computed before checking the parameters"))
    with pytest.raises(TypeError, match="c must be"):
        horizon(estimators=["clip_tok:c=abc"], horizons=[2], n=4, replications=2)
