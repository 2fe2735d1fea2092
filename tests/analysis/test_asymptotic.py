"""Delta-method (asymptotic) rows: labelled asymptotic everywhere, flagged and left out where they break down."""

import math

import numpy as np
import pandas as pd
import pytest

from tokis import envs
from tokis.analysis import Behavior, Family, to_markdown
from tokis.analysis._common import ASYMPTOTIC_NOTE, BREAKDOWN_NOTE, display_table
from tokis.analysis._harness import (
    BREAKDOWN_CHECKS,
    breakdown_mask,
    delta_method_checks,
    estimate_bounds,
    summarise,
)
from tokis.analysis._output import BLANK, format_value, write_tables
from tokis.analysis._plots import ASYMPTOTIC_LABEL, EXACT_LABEL, draw_sweep
from tokis.analysis.horizon import horizon, overtakes
from tokis.estimators import snis, wpdis

from _cases import random_cases
from _reference import enumerate_sequences

EXACT_CELLS = ["exact_bias", "exact_std", "exact_mse"]


@pytest.fixture(scope="module")
def sweep():
    """The flagship defaults (n-gram over 8 tokens, reward 1 when the last token is 0, KL = 0.05 per
    token) at a short and a long horizon, n = 256: at T = 128 the delta method gives snis, an
    estimate in [0, 1], a bias of about 43."""
    return horizon(Family(), Behavior(kl=0.05), estimators=["seq", "snis"], horizons=[4, 128], n=256,
                   replications=4, seed=0)


def _row(table, T, estimator):
    return table[(table["T"] == T) & (table["estimator"] == estimator)].iloc[0]


