"""Embedded results store: one SQLite row per finished analysis cell.

A cell is one estimator evaluated by the Monte Carlo harness at one configuration (MDP,
target, behaviour, estimator and parameters, n, R, seed, package version). Its key is the
SHA-256 of the canonical JSON of that configuration (:func:`~tokis.analysis._config.config_key`);
its value is the JSON of the cell's table row.

Durability: the database runs in WAL mode and every cell is written in its own transaction,
so a sweep killed at any point (even SIGKILL) leaves every finished cell intact and readable,
and an interrupted sweep resumes where it stopped. Readers (another process showing a table)
never block the writer.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import warnings
from pathlib import Path

__all__ = ["ResultStore", "StoreWarning", "default_store_path", "open_store", "row_check"]

_COLUMNS = ["key", "config", "row", "created"]


def row_check(columns, *, text=(), flags=()):
    """The check of a stored row of a table with these ``columns`` (for :meth:`ResultStore.get_many`).

    The returned ``check(row)`` raises ValueError for a missing column or a value of the wrong
    kind: a string in ``text`` columns, a bool in ``flags`` columns, and a number (int or float,
    not bool) or null in every other column (``"coverage": "banana"`` is refused).
    """
    columns, text, flags = tuple(columns), frozenset(text), frozenset(flags)

    def check(row: dict) -> None:
        for col in columns:
            if col not in row:
                raise ValueError(f"column {col!r} is missing")
            v = row[col]
            if col in text:
                ok = isinstance(v, str)
            elif col in flags:
                ok = isinstance(v, bool)
            else:
                ok = v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
            if not ok:
                raise ValueError(f"column {col!r} holds {v!r}")

    return check


class StoreWarning(UserWarning):
    """A stored cell that cannot be trusted was skipped (it is recomputed)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    key     TEXT PRIMARY KEY,
    config  TEXT NOT NULL,
    row     TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def default_store_path() -> Path:
    """``$TOKIS_STORE`` if set, else ``$XDG_CACHE_HOME/tokis/results.sqlite`` (``~/.cache`` by default)."""
    env = os.environ.get("TOKIS_STORE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tokis" / "results.sqlite"


class ResultStore:
    """A SQLite file of finished cells (key -> JSON row), safe to interrupt at any time.

    Parameters
    ----------
    path : str or Path
        Database file; parent directories are created.
    timeout : float
        Seconds to wait for a lock held by another process.

    Notes
    -----
    Use as a context manager or call :meth:`close`. Only the process that opened it should
    write through it (the sweep writes from the parent process, workers only compute).
    """

    def __init__(self, path, *, timeout: float = 60.0):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"store path must be a str or path, got {type(path).__name__}")
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(_SCHEMA)
            cols = [r[1] for r in self._conn.execute("PRAGMA table_info(cells)")]
        except sqlite3.DatabaseError as err:
            raise ValueError(f"cannot open results store {str(self.path)!r}: {err}") from None
        if cols != _COLUMNS:
            self._conn.close()
            raise ValueError(f"results store {str(self.path)!r} has a 'cells' table with columns {cols}, not tokis's "
                             f"{_COLUMNS}: point --store at another file")

    # -- reading -------------------------------------------------------------------------------

    def get(self, key: str, *, check=None):
        """The stored row (a dict) of ``key``, or None (also for a row that fails the checks of :meth:`get_many`)."""
        return self.get_many([key], check=check).get(key)

    def get_many(self, keys, *, check=None) -> dict:
        """``{key: row}`` for the stored keys among ``keys`` whose rows can be trusted.

        A stored cell is returned only when its configuration hashes to its key
        (:func:`~tokis.analysis._config.config_key`), its row is a JSON object, and
        ``check(row)`` (when given) does not raise ValueError/TypeError; any other cell is left
        out with a :class:`StoreWarning` naming the store and the cell, so the caller recomputes
        it and never prints it.
        """
        keys = list(keys)
        out = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            q = "SELECT key, config, row FROM cells WHERE key IN (%s)" % ",".join("?" * len(chunk))
            for k, config, text in self._conn.execute(q, chunk):
                try:
                    row = self._trusted(k, config, text, check)
                except (ValueError, TypeError) as err:
                    warnings.warn(f"results store {str(self.path)!r}: cell {k[:12]}... is damaged ({err}); "
                                  "recomputing it", StoreWarning, stacklevel=2)
                    continue
                out[k] = row
        return out

    @staticmethod
    def _trusted(key, config, text, check):
        if not isinstance(config, str) or hashlib.sha256(config.encode()).hexdigest() != key:
            raise ValueError("its configuration does not hash to its key")
        try:
            row = json.loads(text)
        except (TypeError, json.JSONDecodeError):
            raise ValueError("its row is not JSON") from None
        if not isinstance(row, dict):
            raise ValueError(f"its row is a JSON {type(row).__name__}, not an object")
        if check is not None:
            check(row)
        return row

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0])

    def __contains__(self, key) -> bool:
        return self._conn.execute("SELECT 1 FROM cells WHERE key = ?", (key,)).fetchone() is not None

    # -- writing -------------------------------------------------------------------------------

    def put(self, key: str, config: str, row: dict) -> None:
        """Store one cell in its own transaction (replacing an existing row of the same key).

        Parameters
        ----------
        key : str
            SHA-256 of the canonical configuration.
        config : str
            The canonical configuration JSON (kept for inspection).
        row : dict
            JSON-able table row (NaN and inf allowed).
        """
        text = json.dumps(row, allow_nan=True, sort_keys=True)
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.execute(
                "INSERT OR REPLACE INTO cells (key, config, row, created) VALUES (?, ?, ?, ?)",
                (key, config, text, time.time()),
            )
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"ResultStore({str(self.path)!r})"


def open_store(store):
    """Resolve the ``store`` argument of the analysis functions.

    Parameters
    ----------
    store : None, False, True, str, Path or ResultStore
        None or False: no store. True: :func:`default_store_path`. A path: that file.
        A ResultStore: used as is (not closed by the caller of this function).

    Returns
    -------
    (ResultStore or None, bool)
        The store and whether the caller owns it (must close it).
    """
    if store is None or store is False:
        return None, False
    if isinstance(store, ResultStore):
        return store, False
    if store is True:
        return ResultStore(default_store_path()), True
    if isinstance(store, (str, os.PathLike)):
        return ResultStore(store), True
    raise TypeError(f"store must be None, a bool, a path or a ResultStore, got {type(store).__name__}")
