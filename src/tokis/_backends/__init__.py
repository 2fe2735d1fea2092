"""Compiled backends: numba kernels for the CPU, CuPy (CUDA) kernels for sampling on a GPU.

Sampling: :mod:`._numba_sample`, :mod:`._cupy_sample` (routed by ``tokis.envs.sample``;
``backend="auto"`` is numba, which also assembles every Rollouts field in the same parallel
pass). Every backend draws the numpy reference's tokens bit for bit.

Estimators: :mod:`._numba_forms` holds one numba kernel per form family (token sum, token
product, per-decision, token counts) into which an estimator's token map is compiled
(:func:`._numba_forms.compile_map`), plus the one-pass numba validation :mod:`._numba_prepare`.
On a GPU the estimators run their array path on cupy arrays (no hand-written CUDA).

:mod:`._bandwidth` measures the read bandwidth that the benchmarks compare estimator
throughput with. This package imports only :mod:`tokis._core`.
"""
