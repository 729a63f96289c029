"""Rules that keep the documentation true: generated references are current, every hook is documented
and tested, every config key is documented, every documented CLI command exists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import attrs
import click
import pytest

from marketfeeder import config as config_module
from marketfeeder.cli import build_cli
from marketfeeder.hookspecs import HOOK_NAMES

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


@pytest.mark.parametrize("generator", ["config_reference.py", "hook_reference.py"])
def test_generated_reference_is_current(generator: str) -> None:
    result = subprocess.run([sys.executable, str(DOCS / "_gen" / generator), "--check"], check=False)
    assert result.returncode == 0, f"docs out of date: run python docs/_gen/{generator}"


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_every_hook_has_reference_entry_and_test(hook: str) -> None:
    assert f"## `{hook}`" in (DOCS / "hooks.md").read_text()
    tests = (ROOT / "core" / "tests" / "test_hooks.py").read_text()
    assert f"def test_hook_{hook}(" in tests, f"no test_hook_{hook} in core/tests/test_hooks.py"


CONFIG_CLASSES = [
    config_module.Config,
    config_module.ExchangeConfig,
    config_module.SinkConfig,
    config_module.SourceConfig,
    config_module.StrategyConfig,
    config_module.ValidationConfig,
    config_module.RuntimeConfig,
    config_module.MetricsConfig,
]


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda c: c.__name__)
def test_every_config_key_is_documented_with_a_meaning(cls: type) -> None:
    page = (DOCS / "configuration.md").read_text()
    for field in attrs.fields(cls):
        row = re.search(rf"^\| `{field.name}` \|.*\| (.*) \|$", page, re.MULTILINE)
        assert row, f"{cls.__name__}.{field.name} is not in docs/configuration.md"
        assert row.group(1).strip(), f"{cls.__name__}.{field.name} has no meaning in docs/configuration.md"


def _commands(group: click.Group, prefix: str = "") -> set[str]:
    names: set[str] = set()
    for name, command in group.commands.items():
        full = f"{prefix}{name}"
        names.add(full)
        if isinstance(command, click.Group):
            names |= _commands(command, f"{full} ")
    return names


def test_every_documented_cli_command_exists() -> None:
    documented = set(re.findall(r"^## `marketfeeder ([a-z -]+)`$", (DOCS / "cli.md").read_text(), re.MULTILINE))
    assert documented, "docs/cli.md documents no command"
    existing = _commands(build_cli())
    missing = documented - existing
    assert not missing, f"docs/cli.md documents commands that do not exist: {sorted(missing)}"
    undocumented = {c for c in existing if c not in documented and not isinstance(build_cli().commands.get(c), click.Group)}
    assert not undocumented, f"commands missing from docs/cli.md: {sorted(undocumented)}"


def test_docs_site_builds_strict(tmp_path: Path) -> None:
    """The same build as `nox -s docs`: any warning (a broken link, a page missing from nav) fails."""
    pytest.importorskip("mkdocs")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
