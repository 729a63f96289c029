"""The core's built-ins, registered through the same hooks as any external plugin."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .hookspecs import hookimpl


@hookimpl
def marketfeeder_register_validators(register: Callable[[str, Any], None]) -> None:
    from .validators.builtin import BUILTIN_VALIDATORS

    for name, factory in BUILTIN_VALIDATORS.items():
        register(name, factory)


@hookimpl
def marketfeeder_register_sinks(register: Callable[[str, Any], None]) -> None:
    from .sinks.jsonl import JsonlSink
    from .sinks.memory import MemorySink

    register("memory", MemorySink)
    register("jsonl", JsonlSink)


@hookimpl
def marketfeeder_register_strategies(register: Callable[[str, Any], None]) -> None:
    from .arbitrage import ArbitrageStrategy

    register("arbitrage", ArbitrageStrategy)
