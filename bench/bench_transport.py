"""WebSocket receive throughput: frames/s through ``WebSocket.receive`` per async backend.

A loopback server in a separate process (so it does not share the client's event loop or core)
sends 150-byte text frames as fast as the socket takes them; the client, run under asyncio,
uvloop (when importable) and trio, reads a fixed number of frames per round and the rate is
frames / elapsed wall time, measured from the first frame to the last.

    python bench/bench_transport.py [--rounds 5] [--frames 200000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from typing import Any

import anyio

FRAME_BYTES = 150
BURST = 512  # frames per write on the server side
WARMUP_FRAMES = 20_000
DEFAULT_FRAMES = 200_000


def _payload(i: int) -> str:
    head = (
        f'{{"e":"trade","E":1700000000{i:06d},"s":"BTCUSDT","t":{i},"p":"43000.12","q":"0.015","m":true,"x":"'
    )
    return head + "x" * (FRAME_BYTES - len(head) - 2) + '"}'


# --- server process ------------------------------------------------------------------------------


def _serve() -> None:
    from marketfeeder.transport.server import (
        HttpReply,
        LoopbackServer,
        ServerWebSocket,
        WebSocketClosed,
        encode_frames,
    )

    burst = encode_frames([_payload(i) for i in range(BURST)])
    assert all(len(_payload(i)) == FRAME_BYTES for i in range(BURST))

    async def flood(ws: ServerWebSocket) -> None:
        try:
            while True:
                await ws.send_encoded(burst, BURST)
        except WebSocketClosed:
            pass

    async def main() -> None:
        async with LoopbackServer(ws_handler=flood, http_handler=lambda r: HttpReply(404, b"")) as server:
            print(server.port, flush=True)
            # Run until the parent closes our stdin.
            await anyio.to_thread.run_sync(sys.stdin.read)

    try:
        import uvloop  # noqa: F401

        anyio.run(main, backend="asyncio", backend_options={"use_uvloop": True})
    except ImportError:
        anyio.run(main)


# --- client --------------------------------------------------------------------------------------


async def _receive_rate(url: str, frames: int) -> float:
    from marketfeeder.transport.ws import connect_websocket

    async with connect_websocket(url, max_frame_size=2**16) as ws:
        receive = ws.receive
        for _ in range(WARMUP_FRAMES):
            await receive()
        await receive()
        start = time.perf_counter()
        for _ in range(frames):
            frame, _ts = await receive()
        elapsed = time.perf_counter() - start
        assert isinstance(frame, str) and len(frame) == FRAME_BYTES
    return frames / elapsed


def _backends() -> list[tuple[str, str, dict[str, Any]]]:
    backends: list[tuple[str, str, dict[str, Any]]] = [("asyncio", "asyncio", {})]
    try:
        import uvloop  # noqa: F401

        backends.append(("uvloop", "asyncio", {"use_uvloop": True}))
    except ImportError:
        pass
    try:
        import trio  # noqa: F401

        backends.append(("trio", "trio", {}))
    except ImportError:
        pass
    return backends


def run(rounds: int = 5, frames: int = DEFAULT_FRAMES) -> list[dict[str, Any]]:
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        url = f"ws://127.0.0.1:{port}"
        results = []
        for name, backend, options in _backends():
            values = [
                anyio.run(_receive_rate, url, frames, backend=backend, backend_options=options)
                for _ in range(rounds)
            ]
            results.append(
                {
                    "name": f"ws receive 150 B text frames ({name})",
                    "unit": "frames/s",
                    "values": values,
                    "higher_is_better": True,
                }
            )
        return results
    finally:
        assert server.stdin is not None
        server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve()
        return
    results = run(args.rounds, args.frames)
    print(f"{'benchmark':<44} {'unit':<9} {'median':>12} {'min':>12} {'max':>12}")
    for result in results:
        values = sorted(result["values"])
        median = values[len(values) // 2]
        print(
            f"{result['name']:<44} {result['unit']:<9} {median:>12,.0f} {values[0]:>12,.0f} {values[-1]:>12,.0f}"
        )


if __name__ == "__main__":
    main()
