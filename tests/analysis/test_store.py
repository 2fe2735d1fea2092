"""SQLite results store: round trips, persistence, WAL, transactions, errors."""

import math
import sqlite3

import pytest

from tokis.analysis import ResultStore, default_store_path
from tokis.analysis._store import StoreWarning, open_store


def _k(config: str) -> str:
    """The key of a stored configuration text (what config_key gives for canonical JSON)."""
    import hashlib

    return hashlib.sha256(config.encode()).hexdigest()


K1, K2 = _k('{"a":1}'), _k('{"a":2}')


def test_put_get_roundtrip_and_persistence(tmp_path):
    path = tmp_path / "sub" / "r.sqlite"
    row = {"x": 1.5, "nan": math.nan, "inf": -math.inf, "flag": True, "name": "seq"}
    with ResultStore(path) as db:
        assert len(db) == 0 and db.get(K1) is None and K1 not in db
        db.put(K1, '{"a":1}', row)
        db.put(K2, '{"a":2}', {"x": 2})
        assert len(db) == 2 and K1 in db
        got = db.get(K1)
        assert got["x"] == 1.5 and math.isnan(got["nan"]) and got["inf"] == -math.inf and got["flag"] is True
        db.put(K2, '{"a":2}', {"x": 3})  # replace
        assert db.get(K2) == {"x": 3} and len(db) == 2
    with ResultStore(path) as db:  # reopened: everything committed
        assert db.get_many([K1, K2, "k3"]).keys() == {K1, K2}
        many = db.get_many([K1, K2] + [f"k{i}" for i in range(1200)])  # chunked queries
        assert len(many) == 2
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT config FROM cells WHERE key=?", (K1,)).fetchone()[0] == '{"a":1}'
    conn.close()


def test_failed_put_rolls_back(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as db:
        db.put("a", "{}", {"x": 1})
        with pytest.raises(TypeError):
            db.put("b", "{}", {"x": object()})  # not JSON: nothing written
        assert len(db) == 1
        db.put("c", "{}", {"x": 2})  # the connection is still usable
        assert len(db) == 2


def test_default_path_and_open_store(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKIS_STORE", str(tmp_path / "env.sqlite"))
    assert default_store_path() == tmp_path / "env.sqlite"
    monkeypatch.delenv("TOKIS_STORE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_store_path() == tmp_path / "cache" / "tokis" / "results.sqlite"
    assert open_store(None) == (None, False) and open_store(False) == (None, False)
    db, owned = open_store(True)
    assert owned and db.path == tmp_path / "cache" / "tokis" / "results.sqlite"
    assert open_store(db) == (db, False)
    db.close()
    db2, owned2 = open_store(str(tmp_path / "p.sqlite"))
    assert owned2 and db2.path.exists()
    db2.close()


def test_errors(tmp_path):
    with pytest.raises(TypeError, match="store must be None, a bool, a path or a ResultStore"):
        open_store(3)
    with pytest.raises(TypeError, match="store path must be a str or path"):
        ResultStore(3)
    bad = tmp_path / "garbage.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ValueError, match="cannot open results store"):
        ResultStore(bad)


def test_damaged_cells_are_skipped_with_a_warning(tmp_path):
    path = tmp_path / "r.sqlite"
    good, notjson, notobj, banana, wrongkey = (_k(f'{{"c":{i}}}') for i in range(5))
    with ResultStore(path) as db:
        db.put(good, '{"c":0}', {"exact_mean": 0.5})
        db.put(notobj, '{"c":2}', [])
        db.put(banana, '{"c":3}', {"exact_mean": "banana"})
        db.put(wrongkey, '{"c":99}', {"exact_mean": 0.5})  # configuration and key disagree
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO cells VALUES (?, ?, ?, 0)", (notjson, '{"c":1}', "{not json"))
    conn.commit()
    conn.close()

    def check(row):
        if not isinstance(row["exact_mean"], float):
            raise ValueError(f"exact_mean is {row['exact_mean']!r}, not a number")

    with ResultStore(path) as db, pytest.warns(StoreWarning) as record:
        got = db.get_many([good, notjson, notobj, banana, wrongkey], check=check)
    assert list(got) == [good]
    text = " ".join(str(w.message) for w in record)
    assert str(path) in text and notjson[:12] in text and "not JSON" in text and "not an object" in text
    assert "banana" in text and "does not hash" in text


def test_foreign_cells_table_is_refused(tmp_path):
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE cells (id INTEGER, payload TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(ValueError, match="has a 'cells' table with columns"):
        ResultStore(path)
