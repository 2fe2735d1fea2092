"""Write examples/diagnose_example.parquet: a small verl-style training log whose exact divergences are known.

The "trainer" pi_old is a random bigram policy over 16 tokens (eos = 15, at most 128 tokens, the eos
logit lowered so responses run to 128 tokens); the "sampler" mu is the trainer's logits
perturbed to a per-context KL(pi||mu) = 0.005 (engine drift) and then rounded to bfloat16 (the
inference engine's numerics). 512 responses in groups of 8 ("prompts", column uid), a Bernoulli
verifier reward at the last token (token_level_scores), float32 log-probs as verl keeps them:

    old_log_probs       log pi_old(a_t | c_t), trainer       (target)
    rollout_log_probs   log mu(a_t | c_t), sampler           (behaviour)
    response_mask       1 at every response token
    token_level_scores  the reward at the last response token, 0 elsewhere
    uid                 the prompt group

Run: python examples/make_diagnose_example.py   (prints the exact values to compare with
``tokis diagnose examples/diagnose_example.parquet``)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tokis import envs, exact
from tokis.analysis.diagnose import write_log

PATH = Path(__file__).with_name("diagnose_example.parquet")
N, GROUP, VOCAB, HORIZON, EOS, KL = 512, 8, 16, 128, 15, 0.005


def build():
    """``(mdp, trainer, sampler)`` of the example."""
    mdp = envs.ngram(VOCAB, 1, HORIZON, eos=EOS, seed=0, reward_noise="bernoulli")
    logits = np.array(envs.random_policy(mdp, scale=1.5, seed=1).logits)
    logits[..., EOS] -= 1.0  # longer responses
    trainer = envs.Policy(logits)
    sampler = envs.round_logits(envs.perturb(trainer, kl=KL, seed=2), "bfloat16")
    return mdp, trainer, sampler


def exact_values(mdp, trainer, sampler) -> dict:
    """What the diagnostics of a large batch converge to (exact, by dynamic programming)."""
    d = exact.divergences(mdp, trainer, sampler)
    return dict(
        token_kl_sampler_trainer=exact.token_divergence(mdp, sampler, trainer, kind="kl", under="target"),
        sequence_kl_sampler_trainer=exact.sequence_kl(mdp, sampler, trainer),
        token_chi2=d.token_chi2_behavior, seq_chi2=float(np.expm1(d.log_second_moment)),
        log_seq_second_moment=d.log_second_moment, ess_fraction=d.population_ess_fraction,
        mean_length=d.expected_length_behavior, value_trainer=exact.value(mdp, trainer),
        value_sampler=exact.value(mdp, sampler))


def make(path=PATH, n: int = N, seed: int = 0) -> Path:
    """Sample ``n`` responses from the sampler and write them with verl's column names."""
    mdp, trainer, sampler = build()
    r = envs.sample(mdp, sampler, n, target=trainer, seed=seed, backend="numpy")
    uid = np.array([f"prompt-{i // GROUP:03d}" for i in range(n)])
    return write_log(path, r.logp_target.astype(np.float32), r.logp_behavior.astype(np.float32), r.mask,
                     r.rewards.astype(np.float32), uid, preset="verl")


if __name__ == "__main__":
    out = make()
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} kB)")
    for k, v in exact_values(*build()).items():
        print(f"{k:>28}: {v:.6g}")
