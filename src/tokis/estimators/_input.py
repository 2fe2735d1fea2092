"""Backend resolution at the estimators' boundary (validation lives in :mod:`tokis._core`)."""

from __future__ import annotations

from .._core._validate import check_backend_name
from ._weights import resolve_backend

__all__ = ["check_backend"]


def check_backend(backend, library: str = "numpy") -> str:
    """Resolve ``backend`` ("auto" | "numpy" | "numba" | "cupy") to an available one.

    ``"auto"`` is ``"cupy"`` for cupy input (``library="cupy"``) and ``"numba"`` otherwise.
    """
    return resolve_backend(check_backend_name(backend), library)
