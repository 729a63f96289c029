"""NATS JetStream bus for marketfeeder."""

from __future__ import annotations

from .client import (
    Msg,
    NatsClient,
    NatsConnectionError,
    NatsError,
    NatsTimeoutError,
    NoRespondersError,
    Subscription,
)
from .jetstream import JetStream, JetStreamError, KeyValue, PubAck, PullConsumer

__all__ = [
    "JetStream",
    "JetStreamError",
    "KeyValue",
    "Msg",
    "NatsClient",
    "NatsConnectionError",
    "NatsError",
    "NatsTimeoutError",
    "NoRespondersError",
    "PubAck",
    "PullConsumer",
    "Subscription",
]
