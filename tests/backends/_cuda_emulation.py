"""Run the CuPy backends' CUDA C sources on the CPU (tests only).

The source is compiled by the host C++ compiler behind a small shim: ``threadIdx`` and
``blockIdx`` are thread-local, each emulated GPU thread is an OS thread, and the warp
intrinsics (``__shfl_xor_sync``, ``__shfl_up_sync``, ``__shfl_sync``, ``__syncwarp``) exchange
values through a 32-slot buffer between two barrier phases, which is exactly their semantics
for a converged warp. Blocks must therefore have 32 threads (one warp) and every lane of a
warp must execute the same sequence of intrinsics (as on a GPU with a full mask).

The CuPy sampler (`_cupy_sample.py`) is the one hand-written CUDA source left; the estimators
run their array path on cupy arrays. This checks the kernels' logic, indexing and argument types without a GPU; the GPU's own
``exp``/``log`` may differ from the host's in the last bit, which the tests' tolerances allow.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading

import numpy as np

__all__ = ["compiler", "emulate"]

_SHIM = r"""
#include <barrier>
#include <cmath>
#include <cstring>
#include <cstdint>
struct tokis_uint3 { unsigned int x, y, z; };
thread_local tokis_uint3 threadIdx = {0, 0, 0};
thread_local tokis_uint3 blockIdx = {0, 0, 0};
tokis_uint3 blockDim = {32, 1, 1};
tokis_uint3 gridDim = {1, 1, 1};
#define __global__
#define __device__
#define __forceinline__ inline
static std::barrier<> tokis_bar(32);
static unsigned long long tokis_slots[32];
// kind 0: lane ^ arg (xor); 1: lane - arg, or own value below arg (up); 2: lane arg (broadcast)
template <class X> static X tokis_exchange(X v, int arg, int kind) {
    const unsigned lane = threadIdx.x & 31u;
    tokis_bar.arrive_and_wait();
    std::memcpy(&tokis_slots[lane], &v, sizeof(X));
    tokis_bar.arrive_and_wait();
    int src;
    if (kind == 0) src = (int)(lane ^ (unsigned)arg);
    else if (kind == 1) src = ((int)lane >= arg) ? (int)lane - arg : (int)lane;
    else src = arg & 31;
    X r;
    std::memcpy(&r, &tokis_slots[src], sizeof(X));
    return r;
}
template <class X> X __shfl_xor_sync(unsigned, X v, int m) { return tokis_exchange(v, m, 0); }
template <class X> X __shfl_up_sync(unsigned, X v, unsigned d) { return tokis_exchange(v, (int)d, 1); }
template <class X> X __shfl_sync(unsigned, X v, int s) { return tokis_exchange(v, s, 2); }
inline void __syncwarp(unsigned = 0xffffffffu) { tokis_bar.arrive_and_wait(); }
using std::exp; using std::log; using std::fmin; using std::fmax; using std::isfinite;
inline double __longlong_as_double(long long v) { double d; std::memcpy(&d, &v, sizeof d); return d; }
extern "C" void tokis_emu_set(unsigned block, unsigned thread, unsigned grid) {
    blockIdx.x = block; threadIdx.x = thread; gridDim.x = grid; blockDim.x = 32;
}
"""


@functools.lru_cache(maxsize=None)
def compiler() -> str | None:
    """The host C++ compiler if it builds a C++20 program with ``<barrier>``, else None."""
    cxx = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if cxx is None:
        return None
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "probe.cpp")
        with open(src, "w") as fh:
            fh.write(_SHIM)
        ok = subprocess.run(
            [cxx, "-std=c++20", "-fsyntax-only", src], capture_output=True, text=True
        ).returncode == 0
    return cxx if ok else None


@functools.lru_cache(maxsize=None)
def _library(source: str) -> ctypes.CDLL:
    cxx = compiler()
    digest = hashlib.sha1(source.encode()).hexdigest()[:16]
    d = os.path.join(tempfile.gettempdir(), f"tokis_cuda_emu_{os.getuid()}")
    os.makedirs(d, exist_ok=True)
    lib = os.path.join(d, f"k_{digest}.so")
    if not os.path.exists(lib):
        src = os.path.join(d, f"k_{digest}.cpp")
        with open(src, "w") as fh:
            fh.write(_SHIM + source)
        tmp = lib + f".{os.getpid()}.tmp"
        res = subprocess.run(
            [cxx, "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-o", tmp, src],
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            raise RuntimeError(f"host compilation of the CUDA source failed:\n{res.stderr}")
        os.replace(tmp, lib)
    return ctypes.CDLL(lib)


def _ctype(arg):
    if isinstance(arg, np.ndarray):
        if not arg.flags.c_contiguous:
            raise ValueError("kernel arrays must be C-contiguous")
        return ctypes.c_void_p(arg.ctypes.data)
    kinds = {
        np.dtype(np.int32): ctypes.c_int32,
        np.dtype(np.int64): ctypes.c_int64,
        np.dtype(np.uint64): ctypes.c_uint64,
        np.dtype(np.float64): ctypes.c_double,
    }
    if isinstance(arg, np.generic) and arg.dtype in kinds:
        return kinds[arg.dtype](arg.item())
    raise TypeError(f"unsupported kernel argument {arg!r} ({type(arg).__name__})")


def emulate(source: str, name: str, grid, block, args) -> None:
    """Run kernel ``name`` of ``source`` over ``grid`` blocks of ``block`` (= 32) threads."""
    if tuple(block) != (32,):
        raise ValueError("the emulator runs blocks of exactly one warp (32 threads)")
    lib = _library(source)
    set_ids = lib.tokis_emu_set
    set_ids.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_uint]
    kernel = getattr(lib, name)
    kernel.restype = None
    cargs = [_ctype(a) for a in args]
    errors = []

    def lane(b, t):
        try:
            set_ids(b, t, grid[0])
            kernel(*cargs)
        except Exception as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    for b in range(grid[0]):
        threads = [threading.Thread(target=lane, args=(b, t)) for t in range(32)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    if errors:
        raise errors[0]
