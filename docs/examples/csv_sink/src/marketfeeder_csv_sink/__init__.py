"""An example marketfeeder sink plugin: events to CSV files."""

from .sink import CsvSink, read_events

__all__ = ["CsvSink", "read_events"]
