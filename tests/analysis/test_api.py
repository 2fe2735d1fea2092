"""The public API of tokis.analysis and its command modules (pinned)."""

import importlib

import numpy as np
import pandas as pd
import pytest

import tokis.analysis as analysis
from tokis.analysis.horizon import overtakes


def test_package_api_is_pinned():
    assert sorted(analysis.__all__) == sorted([
        "monte_carlo", "replication_seeds", "Family", "Behavior", "EstimatorConfig", "parse_estimator",
        "parse_estimators", "config_key", "ResultStore", "default_store_path", "to_markdown", "to_latex",
    ])
    for name in analysis.__all__:
        assert getattr(analysis, name).__doc__


@pytest.mark.parametrize("module, function", [
    ("horizon", "horizon"), ("divergence", "divergence"), ("mismatch", "mismatch"), ("growth", "growth"),
    ("gradient", "gradient_sweep"), ("coverage", "coverage"), ("train", "train"), ("sweep", "run_grid"),
    ("diagnose", "diagnose_log"),
])
def test_command_modules(module, function):
    mod = importlib.import_module(f"tokis.analysis.{module}")
    assert function in mod.__all__ and "main" in mod.__all__
    assert callable(getattr(mod, function)) and getattr(mod, function).__doc__
    assert importlib.import_module("tokis.analysis").__dict__.get(module) in (None, mod)  # never a function


def test_overtakes_by_hand():
    T = [1, 2, 4, 8, 16]
    mse = {
        "seq": [1.0, 2.0, 4.0, 8.0, 16.0],  # variance grows
        "tok": [1.0, 3.0, 3.5, 4.0, 4.5],  # tied at T = 1, worse at 2, better from 4 on
        "geo": [0.5, 5.0, 1.0, 9.0, 20.0],  # oscillates
    }
    rows = [dict(T=t, estimator=e, exact_mse=v[i]) for e, v in mse.items() for i, t in enumerate(T)]
    ov = overtakes(pd.DataFrame(rows))
    got = {}
    for r in ov.itertuples():
        got.setdefault((r.estimator, r.beats), []).append((r._3, r.stays_ahead))
    assert got[("tok", "seq")] == [(4, True)]
    assert ("seq", "tok") not in got  # seq was never strictly worse before being better
    assert got[("geo", "seq")] == [(4, False)]  # better at 4 after worse at 2, worse again at 8
    # every crossing is reported; the last one holds for good (seq: worse, better, worse, better, better)
    assert got[("seq", "geo")] == [(2, False), (8, True)]
    assert ov.loc[(ov.estimator == "tok") & (ov.beats == "seq"), "ratio"].item() == pytest.approx(16 / 4.5)
    # NaN points are skipped
    rows.append(dict(T=32, estimator="seq", exact_mse=np.nan))
    rows += [dict(T=32, estimator=e, exact_mse=1.0) for e in ("tok", "geo")]
    assert len(overtakes(pd.DataFrame(rows))) == len(ov)


def test_overtakes_rejects_a_table_without_its_columns():
    with pytest.raises(ValueError, match="estimator"):
        overtakes(pd.DataFrame())
    with pytest.raises(ValueError, match="exact_mse"):
        overtakes(pd.DataFrame({"T": [1], "estimator": ["seq"]}))
    with pytest.raises(TypeError, match="DataFrame"):
        overtakes([1, 2])


def test_default_horizon_table_has_per_decision_and_truncated_estimators():
    import tokis
    from tokis.analysis.horizon import DEFAULT_ESTIMATORS, DEFAULT_FAMILY

    assert {"seq", "pdis", "tok", "snis", "trunc_seq", "clip_tok", "clip_prod"} <= set(DEFAULT_ESTIMATORS)
    mdp, pi = DEFAULT_FAMILY.build(4)
    mu = tokis.envs.perturb(pi, kl=0.05)
    seq, pdis = (tokis.exact.moments(mdp, pi, mu, e, n=1) for e in ("seq", "pdis"))
    # step rewards: per-decision IS is a different estimator (same mean, smaller variance here)
    assert mdp.has_step_reward and seq.mean == pytest.approx(pdis.mean, rel=1e-12)
    assert pdis.variance < 0.95 * seq.variance
