"""driftcheck: tells ESamp users what in their installed vLLM moved, before a GPU-day is lost."""

__version__ = "0.1.0"
