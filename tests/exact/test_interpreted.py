"""The compiled kernels and their small-problem paths agree (numpy twins of the DP, interpreted moment kernels).

Below ``COMPILE_MIN_WORK`` the exact engines run without compiling (tokis._core._interpret and
the numpy twins of exact._dp); the enumeration tests therefore check those paths, and this file
checks that the compiled kernels give the same numbers on the same problems, so both are tied
to brute force.
"""

from __future__ import annotations

import numpy as np
import pytest

from _cases import random_cases
import tokis
from tokis._core import _interpret
from tokis.exact import _dp, _recursions
from tokis.exact._errors import NoExactMethodError

CASES = list(random_cases(20261203, 8))


@pytest.fixture
def compiled(monkeypatch):
    """Force the compiled kernels at every size."""
    monkeypatch.setattr(_dp, "COMPILE_MIN_WORK", 0)
    monkeypatch.setattr(_recursions, "COMPILE_MIN_WORK", 0)


def _exact_names():
    return [name for name, spec in tokis.estimators.REGISTRY.items() if name != "psis"]


def _both(func):
    small = func()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_dp, "COMPILE_MIN_WORK", 0)
        mp.setattr(_recursions, "COMPILE_MIN_WORK", 0)
        big = func()
    return small, big


def test_the_default_main_job_stays_below_the_thresholds():
    # T = 64 on the 9-context n-gram (8 tokens + the reward automaton's start) of tokis horizon
    from tokis.analysis.horizon import DEFAULT_FAMILY

    mdp, _ = DEFAULT_FAMILY.build(64)
    work = mdp.horizon * mdp.num_contexts * mdp.vocab_size
    assert work < _recursions.COMPILE_MIN_WORK <= _dp.COMPILE_MIN_WORK
    assert _dp._interpret(mdp)
    assert _recursions._kernels(mdp.horizon, mdp.num_contexts, mdp.vocab_size) is _interpret.interpreted(
        _recursions._k)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_dp_paths_agree(case):
    mdp, pi, mu, _ = CASES[case]
    for f in (tokis.exact.value, tokis.exact.occupancy, tokis.exact.state_values, tokis.exact.q_values,
              tokis.exact.final_distribution):
        small, big = _both(lambda: np.asarray(f(mdp, pi), dtype=float))
        np.testing.assert_allclose(small, big, rtol=1e-12, atol=1e-14)
    small, big = _both(lambda: tokis.exact.log_second_moment(mdp, pi, mu))
    assert small == pytest.approx(big, rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_moment_paths_agree(case):
    mdp, pi, mu, desc = CASES[case]
    for name in _exact_names():
        try:
            small, big = _both(lambda: tokis.exact.moments(mdp, pi, mu, name, n=7))
        except NoExactMethodError:
            continue
        assert small.method == big.method, (name, desc)
        for a, b in ((small.mean, big.mean), (small.variance, big.variance)):
            assert a == pytest.approx(b, rel=1e-10, abs=1e-13), (name, desc)


def test_interpreted_twin_is_a_separate_plain_module():
    twin = _interpret.interpreted(_recursions._k)
    assert twin is not _recursions._k and twin is _interpret.interpreted(_recursions._k)
    assert not hasattr(twin.multiplicative_kernel, "py_func")  # a plain function
    assert hasattr(_recursions._k.multiplicative_kernel, "py_func")  # the module itself stays compiled
