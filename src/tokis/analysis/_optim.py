r"""Small functional optimisers for gradient *ascent* on a policy's logits (optax-like).

An :class:`Optimizer` is a pair of pure functions,

* ``init(params) -> state`` (a :class:`typing.NamedTuple` of arrays), and
* ``update(grad, state) -> (step, new_state)``,

and the caller applies the step: ``params = params + step``. Unlike optax, which minimises,
the step *ascends* (``grad`` is the gradient of the quantity to maximise, the objective's
surrogate, and SGD's step is ``+lr * grad``). ``params`` is a float64 array of any shape (the
logits of a :class:`tokis.envs.Policy`, (S, V) or (T, S, V)); nothing is modified in place.

References
----------
Kingma & Ba (2015), Adam: a method for stochastic optimization, ICLR (algorithm 1, with the
bias corrections); Babuschkin et al. (2020), The DeepMind JAX ecosystem (optax's
``init``/``update`` interface).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .._core._validate import check_real

__all__ = ["Optimizer", "SGDState", "AdamState", "sgd", "adam", "make_optimizer", "OPTIMIZERS"]

#: Names accepted by :func:`make_optimizer`.
OPTIMIZERS = ("adam", "sgd")


class Optimizer(NamedTuple):
    """``init(params) -> state`` and ``update(grad, state) -> (step, state)``; apply ``params + step``."""

    init: Callable
    update: Callable


class SGDState(NamedTuple):
    """State of :func:`sgd`: the momentum buffer (zeros without momentum)."""

    velocity: np.ndarray


class AdamState(NamedTuple):
    """State of :func:`adam`: step count and the first and second moment estimates."""

    count: int
    mu: np.ndarray
    nu: np.ndarray


def _positive(value, name: str) -> float:
    v = check_real(value, name)
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    return v


def _unit_interval(value, name: str) -> float:
    v = check_real(value, name)
    if not 0.0 <= v < 1.0:
        raise ValueError(f"{name} must lie in [0, 1), got {v!r}")
    return v


def sgd(lr: float, momentum: float = 0.0) -> Optimizer:
    r"""Stochastic gradient ascent, optionally with heavy-ball momentum.

    .. math:: v_k = \beta v_{k-1} + g_k,\qquad \Delta\theta_k = \eta\, v_k

    (``momentum = 0``: :math:`\Delta\theta_k = \eta g_k`).

    Parameters
    ----------
    lr : float
        Step size :math:`\eta > 0`.
    momentum : float
        :math:`\beta \in [0, 1)`.
    """
    lr = _positive(lr, "lr")
    beta = _unit_interval(momentum, "momentum")

    def init(params) -> SGDState:
        return SGDState(np.zeros_like(np.asarray(params, dtype=np.float64)))

    def update(grad, state: SGDState):
        if beta == 0.0:
            return lr * grad, state
        v = beta * state.velocity + grad
        return lr * v, SGDState(v)

    return Optimizer(init, update)


def adam(lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Optimizer:
    r"""Adam (Kingma & Ba 2015) for ascent, with bias-corrected moments.

    .. math::
        m_k = \beta_1 m_{k-1} + (1-\beta_1) g_k,\quad v_k = \beta_2 v_{k-1} + (1-\beta_2) g_k^2,\quad
        \Delta\theta_k = \eta\, \frac{m_k / (1-\beta_1^k)}{\sqrt{v_k / (1-\beta_2^k)} + \epsilon}

    Each coordinate moves by at most about :math:`\eta` per step whatever the gradient's
    scale, which is why the frameworks pair it with small learning rates.

    Parameters
    ----------
    lr : float
        :math:`\eta > 0`.
    b1, b2 : float
        :math:`\beta_1, \beta_2 \in [0, 1)`.
    eps : float
        :math:`\epsilon > 0`.
    """
    lr = _positive(lr, "lr")
    b1 = _unit_interval(b1, "b1")
    b2 = _unit_interval(b2, "b2")
    eps = _positive(eps, "eps")

    def init(params) -> AdamState:
        z = np.zeros_like(np.asarray(params, dtype=np.float64))
        return AdamState(0, z, z.copy())

    def update(grad, state: AdamState):
        k = state.count + 1
        m = b1 * state.mu + (1.0 - b1) * grad
        v = b2 * state.nu + (1.0 - b2) * (grad * grad)
        step = lr * (m / (1.0 - b1 ** k)) / (np.sqrt(v / (1.0 - b2 ** k)) + eps)
        return step, AdamState(k, m, v)

    return Optimizer(init, update)


def make_optimizer(name: str, lr: float) -> Optimizer:
    """The optimizer ``name`` (``"adam"`` or ``"sgd"``) with learning rate ``lr`` and default settings.

    Raises
    ------
    ValueError
        Unknown name or ``lr <= 0``.
    """
    if not isinstance(name, str) or name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
    return adam(lr) if name == "adam" else sgd(lr)
