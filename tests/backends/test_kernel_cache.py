"""Family kernels of importable token maps come from numba's disk cache in a new process."""

import json
import os
import subprocess
import sys

import numpy as np

from tokis._backends import _kernel_cache
from tokis.estimators import _builtins

_PROBE = r"""
import json, numpy as np
from tokis.estimators import seq
from tokis._backends import _numba_forms as nbf
e = seq(np.zeros((3, 4)), np.ones(3), backend="numba")
driver = nbf.family("token_product", seq.form.token, 1)  # a one-thread call runs the serial driver
parallel = nbf.family("token_product", seq.form.token, 2)
print(json.dumps({"value": e.value, "module": driver.py_func.__module__,
                  "hits": sum(driver.stats.cache_hits.values()), "misses": sum(driver.stats.cache_misses.values()),
                  "parallel_compiled": len(parallel.signatures),
                  "row_signatures": [str(s) for s in driver.py_func.__globals__["ROWS"].signatures]}))
"""


def test_only_maps_reachable_by_import_are_cached():
    assert _kernel_cache.importable_name(_builtins.ratio_minus_one) == ("tokis.estimators._builtins", "ratio_minus_one")
    assert _kernel_cache.importable_name(lambda l: l) is None

    def local(l):
        return np.exp(l)

    assert _kernel_cache.importable_name(local) is None


def test_a_second_process_loads_the_kernels_instead_of_compiling(tmp_path):
    # a fresh directory for the generated modules (numba's other caches stay where they are)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    first, second = runs
    assert first["module"].startswith("tokis_token_product_") and first["module"] == second["module"]
    assert first["misses"] >= 1 and first["hits"] == 0  # compiled, then written to the cache
    assert second["hits"] >= 1 and second["misses"] == 0  # loaded from it
    assert first["value"] == second["value"] == 1.0
    assert first["parallel_compiled"] == second["parallel_compiled"] == 0  # one thread: no parallel region compiled
    # the row function is compiled once, for int64 bounds (a literal 0 from the driver used to add a
    # second compilation for Literal[int](0)); loaded from the cache it is not compiled at all
    assert len(first["row_signatures"]) == 1 and "Literal" not in first["row_signatures"][0]
    assert second["row_signatures"] == []
    assert any(p.name.startswith("tokis_token_product_") for p in (tmp_path / "tokis" / "kernels").iterdir())
