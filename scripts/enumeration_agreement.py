"""Largest disagreement between the exact DP / moment recursions and brute-force enumeration.

Run from the repository root: python scripts/enumeration_agreement.py
Prints the max absolute error of J, occupancy, final distribution, log E[W^2], sequence KL, and
the max relative error of every recursion-based estimator mean and variance, over 200 random
small MDPs (eos, step rewards, time-dependent logits, several starts, Bernoulli noise).
"""
import sys, math
sys.path.insert(0, 'tests')
import numpy as np
from _cases import random_cases
from _reference import enumerate_sequences
from tokis import exact
err = {}
def upd(k, v):
    err[k] = max(err.get(k, 0.0), float(v))
mom_err = {}
for mdp, pi, mu, desc in random_cases(123, 200):
    e = enumerate_sequences(mdp, pi=pi, mu=mu)
    p, q = e.prob['pi'], e.prob['mu']
    T, S, V = mdp.horizon, mdp.num_contexts, mdp.vocab_size
    upd('value', abs(p @ e.returns - exact.value(mdp, pi)))
    occ = np.zeros((T, S)); fin = np.zeros(S)
    for i in range(len(p)):
        for t in range(e.lengths[i]): occ[t, e.contexts[i, t]] += p[i]
        fin[e.final_context[i]] += p[i]
    upd('occupancy', np.abs(occ - exact.occupancy(mdp, pi)).max())
    upd('final_distribution', np.abs(fin - exact.final_distribution(mdp, pi)).max())
    lr = e.log_ratio()
    W = np.exp(lr.sum(1))
    upd('log_second_moment', abs(math.log(q @ W**2) - exact.log_second_moment(mdp, pi, mu)))
    kl = p @ np.where(e.mask, e.logp['pi'] - e.logp['mu'], 0).sum(1)
    upd('sequence_kl', abs(kl - exact.sequence_kl(mdp, pi, mu)))
    # moments of the per-sample statistics, via the estimators' own per-sample output
    import tokis.estimators as est
    G = e.returns
    noise = mdp.reward_noise == 'bernoulli'
    for name in ('seq', 'tok', 'tok_sum', 'tok_mean', 'pdis', 'clip_prod', 'clip_tok', 'geo', 'mask_tok'):
        r = getattr(est, name)(lr, e.rewards, mask=e.mask)
        f = np.asarray(r.samples) * math.exp(r.log_scale)
        mean = q @ f; var = q @ (f - mean) ** 2
        if noise:
            last = np.arange(T)[None] == (e.lengths - 1)[:, None]
            def fwith(R):
                rr = getattr(est, name)(lr, e.step_rewards + np.where(last, R, 0.0), mask=e.mask)
                return np.asarray(rr.samples) * math.exp(rr.log_scale)
            b = fwith(1.0) - fwith(0.0)
            var += q @ (b**2 * e.terminal * (1 - e.terminal))
        m = exact.moments(mdp, pi, mu, name)
        mom_err[name] = max(mom_err.get(name, 0.0), abs(m.mean - mean) / max(1, abs(mean)), abs(m.variance - var) / max(1, abs(var)))
print({k: f"{v:.2e}" for k, v in err.items()})
print({k: f"{v:.2e}" for k, v in mom_err.items()})
