"""Array-namespace helpers: which library an array comes from, without importing CuPy.

Nothing here imports CuPy at module import time, so the package works without it.
"""

from __future__ import annotations

import sys

import numpy as np

__all__ = ["is_cupy_array", "cupy_namespace", "array_module", "to_host"]


def is_cupy_array(x) -> bool:
    """True for a ``cupy.ndarray`` (without importing CuPy when it is not loaded)."""
    return type(x).__module__.split(".")[0] == "cupy"


def cupy_namespace():
    """The ``cupy`` module itself (numpy's API on the device), for arrays that are already cupy.

    Only called once a cupy array has been seen, so CuPy is importable; no device check.
    """
    module = sys.modules.get("cupy")
    if module is None:  # pragma: no cover - a cupy array implies the module is loaded
        import cupy as module
    return module


def array_module(x):
    """``cupy`` for a cupy array, else ``numpy`` (as ``cupy.get_array_module``, without importing CuPy)."""
    return cupy_namespace() if is_cupy_array(x) else np


def to_host(x):
    """A numpy copy of a cupy array (one device-to-host transfer); numpy input is returned as is."""
    return x.get() if is_cupy_array(x) else x
