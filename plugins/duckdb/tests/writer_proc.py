"""A feeder-like writer process for the durability tests (run as a script, never imported by pytest).

``python writer_proc.py DB [--batch N] [--batches N] [--fsize BYTES] [--snapshot-interval S]``

Writes batches of ``Trade`` events whose ``seq`` runs 0, 1, 2, ... with the duckdb sink, flushing after
each, and prints ``committed <batches> <rows>`` once each flush has returned. On a sink error it prints
``error <message>`` and exits with status 3.
"""

from __future__ import annotations

import argparse
import resource
import signal
import sys
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).parent))

from duckdb_helpers import trade

from marketfeeder_duckdb import DuckDBSink, DuckDBSinkError


async def main(args: argparse.Namespace) -> int:
    sink = DuckDBSink(
        {"target": args.db, "commit_interval": 0, "batch_size": args.batch, "snapshot_interval": args.snapshot_interval}
    )
    try:
        await sink.open()
        n = 0
        while args.batches < 0 or n < args.batches:
            await sink.write_batch([trade(n * args.batch + i) for i in range(args.batch)])
            await sink.flush()
            n += 1
            print(f"committed {n} {n * args.batch}", flush=True)
        await sink.close()
    except DuckDBSinkError as exc:
        print(f"error {exc}", flush=True)
        await sink.close()
        return 3
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=-1)
    parser.add_argument("--fsize", type=int, default=0)
    parser.add_argument("--snapshot-interval", type=float, default=0.0)
    ns = parser.parse_args()
    if ns.fsize:
        # A hard file-size limit makes writes past it fail with EFBIG, like a full disk does with ENOSPC.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (ns.fsize, ns.fsize))
    sys.exit(anyio.run(main, ns))
