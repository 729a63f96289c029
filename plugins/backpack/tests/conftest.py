from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The shared helpers module sits next to this file; make it importable under any --import-mode.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from backpack_testlib import make_table  # noqa: E402

from marketfeeder.models import InstrumentTable  # noqa: E402


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def table() -> InstrumentTable:
    return make_table()
