"""Event codec for the bus: compact JSON arrays with a version header.

Wire form: ``[VERSION, "ClassName", field1, field2, ...]`` with the fields in declaration order (the
order of ``EventClass.fast``). Enums travel as their string values, book levels as ``[price, size]``
pairs. Decoding rebuilds the same event class (any class in ``marketfeeder.models.EVENT_TYPES``,
including plugin-registered ones) and is plain code: one ``orjson.loads`` plus per-field converters
prepared once per class.

Floats round-trip exactly (orjson writes the shortest repr). Non-finite floats (NaN, inf) are not
representable in JSON: they are rejected at encode time rather than silently turned into null.
"""

from __future__ import annotations

import enum
import math
import operator
import types
import typing
from collections.abc import Callable
from typing import Any

import attrs
import orjson

from marketfeeder.models import EVENT_TYPES, Event

__all__ = ["VERSION", "CodecError", "decode_event", "encode_event"]

#: Format version, first element of every message. Decoders reject versions they do not know.
VERSION = 1

_Conv = Callable[[Any], Any]


class CodecError(ValueError):
    """A payload that is not a valid encoded event (bad JSON, unknown version or class, wrong fields)."""


def _levels(value: Any) -> tuple[tuple[float, float], ...]:
    return tuple((float(p), float(s)) for p, s in value)


def _optional(inner: _Conv) -> _Conv:
    def conv(value: Any) -> Any:
        return None if value is None else inner(value)

    return conv


def _converter(tp: Any) -> _Conv | None:
    """Converter from the JSON value back to ``tp``; None when the JSON value is already right."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            inner = _converter(args[0])
            if inner is None:
                return None
            return _optional(inner)
        return None
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp
    if origin is tuple:
        items = typing.get_args(tp)
        if len(items) == 2 and items[1] is Ellipsis and typing.get_origin(items[0]) is tuple:
            return _levels
        return tuple
    if tp is float:
        return float  # JSON writes 1.0 as 1.0, but accept an int where a float is declared
    return None


class _ClassCodec:
    __slots__ = ("cls", "convs", "getter", "name", "nfields")

    def __init__(self, cls: type[Event]) -> None:
        hints = typing.get_type_hints(cls._Fields)
        fields = attrs.fields(cls._Fields)
        names = [f.name for f in fields]
        self.cls = cls
        self.name = cls.__name__
        self.nfields = len(names)
        self.getter = operator.attrgetter(*names)
        self.convs: list[tuple[int, _Conv]] = []
        for index, name in enumerate(names):
            conv = _converter(hints.get(name))
            if conv is not None:
                self.convs.append((index, conv))


_CODECS: dict[str, _ClassCodec] = {}
_BY_CLASS: dict[type[Event], _ClassCodec] = {}


def _codec_for_name(name: str) -> _ClassCodec:
    codec = _CODECS.get(name)
    if codec is None:
        cls = EVENT_TYPES.get(name)
        if cls is None:
            raise CodecError(f"unknown event class {name!r} (known: {', '.join(sorted(EVENT_TYPES))})")
        codec = _codec_for_class(cls)
    return codec


def _codec_for_class(cls: type[Event]) -> _ClassCodec:
    codec = _BY_CLASS.get(cls)
    if codec is None:
        codec = _ClassCodec(cls)
        _BY_CLASS[cls] = codec
        _CODECS[codec.name] = codec
    return codec


def _default(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"cannot encode {type(value).__name__}")


_DUMPS = orjson.dumps


def encode_event(event: Event) -> bytes:
    """The wire bytes of ``event``. Raises :class:`CodecError` for a non-finite float."""
    codec = _BY_CLASS.get(type(event)) or _codec_for_class(type(event))
    values = codec.getter(event)
    if codec.nfields == 1:
        values = (values,)
    data = _DUMPS([VERSION, codec.name, *values], default=_default)
    if b"null" in data:
        _check_finite(event, values)
    return data


def _check_finite(event: Event, values: tuple[Any, ...]) -> None:
    def bad(v: Any) -> bool:
        if isinstance(v, float):
            return not math.isfinite(v)
        if isinstance(v, tuple):
            return any(bad(x) for x in v)
        return False

    if any(bad(v) for v in values):
        raise CodecError(f"{type(event).__name__} has a non-finite float, which JSON cannot carry")


def decode_event(data: bytes | bytearray | memoryview | str) -> Event:
    """The event encoded in ``data``; :class:`CodecError` naming what is wrong otherwise."""
    try:
        items = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise CodecError(f"not JSON: {exc}") from None
    if not isinstance(items, list) or len(items) < 2:
        raise CodecError("an encoded event is a JSON array [version, class, fields...]")
    version = items[0]
    if version != VERSION:
        raise CodecError(f"unsupported event encoding version {version!r} (this decoder reads {VERSION})")
    name = items[1]
    if not isinstance(name, str):
        raise CodecError(f"event class must be a string, got {name!r}")
    codec = _CODECS.get(name) or _codec_for_name(name)
    values = items[2:]
    if len(values) != codec.nfields:
        raise CodecError(f"{name} has {codec.nfields} fields, payload carries {len(values)}")
    try:
        for index, conv in codec.convs:
            values[index] = conv(values[index])
    except (ValueError, TypeError) as exc:
        raise CodecError(f"{name}: bad field value: {exc}") from None
    event: Event = codec.cls.fast(*values)
    return event
