"""The feeder runtime: connections, pipeline, delivery, stats."""
