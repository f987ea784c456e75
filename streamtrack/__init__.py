"""streamtrack: real-time streaming video object tracking with SAM 2."""

__version__ = "0.1.0"
