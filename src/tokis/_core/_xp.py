"""Array-namespace helpers: which library an array comes from, without importing CuPy.

Nothing here imports CuPy at module import time, so the package works without it.
"""

from __future__ import annotations

import functools
import sys
import types

import numpy as np

__all__ = ["is_cupy_array", "cupy_namespace", "array_module", "to_host", "rebind_numpy"]


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


@functools.lru_cache(maxsize=None)
def rebind_numpy(func, module, wrap=None):
    """Cached :func:`_rebind` (one copy per function, namespace and wrapper)."""
    return _rebind(func, module, wrap, {})


def _rebind(func, module, wrap, memo):
    """``func`` re-created over the same code with ``np``/``numpy`` bound to ``module``.

    A token map is written once with numpy (``np.exp``, ``np.where``, ...). Evaluating it on
    cupy arrays, or compiling it with numba, rebinds its numpy to the array's own namespace
    (or to numba's scalar-friendly numpy) instead of relying on ``__array_function__``; plain
    Python functions it calls are rebound the same way. The original function is untouched.

    Parameters
    ----------
    func : function
    module : module
        What ``np`` and ``numpy`` refer to inside the copy.
    wrap : callable, optional
        Applied to every rebound *callee* (``numba.njit``: numba calls only compiled functions).

    Returns
    -------
    function
        ``func`` itself when it names neither numpy nor a Python function.
    """
    if func in memo:
        return memo[func]
    glb = dict(func.__globals__)
    changed = False
    for name in func.__code__.co_names:
        value = glb.get(name)
        if value is np:
            glb[name] = module
            changed = True
        elif isinstance(value, types.FunctionType) and value is not func:
            new = _rebind(value, module, wrap, memo)
            if wrap is not None:
                new = wrap(new)
            changed = changed or new is not value
            glb[name] = new
    if not changed:
        memo[func] = func
        return func
    clone = types.FunctionType(func.__code__, glb, func.__name__, func.__defaults__, func.__closure__)
    clone.__kwdefaults__ = func.__kwdefaults__
    memo[func] = clone
    return clone
