"""``marketfeeder cluster status``: members and shard owners of a publishing group."""

from __future__ import annotations

from typing import Any

import anyio
import click
import orjson

from .client import NatsClient, NatsError
from .jetstream import JetStream, JetStreamError
from .leases import ShardLeases

__all__ = ["cluster_command", "group_status"]


async def group_status(url: str, group: str) -> dict[str, Any]:
    """What the group's lease bucket holds now (members alive within the lease TTL, shard owners)."""
    async with NatsClient(url, reconnect_timeout=5.0) as nc:
        js = JetStream(nc)
        leases = ShardLeases(js, group, "status")
        if await js.stream_info(f"KV_{leases.bucket}") is None:
            return {"group": group, "members": [], "shards": {}}
        await leases.open_existing()
        return await leases.status()


@click.group("cluster")
def cluster_command() -> None:
    """Publishing groups on NATS JetStream (marketfeeder-nats)."""


@cluster_command.command("status")
@click.option("--url", default="nats://127.0.0.1:4222", show_default=True, help="NATS server(s).")
@click.option("--group", required=True, help="Group name (the nats sink's 'group' option).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status_command(url: str, group: str, as_json: bool) -> None:
    """Members and the owner of every (exchange, shard) pair."""
    try:
        status = anyio.run(group_status, url, group)
    except (NatsError, JetStreamError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"group {status['group']}: {len(status['members'])} member(s): {', '.join(status['members']) or '-'}")
    for shard, owner in sorted(status["shards"].items()):
        click.echo(f"  {shard:<30} {owner}")
