"""Plugin discovery: the default plugin, real entry points, allow/block lists, broken plugins."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from marketfeeder import cli as cli_module
from marketfeeder.plugins import (
    DuplicateRegistrationError,
    collect,
    get_plugin_manager,
    list_plugins,
)


def make_distribution(root: Path, dist: str, entry_name: str, module: str, source: str, version: str = "1.2.3") -> None:
    """A real installed distribution on disk: a module plus a .dist-info with an entry point."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[marketfeeder]\n{entry_name} = {module}\n")
    (info / "RECORD").write_text("")


GOOD_PLUGIN = """
    from marketfeeder import hookimpl

    class NullSink:
        def __init__(self, options):
            self.options = options
        async def open(self): pass
        async def write_batch(self, events): pass
        async def flush(self): pass
        async def close(self): pass

    @hookimpl
    def marketfeeder_register_sinks(register):
        register("null", NullSink)
"""

BROKEN_PLUGIN = """
    raise ImportError("this plugin is broken on purpose")
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("MARKETFEEDER_PLUGINS", raising=False)
    monkeypatch.delenv("MARKETFEEDER_DISABLE_PLUGINS", raising=False)
    yield tmp_path
    for name in ("mf_null_plugin", "mf_broken_plugin"):
        sys.modules.pop(name, None)


def test_default_plugin_registers_core_builtins() -> None:
    pm = get_plugin_manager(load_entry_points=False)
    sinks = collect(pm, "marketfeeder_register_sinks", "sink")
    assert {"memory", "jsonl"} <= set(sinks.names())
    assert sinks.plugin_of("memory") == "marketfeeder.default_plugin"
    validators = collect(pm, "marketfeeder_register_validators", "validator")
    assert len(validators) >= 5


def test_entry_point_plugin_is_discovered_and_broken_one_reported(site: Path) -> None:
    make_distribution(site, "mf-null", "null_sink", "mf_null_plugin", GOOD_PLUGIN)
    make_distribution(site, "mf-broken", "broken", "mf_broken_plugin", BROKEN_PLUGIN)
    pm = get_plugin_manager()
    assert pm.get_plugin("null_sink") is not None
    assert [f.name for f in pm.failures] == ["broken"]
    assert "broken on purpose" in pm.failures[0].error
    sinks = collect(pm, "marketfeeder_register_sinks", "sink")
    assert sinks.plugin_of("null") == "null_sink"
    infos = {info.name: info for info in list_plugins(pm)}
    assert infos["null_sink"].distribution == "mf-null"
    assert infos["null_sink"].version == "1.2.3"
    assert infos["null_sink"].hooks == ["marketfeeder_register_sinks"]
    assert infos["null_sink"].registers == {"sink": ["null"]}
    assert "marketfeeder.default_plugin" in infos


def test_plugins_json_command_lists_default_external_and_failures(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_distribution(site, "mf-null", "null_sink", "mf_null_plugin", GOOD_PLUGIN)
    make_distribution(site, "mf-broken", "broken", "mf_broken_plugin", BROKEN_PLUGIN)
    monkeypatch.setattr(cli_module, "_PM", None)
    result = CliRunner().invoke(cli_module.cli, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    names = [p["name"] for p in payload["plugins"]]
    assert "marketfeeder.default_plugin" in names
    assert "null_sink" in names
    assert payload["failures"][0]["name"] == "broken"
    default = next(p for p in payload["plugins"] if p["name"] == "marketfeeder.default_plugin")
    assert default["distribution"] == "marketfeeder"
    assert "memory" in default["registers"]["sink"]


def test_allow_list_loads_only_named_plugins(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_distribution(site, "mf-null", "null_sink", "mf_null_plugin", GOOD_PLUGIN)
    make_distribution(site, "mf-broken", "broken", "mf_broken_plugin", BROKEN_PLUGIN)
    monkeypatch.setenv("MARKETFEEDER_PLUGINS", "null_sink")
    pm = get_plugin_manager()
    assert pm.get_plugin("null_sink") is not None
    assert pm.failures == []  # the broken one was never imported
    monkeypatch.setenv("MARKETFEEDER_PLUGINS", "")
    pm = get_plugin_manager()
    assert pm.get_plugin("null_sink") is None
    assert pm.get_plugin("marketfeeder.default_plugin") is not None  # built-ins always load


def test_block_list_skips_named_plugins(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_distribution(site, "mf-null", "null_sink", "mf_null_plugin", GOOD_PLUGIN)
    make_distribution(site, "mf-broken", "broken", "mf_broken_plugin", BROKEN_PLUGIN)
    monkeypatch.setenv("MARKETFEEDER_DISABLE_PLUGINS", "broken, null_sink")
    pm = get_plugin_manager()
    assert pm.get_plugin("null_sink") is None
    assert pm.failures == []


def test_duplicate_names_name_both_plugins() -> None:
    pm = get_plugin_manager(load_entry_points=False)

    class Other:
        from marketfeeder import hookimpl

        @staticmethod
        @hookimpl
        def marketfeeder_register_sinks(register):  # type: ignore[no-untyped-def]
            register("memory", object)

    pm.register(Other, name="other")
    with pytest.raises(DuplicateRegistrationError, match=r"'memory'.*'marketfeeder.default_plugin'.*'other'"):
        collect(pm, "marketfeeder_register_sinks", "sink")


def test_registry_lookup_error_lists_installed() -> None:
    pm = get_plugin_manager(load_entry_points=False)
    sinks = collect(pm, "marketfeeder_register_sinks", "sink")
    with pytest.raises(KeyError, match=r"no sink named 'nope'.*memory"):
        sinks["nope"]
