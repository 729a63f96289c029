"""Development sessions. `nox -s tests` runs every test; `nox -l` lists the rest.

Per-plugin sessions are generated from `plugins/*/pyproject.toml`: each installs the core and that plugin
alone into a fresh environment and runs the plugin's own tests, proving it installs and works by itself.
"""

from __future__ import annotations

import datetime
import importlib.util
import platform
import sys
import tomllib
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PLUGINS = sorted(p.parent for p in (ROOT / "plugins").glob("*/pyproject.toml"))
# Plugins installed together for the whole-project test run (the template is tested on its own).
SHIPPED_PLUGINS = [p for p in PLUGINS if not p.name.startswith("_")]
EXAMPLE_PACKAGES = sorted(p.parent for p in (ROOT / "docs" / "examples").glob("*/pyproject.toml"))
TEST_DEPS = [
    "pytest>=8", "mkdocs>=1.6", "hypothesis>=6.100", "trio>=0.25", "pytest-timeout>=2.3", "prometheus-client>=0.20",
    "uvloop>=0.19; sys_platform != 'win32'",
    # The NATS plugin's tests: nats-py is the oracle its own client is checked against; trustme makes TLS certificates.
    "nats-py>=2.6", "trustme>=1.1",
]

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True


def _test_dirs() -> list[Path]:
    dirs = [ROOT / "core" / "tests"] + [p / "tests" for p in SHIPPED_PLUGINS] + [ROOT / "tests"]
    return [d for d in dirs if d.is_dir()]


@nox.session
def tests(session: nox.Session) -> None:
    """Every test of the core, the shipped plugins and the integration suite, on asyncio and trio."""
    session.install(*TEST_DEPS)
    session.install("-e", "core", *[arg for p in SHIPPED_PLUGINS for arg in ("-e", str(p.relative_to(ROOT)))])
    # The how-to guides' example plugins: their own tests run from tests/test_examples.py.
    session.install(*[arg for p in EXAMPLE_PACKAGES for arg in ("-e", str(p.relative_to(ROOT)))])
    # One pytest run per distribution: each test folder is its own rootdir-relative package space.
    for test_dir in _test_dirs():
        session.run("pytest", str(test_dir.relative_to(ROOT)), *session.posargs)


def _plugin_session(plugin: Path) -> None:
    name = tomllib.loads((plugin / "pyproject.toml").read_text())["project"]["name"]

    @nox.session(name=f"plugin-{plugin.name.lstrip('_')}", default=False)
    def plugin_tests(session: nox.Session) -> None:
        session.install(*TEST_DEPS)
        session.install("./core", f"./plugins/{plugin.name}")
        session.run("pytest", f"plugins/{plugin.name}/tests", *session.posargs)

    plugin_tests.__doc__ = f"{name} installed alone with the core; its own tests."


for _plugin in PLUGINS:
    _plugin_session(_plugin)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, including the ASYNC rules and the asyncio ban in library code."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy, strict on the core."""
    session.install("mypy>=1.11", "-e", "core", *[arg for p in SHIPPED_PLUGINS for arg in ("-e", str(p.relative_to(ROOT)))])
    session.run("mypy")


@nox.session(default=False)
def docs(session: nox.Session) -> None:
    """Build the documentation site in strict mode (warnings fail)."""
    session.install("mkdocs>=1.6", "-e", "core")
    session.run("mkdocs", "build", "--strict", "--site-dir", "docs/_build")


PEER_VENV = ROOT / ".nox" / "bench-peers"
# What the side-by-side comparison (bench/peers/compare.py) runs on, besides the core and its plugins.
PEER_PACKAGES = ["cryptofeed", "ccxt", "msgspec", "orjson", "websockets"]


def _peer_python(session: nox.Session) -> str | None:
    """Build .nox/bench-peers with a Python >= 3.13 found on the machine (cryptofeed 3 needs one) and
    return its interpreter, or None (with one log line saying why) when the machine has none."""
    spec = importlib.util.spec_from_file_location("bench_peers", ROOT / "bench" / "bench_peers.py")
    assert spec is not None and spec.loader is not None
    bench_peers = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "bench"))  # bench_peers imports its sibling _table
    try:
        spec.loader.exec_module(bench_peers)
    finally:
        sys.path.remove(str(ROOT / "bench"))
    found = bench_peers.candidate_interpreters()
    if not found:
        session.log("peer comparison will be skipped: no Python >= 3.13 on this machine (PATH, ~/.pyenv/versions)")
        return None
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        session.run(found[0], "-m", "venv", str(PEER_VENV), external=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    session.run(*pip, "--upgrade", "pip", external=True)
    local = ["./core", "./plugins/binance", "./plugins/backpack"]
    session.run(*pip, *local, *PEER_PACKAGES, external=True)
    # The project's own code is reinstalled every run so the figures are for the working tree.
    session.run(*pip, "--force-reinstall", "--no-deps", *local, external=True)
    return str(python)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Run bench/, print a table, write bench/results/<date>-<python>.json and bench/RESULTS.md.

    The peer comparison (cryptofeed, ccxt) runs in .nox/bench-peers, built here with a Python >= 3.13.
    """
    session.install("-e", "core", *[arg for p in SHIPPED_PLUGINS for arg in ("-e", str(p.relative_to(ROOT)))])
    session.install("uvloop>=0.19", "trio>=0.25")
    env: dict[str, str] = {}
    names: list[str] = []
    args = iter(session.posargs)
    for arg in args:
        if arg == "--rounds":
            next(args, None)
        elif not arg.startswith("-"):
            names.append(arg)
    if not names or "peers" in names:
        peer_python = _peer_python(session)
        if peer_python is not None:
            env["MARKETFEEDER_PEER_PYTHON"] = peer_python
    session.run("python", "bench/run.py", *session.posargs, env=env)


@nox.session(default=False)
def dev(session: nox.Session) -> None:
    """A development environment with everything installed (use: nox -s dev, then activate .nox/dev)."""
    session.install(*TEST_DEPS, "ruff", "mypy", "uvloop", "-e", "core")
    for plugin in PLUGINS:
        session.install("-e", str(plugin.relative_to(ROOT)))
    session.log(f"python {platform.python_version()} {sys.platform} {datetime.date.today()}")
