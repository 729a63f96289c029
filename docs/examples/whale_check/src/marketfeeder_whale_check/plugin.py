"""Hook implementations: the module the entry point names, and the only one marketfeeder imports."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from marketfeeder import hookimpl

from .check import WhaleTrade


@hookimpl
def marketfeeder_register_validators(register: Callable[[str, Any], None]) -> None:
    # The name is what [validation] checks and options use, and what failures are counted under.
    register("whale_trade", WhaleTrade)
