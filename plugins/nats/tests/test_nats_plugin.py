"""Entry-point discovery and the ``marketfeeder cluster status`` command."""

from __future__ import annotations

import uuid

import anyio
import orjson
from click.testing import CliRunner
from natsserver import NatsServer

from marketfeeder.cli import build_cli
from marketfeeder.plugins import collect, get_plugin_manager
from marketfeeder_nats.client import NatsClient
from marketfeeder_nats.jetstream import JetStream
from marketfeeder_nats.leases import ShardLeases
from marketfeeder_nats.sink import NatsSink
from marketfeeder_nats.source import NatsSource


def test_hooks_register_through_the_entry_point() -> None:
    pm = get_plugin_manager()
    assert collect(pm, "marketfeeder_register_sinks", "sink")["nats"] is NatsSink
    assert collect(pm, "marketfeeder_register_sources", "source")["nats"] is NatsSource
    assert "nats-source" not in collect(pm, "marketfeeder_register_strategies", "strategy")


def test_cluster_status_shows_members_and_owners(nats_server: NatsServer) -> None:
    group = uuid.uuid4().hex[:8]

    async def setup() -> None:
        async with NatsClient(nats_server.url) as nc:
            leases = ShardLeases(JetStream(nc), group, "feeder-1", ttl=30)
            await leases.open()
            await leases.tick([("binance", 0), ("binance", 1)])

    anyio.run(setup)
    runner = CliRunner()
    main = build_cli()
    result = runner.invoke(main, ["cluster", "status", "--url", nats_server.url, "--group", group, "--json"])
    assert result.exit_code == 0, result.output
    status = orjson.loads(result.output)
    assert status == {"group": group, "members": ["feeder-1"],
                      "shards": {"binance.0": "feeder-1", "binance.1": "feeder-1"}}
    text = runner.invoke(main, ["cluster", "status", "--url", nats_server.url, "--group", group])
    assert "1 member(s): feeder-1" in text.output and "binance.1" in text.output
    empty = runner.invoke(main, ["cluster", "status", "--url", nats_server.url, "--group", "nobody"])
    assert "0 member(s)" in empty.output
