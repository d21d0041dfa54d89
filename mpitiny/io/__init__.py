"""Files mpitiny reads and writes: run directories (``rundir``, ``journal``, ``commit``) and
ingested inputs (``h5format``: their layout; ``ingestion``: ``mpitiny ingest`` writes them;
``splits``: tasks read them).

The reading API of ingested inputs, and ``ingest``, are re-exported here (imported on first
use, so that ``import mpitiny.io.rundir`` stays cheap)::

    from mpitiny.io import open_splits
    data = open_splits("data.h5:/text").read(7)
"""
from __future__ import annotations

from typing import Any

_READING = ("Splits", "open_splits", "close_splits", "read_split", "count_splits", "verify")
__all__ = [*_READING, "ingest"]


def __getattr__(name: str) -> Any:
    if name in _READING:
        from mpitiny.io import splits
        return getattr(splits, name)
    if name == "ingest":
        from mpitiny.io import ingestion
        return ingestion.ingest
    raise AttributeError(f"module 'mpitiny.io' has no attribute {name!r}")
