"""The Monte Carlo harness of sampled gradients agrees with the exact expected gradient.

Tolerances come from the exact per-sample variance along grad J: |z| <= 4.5 for every objective, and
the batch-to-batch standard deviation within a chi-square band of the exact one.
"""

import math

import pytest

from tokis import envs
from tokis.analysis._gradient_harness import monte_carlo_gradient


@pytest.mark.parametrize("eos", [None, 3])
def test_sampled_gradients_agree_with_exact(eos):
    mdp = envs.ngram(4, 1, 6, eos=eos, seed=0)
    mu = envs.random_policy(mdp, seed=1)
    pi = envs.perturb(mu, kl=0.05, seed=2)
    R = 150
    table = monte_carlo_gradient(mdp, pi, mu, ("seq", "tok", "ppo_clip", "cispo", "gspo"), n=128, replications=R,
                                 seed=7)
    assert (table["z"].abs() <= 4.5).all(), table
    band = 5 * math.sqrt(1 / (2 * (R - 1)))
    ratio = table["mc_sd_along"] / table["exact_sd_along"]
    assert ((ratio - 1).abs() <= band).all(), table


def test_bad_arguments():
    mdp = envs.ngram(3, 1, 2, seed=0)
    mu = envs.random_policy(mdp, seed=1)
    with pytest.raises(ValueError, match="replications must be >= 2"):
        monte_carlo_gradient(mdp, mu, mu, ("tok",), replications=1)
