"""Progress of a sweep on stderr: a bar on a terminal, one line per step otherwise (logs, pipes, CI).

A hidden bar leaves a long run silent when stderr is redirected; :func:`progress` writes a
line such as ``tokis: horizon 24/56 cells (43 %), 12.5 s`` each time a point finishes there
instead (at most one line per :data:`LINE_INTERVAL` seconds, and always the last).
"""

from __future__ import annotations

import sys
import time

__all__ = ["progress", "default_mode", "LINE_INTERVAL"]

#: Least seconds between two progress lines (the last step is always reported).
LINE_INTERVAL = 0.5


def default_mode(option) -> bool | str:
    """The command line's progress mode: ``--progress``/``--no-progress`` if given, else a bar on a terminal and lines otherwise."""
    if option is not None:
        return bool(option)
    return True if sys.stderr.isatty() else "lines"


class _Lines:
    """A tqdm-like counter that writes a line per update (``update``/``close``)."""

    def __init__(self, total: int, initial: int, desc: str, unit: str):
        self.total, self.n, self.desc, self.unit = int(total), int(initial), desc, unit
        self.t0 = time.perf_counter()
        self._last = -LINE_INTERVAL

    def update(self, k: int = 1) -> None:
        self.n += int(k)
        now = time.perf_counter() - self.t0
        if self.n >= self.total or now - self._last >= LINE_INTERVAL:
            self._last = now
            pct = 100.0 * self.n / self.total if self.total else 100.0
            sys.stderr.write(f"tokis: {self.desc} {self.n}/{self.total} {self.unit}s ({pct:.0f} %), {now:.1f} s\n")
            sys.stderr.flush()

    def close(self) -> None:
        pass


def progress(total: int, initial: int, desc: str, mode, unit: str = "cell"):
    """A progress counter with ``update(k)`` and ``close()``.

    Parameters
    ----------
    total, initial : int
        Steps in all and already done (e.g. cells read from the store).
    desc, unit : str
        Label and unit (``"horizon"``, ``"cell"``).
    mode : bool or "lines"
        True: a tqdm bar on stderr; ``"lines"``: a line per update; False: nothing.
    """
    if mode == "lines":
        return _Lines(total, initial, desc, unit)
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not mode, file=sys.stderr, leave=False,
                dynamic_ncols=True)
