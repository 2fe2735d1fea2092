"""The frozen result every estimator returns (one batch, or many along leading dimensions)."""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._intervals import interval

__all__ = ["Estimate"]


def _freeze(value):
    """Make numpy arrays read-only (other array libraries are left as they are)."""
    if isinstance(value, np.ndarray):
        value = value.view()
        value.setflags(write=False)
    return value


@dataclass(frozen=True, eq=False)
class Estimate:
    """An estimate of ``J(pi) = E_pi[G]`` (or of an estimator's surrogate) from one batch.

    For inputs with leading batch dimensions (``log_ratio`` (..., n, T): independent batches,
    e.g. replications) every per-call scalar -- ``value``, ``stderr``, ``ess``, ``log_scale``
    and the per-call diagnostics (fractions, ``khat``, ``c``, ...) -- is a read-only numpy array of
    shape (...) (:attr:`batch_shape`), the per-sample arrays gain the same leading dimensions, and
    ``est[i]`` is the Estimate of batch ``i``: equal, field for field and bit for bit, to the call
    on that slice alone. Parameters echoed in the diagnostics stay scalars.

    Attributes
    ----------
    value : float or array (...)
        The estimate, on the true scale (``inf`` only when the true value is not
        representable in float64).
    stderr : float or array (...)
        Standard error. For mean estimators ``std(f, ddof=1) / sqrt(n)`` (CLT); for ratio
        estimators (``snis``, ``wpdis``, self-normalised ``psis``) the delta method: the
        standard deviation (``ddof=1``) of the linearised contributions
        ``z_i = (N_i - value * D_i) / mean(D)`` over ``sqrt(n)``. ``nan`` when ``n = 1``.
    n : int
        Number of sequences.
    ess : float or array (...)
        Kish effective sample size ``(sum w)^2 / sum w^2`` of the weights the estimator uses
        (see each estimator's docstring); ``0.0`` when every weight is zero.
    diagnostics : Mapping
        Read-only mapping of estimator-specific diagnostics (``backend`` always, plus for
        example ``khat`` for ``psis`` or ``clipped_fraction`` for the clipping estimators).
    samples : array (..., n) or None
        Per-sample statistic ``f_i`` of a mean estimator, stored as ``f_i * exp(-log_scale)``
        so it stays finite when weights overflow: ``value = exp(log_scale) * mean(samples)``.
        ``None`` for ratio estimators.
    numerator, denominator : array or None
        For ratio estimators the per-sample numerator ``N_i`` and denominator ``D_i``
        (``value = sum N / sum D``), both multiplied by ``exp(-log_scale)``; shape (..., n).
        For ``wpdis`` they are (..., n, T), one ratio per step (``value = sum_t sum_i N[i, t] /
        sum_i D[i, t]``), each column shifted by its own factor (listed in
        ``diagnostics["column_log_scale"]``) and ``log_scale = 0``. ``None`` for mean
        estimators.
    log_scale : float or array (...)
        Natural log of the factor the per-sample arrays were divided by.
    estimator : str
        Name of the estimator that produced this result.

    Notes
    -----
    The per-sample arrays are returned in the input's array library (numpy, or cupy for
    cupy input); scalars are Python floats (numpy arrays on the host for batched input).
    """

    value: float
    stderr: float
    n: int
    ess: float
    diagnostics: Mapping[str, Any] = field(default_factory=dict)
    samples: Any = None
    numerator: Any = None
    denominator: Any = None
    log_scale: float = 0.0
    estimator: str = ""

    def __post_init__(self):
        diag = {k: _freeze(v) for k, v in dict(self.diagnostics).items()}
        object.__setattr__(self, "diagnostics", types.MappingProxyType(diag))
        for name in ("samples", "numerator", "denominator", "value", "stderr", "ess", "log_scale"):
            object.__setattr__(self, name, _freeze(getattr(self, name)))

    @property
    def batch_shape(self) -> tuple:
        """The leading batch dimensions: ``()`` for one (n, T) batch."""
        return tuple(np.shape(self.value))

    def __getitem__(self, index) -> "Estimate":
        """The Estimate of the batches ``index`` selects along the leading dimensions.

        ``est[i]`` (an integer per leading dimension) is the Estimate of one batch, with float
        scalars, equal to the call on that slice of the inputs; slices keep batch dimensions.

        Raises
        ------
        TypeError
            On an Estimate of one batch (it has no batch dimensions).
        IndexError
            An index out of range.
        """
        shape = self.batch_shape
        if shape == ():
            raise TypeError("this Estimate is of one batch: it has no batch dimensions to index")
        probe = np.empty(shape, dtype=np.int8)[index]  # numpy's indexing rules and errors
        one = probe.ndim == 0

        def take(x):
            if isinstance(x, np.ndarray) or (hasattr(x, "shape") and not np.isscalar(x)):
                if tuple(x.shape[: len(shape)]) != shape:
                    return x
                part = x[index]
                if one and getattr(part, "ndim", 1) == 0:
                    return part.item()
                return part
            return x

        diag = {k: take(v) for k, v in self.diagnostics.items()}
        return Estimate(value=take(self.value), stderr=take(self.stderr), n=self.n, ess=take(self.ess),
                        diagnostics=diag, samples=take(self.samples), numerator=take(self.numerator),
                        denominator=take(self.denominator), log_scale=take(self.log_scale),
                        estimator=self.estimator)

    def ci(self, level: float = 0.95, *, method: str = "normal", rng=None, upper=None, truncation=None,
           n_resamples=None) -> tuple[float, float]:
        """Confidence interval (two-sided) or high-confidence lower bound (one-sided) of the mean.

        Parameters
        ----------
        level : float
            Coverage in (0, 1) (``1 - delta`` for the lower bounds).
        method : {"normal", "t", "bca", "bernstein", "hoeffding"}
            Two-sided: ``"normal"`` (``value -/+ z * stderr``, ``z`` the ``(1 + level) / 2``
            normal quantile; the default, as before), ``"t"`` (Student t quantile with ``n - 1``
            degrees of freedom), ``"bca"`` (BCa bootstrap, :func:`scipy.stats.bootstrap`, of the
            per-sample mean or, for ratio estimators, of the paired ratio ``sum N / sum D``).
            One-sided lower bounds for non-negative statistics, returned as ``(lo, inf)``:
            ``"bernstein"`` (truncated empirical Bernstein, Thomas et al. 2015; ``c`` chosen on a
            held-out fifth of the batch) and ``"hoeffding"`` (statistics in ``[0, upper]``). See
            :mod:`tokis.estimators._intervals` for the formulas and the truncation choice.
        rng : None, int or numpy.random.Generator
            Seed of the bootstrap (``"bca"`` only): the same seed gives the same interval.
        upper : float, optional
            ``"hoeffding"`` only: a bound on every possible per-sample statistic (true scale).
        truncation : float, optional
            ``"bernstein"`` only: a fixed truncation level ``c`` (true scale), chosen without
            looking at this batch; then all ``n`` samples enter the bound.
        n_resamples : int, optional
            ``"bca"`` only: bootstrap resamples (default 9999).

        Returns
        -------
        (lo, hi) : tuple of float, or of arrays (...) for a batched Estimate
            ``hi = inf`` for the lower bounds. A batched Estimate gives every batch the interval
            of its own Estimate (``est[i].ci(...)``): ``"normal"`` is computed on the arrays at
            once, the other methods batch by batch (for ``"bca"`` with an integer ``rng`` every
            batch is resampled with that seed, as its own call would be; a Generator is drawn
            from batch after batch in C order).

        Raises
        ------
        ValueError
            A level outside (0, 1), an unknown method, an option of another method, or a method
            that does not apply (the message names the method and why): no per-sample arrays,
            ``n`` too small, a batch-transform estimator (psis, trunc_seq) for the resampling and
            concentration methods, negative statistics or a ratio estimator for the lower bounds,
            no ``upper`` (or a sample above it) for Hoeffding.
        TypeError
            A level that is not a number.
        """
        return interval(self, level, method=method, rng=rng, upper=upper, truncation=truncation,
                        n_resamples=n_resamples)

    def __repr__(self) -> str:
        shape = self.batch_shape
        if shape:
            return (f"Estimate(estimator={self.estimator!r}, batch_shape={shape}, value=array{shape}, "
                    f"stderr=array{shape}, n={self.n}, ess=array{shape})")
        return (
            f"Estimate(estimator={self.estimator!r}, value={self.value!r}, stderr={self.stderr!r}, "
            f"n={self.n}, ess={self.ess!r})"
        )
