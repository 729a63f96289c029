"""The integration examples and how-to packages in docs/ run, against the loopback simulator.

Every script in ``docs/examples`` runs as a user would run it (``python docs/examples/x.py --sim
--duration 3``) and must exit 0 and print what it is about. The example plugin packages
(``custom_strategy``, ``csv_sink``, ``whale_check``) run their own test suites, are discovered by
``marketfeeder plugins`` and work from ``marketfeeder run``; they are installed by the nox ``tests``
session and skipped, saying so, where they are not. The how-to pages may only name code that exists,
and their marked excerpts must match the real files.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"
HOWTO = ROOT / "docs" / "howto"
TIMEOUT = 60
HAVE_SIM_VENUES = all(importlib.util.find_spec(m) is not None for m in ("marketfeeder_binance", "marketfeeder_backpack"))
needs_venues = pytest.mark.skipif(
    not HAVE_SIM_VENUES, reason="the examples simulate Binance and Backpack: install plugins/binance and plugins/backpack"
)

#: Example package folder -> (its import name, its entry-point name, what it registers).
PACKAGES = {
    "custom_strategy": ("marketfeeder_price_alerts", "price_alerts", {"strategy": ["price_alerts"]}),
    "csv_sink": ("marketfeeder_csv_sink", "csv_sink", {"sink": ["csv"]}),
    "whale_check": ("marketfeeder_whale_check", "whale_check", {"validator": ["whale_trade"]}),
}


def _installed(folder: str) -> pytest.MarkDecorator:
    module = PACKAGES[folder][0]
    return pytest.mark.skipif(
        importlib.util.find_spec(module) is None,
        reason=f"{module} is not installed: pip install -e docs/examples/{folder} (the nox tests session does)",
    )


def _run(args: list[str], timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MARKETFEEDER_PLUGINS", None)
    env.pop("MARKETFEEDER_DISABLE_PLUGINS", None)
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env, check=False)


def _numbers(pattern: str, text: str) -> list[float]:
    return [float(m.replace(",", "")) for m in re.findall(pattern, text)]


# --- the example scripts -------------------------------------------------------------------------


def _arbitrage(out: str) -> None:
    (events,) = _numbers(r"summary: ([\d,]+) market events", out)
    assert events > 0, "the arbitrage example saw no event from either exchange"
    assert "books: binance BTC-USDT" in out


def _reference(out: str) -> None:
    mids = _numbers(r"reference binance BTC-USDT: mid ([\d,]+\.\d+)", out)
    assert mids and all(m > 0 for m in mids), "no reference price was given"


def _pnl(out: str) -> None:
    totals = _numbers(r"total +([+-][\d,]+\.\d+)", out)
    assert totals, "no P&L line was printed"
    (updates,) = _numbers(r"summary: (\d+) ticker updates", out)
    assert updates == len(totals)


def _risk(out: str) -> None:
    (checks,) = _numbers(r"summary: (\d+) exposure checks", out)
    assert checks > 0
    assert "RESUME trading: every book is live" in out


def _strategy(out: str) -> None:
    assert "strategy price_alerts comes from plugin 'price_alerts'" in out
    assert re.search(r"summary: \d+ price alerts", out)


SCRIPTS: dict[str, Callable[[str], None]] = {
    "arbitrage_callback.py": _arbitrage,
    "reference_price.py": _reference,
    "pnl.py": _pnl,
    "risk_monitor.py": _risk,
    "custom_strategy/run.py": _strategy,
}


def test_every_example_script_is_tested() -> None:
    found = {p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    found |= {p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.glob("*/run.py")}
    assert found == set(SCRIPTS)


@needs_venues
@pytest.mark.parametrize(
    "script",
    [pytest.param(s, marks=_installed("custom_strategy")) if s.startswith("custom_strategy/") else s for s in SCRIPTS],
)
def test_example_runs_against_the_simulator(script: str) -> None:
    result = _run([sys.executable, str(EXAMPLES / script), "--sim", "--duration", "3"])
    assert result.returncode == 0, f"{script} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    assert "simulator: binance at ws://127.0.0.1:" in result.stdout
    SCRIPTS[script](result.stdout)


def test_example_refuses_a_bad_duration() -> None:
    result = _run([sys.executable, str(EXAMPLES / "pnl.py"), "--sim", "--duration", "0"])
    assert result.returncode == 2 and "--duration must be positive" in result.stderr


# --- the example plugin packages -----------------------------------------------------------------


@pytest.mark.parametrize("folder", [pytest.param(f, marks=_installed(f)) for f in PACKAGES])
def test_example_package_passes_its_own_tests(folder: str) -> None:
    result = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"docs/examples/{folder}/tests"],
                  timeout=100)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout


@pytest.mark.parametrize("folder", [pytest.param(f, marks=_installed(f)) for f in PACKAGES])
def test_example_package_is_listed_by_marketfeeder_plugins(folder: str) -> None:
    _, entry_point, registers = PACKAGES[folder]
    result = _run([*_marketfeeder(), "plugins", "--json"])
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    assert plugins[entry_point]["registers"] == registers
    distribution = tomllib.loads((EXAMPLES / folder / "pyproject.toml").read_text())["project"]["name"]
    assert plugins[entry_point]["distribution"] == distribution


def _marketfeeder() -> list[str]:
    exe = Path(sys.executable).with_name("marketfeeder")
    return [str(exe)] if exe.exists() else [shutil.which("marketfeeder") or "marketfeeder"]


@needs_venues
@_installed("custom_strategy")
def test_strategy_package_runs_from_the_command_line() -> None:
    result = _run([*_marketfeeder(), "run", "--sim", "--quiet", "--duration", "3",
                   "--config", "docs/examples/custom_strategy/price_alerts.toml"])
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "marketfeeder:" in result.stdout and "binance:BTC-USDT" in result.stdout
    # --quiet logs at INFO: the strategy, loaded from its entry point, logs each alert it publishes.
    assert re.search(r"INFO marketfeeder_price_alerts: binance (BTC|ETH)-USDT mid", result.stderr), result.stderr[-3000:]


@needs_venues
@_installed("csv_sink")
def test_sink_package_runs_from_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "csv"
    result = _run([*_marketfeeder(), "run", "--sim", "--quiet", "--duration", "3", "--exchange", "binance",
                   "--symbol", "BTC-USDT", "--data", "trades", "--data", "book_ticker", "--sink", f"csv:{out}"])
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    from marketfeeder_csv_sink import read_events

    rows = read_events(out)
    assert {"Trade", "BookTicker"} <= {row["type"] for row in rows}
    assert all(row["exchange"] == "binance" and row["symbol"] in ("BTC-USDT", "") for row in rows)


# --- the how-to pages stay true ------------------------------------------------------------------

HOWTO_PAGES = sorted(HOWTO.glob("*.md"))
_DOTTED = re.compile(r"`((?:marketfeeder|marketfeeder_\w+)(?:\.\w+)+)(?:\(\))?`")
_EXCERPT = re.compile(r"<!-- excerpt: (?P<path>\S+) -->\s*```\w*\n(?P<code>.*?)```", re.DOTALL)


def _resolve(dotted: str) -> object:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


def test_howto_pages_exist() -> None:
    assert {p.name for p in HOWTO_PAGES} >= {"sink.md", "validator.md", "strategy.md", "exchange.md", "testing.md"}


@pytest.mark.parametrize("page", HOWTO_PAGES, ids=lambda p: p.name)
def test_howto_names_only_code_that_exists(page: Path) -> None:
    text = page.read_text()
    missing = []
    for dotted in sorted(set(_DOTTED.findall(text))):
        top = dotted.split(".")[0]
        if importlib.util.find_spec(top) is None:
            continue  # an example package that is not installed here
        try:
            _resolve(dotted)
        except (ImportError, AttributeError) as exc:
            missing.append(f"{dotted} ({type(exc).__name__}: {exc})")
    assert not missing, f"{page.name} names code that does not exist: {missing}"


@pytest.mark.parametrize("page", HOWTO_PAGES, ids=lambda p: p.name)
def test_howto_excerpts_match_the_code(page: Path) -> None:
    for match in _EXCERPT.finditer(page.read_text()):
        source = (ROOT / match["path"]).read_text()
        lines = [line.strip() for line in match["code"].splitlines()]
        stale = [line for line in lines if line and line not in ("...", "# ...") and line not in source]
        assert not stale, f"{page.name}: excerpt of {match['path']} no longer matches it: {stale}"


@pytest.mark.parametrize("page", HOWTO_PAGES, ids=lambda p: p.name)
def test_howto_links_point_at_files(page: Path) -> None:
    for target in re.findall(r"\]\((?!https?://|#)([^)#\s]+)", page.read_text()):
        assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


_RUNNABLE = re.compile(r"<!-- runnable: [^>]*-->\s*```python\n(?P<code>.*?)```", re.DOTALL)


@needs_venues
def test_testing_guide_end_to_end_example_runs() -> None:
    """The end-to-end test shown in testing.md, run with the Binance plugin as "myexchange"."""
    import anyio

    (match,) = _RUNNABLE.finditer((HOWTO / "testing.md").read_text())
    namespace: dict[str, object] = {}
    exec(compile(match["code"].replace("myexchange", "binance"), "testing.md", "exec"), namespace)
    tests = [obj for name, obj in namespace.items() if name.startswith("test_") and callable(obj)]
    assert len(tests) == 1
    anyio.run(tests[0])  # type: ignore[arg-type]
