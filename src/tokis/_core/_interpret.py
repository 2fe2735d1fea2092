"""Interpreted twins of numba kernel modules: one definition, compiled or run by Python by problem size.

Compiling a numba kernel costs seconds (the moment kernels of :mod:`tokis.exact` take 5--15 s
each on a cold cache); on a small problem the compiled kernel then works for milliseconds. The
interpreted twin of a kernel module is the same source executed with numba's JIT switched off
(``numba.config.DISABLE_JIT`` while the module body runs, so every ``@numba.njit`` returns the
plain function and ``numba.prange`` is ``range``): the same functions, calling each other as
Python functions, with no compilation. Callers pick the twin below a work threshold measured
once per kernel family (see :func:`pick`) and the compiled module above it, so a small problem
never pays for compilation and a large one never runs in the interpreter.

Reference: numba documentation, "Environment variables: NUMBA_DISABLE_JIT" (the same switch,
process-wide).
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from types import ModuleType

__all__ = ["interpreted", "pick"]

_TWINS: dict[str, ModuleType] = {}
_LOCK = threading.Lock()


def interpreted(module: ModuleType) -> ModuleType:
    """The interpreted twin of a kernel ``module`` (built once, cached).

    Parameters
    ----------
    module : module
        A module whose kernels are ``@numba.njit`` functions (importing it must have no side
        effects beyond defining them).

    Returns
    -------
    module
        A separate module object (not in ``sys.modules``) with the same names, every kernel a
        plain Python function.
    """
    name = module.__name__
    twin = _TWINS.get(name)
    if twin is not None:
        return twin
    import numba

    with _LOCK:
        twin = _TWINS.get(name)
        if twin is None:
            spec = importlib.util.find_spec(name)
            twin = importlib.util.module_from_spec(spec)
            old = numba.config.DISABLE_JIT
            numba.config.DISABLE_JIT = True
            try:
                spec.loader.exec_module(twin)
            finally:
                numba.config.DISABLE_JIT = old
            _TWINS[name] = twin
    return twin


def pick(module: ModuleType, work: int, threshold: int) -> ModuleType:
    """``module`` itself when ``work >= threshold`` (compiled), else its interpreted twin.

    ``work`` is the problem's size in the kernels' inner iterations (e.g. ``T * S * V``);
    ``threshold`` the size above which compiling pays, measured per kernel family and stated
    where it is defined.
    """
    if work >= threshold or module.__name__ not in sys.modules:
        return module
    return interpreted(module)
