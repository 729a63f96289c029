"""Fault injection for the loopback simulator: a plan parsed from a spec string, and counters.

Spec (the CLI's ``--faults``): comma-separated ``key=value`` pairs, e.g.
``"skip_ids=0.01,dup=0.01,stall=every:30s:5s,rest_429=0.05,disconnect_every=10s"``.

Per-frame probabilities (each frame sent to each connection draws independently):
    ``drop_conn``        drop the TCP connection (no close frame)
    ``skip_ids``         drop an order-book frame, so the client sees a sequence gap
    ``dup``              send the frame twice
    ``reorder``          hold the frame back and send it after the next one
    ``malformed``        replace the frame by invalid JSON
    ``truncated``        send only the first half of the frame
    ``unknown_fields``   add an unknown key to the payload object
    ``unknown_event``    send an extra frame of an unknown stream and event type
    ``slow``             delay the write by ``slow_delay`` (default 50ms)
Per-record probabilities (a book ticker or trade, before encoding, for every receiver):
    ``crossed``          book ticker with the bid above the ask
    ``off_grid``         a price off the tick grid
    ``spike``            a price 50% away from the market
Per-request probabilities (on the venue's ``fault_paths``):
    ``rest_500``, ``rest_429`` (with ``Retry-After: <retry_after>``, default 1 s),
    ``rest_timeout`` (the reply is held back ``rest_delay``, default 30s, then a 504)
Schedules (per connection, from its opening):
    ``stall=every:30s:5s``  every 30 s, send nothing for 5 s (frames of the silence are lost)
    ``disconnect_every=10s`` close each connection (1001) after 10 s
Settings: ``seed=N`` (default: the simulator's seed), ``slow_delay``, ``rest_delay``, ``retry_after``.

Every injected fault is counted by kind in :class:`FaultCounters`, so tests can compare what the
server did with what the client reports. Decisions come from seeded ``random.Random`` instances:
the same plan, seed and traffic inject the same faults.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, MutableSequence
from decimal import Decimal
from typing import Any

import attrs

from marketfeeder.models import DataType
from marketfeeder.sim.model import SimBookTicker, SimEvent, SimTrade
from marketfeeder.sim.venue import SimConnection, SimFrame

__all__ = [
    "ABORT",
    "Abort",
    "Delay",
    "OutItem",
    "RecordFaults",
    "UNKNOWN_FIELD",
    "UNKNOWN_STREAM",
    "FRAME_FAULTS",
    "RECORD_FAULTS",
    "REST_FAULTS",
    "SCHEDULE_FAULTS",
    "ALL_FAULTS",
    "ConnectionFaults",
    "FaultCounters",
    "FaultPlan",
    "parse_duration",
]

FRAME_FAULTS = (
    "drop_conn",
    "skip_ids",
    "dup",
    "reorder",
    "malformed",
    "truncated",
    "unknown_fields",
    "unknown_event",
    "slow",
)
RECORD_FAULTS = ("crossed", "off_grid", "spike")
REST_FAULTS = ("rest_500", "rest_429", "rest_timeout")
SCHEDULE_FAULTS = ("stall", "disconnect_every")
ALL_FAULTS = FRAME_FAULTS + RECORD_FAULTS + REST_FAULTS + SCHEDULE_FAULTS
_SETTINGS = ("slow_delay", "rest_delay", "retry_after", "seed")

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_DURATION_UNIT = {None: 1.0, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

#: The key added by ``unknown_fields``; the payload's own keys are kept.
UNKNOWN_FIELD = "zzSimUnknown"
UNKNOWN_STREAM = "simUnknownStream"
ORDERBOOK = DataType.ORDERBOOK


def parse_duration(text: str) -> float:
    """``"30s"``, ``"500ms"``, ``"2m"``, ``"1.5"`` (seconds) -> seconds; ``ValueError`` otherwise."""
    match = _DURATION_RE.match(text)
    if match is None:
        raise ValueError(f"invalid duration {text!r}: expected a number with an optional unit ms, s, m or h")
    return float(match.group(1)) * _DURATION_UNIT[match.group(2)]


def _probability(key: str, value: str) -> float:
    try:
        p = float(value)
    except ValueError:
        raise ValueError(f"fault {key!r}: {value!r} is not a probability (a number from 0 to 1)") from None
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"fault {key!r}: probability must be between 0 and 1, got {value!r}")
    return p


@attrs.frozen
class FaultPlan:
    """Which faults to inject and how often. All zero (the default) injects nothing."""

    drop_conn: float = 0.0
    skip_ids: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    malformed: float = 0.0
    truncated: float = 0.0
    unknown_fields: float = 0.0
    unknown_event: float = 0.0
    slow: float = 0.0
    crossed: float = 0.0
    off_grid: float = 0.0
    spike: float = 0.0
    rest_500: float = 0.0
    rest_429: float = 0.0
    rest_timeout: float = 0.0
    #: (every, duration) in seconds.
    stall: tuple[float, float] | None = None
    disconnect_every: float | None = None
    slow_delay: float = 0.05
    rest_delay: float = 30.0
    retry_after: int = 1
    seed: int | None = None

    @classmethod
    def parse(cls, spec: str, *, seed: int | None = None) -> FaultPlan:
        """Parse ``"key=value,key=value"``; ``ValueError`` names the bad key or value.

        ``seed`` seeds the fault decisions unless the spec sets its own ``seed=``."""
        values: dict[str, Any] = {}
        for raw in spec.split(","):
            item = raw.strip()
            if not item:
                continue
            key, sep, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or not value:
                raise ValueError(f"fault spec item {item!r} is not key=value")
            if key in values:
                raise ValueError(f"fault {key!r} is given twice")
            if key == "stall":
                parts = value.split(":")
                if len(parts) != 3 or parts[0] != "every":
                    raise ValueError(
                        f"fault 'stall': expected every:INTERVAL:DURATION (e.g. every:30s:5s), got {value!r}"
                    )
                every, duration = parse_duration(parts[1]), parse_duration(parts[2])
                if every <= 0 or duration <= 0 or duration >= every:
                    raise ValueError(f"fault 'stall': need 0 < duration < interval, got {value!r}")
                values[key] = (every, duration)
            elif key == "disconnect_every":
                seconds = parse_duration(value)
                if seconds <= 0:
                    raise ValueError(f"fault 'disconnect_every' must be a positive duration, got {value!r}")
                values[key] = seconds
            elif key in ("slow_delay", "rest_delay"):
                values[key] = parse_duration(value)
            elif key in ("retry_after", "seed"):
                try:
                    values[key] = int(value)
                except ValueError:
                    raise ValueError(f"fault setting {key!r} must be an integer, got {value!r}") from None
                if key == "retry_after" and values[key] < 0:
                    raise ValueError(f"fault setting 'retry_after' must be >= 0, got {value!r}")
            elif key in FRAME_FAULTS or key in RECORD_FAULTS or key in REST_FAULTS:
                values[key] = _probability(key, value)
            else:
                known = ", ".join((*ALL_FAULTS, *_SETTINGS))
                raise ValueError(f"unknown fault {key!r} in fault spec; known: {known}")
        if seed is not None:
            values.setdefault("seed", seed)
        return cls(**values)

    def spec(self) -> str:
        """The plan back as a spec string (only what differs from the defaults)."""
        parts: list[str] = []
        default = FaultPlan()
        for field in attrs.fields(FaultPlan):
            value = getattr(self, field.name)
            if value == getattr(default, field.name):
                continue
            if field.name == "stall":
                parts.append(f"stall=every:{value[0]!r}s:{value[1]!r}s")
            elif field.name in ("disconnect_every", "slow_delay", "rest_delay"):
                parts.append(f"{field.name}={value!r}s")
            else:
                parts.append(f"{field.name}={value!r}")
        return ",".join(parts)

    @property
    def frame_faults(self) -> bool:
        """Whether any per-frame or per-connection fault is on (the fan-out takes a slower path)."""
        return any(getattr(self, k) > 0 for k in FRAME_FAULTS) or self.stall is not None

    @property
    def record_faults(self) -> bool:
        return any(getattr(self, k) > 0 for k in RECORD_FAULTS)

    @property
    def rest_faults(self) -> bool:
        return any(getattr(self, k) > 0 for k in REST_FAULTS)


class FaultCounters:
    """Injected faults by kind (server side), plus free-form extra counts."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = dict.fromkeys(ALL_FAULTS, 0)

    def add(self, kind: str, n: int = 1) -> None:
        self._counts[kind] = self._counts.get(kind, 0) + n

    def __getitem__(self, kind: str) -> int:
        return self._counts.get(kind, 0)

    def as_dict(self) -> dict[str, int]:
        return dict(self._counts)

    def injected(self) -> dict[str, int]:
        """Only the kinds injected at least once."""
        return {k: v for k, v in self._counts.items() if v}

    def total(self) -> int:
        return sum(self._counts[k] for k in ALL_FAULTS)

    def __repr__(self) -> str:
        return f"FaultCounters({self.injected()!r})"


