"""Compiled backends: numba kernels for the CPU, CuPy (CUDA) kernels for sampling on a GPU.

Sampling: :mod:`._numba_sample`, :mod:`._cupy_sample` (routed by ``tokis.envs.sample``;
``backend="auto"`` is numba, which also assembles every Rollouts field in the same pass, for
all replications of a sequence of seeds at once). Every backend draws the numpy reference's tokens bit for bit.

Estimators: :mod:`._numba_forms` holds one numba kernel per form family (token sum, token
product, per-decision, token counts) into which an estimator's token map is compiled
(:func:`._numba_forms.compile_map`; cached on disk per map by :mod:`._kernel_cache`), the
compiled validation :mod:`._numba_prepare` and the per-batch reductions :mod:`._numba_reduce` and :mod:`._numba_ratio`
(value, standard error, Kish ESS of every replication in one pass). On a GPU the estimators
run their array path on cupy arrays (no hand-written CUDA). :mod:`._chunks` decides how many
threads a call gets (one below a measured size: waking idle workers costs milliseconds here).

:mod:`._bandwidth` measures the read bandwidth that the benchmarks compare estimator
throughput with. This package imports only :mod:`tokis._core`.
"""
