"""The protocol parser against arbitrary splits of the byte stream (no server needed)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from marketfeeder_nats.client import NatsClient, Subscription, encode_headers

_TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=8)
_SUBJECT = st.lists(_TOKEN, min_size=1, max_size=4).map(".".join)
_HEADERS = st.dictionaries(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ-", min_size=1, max_size=8),
                           st.text(alphabet="abc 123:/", max_size=10).map(str.strip), max_size=3)
_MSG = st.tuples(_SUBJECT, st.one_of(st.just(""), _SUBJECT), st.binary(max_size=300), st.one_of(st.none(), _HEADERS))


def _frame(sid: int, subject: str, reply: str, data: bytes, headers: dict[str, str] | None) -> bytes:
    middle = f" {reply}" if reply else ""
    if headers is None:
        return f"MSG {subject} {sid}{middle} {len(data)}\r\n".encode() + data + b"\r\n"
    hdr = encode_headers(headers)
    return f"HMSG {subject} {sid}{middle} {len(hdr)} {len(hdr) + len(data)}\r\n".encode() + hdr + data + b"\r\n"


@settings(max_examples=300)
@given(st.lists(_MSG, max_size=12), st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=50),
       st.integers(min_value=0, max_value=3))
def test_any_split_of_the_stream_yields_the_same_messages(
    msgs: list[tuple[str, str, bytes, dict[str, str] | None]], cuts: list[int], pings: int
) -> None:
    client = NatsClient("nats://127.0.0.1:1")
    sub = Subscription(client, 1, ">", "", 10_000, None)
    client._subs[1] = sub
    stream = b"+OK\r\n" + b"PING\r\n" * pings + b"".join(_frame(1, *m) for m in msgs) + b"PONG\r\n"
    position = 0
    index = 0
    while position < len(stream):
        size = cuts[index % len(cuts)]
        index += 1
        client._rbuf += stream[position : position + size]
        position += size
        client._parse()
    assert not client._rbuf  # everything consumed, nothing left half-parsed
    got = [(m.subject, m.reply, m.data, m.headers if m.headers is not None else None) for m in sub.pending]
    expected = [(s, r, d, (h if h is not None else None)) for s, r, d, h in msgs]
    assert got == expected
    assert client._pongs == 1
    assert client._wbuf == b"PONG\r\n" * pings  # every server PING answered
