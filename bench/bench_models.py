"""Event construction: the frozen attrs __init__ versus the fast twin constructor used on the hot path."""

from __future__ import annotations

import timeit

from marketfeeder.models import Side, Trade

BUY = Side.BUY
N = 200_000


def run(rounds: int = 5) -> list[dict[str, object]]:
    args = ("binance", "BTC-USDT", 1_700_000_000_000_000_000, 1_700_000_000_000_100_000, 123456, 30000.5, 0.01, BUY, 1)
    frozen: list[float] = []
    fast: list[float] = []
    ratio: list[float] = []
    for _ in range(rounds):  # interleaved, so both see the same machine load
        t_frozen = timeit.timeit(lambda: Trade(*args), number=N) / N
        t_fast = timeit.timeit(lambda: Trade.fast(*args), number=N) / N
        frozen.append(t_frozen * 1e9)
        fast.append(t_fast * 1e9)
        ratio.append(t_frozen / t_fast)
    return [
        {"name": "Trade(...) frozen attrs __init__", "unit": "ns/event", "values": frozen, "higher_is_better": False},
        {"name": "Trade.fast(...) hot-path constructor", "unit": "ns/event", "values": fast, "higher_is_better": False},
        {"name": "speed-up of fast over frozen", "unit": "x", "values": ratio, "higher_is_better": True},
    ]


if __name__ == "__main__":
    for item in run():
        print(item["name"], [round(v, 1) for v in item["values"]], item["unit"])  # type: ignore[union-attr]
