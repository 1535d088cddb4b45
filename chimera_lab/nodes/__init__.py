"""Ready-made nodes: frame sources, image steps and sinks."""

from .sinks import NullSink, StatsSink
from .sources import TestPatternSource, VideoFileSource, WebcamSource, video_fps
from .steps import EdgeDetect, GaussianBlur, Grayscale, Resize

__all__ = [
    "EdgeDetect",
    "GaussianBlur",
    "Grayscale",
    "NullSink",
    "Resize",
    "StatsSink",
    "TestPatternSource",
    "VideoFileSource",
    "WebcamSource",
    "video_fps",
]
