"""Shared printing for the benchmarks: one table, median [min..max] per figure."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from typing import Any


def summarize(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt(value: float) -> str:
    """Thousands apart for big figures, two decimals for small ones, four significant digits below 1."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:,.2f}"
    return f"{value:.4g}"


def print_table(results: Iterable[Mapping[str, Any]]) -> None:
    rows = list(results)
    if not rows:
        return
    width = max(len(str(r["name"])) for r in rows)
    print(f"{'benchmark':<{width}}  {'median':>14}  {'range':<26}  unit")
    for r in rows:
        s = summarize([float(v) for v in r["values"]])
        span = f"[{fmt(s['min'])}..{fmt(s['max'])}]"
        print(f"{r['name']:<{width}}  {fmt(s['median']):>14}  {span:<26}  {r['unit']}")
