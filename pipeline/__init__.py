"""Vigil: streaming video analytics. Cameras -> frame bus (Redis Streams) -> inference -> sinks."""

__version__ = "0.1.0"
