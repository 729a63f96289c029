from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from marketfeeder_duckdb.schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    TABLES,
    SchemaError,
    create_views,
    migrate,
    schema_version,
)


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in con.execute(f"DESCRIBE {table}").fetchall()]


def test_fresh_database_matches_declared_tables(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "db.duckdb"))
    assert schema_version(con) == 0
    assert migrate(con) == SCHEMA_VERSION == len(MIGRATIONS)
    for table, columns in TABLES.items():
        assert _columns(con, table) == [(c.name, c.sql) for c in columns], table
    assert migrate(con) == SCHEMA_VERSION  # idempotent
    assert con.execute("SELECT count(*) FROM schema_version").fetchone() == (SCHEMA_VERSION,)


def test_older_file_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = str(tmp_path / "old.duckdb")
    con = duckdb.connect(path)
    assert migrate(con, target=1) == 1
    con.execute("INSERT INTO trades VALUES ('binance', 'BTC-USDT', 1, 2, 3, 100.5, 0.1, 'buy', 1)")
    with pytest.raises(duckdb.CatalogException):
        con.execute("SELECT * FROM other_events")
    con.close()

    con = duckdb.connect(path)
    assert schema_version(con) == 1
    assert migrate(con) == SCHEMA_VERSION
    assert con.execute("SELECT price FROM trades").fetchall() == [(100.5,)]
    assert con.execute("SELECT count(*) FROM other_events").fetchone() == (0,)
    assert [r[0] for r in con.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()] == list(
        range(1, SCHEMA_VERSION + 1)
    )


def test_newer_file_is_refused(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "new.duckdb"))
    migrate(con)
    con.execute("INSERT INTO schema_version VALUES (?, 0)", [SCHEMA_VERSION + 1])
    with pytest.raises(SchemaError, match="newer"):
        migrate(con)


def test_failed_step_leaves_previous_version(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "db.duckdb"))
    migrate(con, target=1)
    con.execute("CREATE TABLE perf_stats (x INTEGER)")  # makes step 2 fail midway
    with pytest.raises(duckdb.CatalogException):
        migrate(con)
    assert schema_version(con) == 1
    assert con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'other_events'").fetchone() == (0,)


def test_views_expose_timestamps(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "db.duckdb"))
    migrate(con)
    create_views(con, None)
    con.execute("INSERT INTO trades VALUES ('binance', 'BTC-USDT', NULL, 1700000000123456789, 3, 1.0, 1.0, 'buy', NULL)")
    row = con.execute("SELECT receive_time, exchange_time, typeof(receive_time) FROM all_trades").fetchone()
    assert row is not None
    assert str(row[0]) == "2023-11-14 22:13:20.123456789" or row[0].isoformat().startswith("2023-11-14T22:13:20.123456")
    assert row[1] is None
    assert row[2] == "TIMESTAMP_NS"
