"""Runs the configured checks on each event, counts failures, and isolates faulty checks.

The runtime builds one :class:`ValidationEngine` from the configured validators and calls
:meth:`ValidationEngine.check` per event. The dispatch table maps an event's exact class to the checks
that declared it (built once; a class seen for the first time is resolved by ``isinstance`` and cached),
so an event only meets its relevant checks and the all-pass case returns ``None`` without allocating.
For the built-in checks the table holds the check's handler for that class itself (``handler_for``), so a
check costs one Python call; :meth:`ValidationEngine.check_all` takes a whole frame's events at once.

The built-in checks also offer their fast tests as source (``pass_source``, and for the stateful ones
the state changes of their pass path, ``commit_source``); the engine compiles those of one event class
into a single function, built once per class. When every test passes, the state changes are applied,
those checks are known to pass and only the others run; when one is not sure (bad data, a value outside
the outlier band, an exception), nothing was changed and every check runs as configured, so verdicts,
their order, the checks' state and the counters are exactly what running each check gives.

A check that raises is a bug in that check (built-in checks never raise on bad data). The engine counts
it under ``validator_errors``, logs its first traceback, and treats the event as passing that check: a
faulty third-party check must not take the feed down.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from marketfeeder.models import EVENT_TYPES, Event, Instrument

from .base import ValidationContext, Validator, Verdict
from .builtin import BUILTIN_VALIDATORS, _Check

__all__ = ["StaticContext", "ValidationEngine"]

log = logging.getLogger("marketfeeder.validators")

_CheckFn = Callable[[Event, ValidationContext], "Verdict | None"]
_Entry = tuple[Validator, _CheckFn]
_PassFn = Callable[[Event, ValidationContext], bool]
#: Checks whose ``pass_source`` is trusted as is (a subclass may change what its handlers decide).
_FUSABLE: frozenset[type] = frozenset(t for t in BUILTIN_VALIDATORS.values() if isinstance(t, type))
#: Per event class: the fused test of the built-in checks (None: none of them applies), the
#: entries to run when it passes (the others, in configured order), and every entry (when it does not).
_Route = tuple["_PassFn | None", tuple[_Entry, ...], tuple[_Entry, ...]]

#: Failure counters are kept for at most this many (exchange, symbol) pairs; beyond it they go to
#: ``"*:*"``, so a stream of garbage symbols cannot grow the table without bound.
MAX_COUNTER_KEYS = 10_000
_OVERFLOW_KEY = ("*", "*")


class StaticContext:
    """A :class:`~marketfeeder.validators.base.ValidationContext` over a mapping of instruments.

    ``instruments`` maps ``(exchange, normalized symbol)`` to the instrument. The mapping is kept by
    reference, not copied: the runtime may pass a dict it fills in as instrument tables load.
    ``clock`` returns the wall clock in integer nanoseconds since the epoch.
    """

    __slots__ = ("_instruments", "now_ns")

    def __init__(
        self,
        instruments: Mapping[tuple[str, str], Instrument] | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._instruments: Mapping[tuple[str, str], Instrument] = {} if instruments is None else instruments
        #: The clock itself, so a call costs what the clock costs.
        self.now_ns: Callable[[], int] = clock

    def instrument(self, exchange: str, symbol: str) -> Instrument | None:
        return self._instruments.get((exchange, symbol))


class ValidationEngine:
    """Applies ``validators`` to events; see the module docstring."""

    __slots__ = (
        "_checked",
        "_context",
        "_dispatch",
        "_error_counts",
        "_failed",
        "_failures",
        "_validators",
        "_verdicts",
    )

    def __init__(self, validators: Sequence[Validator], context: ValidationContext) -> None:
        names: set[str] = set()
        for validator in validators:
            name = getattr(validator, "name", None)
            if not isinstance(name, str) or not name:
                raise TypeError(f"validator {validator!r} has no name (a non-empty str attribute 'name')")
            if name in names:
                raise ValueError(f"two validators are named {name!r}; check names must be unique")
            names.add(name)
            types = getattr(validator, "event_types", None)
            if not isinstance(types, tuple) or not all(isinstance(t, type) for t in types):
                raise TypeError(
                    f"validator {name!r}: event_types must be a tuple of event classes, got {types!r}"
                )
            if not callable(getattr(validator, "check", None)):
                raise TypeError(f"validator {name!r} has no check(event, context) method")
        self._validators: tuple[Validator, ...] = tuple(validators)
        self._context = context
        self._dispatch: dict[type[Event], _Route] = {}
        for cls in EVENT_TYPES.values():
            self._resolve(cls)
        self._failures: dict[tuple[str, str], dict[str, int]] = {}
        self._error_counts: dict[str, int] = {}
        self._checked = 0
        self._failed = 0
        self._verdicts = 0

    @property
    def validators(self) -> tuple[Validator, ...]:
        return self._validators

    @property
    def context(self) -> ValidationContext:
        return self._context

    def _resolve(self, cls: type[Event]) -> _Route:
        entries: list[_Entry] = []
        sources: list[tuple[str, dict[str, Any], str]] = []
        rest: list[_Entry] = []
        for validator in self._validators:
            if not any(issubclass(cls, t) for t in validator.event_types):
                continue
            if type(validator).check is _Check.check:
                # A built-in check: call its handler for this class directly (one call, not two).
                handler = validator.handler_for(cls)  # type: ignore[attr-defined]
                entry = (validator, validator.check if handler is None else handler)
                source = (
                    validator.pass_source(cls, str(len(entries)))  # type: ignore[attr-defined]
                    if type(validator) in _FUSABLE
                    else None
                )
            else:
                entry = (validator, validator.check)
                source = None
            if source is None:
                rest.append(entry)
            else:
                commit = validator.commit_source(cls, str(len(entries)))  # type: ignore[attr-defined]
                sources.append((source[0], source[1], commit))
            entries.append(entry)
        fused = _compile_pass(cls, sources, self._context) if sources else None
        self._dispatch[cls] = route = (fused, tuple(rest), tuple(entries))
        return route

    def validators_for(self, cls: type[Event]) -> tuple[Validator, ...]:
        """The checks an event of class ``cls`` meets, in configured order."""
        route = self._dispatch.get(cls)
        if route is None:
            route = self._resolve(cls)
        return tuple(validator for validator, _ in route[2])

    def check(self, event: Event) -> list[Verdict] | None:
        """Run the relevant checks on ``event``: ``None`` when all pass, else their verdicts."""
        self._checked += 1
        route = self._dispatch.get(event.__class__)
        if route is None:
            route = self._resolve(event.__class__)
        context = self._context
        fused, entries, every = route
        if fused is not None and not fused(event, context):
            entries = every
        verdicts: list[Verdict] | None = None
        for validator, check in entries:
            try:
                verdict = check(event, context)
            except Exception as exc:
                verdict = self._raised(validator, event, exc)
            if verdict is not None:
                verdicts = self._collect(validator, event, verdict, verdicts)
        if verdicts is not None:
            self._count(event, verdicts)
        return verdicts

    def check_all(self, events: Sequence[Event]) -> list[tuple[int, list[Verdict]]] | None:
        """:meth:`check` each of ``events``: ``None`` when all pass, else ``(index, verdicts)`` pairs
        for the events that did not, in order. The pipeline's per-frame entry point."""
        self._checked += len(events)
        dispatch = self._dispatch
        context = self._context
        failed: list[tuple[int, list[Verdict]]] | None = None
        index = -1
        for event in events:
            index += 1
            route = dispatch.get(event.__class__)
            if route is None:
                route = self._resolve(event.__class__)
            fused, entries, every = route
            if fused is not None and not fused(event, context):
                entries = every  # not sure: every check, as configured
            verdicts: list[Verdict] | None = None
            for validator, check in entries:
                try:
                    verdict = check(event, context)
                except Exception as exc:
                    verdict = self._raised(validator, event, exc)
                if verdict is not None:
                    verdicts = self._collect(validator, event, verdict, verdicts)
            if verdicts is not None:
                self._count(event, verdicts)
                if failed is None:
                    failed = []
                failed.append((index, verdicts))
        return failed

    def _raised(self, validator: Validator, event: Event, exc: Exception) -> Verdict | None:
        if type(validator).check is _Check.check:
            # A built-in handler called directly: answer what its check() answers on an exception.
            try:
                return validator.unforeseen(event, exc)  # type: ignore[attr-defined, no-any-return]
            except Exception as error:  # what check() itself would have raised
                exc = error
        self._validator_error(validator, event, exc)  # a bug in the check, not in the data: count, pass
        return None

    def _collect(
        self, validator: Validator, event: Event, verdict: object, verdicts: list[Verdict] | None
    ) -> list[Verdict] | None:
        if type(verdict) is not Verdict and not isinstance(verdict, Verdict):
            self._validator_error(
                validator,
                event,
                TypeError(f"check returned {type(verdict).__name__}, not Verdict or None"),
            )
            return verdicts
        if verdicts is None:
            return [verdict]
        verdicts.append(verdict)
        return verdicts

    def _count(self, event: Event, verdicts: list[Verdict]) -> None:
        self._failed += 1
        self._verdicts += len(verdicts)
        key = (event.exchange, event.symbol)
        counts = self._failures.get(key)
        if counts is None:
            if len(self._failures) >= MAX_COUNTER_KEYS:
                key = _OVERFLOW_KEY
            counts = self._failures.setdefault(key, {})
        for verdict in verdicts:
            counts[verdict.check] = counts.get(verdict.check, 0) + 1

    def _validator_error(self, validator: Validator, event: Event, exc: Exception) -> None:
        name = validator.name
        count = self._error_counts.get(name, 0) + 1
        self._error_counts[name] = count
        if count == 1:  # the first traceback is what a plugin author needs; the rest is counted
            log.error(
                "check %r raised on %s (counted in validator_errors, event passed); further errors "
                "from it are only counted",
                name,
                type(event).__name__,
                exc_info=exc,
            )

    def failures(self) -> dict[str, dict[str, int]]:
        """Failure counts by ``"exchange:SYMBOL"`` and then by check name (a copy)."""
        return {f"{exchange}:{symbol}": dict(counts) for (exchange, symbol), counts in self._failures.items()}

    def validator_errors(self) -> dict[str, int]:
        """How many times each check raised instead of answering (a copy)."""
        return dict(self._error_counts)

    def statistics(self) -> dict[str, int]:
        """Totals: events checked, events with at least one verdict, verdicts, validator errors."""
        return {
            "checked": self._checked,
            "failed": self._failed,
            "verdicts": self._verdicts,
            "validator_errors": sum(self._error_counts.values()),
        }

    def reset_counters(self) -> None:
        """Zero every counter (the checks' own state, such as rolling windows, is kept)."""
        self._failures.clear()
        self._error_counts.clear()
        self._checked = self._failed = self._verdicts = 0


