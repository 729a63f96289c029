"""Start and stop a real ``nats-server`` (JetStream on, loopback, temp store) for the tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pytest


def _find_binary() -> str | None:
    # MARKETFEEDER_NATS_SERVER names the binary explicitly (a missing path counts as not installed).
    explicit = os.environ.get("MARKETFEEDER_NATS_SERVER")
    if explicit is not None:
        return explicit if os.path.isfile(explicit) else None
    return shutil.which("nats-server") or ("/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None)


BINARY = _find_binary()


def require_binary() -> str:
    """The server binary, or skip (fail under MARKETFEEDER_REQUIRE_NATS=1)."""
    if BINARY is None:
        if os.environ.get("MARKETFEEDER_REQUIRE_NATS") == "1":
            pytest.fail("nats-server is not installed and MARKETFEEDER_REQUIRE_NATS=1")
        pytest.skip("nats-server is not installed (apt-get install nats-server)")
    return BINARY


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NatsServer:
    def __init__(self, store_dir: str | None = None, port: int | None = None, args: Sequence[str] = ()) -> None:
        self.binary = require_binary()
        #: Extra command-line arguments (authorization, TLS).
        self.args = list(args)
        self._tmp = None if store_dir else tempfile.TemporaryDirectory(prefix="mf-nats-")
        self.store_dir = store_dir or self._tmp.name  # type: ignore[union-attr]
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        log = Path(self.store_dir) / "server.log"
        self.proc = subprocess.Popen(
            [self.binary, "-js", "-p", str(self.port), "-a", "127.0.0.1", "-sd", self.store_dir, "-l", str(log),
             *self.args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}: {log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.settimeout(1.0)
                    if sock.recv(4096).startswith(b"INFO"):
                        return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("nats-server did not start within 10 s")

    def kill(self) -> None:
        """SIGKILL (a crash), by pid."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
