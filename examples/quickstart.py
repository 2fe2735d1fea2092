"""Foundation demo: exact J(pi), J(mu), KL and log E_mu[W^2] across horizons, plus a Monte Carlo check.

Run: python examples/quickstart.py
"""

import numpy as np

from tokis import exact, ngram, perturb, random_policy, sample

KL_PER_TOKEN = 0.01


def main() -> None:
    print(f"bigram MDP, vocab 8, mu = perturb(pi, kl={KL_PER_TOKEN}) in every context\n")
    print("|    T |    J(pi) |    J(mu) | seq KL(pi||mu) | log E_mu[W^2] | MC mean G under pi (±1.96 se) |")
    print("|-----:|---------:|---------:|---------------:|--------------:|:------------------------------|")
    for T in (1, 2, 4, 8, 16, 32, 64, 128, 256):
        mdp = ngram(8, 1, T, seed=0)
        pi = random_policy(mdp, scale=1.0, seed=1)
        mu = perturb(pi, kl=KL_PER_TOKEN, seed=2)
        d = exact.divergences(mdp, pi, mu)
        j_pi, j_mu = exact.value(mdp, pi), exact.value(mdp, mu)
        r = sample(mdp, pi, 20000, seed=T)
        se = r.returns.std(ddof=1) / np.sqrt(r.n)
        ok = "ok" if abs(r.returns.mean() - j_pi) < 5 * se else "MISMATCH"
        print(
            f"| {T:4d} | {j_pi:8.5f} | {j_mu:8.5f} | {d.sequence_kl:14.5f} | {d.log_second_moment:13.5f} |"
            f" {r.returns.mean():.5f} ± {1.96 * se:.5f} ({ok}) |"
        )


if __name__ == "__main__":
    main()
