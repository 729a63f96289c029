"""JetStream over plain request/reply: streams, durable pull consumers, publish acks, key-value.

Only the API subset the bus uses, each call a JSON request to ``$JS.API.*`` under a timeout.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import attrs
import orjson

from .client import Msg, NatsClient, NatsConnectionError, NatsTimeoutError, NoRespondersError

__all__ = [
    "JetStream",
    "JetStreamError",
    "JsMeta",
    "KeyValue",
    "KvEntry",
    "PubAck",
    "PullConsumer",
    "WrongLastSequence",
    "parse_ack_reply",
    "parse_pub_ack",
]

API = "$JS.API"
#: JetStream error codes used here (``err_code`` in API errors).
ERR_STREAM_NOT_FOUND = 10059
ERR_CONSUMER_NOT_FOUND = 10014
ERR_NO_MESSAGE_FOUND = 10037
ERR_WRONG_LAST_SEQUENCE = 10071


class JetStreamError(Exception):
    """An error answer of the JetStream API (``code`` HTTP-like, ``err_code`` JetStream's own)."""

    def __init__(self, code: int, err_code: int, description: str, subject: str = "") -> None:
        super().__init__(f"{description} (code {code}, err_code {err_code}){' on ' + subject if subject else ''}")
        self.code = code
        self.err_code = err_code
        self.description = description


class WrongLastSequence(JetStreamError):
    """An expected-last-sequence publish (a KV compare-and-set) lost the race."""


@attrs.frozen
class PubAck:
    stream: str
    seq: int
    duplicate: bool = False


@attrs.frozen
class JsMeta:
    """Delivery metadata of a consumed JetStream message, from its ``$JS.ACK...`` reply subject."""

    stream: str
    consumer: str
    delivered: int  # delivery count (> 1: a redelivery)
    stream_seq: int
    consumer_seq: int
    timestamp_ns: int  # when the stream stored it
    pending: int  # messages left for this consumer after this one


def parse_ack_reply(reply: str) -> JsMeta:
    """Metadata from ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`` (also the
    form with domain and account hash, 2.9+)."""
    tokens = reply.split(".")
    if len(tokens) < 9 or tokens[0] != "$JS" or tokens[1] != "ACK":
        raise ValueError(f"not a JetStream ack subject: {reply!r}")
    t = tokens[2:9] if len(tokens) == 9 else tokens[4:11]
    return JsMeta(t[0], t[1], int(t[2]), int(t[3]), int(t[4]), int(t[5]), int(t[6]))


def _raise_api_error(data: Mapping[str, Any], subject: str) -> None:
    err = data.get("error")
    if err:
        code = int(err.get("code", 0))
        err_code = int(err.get("err_code", 0))
        desc = str(err.get("description", "unknown error"))
        cls = WrongLastSequence if err_code == ERR_WRONG_LAST_SEQUENCE else JetStreamError
        raise cls(code, err_code, desc, subject)


def parse_pub_ack(msg: Msg, subject: str = "") -> PubAck:
    if msg.status == 503:
        raise NoRespondersError(f"no stream listens on {subject or msg.subject}")
    data = orjson.loads(msg.data)
    _raise_api_error(data, subject)
    return PubAck(str(data["stream"]), int(data["seq"]), bool(data.get("duplicate", False)))


class JetStream:
    """JetStream API of one connection. Every call waits at most ``timeout`` seconds."""

    def __init__(self, nc: NatsClient, *, timeout: float = 5.0) -> None:
        self.nc = nc
        self.timeout = timeout

    async def api(self, subject: str, payload: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """One API request (``subject`` after ``$JS.API.``); raises :class:`JetStreamError` on an error reply."""
        full = f"{API}.{subject}"
        body = orjson.dumps(payload) if payload is not None else b""
        msg = await self.nc.request(full, body, max_wait=self.timeout)
        data: dict[str, Any] = orjson.loads(msg.data)
        _raise_api_error(data, full)
        return data

    # --- streams ---------------------------------------------------------------------------------

    async def stream_info(self, name: str) -> dict[str, Any] | None:
        try:
            return await self.api(f"STREAM.INFO.{name}")
        except JetStreamError as exc:
            if exc.err_code == ERR_STREAM_NOT_FOUND:
                return None
            raise

    async def ensure_stream(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Create stream ``config["name"]``, or update it when the settings given here differ."""
        name = str(config["name"])
        info = await self.stream_info(name)
        if info is None:
            return await self.api(f"STREAM.CREATE.{name}", config)
        current = info.get("config", {})
        if any(current.get(key) != value for key, value in config.items()):
            return await self.api(f"STREAM.UPDATE.{name}", {**current, **config})
        return info

    async def delete_stream(self, name: str) -> bool:
        try:
            await self.api(f"STREAM.DELETE.{name}")
            return True
        except JetStreamError as exc:
            if exc.err_code == ERR_STREAM_NOT_FOUND:
                return False
            raise

    async def get_last_msg(self, stream: str, subject: str) -> dict[str, Any] | None:
        """The last stored message on ``subject`` (``data`` decoded from base64), or None."""
        try:
            data = await self.api(f"STREAM.MSG.GET.{stream}", {"last_by_subj": subject})
        except JetStreamError as exc:
            if exc.err_code == ERR_NO_MESSAGE_FOUND:
                return None
            raise
        message: dict[str, Any] = data["message"]
        message["data"] = base64.b64decode(message.get("data") or b"")
        return message

    # --- publishing --------------------------------------------------------------------------------

    async def publish(
        self,
        subject: str,
        payload: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        msg_id: str | None = None,
        max_wait: float | None = None,
    ) -> PubAck:
        """Publish and wait for the stream's ack (one round trip; the sink pipelines instead)."""
        hdrs = dict(headers or {})
        if msg_id is not None:
            hdrs["Nats-Msg-Id"] = msg_id
        msg = await self.nc.request(subject, payload, headers=hdrs or None, max_wait=max_wait or self.timeout)
        return parse_pub_ack(msg, subject)

    # --- consumers ---------------------------------------------------------------------------------

    async def consumer_info(self, stream: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.api(f"CONSUMER.INFO.{stream}.{name}")
        except JetStreamError as exc:
            if exc.err_code == ERR_CONSUMER_NOT_FOUND:
                return None
            raise

    async def create_consumer(self, stream: str, config: Mapping[str, Any]) -> dict[str, Any]:
        """Create (or, if it exists with the same settings, return) a durable consumer."""
        durable = config.get("durable_name")
        if not durable:
            raise ValueError("a durable consumer needs 'durable_name'")
        return await self.api(f"CONSUMER.DURABLE.CREATE.{stream}.{durable}", {"stream_name": stream, "config": config})

    async def delete_consumer(self, stream: str, name: str) -> bool:
        try:
            await self.api(f"CONSUMER.DELETE.{stream}.{name}")
            return True
        except JetStreamError as exc:
            if exc.err_code == ERR_CONSUMER_NOT_FOUND:
                return False
            raise

    async def pull_consumer(self, stream: str, durable: str, *, max_pending: int = 65536) -> PullConsumer:
        consumer = PullConsumer(self, stream, durable)
        consumer.sub = await self.nc.subscribe(consumer.inbox, max_pending=max_pending)
        return consumer


class PullConsumer:
    """Fetches batches from a durable pull consumer through one inbox subscription."""

    def __init__(self, js: JetStream, stream: str, durable: str) -> None:
        self.js = js
        self.stream = stream
        self.durable = durable
        self.inbox = js.nc.new_inbox()
        self.sub: Any = None
        self.statuses: dict[int, int] = {}
        self._credit = 0
        self._gen = js.nc.generation

    async def fetch(self, batch: int, expires: float = 1.0) -> list[Msg]:
        """Up to ``batch`` messages; fewer (maybe none) when the consumer has no more within ``expires``
        seconds. A reconnect ends the fetch early with what arrived."""
        if batch <= 0:
            raise ValueError("batch must be positive")
        nc = self.js.nc
        sub = self.sub
        out: list[Msg] = []
        pending = sub.pending
        while pending and len(out) < batch:  # late deliveries of an earlier request
            msg = pending.popleft()
            if msg.status is None:
                out.append(msg)
        if len(out) >= batch:
            return out
        want = batch - len(out)
        request = {"batch": want, "expires": int(expires * 1e9)}
        gen = nc.generation
        await nc.publish(f"{API}.CONSUMER.MSG.NEXT.{self.stream}.{self.durable}", orjson.dumps(request), reply=self.inbox)
        done = False
        with_margin = expires + max(1.0, expires)
        try:
            while not done and len(out) < batch:
                await nc.wait_until(lambda: bool(pending) or nc.generation != gen, with_margin, what="pull messages")
                if nc.generation != gen:
                    break
                while pending and len(out) < batch:
                    msg = pending.popleft()
                    if msg.status is None:
                        out.append(msg)
                        continue
                    self.statuses[msg.status] = self.statuses.get(msg.status, 0) + 1
                    if msg.status in (404, 408, 409):  # no messages / request expired / limits
                        done = True
                        break
                    # 100: idle heartbeat; keep waiting
        except NatsTimeoutError:
            pass
        return out

    async def next_batch(self, batch: int, expires: float = 5.0) -> list[Msg]:
        """Streaming pull: the messages available now (at most ``batch``), waiting up to ``expires`` s
        for the first one. Pull requests stay outstanding between calls (about ``batch`` to
        ``1.5 * batch`` messages of credit), so a message is handed over as soon as it arrives
        instead of when a batch is full."""
        if batch <= 0:
            raise ValueError("batch must be positive")
        nc = self.js.nc
        pending = self.sub.pending
        if nc.generation != self._gen:
            self._credit = 0  # requests of the previous connection are gone
            self._gen = nc.generation
        if self._credit <= batch // 2:
            request = {"batch": batch, "expires": int(expires * 1e9)}
            await nc.publish(
                f"{API}.CONSUMER.MSG.NEXT.{self.stream}.{self.durable}", orjson.dumps(request), reply=self.inbox
            )
            self._credit += batch
            await nc.flush_writes()
        out: list[Msg] = []
        gen = nc.generation
        try:
            await nc.wait_until(lambda: bool(pending) or nc.generation != gen, expires + 1.0, what="pull messages")
        except NatsTimeoutError:
            self._credit = 0  # the request expired without a status reaching us
            return out
        while pending and len(out) < batch:
            msg = pending.popleft()
            if msg.status is None:
                out.append(msg)
                self._credit -= 1
                continue
            self.statuses[msg.status] = self.statuses.get(msg.status, 0) + 1
            if msg.status in (404, 408, 409):
                # A request ended; the server says how many of its messages were left undelivered.
                left = (msg.headers or {}).get("Nats-Pending-Messages")
                self._credit -= int(left) if left and left.isdigit() else batch
        self._credit = max(self._credit, 0)
        return out

    def reset(self) -> None:
        """Forget outstanding pull requests and undelivered messages (after the durable was recreated)."""
        if self.sub is not None:
            self.sub.pending.clear()
        self._credit = 0
        self._gen = self.js.nc.generation

    async def ack(self, msg: Msg) -> None:
        """Acknowledge one message (buffered; sent with the next write)."""
        if msg.reply:
            await self.js.nc.publish(msg.reply, b"+ACK")

    async def info(self) -> dict[str, Any] | None:
        return await self.js.consumer_info(self.stream, self.durable)

    async def close(self) -> None:
        if self.sub is not None:
            try:
                await self.js.nc.unsubscribe(self.sub)
            except NatsConnectionError:
                pass


# --- key-value --------------------------------------------------------------------------------------


@attrs.frozen
class KvEntry:
    key: str
    value: bytes
    revision: int
    created_ns: int | None = None


class KeyValue:
    """A JetStream key-value bucket (stream ``KV_<bucket>``) with compare-and-set writes.

    ``ttl`` expires entries that were not rewritten within it (the stream's max age): the base of leases.
    """

    def __init__(self, js: JetStream, bucket: str) -> None:
        if not bucket or any(c in bucket for c in ". *>"):
            raise ValueError(f"invalid bucket name {bucket!r}")
        self.js = js
        self.bucket = bucket
        self.stream = f"KV_{bucket}"

    @classmethod
    async def create(cls, js: JetStream, bucket: str, *, ttl: float | None = None, history: int = 1) -> KeyValue:
        kv = cls(js, bucket)
        config: dict[str, Any] = {
            "name": kv.stream,
            "subjects": [f"$KV.{bucket}.>"],
            "max_msgs_per_subject": history,
            "discard": "new",
            "allow_rollup_hdrs": True,
            "deny_delete": True,
            "storage": "file",
            "num_replicas": 1,
            "max_age": int(ttl * 1e9) if ttl else 0,
        }
        await js.ensure_stream(config)
        return kv

    def _subject(self, key: str) -> str:
        if not key or any(c in key for c in " *>") or key.startswith(".") or key.endswith("."):
            raise ValueError(f"invalid key {key!r}")
        return f"$KV.{self.bucket}.{key}"

    async def get(self, key: str) -> KvEntry | None:
        message = await self.js.get_last_msg(self.stream, self._subject(key))
        if message is None:
            return None
        return KvEntry(key, bytes(message["data"]), int(message["seq"]))

    async def put(self, key: str, value: bytes) -> int:
        return (await self.js.publish(self._subject(key), value)).seq

    async def create_key(self, key: str, value: bytes) -> int:
        """Write ``key`` only if it has no value; :class:`WrongLastSequence` if it has one."""
        return await self.update(key, value, 0)

    async def update(self, key: str, value: bytes, last_revision: int) -> int:
        """Write ``key`` only if its current revision is ``last_revision``; returns the new revision."""
        ack = await self.js.publish(
            self._subject(key), value, headers={"Nats-Expected-Last-Subject-Sequence": str(last_revision)}
        )
        return ack.seq

    async def keys(self) -> list[str]:
        """Keys currently holding a value (from the stream's per-subject counts)."""
        info = await self.js.api(f"STREAM.INFO.{self.stream}", {"subjects_filter": f"$KV.{self.bucket}.>"})
        subjects = info.get("state", {}).get("subjects") or {}
        prefix = f"$KV.{self.bucket}."
        return sorted(s[len(prefix) :] for s in subjects)
