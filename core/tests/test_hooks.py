"""One test per hook (``test_hook_<name>``): a throwaway plugin on a fresh manager uses it.

``tests/test_docs.py`` fails when a hook in hookspecs.py has no test here or no entry in the docs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from click.testing import CliRunner

from marketfeeder import hookimpl
from marketfeeder.connector import Connector
from marketfeeder.plugins import call_lifecycle, collect, get_plugin_manager
from marketfeeder.sim.venue import Venue
from marketfeeder.source import Source


def fresh_pm(plugin: object, name: str = "throwaway") -> Any:
    pm = get_plugin_manager(load_entry_points=False)
    pm.register(plugin, name=name)
    return pm


class DummyConnector(Connector):  # abstract methods are not called: registration is what is tested
    name = "dummy"


class DummyVenue(Venue):
    name = "dummy"


def test_hook_marketfeeder_register_connectors() -> None:
    class Plugin:
        @staticmethod
        @hookimpl
        def marketfeeder_register_connectors(register: Callable[[str, type[Connector]], None]) -> None:
            register("dummy", DummyConnector)

    registry = collect(fresh_pm(Plugin), "marketfeeder_register_connectors", "connector")
    assert registry["dummy"] is DummyConnector
    assert registry.plugin_of("dummy") == "throwaway"


def test_hook_marketfeeder_register_validators() -> None:
    class AlwaysFails:
        name = "always_fails"
        event_types: tuple[type, ...] = ()

        def __init__(self, options: Any) -> None:
            self.options = options

        def check(self, event: Any, context: Any) -> None:
            return None

    class Plugin:
        @staticmethod
        @hookimpl
        def marketfeeder_register_validators(register: Callable[[str, Any], None]) -> None:
            register("always_fails", AlwaysFails)

    registry = collect(fresh_pm(Plugin), "marketfeeder_register_validators", "validator")
    validator = registry["always_fails"]({"x": 1})
    assert validator.options == {"x": 1}
    assert "prices" in registry  # built-ins still there, from the default plugin


def test_hook_marketfeeder_register_sinks() -> None:
    made: list[Any] = []

    class Plugin:
        @staticmethod
        @hookimpl
        def marketfeeder_register_sinks(register: Callable[[str, Any], None]) -> None:
            register("collect", lambda options: made.append(options) or made)

    registry = collect(fresh_pm(Plugin), "marketfeeder_register_sinks", "sink")
    registry["collect"]({"target": "x"})
    assert made == [{"target": "x"}]


def test_hook_marketfeeder_register_strategies() -> None:
    class Noop:
        def __init__(self, options: Any) -> None:
            self.options = options

        async def run(self, feeder: Any) -> None:
            return None

    class Plugin:
        @staticmethod
        @hookimpl
        def marketfeeder_register_strategies(register: Callable[[str, Any], None]) -> None:
            register("noop", Noop)

    registry = collect(fresh_pm(Plugin), "marketfeeder_register_strategies", "strategy")
    assert isinstance(registry["noop"]({}), Noop)


def test_hook_marketfeeder_register_sources() -> None:
    class Quiet:
        def __init__(self, options: Any) -> None:
            self.options = options

        async def run(self, ingest: Any) -> None:
            return None

        def statistics(self) -> dict[str, Any]:
            return {}

    class Plugin:
        @staticmethod
        @hookimpl
        def marketfeeder_register_sources(register: Callable[[str, Any], None]) -> None:
            register("quiet", Quiet)

    registry = collect(fresh_pm(Plugin), "marketfeeder_register_sources", "source")
    source = registry["quiet"]({"url": "quiet://h:1"})
    assert isinstance(source, Source) and source.options == {"url": "quiet://h:1"}


def test_hook_marketfeeder_register_venues() -> None:
    class Plugin:
        @staticmethod
        @hookimpl
        def marketfeeder_register_venues(register: Callable[[str, type[Venue]], None]) -> None:
            register("dummy", DummyVenue)

    registry = collect(fresh_pm(Plugin), "marketfeeder_register_venues", "venue")
    assert registry["dummy"] is DummyVenue


def test_hook_marketfeeder_register_commands() -> None:
    class Plugin:
        @staticmethod
        @hookimpl
        def marketfeeder_register_commands(cli: click.Group) -> None:
            @cli.command("hello-test")
            @click.argument("who")
            def hello(who: str) -> None:
                click.echo(f"hello {who}")

    group = click.Group("test")
    fresh_pm(Plugin).hook.marketfeeder_register_commands(cli=group)
    result = CliRunner().invoke(group, ["hello-test", "world"])
    assert result.exit_code == 0
    assert result.output == "hello world\n"


def test_hook_marketfeeder_startup() -> None:
    seen: list[Any] = []

    class Plugin:
        @staticmethod
        @hookimpl
        def marketfeeder_startup(feeder: Any) -> None:
            seen.append(("start", feeder))

    class Broken:
        @staticmethod
        @hookimpl
        def marketfeeder_startup(feeder: Any) -> None:
            raise RuntimeError("boom")

    pm = fresh_pm(Plugin)
    pm.register(Broken, name="broken")
    errors: list[tuple[str, str]] = []
    call_lifecycle(pm, "marketfeeder_startup", lambda name, exc: errors.append((name, str(exc))), feeder="F")
    assert seen == [("start", "F")]  # the broken plugin did not stop the other one
    assert errors == [("broken", "boom")]


def test_hook_marketfeeder_shutdown() -> None:
    seen: list[Any] = []

    class Plugin:
        @staticmethod
        @hookimpl
        def marketfeeder_shutdown(feeder: Any) -> None:
            seen.append(feeder)

    call_lifecycle(fresh_pm(Plugin), "marketfeeder_shutdown", lambda name, exc: None, feeder="F")
    assert seen == ["F"]
