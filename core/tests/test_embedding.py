"""The README embedding example runs as written under trio, asyncio and uvloop (no pytest plugin)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest
from toy_exchange import ToyConnector, ToyExchange

from marketfeeder import DataType, Feeder, Trade
from marketfeeder.hookspecs import hookimpl
from marketfeeder.plugins import get_plugin_manager


class ToyPlugin:
    """Registers the toy connector the way an exchange plugin registers its own."""

    @hookimpl
    def marketfeeder_register_connectors(self, register: Callable[[str, Any], None]) -> None:
        register("toy", ToyConnector)


def run_example(backend: str, **backend_options: Any) -> tuple[list[Any], str]:
    received: list[Any] = []
    printed: list[str] = []

    def print(*args: Any) -> None:  # the example prints; collect what it prints
        printed.append(" ".join(map(str, args)))

    async def main() -> None:
        async with ToyExchange() as venue:
            config = {"exchanges": {"toy": venue.exchange_config(["BTC-USD"], ["ticker", "trades"])}}
            pm = get_plugin_manager(load_entry_points=False)
            pm.register(ToyPlugin(), name="toy")

            # --- the README example ---
            async with Feeder(config, plugin_manager=pm) as feeder:
                feeder.subscribe("toy", "BTC-USD", DataType.TICKER, print)
                async with feeder.stream(types={DataType.TRADES}) as events:
                    async for event in events:
                        received.append(event)
                        if len(received) == 5:
                            break
            # ---

    anyio.run(main, backend=backend, backend_options=backend_options)
    return received, "\n".join(printed)


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_embedding_example(backend: str) -> None:
    received, _printed = run_example(backend)
    assert len(received) == 5 and all(isinstance(e, Trade) and e.symbol == "BTC-USD" for e in received)
    seqs = [e.seq for e in received]
    assert seqs == sorted(seqs)


def test_embedding_example_on_uvloop() -> None:
    pytest.importorskip("uvloop")
    received, _ = run_example("asyncio", use_uvloop=True)
    assert len(received) == 5
