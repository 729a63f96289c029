"""DuckDB history store for marketfeeder: columnar ingest, Parquet archiving and history queries."""

from __future__ import annotations

from .archive import ArchiveResult
from .history import History, HistoryError
from .schema import SCHEMA_VERSION, SchemaError
from .sink import DuckDBOptions, DuckDBOptionsError, DuckDBSink, DuckDBSinkError

__all__ = [
    "SCHEMA_VERSION",
    "ArchiveResult",
    "DuckDBOptions",
    "DuckDBOptionsError",
    "DuckDBSink",
    "DuckDBSinkError",
    "History",
    "HistoryError",
    "SchemaError",
]
