"""Growth fit: exact slope recovered in closed form, Monte Carlo fit within its interval."""

import math

import numpy as np
import pandas as pd
import pytest

from tokis.analysis import Behavior, Family
from tokis.analysis.growth import fit_growth, growth


@pytest.mark.parametrize("chi2", [0.05, 0.2])
def test_exact_rate_is_log_one_plus_chi2(chi2):
    """iid MDP, constant reward g: log E[(W g)^2] = 2 log g + T log(1 + chi2) exactly."""
    fam = Family(name="iid", vocab=4, reward="random", seed=3)
    Ts = [1, 3, 6, 10]
    table = growth(fam, Behavior(chi2=chi2), horizons=Ts, n=16, replications=8, seed=0)
    g = fam.build(1)[0].terminal_reward[0]
    expected = 2 * math.log(g) + np.array(Ts) * math.log1p(chi2)
    np.testing.assert_allclose(table["exact_log_second_moment"], expected, rtol=0, atol=1e-10)
    # per-sample variance g^2 ((1 + chi2)^T - 1), not log-linear
    np.testing.assert_allclose(np.exp(table["exact_log_variance"]), g**2 * ((1 + chi2) ** np.array(Ts) - 1),
                               rtol=1e-9)
    fit = table.attrs["fit"]
    assert fit["exact_rate"] == pytest.approx(math.log1p(chi2), abs=1e-10)
    assert fit["exact_intercept"] == pytest.approx(2 * math.log(g), abs=1e-10)
    assert fit["chi2_rate"] == pytest.approx(math.log1p(chi2), abs=1e-15)
    assert fit["estimator"] == "seq" and fit["quantity"] == "second_moment"


def test_monte_carlo_fit_recovers_exact_rate():
    """The MC slope is within the fit's own 99.9 % interval of log(1 + chi2) (95 % CI reported as `agree`)."""
    from scipy import stats

    fam = Family(name="iid", vocab=4, reward="random", seed=3)
    Ts = [1, 3, 5, 7, 9, 11, 13, 15]
    table = growth(fam, Behavior(chi2=0.05), horizons=Ts, n=64, replications=60, seed=1)
    fit = table.attrs["fit"]
    rate, df = math.log(1.05), len(Ts) - 2
    assert fit["points"] == len(Ts)
    assert abs(fit["mc_slope"] - rate) <= stats.t.ppf(0.9995, df) * fit["mc_slope_se"]
    assert fit["agree"] == (fit["mc_slope_lo"] <= fit["exact_rate"] <= fit["mc_slope_hi"])
    half = (fit["mc_slope_hi"] - fit["mc_slope_lo"]) / 2
    assert half == pytest.approx(stats.t.ppf(0.975, df) * fit["mc_slope_se"], rel=1e-9)
    # horizons use independent replication seeds (shared streams would correlate the points)
    assert len(set(table["mc_mean"])) == len(Ts)


def test_fit_growth_by_hand_and_variance_quantity():
    T = np.array([1.0, 2.0, 3.0, 4.0])
    y = 0.5 + 0.25 * T + np.array([0.01, -0.02, 0.02, -0.01])
    t = pd.DataFrame(dict(T=T, mc_log_variance=y, exact_log_variance=0.5 + 0.25 * T,
                          mc_log_second_moment=y, exact_log_second_moment=y))
    fit = fit_growth(t, quantity="variance")
    slope = np.polyfit(T, y, 1)[0]
    assert fit["mc_slope"] == pytest.approx(slope, rel=1e-12)
    assert fit["exact_rate"] == pytest.approx(0.25, rel=1e-12) and fit["agree"]
    t.loc[1, "mc_log_variance"] = np.nan
    assert fit_growth(t, quantity="variance")["points"] == 3
    t.loc[2, "mc_log_variance"] = -np.inf
    with pytest.raises(ValueError, match="at least 3 horizons with a finite Monte Carlo value"):
        fit_growth(t, quantity="variance")
    with pytest.raises(ValueError, match="unknown quantity 'std'"):
        fit_growth(t, quantity="std")


def test_growth_errors_and_non_chi2_behaviour():
    with pytest.raises(ValueError, match="at least 3 horizons"):
        growth(horizons=[1, 2], n=4, replications=2)
    with pytest.raises(ValueError, match="T must be >= 1"):
        growth(horizons=[0, 1, 2], n=4, replications=2)
    with pytest.raises(ValueError, match="unknown estimator"):
        growth(estimator="nope", horizons=[1, 2, 3], n=4, replications=2)
    t = growth(Family(name="ngram", vocab=3), Behavior(kl=0.05), horizons=[1, 2, 3], n=8, replications=4,
               quantity="variance")
    assert math.isnan(t.attrs["fit"]["chi2_rate"]) and t.attrs["fit"]["quantity"] == "variance"
