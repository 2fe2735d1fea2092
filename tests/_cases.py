"""Random small MDPs and policy pairs for enumeration tests (tests only)."""

from __future__ import annotations

import numpy as np

from tokis.envs import Policy, TokenMDP


def random_mdp(
    rng: np.random.Generator,
    *,
    S: int = 3,
    V: int = 3,
    T: int = 3,
    eos: bool = False,
    step_reward: bool = False,
    multi_start: bool = False,
    noise: bool = False,
) -> TokenMDP:
    """A random context automaton with random rewards (terminal in [0, 1] so noise is allowed)."""
    nc = rng.integers(0, S, size=(S, V))
    term = rng.uniform(0.0, 1.0, size=S)
    step = rng.normal(size=(S, V)) if step_reward else None
    if multi_start:
        start = rng.dirichlet(np.ones(S))
    else:
        start = int(rng.integers(0, S))
    return TokenMDP(
        nc,
        horizon=T,
        terminal_reward=term,
        step_reward=step,
        start=start,
        eos=int(rng.integers(0, V)) if eos else None,
        reward_noise="bernoulli" if noise else "none",
    )


def random_policy_pair(
    rng: np.random.Generator, mdp: TokenMDP, *, time_dependent: bool = False, scale: float = 1.0, shift: float = 0.5
) -> tuple[Policy, Policy]:
    """(target, behavior): behaviour logits are the target's plus Gaussian noise of size ``shift``."""
    shape = (mdp.horizon, mdp.num_contexts, mdp.vocab_size) if time_dependent else (mdp.num_contexts, mdp.vocab_size)
    pi = rng.normal(scale=scale, size=shape)
    mu = pi + rng.normal(scale=shift, size=shape)
    return Policy(pi), Policy(mu)


def random_cases(seed: int, count: int, **overrides):
    """Yield ``count`` (mdp, pi, mu, description) cases cycling through every MDP feature."""
    rng = np.random.default_rng(seed)
    for k in range(count):
        opts = dict(
            S=int(rng.integers(1, 5)),
            V=int(rng.integers(2, 4)),
            T=int(rng.integers(1, 5)),
            eos=bool(k % 2),
            step_reward=bool((k // 2) % 2),
            multi_start=bool((k // 4) % 2),
            noise=bool((k // 8) % 2),
        )
        timedep = bool((k // 3) % 2)
        opts.update(overrides)
        timedep = opts.pop("time_dependent", timedep)
        mdp = random_mdp(rng, **opts)
        pi, mu = random_policy_pair(rng, mdp, time_dependent=timedep)
        yield mdp, pi, mu, f"case{k}:{opts}:timedep={timedep}"
