"""Streaming memory-bank tracking: frames in one at a time, bounded fixed-shape memory."""

from streamtrack.tracker.tracker import Tracker
from streamtrack.tracker.types import FrameResult, ObjectResult, Prompt, PromptError, TrackerConfig

__all__ = ["Tracker", "TrackerConfig", "Prompt", "PromptError", "FrameResult", "ObjectResult"]
