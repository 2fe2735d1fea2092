r"""How a policy-gradient objective is declared: its per-token gradient coefficient.

Every surrogate that PPO, GRPO, GSPO, CISPO and their variants optimise has a per-sample gradient
of the form

.. math::
    \hat g = \frac{1}{\nu} \sum_t w_t \, \nabla_\theta \log \pi_\theta(y_t \mid c_t),

so an objective is declared by its coefficient ``w_t`` (DESIGN section 10), from these pieces:

- ``l_t = log pi_theta(y_t|c_t) - log pi_old(y_t|c_t)``: the log of the ratio ``r_t`` to the
  anchor ``pi_old`` (the clipping reference);
- ``A``: the advantage (``G - b``, optionally divided by the return's standard deviation, or
  the exact critic ``Q^mu_t - V^mu_t`` per token);
- ``l^rho_t = log pi_old - log mu``: the engine mismatch between the anchor and the sampler,
  used by a :class:`Correction` (truncated or masked importance sampling);
- ``nu``: the aggregation (1, ``L``, ``E[L]`` or ``T``).

A coefficient function is written once with numpy (``np.exp``, ``np.where``, ``np.clip``, ...)
and is evaluated both on sampled tokens (:func:`tokis.objectives.gradient`) and on the
(T, S, V) table of ``log pi_theta - log pi_old`` by the exact engine
(:func:`tokis.exact.objective_gradient`). It must be positively homogeneous of degree one in
the advantage, ``w(l, lambda A) = lambda w(l, A)`` for ``lambda > 0`` (every clipping rule
depends on the sign of ``A`` only); the exact engine reads ``w(l, +1)`` and ``-w(l, -1)``.

A coefficient may also declare the surrogate *value* whose gradient it is (``value=``, optional):
a function of the same arguments with ``d value / d l = fn`` (token level) or
``d value / d lam = fn`` (sequence level), also positively homogeneous of degree one in ``A``.
:func:`tokis.exact.surrogate` evaluates it along a line in parameter space; nothing else reads
it, and an objective without one is still a valid objective for gradients.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["TokenCoefficient", "SequenceCoefficient", "Correction", "coefficient_params"]


def coefficient_params(func: Callable, skip: int) -> tuple[str, ...]:
    """Names of the parameters ``func`` takes after its first ``skip`` arguments."""
    return tuple(list(inspect.signature(func).parameters)[skip:])


def _check_value(value, fn, what: str, skip: int) -> None:
    """A declared surrogate value takes the coefficient's leading arguments and a subset of its parameters."""
    if value is None:
        return
    _check(value, what, skip)
    extra = [p for p in coefficient_params(value, skip) if p not in coefficient_params(fn, skip)]
    if extra:
        raise TypeError(f"{what} takes parameter {extra[0]!r}, which the coefficient function does not")


def _check(func, what: str, skip: int) -> None:
    if not callable(func):
        raise TypeError(f"{what} must be a function, got {func!r}")
    params = list(inspect.signature(func).parameters.values())
    if len(params) < skip or any(p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params):
        raise TypeError(f"{what} must take {skip} positional arguments then named parameters (no *args/**kwargs)")


