"""Files mpitiny reads and writes: run directories (``rundir``), ingested inputs (``h5data``).

The reading API of ingested inputs is re-exported here (imported on first use, so that
``import mpitiny.io.rundir`` stays cheap)::

    from mpitiny.io import open_splits
    data = open_splits("data.h5:/text").read(7)
"""
from __future__ import annotations

__all__ = ["Splits", "open_splits", "close_splits", "read_split", "count_splits", "verify",
           "ingest"]


def __getattr__(name: str):
    if name in __all__:
        from mpitiny.io import h5data
        return getattr(h5data, name)
    raise AttributeError(f"module 'mpitiny.io' has no attribute {name!r}")