class Abort:
    """Outbox marker: drop the connection here."""


class Delay:
    """Outbox marker: wait ``seconds`` before the next write."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


ABORT = Abort()
OutItem = str | Abort | Delay


def _add_unknown_field(payload: str) -> str | None:
    body = payload.lstrip()
    if not body.startswith("{"):
        return None
    inner = body[1:].lstrip()
    sep = "" if inner.startswith("}") else ","
    return '{"' + UNKNOWN_FIELD + '":1' + sep + inner


class ConnectionFaults:
    """The per-frame faults of one connection, with its own seeded random stream."""

    def __init__(self, plan: FaultPlan, counters: FaultCounters, seed: str, opened: float) -> None:
        self.plan = plan
        self.counters = counters
        self.rng = random.Random(seed)
        self.opened = opened
        self.held: str | None = None
        #: Set once ``drop_conn`` fired: nothing more is queued for the connection.
        self.dropped = False
        self._stall_index = 0  # last stall window counted
        self.stalled_frames = 0
        #: Frames offered to this connection by data type, before any fault (conservation checks).
        self.offered: dict[DataType, int] = {}

    def apply(
        self,
        conn: SimConnection,
        frame: SimFrame,
        wrap: Callable[[SimConnection, SimFrame], str],
        out: MutableSequence[OutItem],
        now: float,
    ) -> None:
        """Append what ``conn`` receives for ``frame`` to ``out`` (texts and markers)."""
        if self.dropped:
            return
        plan, rng, count = self.plan, self.rng, self.counters.add
        offered = self.offered
        offered[frame.data_type] = offered.get(frame.data_type, 0) + 1
        if plan.stall is not None:
            every, duration = plan.stall
            age = now - self.opened
            index = int(age // every)
            if index >= 1 and age - index * every < duration:
                if index != self._stall_index:
                    self._stall_index = index
                    count("stall")
                self.stalled_frames += 1
                return
        if plan.drop_conn and rng.random() < plan.drop_conn:
            count("drop_conn")
            self.dropped = True
            out.append(ABORT)
            return
        if plan.skip_ids and frame.data_type is ORDERBOOK and rng.random() < plan.skip_ids:
            count("skip_ids")
            return
        if plan.unknown_fields and rng.random() < plan.unknown_fields:
            payload = _add_unknown_field(frame.payload)
            if payload is not None:
                count("unknown_fields")
                frame = SimFrame(frame.stream, payload, frame.data_type)
        text = wrap(conn, frame)
        if plan.malformed and rng.random() < plan.malformed:
            count("malformed")
            text = text[: max(1, len(text) // 3)] + "\u00ab}{not json"
        elif plan.truncated and rng.random() < plan.truncated:
            count("truncated")
            text = text[: len(text) // 2]
        if plan.slow and rng.random() < plan.slow:
            count("slow")
            out.append(Delay(plan.slow_delay))
        texts = [text]
        if plan.dup and rng.random() < plan.dup:
            count("dup")
            texts.append(text)
        if self.held is not None:
            texts.append(self.held)
            self.held = None
        elif plan.reorder and rng.random() < plan.reorder:
            count("reorder")
            self.held = texts.pop(0)
        out.extend(texts)
        if plan.unknown_event and rng.random() < plan.unknown_event:
            count("unknown_event")
            # No timestamp: frame sequences stay reproducible.
            payload = '{"e":"simUnknownEvent","s":"SIM","n":' + str(self.counters["unknown_event"]) + "}"
            out.append(wrap(conn, SimFrame(UNKNOWN_STREAM, payload, DataType.STATUS)))


class RecordFaults:
    """Corrupts book tickers and trades (crossed, off-grid, spiked prices) before encoding."""

    def __init__(self, plan: FaultPlan, counters: FaultCounters, seed: str) -> None:
        self.plan = plan
        self.counters = counters
        self.rng = random.Random(seed)

    def apply(self, record: SimEvent, tick_size: str) -> tuple[SimEvent, str | None]:
        """The record to encode and the fault kind applied to it (None: untouched).

        The caller counts the fault once the record was actually encoded for someone."""
        plan, rng = self.plan, self.rng
        if isinstance(record, SimBookTicker):
            if plan.crossed and rng.random() < plan.crossed:
                # The bid a few ticks above the ask.
                bid = _shift(record.ask, tick_size, 1 + int(rng.random() * 5))
                return attrs.evolve(record, bid=bid), "crossed"
            if plan.off_grid and rng.random() < plan.off_grid:
                return attrs.evolve(record, bid=_off_grid(record.bid)), "off_grid"
            if plan.spike and rng.random() < plan.spike:
                return attrs.evolve(record, ask=_spike(record.ask, tick_size)), "spike"
        elif isinstance(record, SimTrade):
            if plan.off_grid and rng.random() < plan.off_grid:
                return attrs.evolve(record, price=_off_grid(record.price)), "off_grid"
            if plan.spike and rng.random() < plan.spike:
                return attrs.evolve(record, price=_spike(record.price, tick_size)), "spike"
        return record, None


def _decimals(text: str) -> int:
    return len(text.partition(".")[2])


def _shift(price: str, tick_size: str, ticks: int) -> str:
    value = Decimal(price) + Decimal(tick_size) * ticks
    return f"{value:.{_decimals(price)}f}"


def _off_grid(price: str) -> str:
    """Half a tick (or less) off: one more decimal digit than the grid has."""
    return price + "5" if "." in price else price + ".5"


def _spike(price: str, tick_size: str) -> str:
    tick = Decimal(tick_size)
    value = (Decimal(price) * Decimal("1.5") / tick).to_integral_value() * tick
    return f"{value:.{_decimals(price)}f}"
