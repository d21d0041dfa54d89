"""The engine (placeholder while it is split)."""
from mpitiny.engine.core import RunOptions, keep_freed_memory, run_file

__all__ = ["RunOptions", "keep_freed_memory", "run_file"]
