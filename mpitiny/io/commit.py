"""Final outputs appear whole or not at all: write under a temporary name, then rename.

``os.replace`` within one directory is atomic on POSIX file systems (and on Lustre/GPFS), so a
reader, or a rerun after a crash, sees either the old file, no file, or the complete new one,
never a half-written file that looks complete. Use it in tasks::

    from mpitiny.io.commit import atomic_output
    with atomic_output("out/part-3.tsv") as f:     # binary file object
        f.write(data)

    with atomic_h5("out/table.h5") as h5:          # an h5py.File opened for writing
        h5["x"] = array
"""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from typing import Iterator


def _temporary(path: str) -> str:
    head, tail = os.path.split(os.path.abspath(path))
    return os.path.join(head, f".{tail}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextmanager
def atomic_output(path: str, mode: str = "wb", durable: bool = True, **open_args) -> Iterator:
    """A file object for ``path`` that becomes ``path`` only when the block ends without error.

    ``durable=False`` skips the ``fsync``: readers still see the whole file or the old one,
    but a machine crash may lose it (right for files rewritten often, such as progress)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = _temporary(path)
    try:
        with open(tmp, mode, **open_args) as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextmanager
def atomic_h5(path: str, **file_args) -> Iterator:
    """An ``h5py.File`` for ``path`` that becomes ``path`` only when the block ends without error."""
    import h5py
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = _temporary(path)
    try:
        with h5py.File(tmp, "w", **file_args) as f:
            yield f
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_atomic(path: str, data: bytes, durable: bool = True) -> None:
    """Write ``data`` to ``path`` in one step (see ``atomic_output``)."""
    with atomic_output(path, durable=durable) as f:
        f.write(data)
