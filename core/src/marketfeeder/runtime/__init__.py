"""The feeder runtime: connections, pipeline, delivery, stats.

``Feeder`` is what users embed (also importable as ``marketfeeder.Feeder``); the other modules are
its parts: :mod:`.connections` (the exchange-agnostic connection manager), :mod:`.pipeline` (the
per-frame path), :mod:`.dispatch` (delivery to buffers, callbacks, streams and sinks),
:mod:`.buffers` (bounded queues) and :mod:`.stats`.
"""

from .buffers import EventQueue, QueueClosed, RingBuffer
from .connections import FeederError
from .dispatch import EventStream, SinkRunner, Subscription
from .feeder import BookView, Feeder

__all__ = [
    "BookView",
    "EventQueue",
    "EventStream",
    "Feeder",
    "FeederError",
    "QueueClosed",
    "RingBuffer",
    "SinkRunner",
    "Subscription",
]
