"""A stand-in for CuPy on a machine without a GPU (tests only): numpy memory posing as device arrays.

:class:`DeviceArray` is an ``ndarray`` subclass whose type claims to live in the ``cupy``
package, so ``tokis`` treats it as a cupy array; :class:`FakeCupy` is a module-like object
with numpy's functions that takes and returns such arrays, installed as ``sys.modules["cupy"]``
by the tests. It is strict where CuPy is strict, so code that would fail (or silently copy)
on a GPU fails here too:

- a host ``numpy.ndarray`` mixed with device arrays in an operator, a ufunc, an index or a
  ``cupy`` function raises ``TypeError`` (CuPy refuses implicit host-to-device transfers);
- a ``numpy`` function (``np.where``, ``np.ones_like``, ...) called on a device array raises
  ``TypeError``: code must use the array's own namespace;
- device-to-host copies go through ``DeviceArray.get`` or ``FakeCupy.asnumpy`` and are
  counted in :attr:`FakeCupy.to_host` (element counts), so a test can assert that only
  O(1) scalars -- or a documented O(n) vector -- leave the device.

Reductions return 0-d device arrays, as CuPy's do; ``float``/``int``/``bool`` of them are
the O(1) scalars that come to the host.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DeviceArray", "FakeCupy"]


def _is_host(x) -> bool:
    return isinstance(x, np.ndarray) and not isinstance(x, DeviceArray)


def _reject_host(items, where: str) -> None:
    for x in items:
        if isinstance(x, (tuple, list)):
            _reject_host(x, where)
        elif _is_host(x):
            raise TypeError(f"a host numpy array was passed to {where} with device arrays")


def _raw(x):
    if isinstance(x, DeviceArray):
        return x.view(np.ndarray)
    if isinstance(x, tuple):
        return tuple(_raw(v) for v in x)
    if isinstance(x, list):
        return [_raw(v) for v in x]
    return x


def _dev(x):
    """Results on the "device": arrays as DeviceArray, scalars as 0-d DeviceArray (as CuPy)."""
    if isinstance(x, tuple):
        return tuple(_dev(v) for v in x)
    if isinstance(x, np.ndarray):
        return x.view(DeviceArray)
    if isinstance(x, np.generic):
        return np.asarray(x).view(DeviceArray)
    return x


class DeviceArray(np.ndarray):
    """numpy memory posing as a ``cupy.ndarray`` (its type's module is ``cupy._fake``)."""

    __module__ = "cupy._fake"
    #: set by FakeCupy: where device-to-host copies are counted
    _counter: list | None = None

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        _reject_host(inputs, f"numpy.{ufunc.__name__}")
        if out is not None:
            _reject_host(out, f"numpy.{ufunc.__name__}(out=)")
            kwargs["out"] = tuple(_raw(o) for o in out)
        result = getattr(ufunc, method)(*(_raw(x) for x in inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _dev(result)

    def __array_function__(self, func, types, args, kwargs):
        raise TypeError(f"numpy.{func.__name__} was called on a device array; use the array's namespace")

    def __getitem__(self, key):
        _reject_host(key if isinstance(key, tuple) else (key,), "an index")
        return super().__getitem__(_raw(key))

    def __setitem__(self, key, value):
        _reject_host((key if isinstance(key, tuple) else (key,)) + (value,), "an index assignment")
        super().__setitem__(_raw(key), _raw(value))

    def get(self):
        """Copy to the host (counted)."""
        if DeviceArray._counter is not None:
            DeviceArray._counter.append(int(self.size))
        return np.array(self.view(np.ndarray))


class FakeCupy:
    """numpy's functions on :class:`DeviceArray` (stands in for the ``cupy`` module).

    Attributes
    ----------
    to_host : list of int
        Element counts of every device-to-host copy made so far.
    """

    ndarray = DeviceArray
    __name__ = "cupy"

    def __init__(self):
        self.to_host = []
        DeviceArray._counter = self.to_host

    # host-to-device transfers are explicit in CuPy: asarray / array accept numpy input
    def asarray(self, a, dtype=None):
        if isinstance(a, DeviceArray) and (dtype is None or a.dtype == dtype):
            return a
        return np.array(_raw(a), dtype=dtype).view(DeviceArray)

    def array(self, a, dtype=None):
        return np.array(_raw(a), dtype=dtype).view(DeviceArray)

    def asnumpy(self, a):
        if isinstance(a, DeviceArray):
            return a.get()
        return np.asarray(a)

    def __getattr__(self, name):
        attr = getattr(np, name)
        if isinstance(attr, type) or not callable(attr):
            return attr  # dtypes, inf, nan, ...

        def device_function(*args, **kwargs):
            _reject_host(args, f"cupy.{name}")
            _reject_host(tuple(kwargs.values()), f"cupy.{name}")
            return _dev(attr(*_raw(args), **{k: _raw(v) for k, v in kwargs.items()}))

        device_function.__name__ = name
        return device_function

    def detach(self):
        """Stop counting transfers (called when the fake is uninstalled)."""
        DeviceArray._counter = None