@dataclass(frozen=True)
class TokenCoefficient:
    r"""A token-level coefficient ``w_t = fn(l_t, A_t, *params)``.

    Parameters
    ----------
    fn : callable
        ``fn(l, A, *params)`` with ``l`` the token's log-ratio to the anchor and ``A`` its
        advantage, e.g. ``np.exp(l) * A`` (the seed's token-level objective).
    value : callable, optional
        ``value(l, A, *params)``: the token's surrogate value, an antiderivative of ``fn`` in
        ``l`` (``d value / d l = fn``, so that ``grad_theta value(l_t) = fn grad log pi_theta``),
        e.g. ``np.exp(l) * A`` for tok or PPO's ``min(r A, clip(r) A)``. Its parameters must be
        among ``fn``'s. A sample's surrogate is ``sum_t value_t / nu`` (times a correction's
        factor); :func:`tokis.exact.surrogate` evaluates its expectation. None: not declared.

    Notes
    -----
    Exact expected gradient by DP whenever the advantage factorises: always for the exact
    critic; for terminal advantages when ``w`` is linear in ``A``, or when the MDP has no step
    rewards (the sign of ``A`` is then a function of the final context).
    """

    fn: Callable
    value: Callable | None = None

    def __post_init__(self):
        _check(self.fn, "TokenCoefficient.fn", 2)
        _check_value(self.value, self.fn, "TokenCoefficient.value", 2)

    @property
    def params(self) -> tuple[str, ...]:
        return coefficient_params(self.fn, 2)

    @property
    def value_params(self) -> tuple[str, ...]:
        """The parameters ``value`` takes (empty when no value is declared)."""
        return () if self.value is None else coefficient_params(self.value, 2)


@dataclass(frozen=True)
class SequenceCoefficient:
    r"""A sequence-level coefficient, the same for every token: ``w_t = fn(lam, A, *params)``.

    Parameters
    ----------
    fn : callable
        ``fn(lam, A, *params)`` with ``lam = sum_t l_t`` (or ``sum_t l_t / L`` when
        ``per_length``: the log of GSPO's geometric-mean ratio).
    per_length : bool
        Use the per-token mean log-ratio.
    multiplicative : bool
        Declares ``fn(lam, A) == exp(lam) * A`` (no clipping): the expected gradient is then a
        DP under the tilted kernel ``mu exp(l)`` (exact); otherwise it is exact by enumeration.
    value : callable, optional
        ``value(lam, A, *params)``: the sequence's surrogate value ``V``, an antiderivative of
        ``fn`` in ``lam`` (``dV / d lam = fn``), e.g. ``exp(lam) * A`` for seq or GSPO's
        ``min(s A, clip(s) A)``. A sequence's surrogate is ``V * (L if per_length else 1) / nu``:
        since ``d lam / d theta = sum_t grad log pi_theta(y_t|c_t)`` (divided by ``L`` when
        ``per_length``), its gradient is the declared ``(1/nu) sum_t fn grad log pi_theta``.
        Its parameters must be among ``fn``'s. None: not declared (a ``multiplicative``
        coefficient's value is ``exp(lam) * A`` regardless).
    """

    fn: Callable
    per_length: bool = False
    multiplicative: bool = False
    value: Callable | None = None

    def __post_init__(self):
        _check(self.fn, "SequenceCoefficient.fn", 2)
        _check_value(self.value, self.fn, "SequenceCoefficient.value", 2)

    @property
    def params(self) -> tuple[str, ...]:
        return coefficient_params(self.fn, 2)

    @property
    def value_params(self) -> tuple[str, ...]:
        """The parameters ``value`` takes (empty when no value is declared)."""
        return () if self.value is None else coefficient_params(self.value, 2)


@dataclass(frozen=True)
class Correction:
    r"""An engine-mismatch correction: a factor of ``l^rho = log pi_old - log mu``.

    Parameters
    ----------
    name : str
    factor : callable
        ``factor(l_rho, *params)`` (e.g. ``np.minimum(np.exp(l), c)``: truncated IS).
    defaults : mapping
        Parameter defaults.
    description, reference : str
    check : callable, optional
        ``check(params) -> params`` for relations between parameters (``lo <= hi``).

    Notes
    -----
    At ``level="token"`` the factor multiplies each token's coefficient (exact by DP); at
    ``level="sequence"`` the factor of ``sum_t l^rho_t`` multiplies every token of the sequence
    (exact by enumeration).
    """

    name: str
    factor: Callable
    defaults: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    reference: str = ""
    check: Callable | None = None

    def __post_init__(self):
        _check(self.factor, f"Correction {self.name!r} factor", 1)
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))

    @property
    def params(self) -> tuple[str, ...]:
        return coefficient_params(self.factor, 1)
