"""What every example shares: its command-line flags and the ``--sim`` bootstrap.

``--sim`` starts the loopback simulator in this process, serving every exchange the example
configures through the venue plugins that are installed, and points the feeder at it. Without
``--sim`` the same configuration streams from the real exchanges.

    args = parse_args("What the example does.")
    run(main, args)            # anyio.run on the chosen loop

    async def main(args):
        async with open_feeder(CONFIG, args) as feeder:
            ...
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio

from marketfeeder.plugins import get_plugin_manager
from marketfeeder.runtime import Feeder

LOOPS = ("asyncio", "uvloop", "trio")


def parse_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--sim", action="store_true", help="run against the in-process loopback simulator")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds to run (default 30)")
    parser.add_argument("--seed", type=int, default=1, help="simulator seed (with --sim)")
    parser.add_argument("--rate", type=float, default=1_000.0, help="simulator records per second (with --sim)")
    parser.add_argument("--faults", default=None, help="simulator fault spec (with --sim), e.g. skip_ids=0.01")
    parser.add_argument("--loop", choices=LOOPS, default="asyncio", help="event loop (default asyncio)")
    args = parser.parse_args(argv)
    if args.duration <= 0:
        parser.error(f"--duration must be positive, got {args.duration}")
    return args


def run(main: Callable[[argparse.Namespace], Awaitable[None]], args: argparse.Namespace) -> None:
    """Run ``main(args)`` on the event loop chosen with ``--loop``."""
    if args.loop == "uvloop":
        anyio.run(main, args, backend="asyncio", backend_options={"use_uvloop": True})
    else:
        anyio.run(main, args, backend=args.loop)


def _enabled(config: Mapping[str, Any]) -> list[str]:
    return [name for name, section in config.get("exchanges", {}).items() if section.get("enabled", True)]


@asynccontextmanager
async def open_feeder(
    config: Mapping[str, Any],
    args: argparse.Namespace,
    *,
    engine_options: Mapping[str, Any] | None = None,
    faults: str | None = None,
) -> AsyncIterator[Feeder]:
    """``async with open_feeder(config, args) as feeder:`` -- a running Feeder; with ``args.sim``,
    one fed by an in-process simulator of every configured exchange.

    Simulator only (ignored without ``--sim``): ``engine_options`` go to its market engine (e.g.
    ``{"arb_rate": 1.0}`` for frequent cross-exchange dislocations); ``faults`` is a fault spec the
    example injects by default (``--faults`` replaces it).
    """
    pm = get_plugin_manager()
    if not args.sim:
        async with Feeder(config, plugin_manager=pm) as feeder:
            yield feeder
        return

    from marketfeeder.sim.server import SimServer, sim_config_for, venues_from_plugins

    names = _enabled(config)
    venues = venues_from_plugins(pm, names)  # ValueError names a venue that is not installed
    symbols = sorted({s for name in names for s in config["exchanges"][name].get("symbols", [])})
    spec = args.faults if args.faults is not None else faults
    if spec:
        print(f"simulator: injecting faults {spec}", flush=True)
    async with SimServer(
        venues,
        seed=args.seed,
        rate=args.rate,
        symbols=symbols or None,
        faults=spec or None,
        engine_options=engine_options,
    ) as sim:
        merged = copy.deepcopy(dict(config))
        for name, urls in sim_config_for(sim, names)["exchanges"].items():
            merged["exchanges"][name] = {**merged["exchanges"][name], **urls}
            print(f"simulator: {name} at {urls['ws_url']} (REST {urls['rest_url']})", flush=True)
        async with Feeder(merged, plugin_manager=pm) as feeder:
            yield feeder


async def run_for(seconds: float, every: float, tick: Callable[[], None]) -> None:
    """Call ``tick()`` every ``every`` seconds until ``seconds`` have passed."""
    with anyio.move_on_after(seconds):
        while True:
            await anyio.sleep(every)
            tick()
