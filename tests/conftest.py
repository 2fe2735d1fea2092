import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture
def rng():
    """A seeded generator; tests never touch global random state."""
    return np.random.default_rng(20261125)


def pytest_collection_modifyitems(config, items):
    try:
        import cupy  # noqa: F401

        has_gpu = cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        has_gpu = False
    if not has_gpu:
        skip = pytest.mark.skip(reason="CuPy with a CUDA device is not available")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


# Property tests draw their examples from a fixed seed per test (derandomize), so CI is
# reproducible; `--hypothesis-profile explore` draws fresh examples for bug hunting.
from hypothesis import settings  # noqa: E402

settings.register_profile("repro", derandomize=True, deadline=None)
settings.register_profile("explore", derandomize=False, deadline=None, max_examples=500)
settings.load_profile("repro")
