"""Plugin manager factory, registries and the ``marketfeeder plugins`` listing.

No plugin is loaded at import time. :func:`get_plugin_manager` builds a manager, registers the core's
default plugin, then loads the entry-point group ``marketfeeder``, honouring two environment variables:

``MARKETFEEDER_PLUGINS``
    Comma-separated allow list of plugin (entry-point) names. When set, only these load; an empty
    value loads no external plugin at all.
``MARKETFEEDER_DISABLE_PLUGINS``
    Comma-separated block list of plugin names, applied after the allow list.

A plugin that fails to import is recorded in ``manager.failures`` with its name and the error, and
every other plugin still loads.
"""

from __future__ import annotations

import importlib.metadata
import os
import traceback
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import attrs
import pluggy

from . import hookspecs
from .hookspecs import PROJECT_NAME

__all__ = [
    "DEFAULT_PLUGINS",
    "ENTRY_POINT_GROUP",
    "PluginFailure",
    "PluginInfo",
    "Registry",
    "DuplicateRegistrationError",
    "get_plugin_manager",
    "collect",
    "list_plugins",
]

ENTRY_POINT_GROUP = PROJECT_NAME
ENV_ALLOW = "MARKETFEEDER_PLUGINS"
ENV_BLOCK = "MARKETFEEDER_DISABLE_PLUGINS"

#: The core's built-ins, registered through the same hooks as external plugins.
DEFAULT_PLUGINS: tuple[str, ...] = ("marketfeeder.default_plugin",)

T = TypeVar("T")


class DuplicateRegistrationError(ValueError):
    """Two plugins registered the same name for the same kind of object."""


@attrs.frozen
class PluginFailure:
    name: str
    value: str  # the entry point's target, "package.module"
    error: str
    traceback: str


@attrs.frozen
class Registered(Generic[T]):
    name: str
    obj: T
    plugin: str


class Registry(Generic[T]):
    """What one ``register_*`` hook collected: ``name -> object``, remembering which plugin gave it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Registered[T]] = {}

    def register(self, name: str, obj: T, *, plugin: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"plugin {plugin!r} registered a {self.kind} with an invalid name {name!r}")
        existing = self._items.get(name)
        if existing is not None:
            raise DuplicateRegistrationError(
                f"{self.kind} {name!r} is registered by both {existing.plugin!r} and {plugin!r}"
            )
        self._items[name] = Registered(name, obj, plugin)

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name].obj
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise KeyError(f"no {self.kind} named {name!r} is installed (installed: {known})") from None

    def get(self, name: str) -> T | None:
        item = self._items.get(name)
        return None if item is None else item.obj

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[Registered[T]]:
        return list(self._items.values())

    def plugin_of(self, name: str) -> str:
        return self._items[name].plugin


class PluginManager(pluggy.PluginManager):
    """A pluggy manager that also remembers which plugins failed to load and from where others came."""

    def __init__(self) -> None:
        super().__init__(PROJECT_NAME)
        self.failures: list[PluginFailure] = []
        self.distributions: dict[str, importlib.metadata.Distribution] = {}


def _env_list(name: str) -> set[str] | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


def get_plugin_manager(*, load_entry_points: bool = True) -> PluginManager:
    """A fresh plugin manager with the default plugin and (unless disabled) installed plugins."""
    pm = PluginManager()
    pm.add_hookspecs(hookspecs)
    for module_name in DEFAULT_PLUGINS:
        module = __import__(module_name, fromlist=["_"])
        pm.register(module, name=module_name)
    if load_entry_points:
        _load_entry_points(pm)
    return pm


def _load_entry_points(pm: PluginManager) -> None:
    allow = _env_list(ENV_ALLOW)
    block = _env_list(ENV_BLOCK) or set()
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if allow is not None and entry_point.name not in allow:
            continue
        if entry_point.name in block or pm.get_plugin(entry_point.name) is not None:
            continue
        try:
            plugin = entry_point.load()
            pm.register(plugin, name=entry_point.name)
        except Exception as exc:  # a broken plugin must not take the others down
            pm.failures.append(
                PluginFailure(
                    name=entry_point.name,
                    value=entry_point.value,
                    error=f"{type(exc).__name__}: {exc}",
                    traceback="".join(traceback.format_exception(exc)),
                )
            )
            continue
        if entry_point.dist is not None:
            pm.distributions[entry_point.name] = entry_point.dist


def collect(pm: pluggy.PluginManager, hook_name: str, kind: str) -> Registry[Any]:
    """Call one ``register_*`` hook on every plugin, each with a ``register`` bound to that plugin."""
    registry: Registry[Any] = Registry(kind)
    hook = getattr(pm.hook, hook_name)
    # pluggy lists implementations in registration order: the default plugin comes first.
    for impl in hook.get_hookimpls():
        plugin_name = impl.plugin_name

        def register(name: str, obj: Any, _plugin: str = plugin_name) -> None:
            registry.register(name, obj, plugin=_plugin)

        impl.function(register=register)
    return registry


@attrs.frozen
class PluginInfo:
    name: str
    distribution: str | None
    version: str | None
    hooks: list[str]
    registers: dict[str, list[str]]  # kind -> names it registered

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


REGISTER_HOOKS: dict[str, str] = {
    "connector": "marketfeeder_register_connectors",
    "validator": "marketfeeder_register_validators",
    "sink": "marketfeeder_register_sinks",
    "strategy": "marketfeeder_register_strategies",
    "venue": "marketfeeder_register_venues",
}


def list_plugins(pm: PluginManager) -> list[PluginInfo]:
    """Every registered plugin with its distribution, version, hooks and what it registers."""
    registries = {kind: collect(pm, hook, kind) for kind, hook in REGISTER_HOOKS.items()}
    core_version = _version("marketfeeder")
    infos: list[PluginInfo] = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
        dist = pm.distributions.get(name)
        if dist is not None:
            dist_name: str | None = dist.metadata["Name"]
            version: str | None = dist.version
        elif name in DEFAULT_PLUGINS:
            dist_name, version = "marketfeeder", core_version
        else:
            dist_name, version = None, None
        registers = {
            kind: [item.name for item in registry.items() if item.plugin == name]
            for kind, registry in registries.items()
        }
        infos.append(
            PluginInfo(
                name=name,
                distribution=dist_name,
                version=version,
                hooks=hooks,
                registers={kind: names for kind, names in registers.items() if names},
            )
        )
    return infos


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def call_lifecycle(pm: pluggy.PluginManager, hook_name: str, on_error: Callable[[str, BaseException], None], **kwargs: Any) -> None:
    """Call a lifecycle hook on each plugin separately so one failing plugin does not stop the rest."""
    hook = getattr(pm.hook, hook_name)
    for impl in hook.get_hookimpls():
        try:
            impl.function(**kwargs)
        except Exception as exc:
            on_error(impl.plugin_name, exc)
