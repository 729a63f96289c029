"""Where our Binance bookTicker and depth paths spend their time: cProfile top entries, then a
step-by-step breakdown (each step timed alone over the same frames the peer comparison uses).

``python bench/peers/profile_hot_paths.py [FRAMES]`` (any interpreter with marketfeeder and its
Binance plugin; the peer comparison's frames need no peer library).
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import frames as F
import orjson
from compare import OursImpl


def _per_frame(fn: Callable[[], None], n: int, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6


def _profile(title: str, fn: Callable[[], None]) -> None:
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(8)
    lines = [ln for ln in out.getvalue().splitlines() if ln.strip()]
    start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls"))
    print(f"\n== cProfile: {title} (sorted by own time)")
    print("\n".join(lines[start:start + 9]))


async def main(n: int) -> None:
    vf = F.VenueFrames("binance", n)
    ours = OursImpl(vf)
    await ours.setup()
    decode = ours.connector.decode

    # bookTicker
    frames = vf.frames["bookTicker"]
    datas = [orjson.loads(f)["data"] for f in frames]
    loads = orjson.loads
    now = time.time_ns

    def full() -> None:
        for f in frames:
            for _e in decode(f, now()):
                pass

    def just_loads() -> None:
        for f in frames:
            loads(f)

    def build_event() -> None:
        from marketfeeder.models import BookTicker

        fast = BookTicker.fast
        for d in datas:
            fast("binance", "BTC-USDT", None, 0, d["u"], 1.0, 2.0, 3.0, 4.0, None)

    def floats() -> None:
        for d in datas:
            float(d["b"]), float(d["B"]), float(d["a"]), float(d["A"])

    def clock() -> None:
        for _ in frames:
            now()

    print(f"binance bookTicker, {len(frames)} frames, µs/frame (best of 5):")
    for name, fn in (("connector.decode + time_ns + deliver loop", full), ("orjson.loads alone", just_loads),
                     ("BookTicker.fast(...) alone", build_event),
                     ("4 x float(str) alone", floats), ("time.time_ns() alone", clock)):
        print(f"   {name:<45} {_per_frame(fn, len(frames)):7.3f}")
    _profile("binance bookTicker decode", full)

    # depth into the live book
    depth = vf.frames["depthUpdate"]
    timed = await ours.prepare("depthUpdate", depth)
    parsed = [decode(f, 0)[0] for f in timed]

    def depth_full() -> None:
        on_delta = ours.sync.on_delta
        out: list[Any] = []
        for f in timed:
            for d in decode(f, now()):
                on_delta(d, out)  # type: ignore[arg-type]
            out.clear()

    def depth_decode_only() -> None:
        for f in timed:
            decode(f, 0)

    def depth_loads() -> None:
        for f in timed:
            loads(f)

    print(f"\nbinance depthUpdate into the live book, {len(timed)} diffs, µs/diff:")
    print(f"   {'decode + BookSync.on_delta':<45} {_per_frame(depth_full, len(timed), 1):7.3f}")
    print(f"   {'connector.decode alone':<45} {_per_frame(depth_decode_only, len(timed)):7.3f}")
    print(f"   {'orjson.loads alone':<45} {_per_frame(depth_loads, len(timed)):7.3f}")
    await ours.prepare("depthUpdate", depth)

    def apply_only() -> None:
        on_delta = ours.sync.on_delta
        out: list[Any] = []
        for d in parsed:
            on_delta(d, out)
            out.clear()

    print(f"   {'BookSync.on_delta alone (pre-decoded)':<45} {_per_frame(apply_only, len(parsed), 1):7.3f}")
    await ours.prepare("depthUpdate", depth)
    _profile("binance depthUpdate decode + BookSync.on_delta", depth_full)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 4000))
