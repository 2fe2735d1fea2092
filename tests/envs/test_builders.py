"""Builders: n-gram / prefix-tree context automata, reward automata and their products.

Every reward automaton is checked by enumerating all sequences (tests/_reference.py) and
applying its rule directly to each token sequence.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from _cases import random_mdp
from _reference import enumerate_sequences

from tokis.envs import Policy, TokenMDP
from tokis.envs._automata import MAX_CONTEXTS, RewardAutomaton, count_automaton, last_token_automaton, lift_policy, parity_automaton, pattern_automaton, policy_context, product
from tokis.envs._builders import iid, ngram, ngram_index, prefix_tree, random_policy

# ----------------------------------------------------------------------------------------------
# direct rules on token sequences (the reference the automata are checked against)
# ----------------------------------------------------------------------------------------------


def rule_count(token, threshold):
    return lambda toks: float(sum(1 for a in toks if a == token) >= threshold)


def rule_pattern(pattern):
    pattern = list(pattern)
    m = len(pattern)
    return lambda toks: float(any(list(toks[i : i + m]) == pattern for i in range(len(toks) - m + 1)))


def rule_parity(token):
    return lambda toks: float(sum(1 for a in toks if a == token) % 2 == 1)


def rule_last(token):
    return lambda toks: float(len(toks) > 0 and toks[-1] == token)


def run_automaton(aut, toks):
    k = aut.start
    for a in toks:
        k = int(aut.next_state[k, a])
    return k


def sequences(enum):
    return [list(enum.tokens[i, : enum.lengths[i]]) for i in range(enum.tokens.shape[0])]


def uniform(mdp):
    return Policy(np.zeros((mdp.num_contexts, mdp.vocab_size)))


AUTOMATA = [
    (lambda V: count_automaton(V, 0, 1), lambda V: rule_count(0, 1)),
    (lambda V: count_automaton(V, 1, 2), lambda V: rule_count(1, 2)),
    (lambda V: count_automaton(V, V - 1, 3), lambda V: rule_count(V - 1, 3)),
    (lambda V: pattern_automaton(V, [0]), lambda V: rule_pattern([0])),
    (lambda V: pattern_automaton(V, [0, 0, 1]), lambda V: rule_pattern([0, 0, 1])),
    (lambda V: pattern_automaton(V, [0, 1, 0]), lambda V: rule_pattern([0, 1, 0])),
    (lambda V: pattern_automaton(V, [1, 1, 1]), lambda V: rule_pattern([1, 1, 1])),
    (lambda V: pattern_automaton(V, [0, 1, 0, 1]), lambda V: rule_pattern([0, 1, 0, 1])),
    (lambda V: pattern_automaton(V, [1, 0, 1, 1]), lambda V: rule_pattern([1, 0, 1, 1])),
    (lambda V: parity_automaton(V, 1), lambda V: rule_parity(1)),
    (lambda V: last_token_automaton(V, 0), lambda V: rule_last(0)),
    (lambda V: last_token_automaton(V, V - 1), lambda V: rule_last(V - 1)),
]


# ----------------------------------------------------------------------------------------------
# context automata
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("V,k", [(1, 0), (1, 3), (2, 0), (2, 1), (2, 3), (3, 2), (5, 1), (4, 3)])
def test_ngram_context_count(V, k):
    mdp = ngram(V, k, 2)
    assert mdp.num_contexts == sum(V**j for j in range(k + 1))
    assert mdp.vocab_size == V
    assert mdp.horizon == 2
    np.testing.assert_array_equal(mdp.start, np.eye(mdp.num_contexts)[0])


def test_iid_is_order_zero():
    mdp = iid(4, 3)
    assert mdp.num_contexts == 1
    np.testing.assert_array_equal(mdp.next_context, np.zeros((1, 4)))
    np.testing.assert_array_equal(mdp.next_context, ngram(4, 0, 3).next_context)
    np.testing.assert_array_equal(mdp.terminal_reward, ngram(4, 0, 3).terminal_reward)


@pytest.mark.parametrize("V,k,T", [(2, 1, 4), (2, 2, 5), (3, 2, 4), (2, 3, 5), (3, 0, 3)])
def test_ngram_context_is_the_last_k_tokens(V, k, T):
    """Over every prefix of every sequence: context <-> last min(t, k) tokens is a bijection."""
    mdp = ngram(V, k, T)
    enum = enumerate_sequences(mdp, u=uniform(mdp))
    key_to_ctx, ctx_to_key = {}, {}
    for toks in sequences(enum):
        c = 0
        for t in range(len(toks) + 1):
            key = tuple(toks[:t][max(0, t - k) :]) if k else ()
            assert key_to_ctx.setdefault(key, c) == c
            assert ctx_to_key.setdefault(c, key) == key
            assert ngram_index(toks[:t], V, k) == c
            if t < len(toks):
                c = int(mdp.next_context[c, toks[t]])
    # every context is reached (T > k) and indices are the documented ones
    assert len(ctx_to_key) == mdp.num_contexts
    for c, key in ctx_to_key.items():
        expected = sum(V**i for i in range(len(key))) + sum(a * V ** (len(key) - 1 - i) for i, a in enumerate(key))
        assert c == expected


def test_ngram_known_sequence():
    # V = 3, k = 2: offsets 0 (empty), 1 (length 1), 4 (length 2).
    mdp = ngram(3, 2, 5)
    c = 0
    for a in [2, 0, 1, 1]:
        c = int(mdp.next_context[c, a])
    assert c == 4 + 1 * 3 + 1  # last two tokens (1, 1)
    assert ngram_index([2, 0, 1, 1], 3, 2) == 8
    assert ngram_index([], 3, 2) == 0
    assert ngram_index([2], 3, 2) == 1 + 2


@pytest.mark.parametrize("V,T", [(1, 4), (2, 1), (2, 4), (3, 3)])
def test_prefix_tree_has_no_aliasing(V, T):
    mdp = prefix_tree(V, T)
    assert mdp.num_contexts == sum(V**t for t in range(T + 1))
    enum = enumerate_sequences(mdp, u=uniform(mdp))
    assert enum.tokens.shape[0] == V**T
    ctx = {}
    for toks in sequences(enum):
        c = 0
        for t in range(T + 1):
            assert ctx.setdefault(tuple(toks[:t]), c) == c
            if t < T:
                c = int(mdp.next_context[c, toks[t]])
    # distinct prefixes -> distinct contexts, and every context is some prefix
    assert len(set(ctx.values())) == len(ctx) == mdp.num_contexts
    assert len(set(enum.final_context.tolist())) == V**T


def test_prefix_tree_with_eos_stops():
    mdp = prefix_tree(3, 3, eos=2)
    enum = enumerate_sequences(mdp, u=uniform(mdp))
    # V = 3, T = 3, eos = 2: a sequence ends with eos at step L < 3 after L - 1 of the 2 other
    # tokens (2^(L-1) sequences), or runs to T = 3 with any last token after 2 non-eos ones (2^2 * 3)
    V, T, others = 3, 3, 2
    assert enum.tokens.shape[0] == sum(others ** (L - 1) for L in range(1, T)) + others ** (T - 1) * V
    assert len(set(enum.final_context.tolist())) == enum.tokens.shape[0]
    ended = enum.lengths < 3
    assert np.all(enum.tokens[ended, enum.lengths[ended] - 1] == 2)


def test_random_terminal_reward_from_seed():
    for builder, args in ((iid, (3, 2)), (ngram, (3, 2, 4)), (prefix_tree, (2, 3))):
        mdp = builder(*args, seed=7)
        expected = np.random.default_rng(7).uniform(0.0, 1.0, size=mdp.num_contexts)
        np.testing.assert_array_equal(mdp.terminal_reward, expected)
        other = builder(*args, seed=8)
        assert not np.array_equal(other.terminal_reward, mdp.terminal_reward)
        assert np.all((mdp.terminal_reward >= 0) & (mdp.terminal_reward <= 1))
        assert not mdp.has_step_reward


def test_builder_options_pass_through():
    mdp = ngram(3, 1, 4, eos=1, reward_noise="bernoulli", reward=parity_automaton(3, 0))
    assert mdp.eos == 1 and mdp.reward_noise == "bernoulli" and mdp.horizon == 4
    mdp = prefix_tree(2, 2, eos=0, reward_noise="bernoulli")
    assert mdp.eos == 0 and mdp.reward_noise == "bernoulli"


# ----------------------------------------------------------------------------------------------
# reward automata
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(len(AUTOMATA)))
@pytest.mark.parametrize("V,T,eos", [(2, 5, None), (3, 4, None), (3, 4, 2), (2, 5, 1)])
def test_reward_automaton_semantics_by_enumeration(index, V, T, eos):
    make, rule = AUTOMATA[index]
    aut, rule = make(V), rule(V)
    mdp = iid(V, T, reward=aut, eos=eos)
    assert mdp.num_contexts == aut.num_states
    enum = enumerate_sequences(mdp, u=uniform(mdp))
    toks = sequences(enum)
    expected = np.array([rule(s) for s in toks])
    np.testing.assert_array_equal(enum.terminal, expected)
    # the final context is the automaton state after the tokens
    np.testing.assert_array_equal(enum.final_context, [run_automaton(aut, s) for s in toks])
    if eos is not None:  # a sequence shorter than T ended with eos, and eos occurs only last
        for s in toks:
            assert eos not in s[:-1]
            assert len(s) == T or s[-1] == eos


def test_automaton_shapes_and_names():
    a = count_automaton(4, 2, 3)
    assert (a.num_states, a.vocab_size, a.start) == (4, 4, 0)
    np.testing.assert_array_equal(a.reward, [0, 0, 0, 1])
    assert "count" in a.name and "count" in repr(a)
    assert pattern_automaton(3, [0, 1, 2]).num_states == 4
    assert pattern_automaton(3, 2).num_states == 2  # a single token is a pattern of length 1
    assert parity_automaton(3, 0).num_states == 2
    assert last_token_automaton(3, 0).num_states == 2
    with pytest.raises(ValueError, match="read-only"):
        a.next_state[0, 0] = 1
    with pytest.raises(ValueError, match="read-only"):
        a.reward[0] = 1.0


def test_pattern_automaton_kmp_table():
    # pattern (0, 1, 0) over V = 2: state = longest prefix of the pattern that is a suffix
    aut = pattern_automaton(2, [0, 1, 0])
    np.testing.assert_array_equal(aut.next_state, [[1, 0], [1, 2], [3, 0], [3, 3]])


@pytest.mark.parametrize("combine", ["mul", "add"])
def test_product_of_two_automata(combine):
    V, T = 3, 4
    a, b = count_automaton(V, 0, 2), last_token_automaton(V, 1)
    ab = product(a, b, combine=combine)
    assert ab.num_states == a.num_states * b.num_states
    mdp = iid(V, T, reward=ab, eos=2)
    enum = enumerate_sequences(mdp, u=uniform(mdp))
    ra, rb = rule_count(0, 2), rule_last(1)
    op = (lambda x, y: x * y) if combine == "mul" else (lambda x, y: x + y)
    np.testing.assert_array_equal(enum.terminal, [op(ra(s), rb(s)) for s in sequences(enum)])


# ----------------------------------------------------------------------------------------------
# products with a policy automaton
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("V,k,T,eos", [(2, 1, 4, None), (3, 2, 3, 2), (2, 2, 5, 0)])
def test_ngram_with_reward_is_the_product(V, k, T, eos, rng):
    aut = pattern_automaton(V, [1, 0])
    mdp = ngram(V, k, T, reward=aut, eos=eos)
    base = ngram(V, k, T, eos=eos)
    K = aut.num_states
    assert mdp.num_contexts == base.num_contexts * K
    pc = policy_context(mdp, aut)
    np.testing.assert_array_equal(pc, np.arange(mdp.num_contexts) // K)
    pi0 = Policy(rng.normal(size=(base.num_contexts, V)))
    pi = lift_policy(pi0, pc)
    e_base = enumerate_sequences(base, pi=pi0)
    e_prod = enumerate_sequences(mdp, pi=pi)
    np.testing.assert_array_equal(e_base.tokens, e_prod.tokens)
    m = e_prod.mask
    np.testing.assert_array_equal(e_prod.contexts[m] // K, e_base.contexts[m])
    states = np.full_like(e_prod.contexts, -1)
    for i, s in enumerate(sequences(e_prod)):
        for t in range(len(s)):
            states[i, t] = run_automaton(aut, s[:t])
    np.testing.assert_array_equal(e_prod.contexts[m] % K, states[m])
    np.testing.assert_allclose(e_prod.prob["pi"], e_base.prob["pi"], rtol=1e-13, atol=0)
    np.testing.assert_array_equal(e_prod.terminal, [rule_pattern([1, 0])(s) for s in sequences(e_prod)])


@pytest.mark.parametrize("seed", range(6))
def test_product_of_generic_mdp_keeps_step_reward_and_start(seed):
    rng = np.random.default_rng(seed)
    base = random_mdp(rng, S=3, V=2, T=3, eos=bool(seed % 2), step_reward=True, multi_start=True)
    aut = count_automaton(2, 1, 2)
    mdp = product(base, aut)
    K = aut.num_states
    assert mdp.has_step_reward and mdp.eos == base.eos and mdp.horizon == base.horizon
    # (TokenMDP renormalises the start vector, which may move it by an ulp)
    np.testing.assert_allclose(mdp.start.reshape(-1, K).sum(axis=1), base.start, rtol=1e-15, atol=0)
    np.testing.assert_array_equal(mdp.start.reshape(-1, K)[:, 1:], 0.0)
    pi0 = Policy(rng.normal(size=(3, 2)))
    pi = lift_policy(pi0, policy_context(mdp, aut))
    e_base = enumerate_sequences(base, pi=pi0)
    e_prod = enumerate_sequences(mdp, pi=pi)
    np.testing.assert_array_equal(e_base.tokens, e_prod.tokens)
    np.testing.assert_array_equal(e_base.start_context, e_prod.start_context // K)
    np.testing.assert_array_equal(e_base.step_rewards, e_prod.step_rewards)
    np.testing.assert_allclose(e_prod.prob["pi"], e_base.prob["pi"], rtol=1e-13, atol=0)
    np.testing.assert_array_equal(e_prod.terminal, [rule_count(1, 2)(s) for s in sequences(e_prod)])


def test_product_without_step_reward_stays_without():
    mdp = product(ngram(2, 1, 3), parity_automaton(2, 0))
    assert not mdp.has_step_reward


# ----------------------------------------------------------------------------------------------
# random policies
# ----------------------------------------------------------------------------------------------


def test_random_policy_draws_from_seed():
    mdp = ngram(3, 2, 4)
    pol = random_policy(mdp, scale=2.5, seed=11)
    np.testing.assert_array_equal(pol.logits, 2.5 * np.random.default_rng(11).standard_normal((13, 3)))
    np.testing.assert_array_equal(random_policy(mdp, scale=2.5, seed=11).logits, pol.logits)
    assert not np.array_equal(random_policy(mdp, scale=2.5, seed=12).logits, pol.logits)
    td = random_policy(mdp, seed=3, time_dependent=True)
    assert td.time_dependent and td.logits.shape == (4, 13, 3)
    td.check_compatible(mdp)
    np.testing.assert_array_equal(random_policy(mdp, scale=0.0).probs, np.full((13, 3), 1 / 3))


def test_random_policy_on_policy_contexts():
    aut = count_automaton(3, 0, 2)
    mdp = ngram(3, 1, 3, reward=aut)
    pc = policy_context(mdp, aut)
    pol = random_policy(mdp, seed=5, contexts=pc)
    assert pol.logits.shape == (mdp.num_contexts, 3)
    base = np.random.default_rng(5).standard_normal((4, 3))
    np.testing.assert_array_equal(pol.logits, base[pc])
    td = random_policy(mdp, seed=5, contexts=pc, time_dependent=True)
    np.testing.assert_array_equal(td.logits, np.random.default_rng(5).standard_normal((3, 4, 3))[:, pc])


def test_lift_policy_time_dependent():
    pol = Policy(np.arange(2 * 3 * 2, dtype=float).reshape(2, 3, 2))
    lifted = lift_policy(pol, [0, 0, 2, 1])
    np.testing.assert_array_equal(lifted.logits, pol.logits[:, [0, 0, 2, 1]])


# ----------------------------------------------------------------------------------------------
# error paths
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: ngram(0, 1, 3), ValueError, "vocab"),
        (lambda: ngram(2.0, 1, 3), TypeError, "vocab"),
        (lambda: ngram(True, 1, 3), TypeError, "vocab"),
        (lambda: ngram(2, -1, 3), ValueError, "order"),
        (lambda: ngram(2, 1.5, 3), TypeError, "order"),
        (lambda: ngram(2, 1, 0), ValueError, "horizon"),
        (lambda: ngram(2, 1, 3, eos=2), ValueError, "eos"),
        (lambda: ngram(2, 1, 3, eos=-1), ValueError, "eos"),
        (lambda: ngram(2, 1, 3, seed=-1), ValueError, "seed"),
        (lambda: ngram(2, 1, 3, reward="count"), TypeError, "reward"),
        (lambda: ngram(2, 1, 3, reward=count_automaton(3, 0, 1)), ValueError, "vocab"),
        (lambda: ngram(2, 1, 3, reward_noise="gauss"), ValueError, "reward_noise"),
        (lambda: ngram(1000, 3, 3), ValueError, "order"),
        (lambda: iid(0, 3), ValueError, "vocab"),
        (lambda: iid(2, 0), ValueError, "horizon"),
        (lambda: iid(2, 3, eos=5), ValueError, "eos"),
        (lambda: prefix_tree(2, 0), ValueError, "horizon"),
        (lambda: prefix_tree(0, 2), ValueError, "vocab"),
        (lambda: prefix_tree(2, 21), ValueError, "horizon=21.*vocab"),
        (lambda: prefix_tree(50, 5), ValueError, "horizon.*vocab"),
        (lambda: count_automaton(0, 0, 1), ValueError, "vocab"),
        (lambda: count_automaton(2, 2, 1), ValueError, "token"),
        (lambda: count_automaton(2, -1, 1), ValueError, "token"),
        (lambda: count_automaton(2, 0.0, 1), TypeError, "token"),
        (lambda: count_automaton(2, 0, 0), ValueError, "threshold"),
        (lambda: pattern_automaton(2, []), ValueError, "pattern"),
        (lambda: pattern_automaton(2, [0, 2]), ValueError, "pattern"),
        (lambda: pattern_automaton(2, [[0, 1]]), ValueError, "pattern"),
        (lambda: pattern_automaton(2, [0.5]), TypeError, "pattern"),
        (lambda: parity_automaton(2, 3), ValueError, "token"),
        (lambda: last_token_automaton(2, 2), ValueError, "token"),
        (lambda: last_token_automaton(-1, 0), ValueError, "vocab"),
    ],
)
def test_builder_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_reward_automaton_validation():
    ok = dict(next_state=np.zeros((2, 3), dtype=int), reward=[0.0, 1.0], start=0)
    RewardAutomaton(**ok)
    with pytest.raises(ValueError, match="next_state"):
        RewardAutomaton(**{**ok, "next_state": np.full((2, 3), 2)})
    with pytest.raises(ValueError, match="next_state"):
        RewardAutomaton(**{**ok, "next_state": np.zeros(3, dtype=int)})
    with pytest.raises(ValueError, match="reward"):
        RewardAutomaton(**{**ok, "reward": [0.0, 1.0, 2.0]})
    with pytest.raises(ValueError, match="reward"):
        RewardAutomaton(**{**ok, "reward": [0.0, np.nan]})
    with pytest.raises(TypeError, match="reward"):
        RewardAutomaton(**{**ok, "reward": ["a", "b"]})
    with pytest.raises(ValueError, match="start"):
        RewardAutomaton(**{**ok, "start": 2})
    with pytest.raises(TypeError, match="start"):
        RewardAutomaton(**{**ok, "start": 0.0})
    with pytest.raises(TypeError, match="name"):
        RewardAutomaton(**ok, name=3)


def test_product_errors():
    aut = count_automaton(2, 0, 1)
    with pytest.raises(TypeError, match="b must be a RewardAutomaton"):
        product(ngram(2, 1, 3), ngram(2, 1, 3))
    with pytest.raises(TypeError, match="a must be a TokenMDP"):
        product("mdp", aut)
    with pytest.raises(ValueError, match="vocabulary mismatch"):
        product(ngram(3, 1, 3), aut)
    with pytest.raises(ValueError, match="combine"):
        product(aut, aut, combine="max")
    big = count_automaton(1, 0, MAX_CONTEXTS)  # MAX_CONTEXTS + 1 states
    with pytest.raises(ValueError, match="contexts"):
        iid(1, 2, reward=big)


def test_policy_helpers_errors():
    aut = count_automaton(2, 0, 2)
    mdp = ngram(2, 1, 3, reward=aut)
    with pytest.raises(TypeError, match="mdp"):
        policy_context("mdp", aut)
    with pytest.raises(TypeError, match="automaton"):
        policy_context(mdp, "aut")
    with pytest.raises(ValueError, match="not a product"):
        policy_context(ngram(2, 1, 3), count_automaton(2, 0, 3))
    with pytest.raises(ValueError, match="contexts"):
        lift_policy(Policy(np.zeros((2, 2))), [0, 2])
    with pytest.raises(ValueError, match="contexts"):
        lift_policy(Policy(np.zeros((2, 2))), [[0, 1]])
    with pytest.raises(TypeError, match="policy"):
        lift_policy("pi", [0, 1])
    with pytest.raises(TypeError, match="mdp"):
        random_policy(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="scale"):
        random_policy(mdp, scale=-1.0)
    with pytest.raises(ValueError, match="scale"):
        random_policy(mdp, scale=np.inf)
    with pytest.raises(TypeError, match="scale"):
        random_policy(mdp, scale="1")
    with pytest.raises(ValueError, match="seed"):
        random_policy(mdp, seed=-3)
    with pytest.raises(TypeError, match="seed"):
        random_policy(mdp, seed=1.5)
    with pytest.raises(ValueError, match="contexts"):
        random_policy(mdp, contexts=np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="contexts"):
        random_policy(mdp, contexts=-np.ones(mdp.num_contexts, dtype=int))
    with pytest.raises(TypeError, match="time_dependent"):
        random_policy(mdp, time_dependent=1)
    with pytest.raises(ValueError, match="order"):
        ngram_index([0], 2, -1)
    with pytest.raises(ValueError, match="tokens"):
        ngram_index([3], 2, 1)


def test_builders_return_token_mdps():
    for mdp in (iid(2, 2), ngram(2, 1, 2), prefix_tree(2, 2), ngram(2, 1, 2, reward=parity_automaton(2, 1))):
        assert isinstance(mdp, TokenMDP)
    # a product MDP starts in the automaton's start state of the empty context
    mdp = ngram(2, 1, 2, reward=pattern_automaton(2, [1, 1]))
    assert mdp.start[0] == 1.0
    # itertools is used to double-check the number of sequences of iid with eos
    mdp = iid(3, 3, eos=0)
    enum = enumerate_sequences(mdp, u=uniform(mdp))
    n = sum(1 for L in range(1, 4) for s in itertools.product(range(3), repeat=L)
            if (s[-1] == 0 or L == 3) and 0 not in s[:-1])
    assert enum.tokens.shape[0] == n
