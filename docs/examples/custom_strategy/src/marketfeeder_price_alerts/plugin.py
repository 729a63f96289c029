"""Hook implementations: the module the entry point names, and the only one marketfeeder imports.

Keep it light: import what the hook registers and nothing that starts work at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from marketfeeder import hookimpl

from .strategy import PriceAlerts


@hookimpl
def marketfeeder_register_strategies(register: Callable[[str, Any], None]) -> None:
    register("price_alerts", PriceAlerts)
