"""A loopback WebSocket server that pushes pre-encoded text frames as fast as the socket takes them.

``python wsserver.py FRAMES.json N`` listens on 127.0.0.1 (a free port, printed on the first line of
stdout), and on each connection answers the upgrade, writes N frames (the list in FRAMES.json,
repeated) already encoded as one byte string, then a normal close (1000), and waits for the client's
close. Encoding ahead of time keeps the server's cost out of the clients' receive rates.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import struct
import sys
from pathlib import Path

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_CHUNK = 1 << 20


def _frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 1 << 16:
        return bytes((0x81, 126)) + struct.pack("!H", n) + payload
    return bytes((0x81, 127)) + struct.pack("!Q", n) + payload


def _blob(frames: list[str], n: int) -> bytes:
    encoded = [_frame(f.encode()) for f in frames]
    return b"".join(encoded[i % len(encoded)] for i in range(n))


async def _serve(blob: bytes) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            key = b""
            for line in request.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"sec-websocket-key":
                    key = value.strip()
            accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            view = memoryview(blob)
            for i in range(0, len(view), _CHUNK):
                writer.write(view[i:i + _CHUNK])
                await writer.drain()
            writer.write(b"\x88\x02\x03\xe8")  # close, 1000
            await writer.drain()
            # Wait for the client's close frame (or EOF), bounded.
            try:
                await asyncio.wait_for(reader.read(1 << 16), 10)
            except TimeoutError:
                pass
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    frames = json.loads(Path(sys.argv[1]).read_bytes())
    n = int(sys.argv[2])
    asyncio.run(_serve(_blob(frames, n)))


if __name__ == "__main__":
    main()
