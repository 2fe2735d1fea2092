"""Memory of a Monte Carlo batch, checked before it is allocated (stdlib only)."""

from __future__ import annotations

import os

__all__ = ["BYTES_PER_TOKEN", "CHUNK_BUDGET", "available_memory", "check_batch_memory", "replication_chunk"]

#: Bytes one sampled token slot may cost while a chunk is alive: the harness's buffers (log-ratio
#: and rewards in float64, the mask: 17 bytes) plus what one estimator call allocates per slot
#: (a cleaned copy of the log-ratios, mapped token values, per-step weights: up to about 7
#: float64 arrays), rounded up. An upper bound: a batch that passes this check fits.
BYTES_PER_TOKEN = 80

#: Bytes the replications drawn at once may take (shared by the threads that draw chunks side by side).
CHUNK_BUDGET = 256 << 20

#: Fraction of the machine's physical memory one batch may take.
MEMORY_FRACTION = 0.5


def available_memory() -> int:
    """Physical memory of this machine in bytes (``os.sysconf``; 8 GiB where it cannot be read)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 << 30


def check_batch_memory(n: int, horizon: int, option: str = "--n") -> None:
    """Refuse a batch of ``n`` sequences of ``horizon`` tokens that cannot fit in memory.

    Raises
    ------
    ValueError
        When ``n * horizon * BYTES_PER_TOKEN`` exceeds :data:`MEMORY_FRACTION` of the machine's
        memory; the message names ``option``, the estimate and the largest ``n`` that fits.
    """
    need = int(n) * int(horizon) * BYTES_PER_TOKEN
    have = available_memory()
    if need > MEMORY_FRACTION * have:
        largest = int(MEMORY_FRACTION * have // (int(horizon) * BYTES_PER_TOKEN))
        raise ValueError(f"{option}={n} sequences of T={horizon} tokens need about {need / 2**30:.1f} GiB per batch, "
                         f"more than half of this machine's {have / 2**30:.1f} GiB: use {option} <= {largest}")


def replication_chunk(n: int, horizon: int, replications: int, budget: int = CHUNK_BUDGET) -> int:
    """How many replications of ``n x horizon`` tokens to draw in one call within ``budget`` bytes (at least 1)."""
    per = max(1, int(n) * int(horizon) * BYTES_PER_TOKEN)
    return int(max(1, min(int(replications), budget // per)))
