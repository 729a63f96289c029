"""Sinks: where events go after the pipeline (files, databases, buses)."""

from .base import Sink, SinkFactory

__all__ = ["Sink", "SinkFactory"]
