"""Run every benchmark in bench/, print a table, write bench/results/<date>-<python>.json and bench/RESULTS.md.

Each `bench/bench_*.py` exposes `run(rounds) -> list[dict]` with `name`, `unit`, `values` (one per round) and
`higher_is_better`. Figures are reported as median [min..max] over the rounds. These machines are shared and
noisy: comparisons between implementations are made as ratios inside one benchmark run, never against
figures from another day.

Usage: python bench/run.py [--rounds N] [NAME ...]   (NAME: e.g. book, pipeline; default: all)
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
import traceback
from pathlib import Path

from _table import fmt, summarize

HERE = Path(__file__).parent
LIBRARIES = ("marketfeeder", "anyio", "websockets", "orjson", "attrs", "trio", "uvloop", "duckdb", "pyarrow", "httpx")


def _machine() -> dict[str, object]:
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "cpus": os.cpu_count(),
        "libraries": {name: _version(name) for name in LIBRARIES},
    }


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _load(path: Path):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("names", nargs="*")
    args = parser.parse_args()
    files = sorted(HERE.glob("bench_*.py"))
    if args.names:
        files = [f for f in files if f.stem.removeprefix("bench_") in args.names]
    results: list[dict[str, object]] = []
    failures: list[str] = []
    for path in files:
        print(f"== {path.stem}", flush=True)
        try:
            module = _load(path)
            for item in module.run(args.rounds):
                item = dict(item)
                item["bench"] = path.stem
                item.update(summarize([float(v) for v in item["values"]]))
                results.append(item)
                print(f"   {item['name']:<60} {fmt(item['median']):>14} {item['unit']:<10} "
                      f"[{fmt(item['min'])}..{fmt(item['max'])}]", flush=True)
        except Exception:
            failures.append(path.stem)
            traceback.print_exc()
    stamp = datetime.datetime.now(datetime.UTC)
    report = {"date": stamp.isoformat(timespec="seconds"), "rounds": args.rounds, "machine": _machine(),
              "results": results, "failed": failures}
    out = HERE / "results" / f"{stamp:%Y-%m-%d}-py{platform.python_version()}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    write_markdown(report)
    print(f"wrote {out.relative_to(HERE.parent)} and bench/RESULTS.md")
    return 1 if failures else 0


def write_markdown(report: dict) -> None:  # type: ignore[type-arg]
    machine = report["machine"]
    libs = ", ".join(f"{k} {v}" for k, v in machine["libraries"].items() if v)
    lines = [
        "# Benchmark results",
        "",
        f"Run {report['date']} on {machine['platform']} ({machine['cpus']} CPUs), "
        f"{machine['implementation']} {machine['python']}; {report['rounds']} rounds each.",
        "",
        f"Libraries: {libs}.",
        "",
        "Each figure is the median [min..max] over the rounds. Ratios compare implementations measured in the",
        "same run, rounds interleaved; absolute figures are for this machine on this day only.",
        "",
        "| benchmark | measure | median | range | unit |",
        "|---|---|---:|---|---|",
    ]
    for item in report["results"]:
        lines.append(f"| {item['bench']} | {item['name']} | {fmt(item['median'])} | "
                     f"{fmt(item['min'])}..{fmt(item['max'])} | {item['unit']} |")
    if report["failed"]:
        lines += ["", "Failed: " + ", ".join(report["failed"])]
    (HERE / "RESULTS.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