def _compile_pass(
    cls: type[Event], sources: list[tuple[str, dict[str, Any], str]], context: ValidationContext
) -> _PassFn:
    """One function running the fast tests of several built-in checks for events of class ``cls``: every
    test first (no side effects), then, only when all passed, the state changes of the stateful ones."""
    namespace: dict[str, Any] = {"INF": math.inf, "FLOAT": float, "INT": int, "INSTRUMENT": context.instrument}
    direct = type(context) is StaticContext
    if direct:  # what StaticContext.instrument does, without the call
        namespace["INSTRUMENTS_GET"] = context._instruments.get  # type: ignore[attr-defined]
    tests: list[str] = []
    commits: list[str] = []
    for source, names, commit in sources:
        if direct:
            source = source.replace("INSTRUMENT(e.exchange, e.symbol)", "INSTRUMENTS_GET((e.exchange, e.symbol))")
        namespace.update(names)
        tests.extend("        " + line for line in source.splitlines())
        commits.extend("    " + line for line in commit.splitlines())
    code = "\n".join(
        ["def _pass(e, ctx):", "    try:", *tests, "    except Exception:", "        return False", *commits,
         "    return True", ""]
    )
    exec(compile(code, f"<fused checks for {cls.__name__}>", "exec"), namespace)  # built from our own snippets
    fused: _PassFn = namespace["_pass"]
    return fused
