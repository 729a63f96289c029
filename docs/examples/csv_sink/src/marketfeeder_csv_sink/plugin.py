"""Hook implementations: the module the entry point names, and the only one marketfeeder imports."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from marketfeeder import hookimpl

from .sink import CsvSink


@hookimpl
def marketfeeder_register_sinks(register: Callable[[str, Any], None]) -> None:
    # `--sink csv:DIR` calls CsvSink({"target": "DIR"}).
    register("csv", CsvSink)
