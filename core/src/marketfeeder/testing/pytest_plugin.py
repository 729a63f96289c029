"""pytest plugin of marketfeeder (entry point ``pytest11``): light on purpose.

It is loaded by every pytest session of an environment where marketfeeder is installed, so it
imports nothing heavy and defines no fixture that would change other projects' tests. The contract
suites in :mod:`marketfeeder.testing.contract` parametrize their own ``anyio_backend``.
"""

from __future__ import annotations

from typing import Any

#: The anyio backends every contract test runs on.
BACKENDS: tuple[str, ...] = ("asyncio", "trio")


def pytest_configure(config: Any) -> None:
    config.addinivalue_line(
        "markers", "marketfeeder_contract: a test from marketfeeder's connector or sink contract suite"
    )