def test_breakdown_at_long_horizon_is_flagged_and_blanked(sweep, tmp_path):
    row = _row(sweep, 128, "snis")
    assert row["method"] == "asymptotic"
    assert (row["estimate_lo"], row["estimate_hi"]) == (0.0, 1.0)  # G in {0, 1}
    # the defect: |bias_n| is far beyond the range of the returns, impossible for a convex combination
    assert abs(row["exact_bias"]) > row["estimate_hi"] - row["estimate_lo"]
    assert row["exact_bias"] == pytest.approx(row["delta_bias_1n"], rel=1e-12)  # full support: all O(1/n)
    assert bool(row["asymptotic_breakdown"]) is True
    assert row["breakdown_reason"].split(";") == list(BREAKDOWN_CHECKS[1:])  # every check but non_finite fails
    assert row["normalizer_cv"] == pytest.approx(math.sqrt((1 / row["ess_fraction"] - 1) / 256), rel=1e-9)
    # no comparison against a broken reference
    assert math.isnan(row["z"]) and not row["std_underestimated"]
    assert np.isfinite(row["mc_mean"]) and 0 <= row["mc_mean"] <= 1

    shown = display_table(sweep, ["T"])
    i = sweep.index.get_loc(row.name)
    for c in EXACT_CELLS + ["z"]:
        assert shown.loc[i, c] == BLANK, c
    assert shown.loc[i, "flag"] == "delta!" and shown.loc[i, "method"] == "asymptotic"
    md = to_markdown(shown)
    line = next(s for s in md.splitlines() if s.startswith("| 128 | snis"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[3:6] == [BLANK] * 3 and cells[-1] == "delta!"
    assert format_value(row["exact_bias"]) not in md
    assert md.endswith(ASYMPTOTIC_NOTE + "\n" + BREAKDOWN_NOTE)
    # seq is exact at every horizon: shown as is
    seq = _row(sweep, 128, "seq")
    assert shown.loc[sweep.index.get_loc(seq.name), "exact_std"] == seq["exact_std"]

    # CSV: the raw numbers plus the flag; LaTeX: what is printed, with the notes
    write_tables({"h": (sweep, shown)}, tmp_path)
    csv = pd.read_csv(tmp_path / "h.csv")
    back = csv[(csv["T"] == 128) & (csv["estimator"] == "snis")].iloc[0]
    assert back["exact_bias"] == pytest.approx(row["exact_bias"], rel=1e-12)
    assert bool(back["asymptotic_breakdown"]) and "mean_out_of_range" in back["breakdown_reason"]
    tex = (tmp_path / "h.tex").read_text()
    assert "128 & snis & asymptotic & --- & --- & --- &" in tex
    assert r"{\footnotesize Note: on rows with method = asymptotic" in tex


def test_healthy_asymptotic_row_is_labelled_but_not_flagged(sweep):
    row = _row(sweep, 4, "snis")
    assert row["method"] == "asymptotic"
    assert bool(row["asymptotic_breakdown"]) is False and row["breakdown_reason"] == ""
    assert row["estimate_lo"] <= row["exact_mean"] <= row["estimate_hi"]
    assert abs(row["delta_bias_1n"]) < row["exact_std"] < (row["estimate_hi"] - row["estimate_lo"]) / 2
    assert row["normalizer_cv"] < 1 and np.isfinite(row["z"])
    table = sweep[sweep["T"] == 4]
    assert not breakdown_mask(table).any()
    shown = display_table(table, ["T"])
    i = table.index.get_loc(row.name)
    for c in EXACT_CELLS:
        assert shown.loc[i, c] == row[c]
    assert "delta" not in shown.loc[i, "flag"]
    # numbers are printed, the method column and the note say they are the delta method's
    md = to_markdown(shown)
    line = next(s for s in md.splitlines() if s.startswith("|   4 | snis"))
    assert "| asymptotic |" in line and format_value(row["exact_std"]) in line and BLANK not in md
    assert md.endswith(ASYMPTOTIC_NOTE) and BREAKDOWN_NOTE not in md
    # an exact-only table has no notes
    assert shown.attrs["notes"] == [ASYMPTOTIC_NOTE]
    assert display_table(table[table["estimator"] == "seq"], ["T"]).attrs["notes"] == []


def test_plot_labels_say_asymptotic_for_snis(sweep):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    for metric in ("bias", "std", "mse"):
        fig, ax = plt.subplots()
        try:
            draw_sweep(ax, sweep, "T", metric)
            labels = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
        finally:
            plt.close(fig)
        assert f"seq {EXACT_LABEL}" in labels
        assert labels[f"seq {EXACT_LABEL}"].get_linestyle() == "-"
        snis_labels = [k for k in labels if k.startswith("snis")]
        assert snis_labels == [f"snis {ASYMPTOTIC_LABEL[:-1]}; broke down at T = 128: not drawn)"], metric
        assert "(exact)" not in snis_labels[0] and "asymptotic, delta method" in snis_labels[0]
        line = labels[snis_labels[0]]
        assert line.get_linestyle() == "--"
        x, y = (np.asarray(v, dtype=float) for v in line.get_data())
        assert list(x) == [4.0, 128.0] and np.isfinite(y[0]) and np.isnan(y[1])  # the broken point is not drawn
    # a healthy sweep: the plain asymptotic label
    fig, ax = plt.subplots()
    try:
        draw_sweep(ax, sweep[sweep["T"] == 4], "T", "std")
        labels = [line.get_label() for line in ax.get_lines()]
    finally:
        plt.close(fig)
    assert f"snis {ASYMPTOTIC_LABEL}" in labels and f"snis {EXACT_LABEL}" not in labels


def test_overtakes_skip_broken_down_values():
    T = [1, 2, 4, 8]
    rows = []
    for i, t in enumerate(T):
        rows.append(dict(T=t, estimator="seq", method="exact", exact_mse=[1.0, 2.0, 4.0, 8.0][i],
                         asymptotic_breakdown=False))
        rows.append(dict(T=t, estimator="snis", method="asymptotic", exact_mse=[0.5, 2.0, 1e9, 1e12][i],
                         asymptotic_breakdown=[False, False, True, True][i]))
        rows.append(dict(T=t, estimator="tok", method="exact", exact_mse=[2.0, 1.5, 1.0, 0.5][i],
                         asymptotic_breakdown=False))
    table = pd.DataFrame(rows)
    ov = overtakes(table)
    # the broken snis values would make seq overtake snis at T = 4: they are not compared
    assert not ((ov["estimator"] == "seq") & (ov["beats"] == "snis")).any()
    got = ov.set_index(["estimator", "beats"])
    assert got.loc[("tok", "snis"), "from"] == 2 and got.loc[("tok", "snis"), "until"] == 2
    assert bool(got.loc[("tok", "snis"), "asymptotic"]) and not bool(got.loc[("tok", "seq"), "asymptotic"])
    assert got.loc[("tok", "seq"), "until"] == 8
    # the raw values would be compared by a metric that is not an exact_* column
    raw = overtakes(table.assign(other=table["exact_mse"]), metric="other")
    assert ((raw["estimator"] == "seq") & (raw["beats"] == "snis") & (raw["from"] == 4)).any()
    # rows stored before the checks existed (no asymptotic_breakdown) are not trusted either
    assert breakdown_mask(table.drop(columns="asymptotic_breakdown")).tolist() == [False, True, False] * 4
    old = overtakes(table.drop(columns="asymptotic_breakdown"))
    assert not (old["beats"] == "snis").any() and not (old["estimator"] == "snis").any()


def test_unchecked_asymptotic_rows_are_blanked(sweep):
    old = sweep.drop(columns=["asymptotic_breakdown"])
    shown = display_table(old, ["T"])
    for T in (4, 128):
        i = sweep.index.get_loc(_row(sweep, T, "snis").name)
        assert shown.loc[i, "flag"] == "delta?" and shown.loc[i, "exact_std"] == BLANK
    assert BREAKDOWN_NOTE in shown.attrs["notes"]


def test_delta_method_checks_one_by_one():
    ok = dict(exact_mean=0.5, exact_std=0.1, delta_bias_1n=0.01, estimate_lo=0.0, estimate_hi=1.0, normalizer_cv=0.3)
    assert delta_method_checks(**ok) == ()
    assert delta_method_checks(**{**ok, "exact_mean": 1.2}) == ("mean_out_of_range",)
    assert delta_method_checks(**{**ok, "exact_mean": -0.01}) == ("mean_out_of_range",)
    assert delta_method_checks(**{**ok, "exact_mean": 1.0 + 1e-12}) == ()  # rounding
    assert delta_method_checks(**{**ok, "exact_std": 0.6, "delta_bias_1n": 0.0}) == ("std_over_half_range",)
    assert delta_method_checks(**{**ok, "delta_bias_1n": -0.2}) == ("bias_1n_over_std",)
    assert delta_method_checks(**{**ok, "normalizer_cv": 1.5}) == ("normalizer_cv_over_1",)
    assert delta_method_checks(**{**ok, "exact_std": math.inf}) == ("non_finite",)
    assert delta_method_checks(**{**ok, "normalizer_cv": math.nan}) == ("normalizer_cv_over_1",)
    # a broken-down row gives no z and no heavy-tail flag
    s = summarise(np.array([0.1, 0.2, 0.3]), np.ones(3), dict(exact_mean=5.0, exact_std=100.0,
                                                             asymptotic_breakdown=True), 0.2)
    assert math.isnan(s["z"]) and s["std_underestimated"] is False


def _per_step_envelope(mdp):
    """Sum over steps of [min, max] of the reward at that step over every sequence (0 included)."""
    en = enumerate_sequences(mdp)
    r = en.rewards
    return float(np.minimum(r.min(axis=0), 0.0).sum()), float(np.maximum(r.max(axis=0), 0.0).sum())


@pytest.mark.parametrize("k", range(8))
def test_estimate_bounds_by_enumeration(k):
    """No noise: the bounds are the per-step reward envelope of every sequence; they hold every return."""
    mdp, pi, mu, desc = list(random_cases(100 + k, 8, noise=False))[k]
    lo, hi = estimate_bounds(mdp)
    elo, ehi = _per_step_envelope(mdp)
    assert (lo, hi) == pytest.approx((elo, ehi), abs=1e-12), desc
    G = enumerate_sequences(mdp).returns
    assert lo - 1e-12 <= G.min() and G.max() <= hi + 1e-12


@pytest.mark.parametrize("noise", [False, True])
def test_sampled_ratio_estimates_lie_in_the_bounds(noise):
    for mdp, pi, mu, desc in random_cases(7, 8, noise=noise, eos=True, step_reward=True, T=4):
        lo, hi = estimate_bounds(mdp)
        for seed in range(5):
            ro = envs.sample(mdp, mu, 3, target=pi, seed=seed, backend="numpy")
            for est in (snis, wpdis):
                v = est(ro.log_ratio, ro.rewards, mask=ro.mask, backend="numpy").value
                assert math.isnan(v) or lo - 1e-9 <= v <= hi + 1e-9, (desc, est.__name__, v, lo, hi)


def test_estimate_bounds_long_horizon_and_noise():
    mdp, _ = Family().build(10_000)  # reward 1 when the last token is 0, no eos: returns in {0, 1}
    assert estimate_bounds(mdp) == (0.0, 1.0)
    # eos = 0 ends a sequence with reward 1 at any step: wpdis can collect a terminal reward at every step
    eos = envs.TokenMDP(mdp.next_context, horizon=10_000, terminal_reward=mdp.terminal_reward, eos=0)
    assert estimate_bounds(eos) == (0.0, 10_000.0)
    eos3 = envs.TokenMDP(mdp.next_context, horizon=10_000, terminal_reward=mdp.terminal_reward, eos=3)
    assert estimate_bounds(eos3) == (0.0, 1.0)  # ending on eos = 3 earns nothing: reward 1 only at the last step
    noisy = envs.TokenMDP(mdp.next_context, horizon=5, terminal_reward=np.full(mdp.num_contexts, 0.3),
                          reward_noise="bernoulli")
    assert estimate_bounds(noisy) == (0.0, 1.0)  # the observed verifier reward is 0 or 1
