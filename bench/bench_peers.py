"""marketfeeder side by side with cryptofeed and ccxt pro, same frames, same run; and the stack's limits.

cryptofeed 3 installs only on Python >= 3.13, so the whole comparison, ours and theirs alike, runs
under one 3.13+ interpreter as a subprocess: ``bench/peers/compare.py`` (see its docstring for what
is measured and how). The interpreter is ``$MARKETFEEDER_PEER_PYTHON`` (``nox -s bench`` builds
``.nox/bench-peers`` with core, the Binance and Backpack plugins, cryptofeed, ccxt, msgspec and orjson
and sets it); without it, that environment if it exists, else a 3.13+ interpreter that already has
those packages on PATH or under ``~/.pyenv/versions``. When there is none, ``run`` prints one line saying so and returns
no rows.

Standalone: ``python bench/bench_peers.py [ROUNDS]``.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _table import print_table

HERE = Path(__file__).resolve().parent
COMPARE = HERE / "peers" / "compare.py"
ENV = "MARKETFEEDER_PEER_PYTHON"
MIN_VERSION = (3, 13)
#: Modules the comparison imports; an interpreter without one of them cannot run it.
REQUIRED = ("marketfeeder_binance", "marketfeeder_backpack", "cryptofeed", "ccxt", "msgspec", "orjson", "websockets")
FRAMES_PER_TYPE = int(os.environ.get("MARKETFEEDER_PEER_FRAMES", "4000"))
TIMEOUT = 1800.0


def _probe(python: str, modules: tuple[str, ...] = ()) -> tuple[bool, str]:
    """(usable, reason): the interpreter runs, is >= 3.13 and imports ``modules``."""
    code = (
        "import sys, importlib.util\n"
        f"ok = sys.version_info[:2] >= {MIN_VERSION!r}\n"
        f"missing = [m for m in {list(modules)!r} if importlib.util.find_spec(m) is None]\n"
        "print(sys.version.split()[0], ok, ','.join(missing))\n"
    )
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"{python} does not run ({exc})"
    fields = out.stdout.split()
    if out.returncode != 0 or len(fields) < 2:
        return False, f"{python} does not run ({out.stderr.strip()[:200]})"
    if fields[1] != "True":
        return False, f"{python} is Python {fields[0]}, older than 3.13"
    if len(fields) > 2 and fields[2]:
        return False, f"{python} (Python {fields[0]}) lacks {fields[2].replace(',', ', ')}"
    return True, f"{python} (Python {fields[0]})"


def candidate_interpreters() -> list[str]:
    """Python >= 3.13 executables on this machine: PATH first, then pyenv builds."""
    found: list[str] = []
    for name in ("python3.15", "python3.14", "python3.13"):
        path = shutil.which(name)
        if path:
            found.append(path)
    roots = {os.path.expanduser("~/.pyenv/versions"), os.path.join(os.environ.get("PYENV_ROOT", "~/.pyenv"), "versions")}
    for root in sorted(roots):
        for path in sorted(glob.glob(os.path.join(os.path.expanduser(root), "3.1[3-9]*", "bin", "python3")), reverse=True):
            found.append(path)
    seen: set[str] = set()
    out = []
    for path in found:
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            out.append(path)
    return [p for p in out if _probe(p)[0]]


def find_peer_python() -> tuple[str | None, str]:
    """(interpreter ready to run the comparison or None, a one-line reason)."""
    configured = os.environ.get(ENV)
    if configured:
        ok, reason = _probe(configured, REQUIRED)
        return (configured if ok else None), reason
    built = HERE.parent / ".nox" / "bench-peers" / "bin" / "python"
    if built.exists() and _probe(str(built), REQUIRED)[0]:
        return str(built), f"{built} (built by nox -s bench)"
    bare = candidate_interpreters()
    for python in bare:
        ok, _ = _probe(python, REQUIRED)
        if ok:
            return python, python
    if not bare:
        return None, "no Python >= 3.13 on this machine (PATH, ~/.pyenv/versions)"
    return None, (f"{bare[0]} is Python >= 3.13 but lacks the peers' packages; `nox -s bench` builds "
                  f".nox/bench-peers with them, or set {ENV}")


def run(rounds: int = 5) -> list[dict[str, Any]]:
    python, reason = find_peer_python()
    if python is None:
        print(f"peer comparison (cryptofeed, ccxt) skipped: {reason}", flush=True)
        return []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "peers.json"
        cmd = [python, str(COMPARE), "--rounds", str(rounds), "--frames", str(FRAMES_PER_TYPE), "--out", str(out)]
        # Progress goes to stderr (inherited); the figures come back through the file.
        subprocess.run(cmd, check=True, timeout=TIMEOUT, stdout=subprocess.DEVNULL)
        report = json.loads(out.read_text())
    v = report["versions"]
    header = {
        "name": (f"peer run under {v['python']}: cryptofeed {v['cryptofeed']}, ccxt {v['ccxt']}, "
                 f"orjson {v['orjson']}, msgspec {v['msgspec']}, websockets {v['websockets']}; frames per type"),
        "unit": "frames",
        "values": [float(report["frames_per_type"])] * rounds,
        "higher_is_better": True,
    }
    return [header, *report["results"]]


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    results = run(rounds)
    if not results:
        return
    print_table(results)


if __name__ == "__main__":
    main()
