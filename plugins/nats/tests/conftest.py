from __future__ import annotations

from collections.abc import Iterator

import pytest
from natsserver import NatsServer


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """One server for the session (tests use their own stream names)."""
    server = NatsServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def own_nats_server() -> Iterator[NatsServer]:
    """A server of the test's own, for tests that kill it."""
    server = NatsServer()
    try:
        yield server
    finally:
        server.cleanup()
