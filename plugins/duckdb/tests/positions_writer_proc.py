"""A bus consumer with the duckdb sink, for the crash tests (run as a script, never imported by pytest).

``python positions_writer_proc.py DB [--seed N] [--rounds N] [--require-checkpoints]``

Resumes every stream right after the position the sink committed (as a bus source does), prints
``resumed STREAM=SEQ ...``, then delivers batches of ``Trade`` events whose ``seq`` is the stream
sequence, each batch followed by its ``BusCheckpoint``, cut into ``write_batch`` calls at random
points, nearly always inside a batch (as the feeder's sink runner may cut), and prints ``wrote CALLS``
after each call. The sink commits at every call (``commit_interval = 0``), so a ``kill -9`` lands
between or inside commits, with events after the last checkpoint waiting.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).parent))

from duckdb_helpers import trade

from marketfeeder.models import BusCheckpoint, Event
from marketfeeder_duckdb import DuckDBSink

SOURCE, CONSUMER = "nats", "durable"
STREAMS = ("MD_A", "MD_B", "MD_C")


async def main(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    sink = DuckDBSink({"target": args.db, "commit_interval": 0, "batch_size": 64, "snapshot_interval": 0,
                       "require_checkpoints": args.require_checkpoints})
    await sink.open()
    positions = await sink.bus_positions(SOURCE, CONSUMER)
    following = {stream: positions.get(stream, 0) + 1 for stream in STREAMS}
    print("resumed " + " ".join(f"{s}={following[s] - 1}" for s in STREAMS), flush=True)
    queue: list[Event] = []
    calls = 0
    n = 0
    while args.rounds < 0 or n < args.rounds:
        n += 1
        stream = rng.choice(STREAMS)
        first, count = following[stream], rng.randint(0, 40)
        queue.extend(trade(seq, symbol=stream) for seq in range(first, first + count))
        following[stream] = first + count
        queue.append(BusCheckpoint.fast(SOURCE, stream, None, 0, first + count - 1, CONSUMER, count))
        # Keep the newest checkpoint back: the sink then holds events that its next one covers.
        cut = rng.randint(1, len(queue) - 1) if len(queue) > 1 else 0
        if cut:
            chunk, queue = queue[:cut], queue[cut:]
            await sink.write_batch(chunk)
            calls += 1
            print(f"wrote {calls}", flush=True)
    if queue:
        await sink.write_batch(queue)
    await sink.close()
    print("closed " + str(sink.statistics()["uncheckpointed"]), flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=-1)
    parser.add_argument("--require-checkpoints", action="store_true")
    sys.exit(anyio.run(main, parser.parse_args()))
