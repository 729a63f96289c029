"""Every plugin shipped in this repository is found through its real entry point."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from marketfeeder.plugins import get_plugin_manager, list_plugins

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.parent for p in (ROOT / "plugins").glob("*/pyproject.toml") if not p.parent.name.startswith("_"))


@pytest.mark.parametrize("plugin_dir", SHIPPED, ids=lambda p: p.name)
def test_shipped_plugin_is_discovered(plugin_dir: Path) -> None:
    project = tomllib.loads((plugin_dir / "pyproject.toml").read_text())["project"]
    entry_points = project["entry-points"]["marketfeeder"]
    pm = get_plugin_manager()
    assert pm.failures == []
    infos = {info.name: info for info in list_plugins(pm)}
    for name in entry_points:
        assert name in infos, f"{project['name']}: entry point {name!r} not loaded"
        assert infos[name].distribution == project["name"]
        assert infos[name].version == project["version"]
        assert infos[name].hooks, f"{name} implements no hook"
