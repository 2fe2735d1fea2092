"""The kernel contract every estimator backend implements (numpy, numba, cupy).

A backend is a module defining one function per name in :data:`KERNEL_NAMES` with the numpy
reference's signature (:mod:`tokis.estimators._weights`); :func:`kernel_table` collects them
into the read-only table registered in ``_weights.KERNELS``.
"""

from __future__ import annotations

import types

__all__ = ["KERNEL_NAMES", "kernel_table"]

#: The (n, T) passes an estimator may ask of a backend.
KERNEL_NAMES = (
    "log_weight",
    "prefix_log_weight",
    "clipped_log_weight",
    "geo_log_weight",
    "count_above",
    "token_linear",
    "per_decision",
    "per_decision_columns",
)


def kernel_table(namespace: dict) -> types.MappingProxyType:
    """The read-only table ``{name: namespace[name]}`` over :data:`KERNEL_NAMES`."""
    return types.MappingProxyType({name: namespace[name] for name in KERNEL_NAMES})
