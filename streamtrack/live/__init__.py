"""The live pipeline: sources and capture, tracking loop, ZeroMQ publishing and control."""
