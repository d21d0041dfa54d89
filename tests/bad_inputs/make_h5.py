"""Write the HDF5 files of the bad-input corpus into DIR/h5/ (``python make_h5.py DIR``).

The ``h5-*.json`` files of this directory name them by relative paths (``h5/NAME.h5``), and a
split path is relative to the current directory of ``mpitiny run``/``validate``: run those from
DIR. Every file starts as a small ingested text (4 splits of 64 KiB chunks, ``good.h5``) and is
then damaged in one way; see README.md for which file is wrong how.
"""
from __future__ import annotations

import os
import shutil
import sys

import h5py
import numpy as np

CHUNK = 64 << 10


def _text(n_splits: int = 4) -> bytes:
    """Lines that fill ``n_splits`` chunks of CHUNK bytes (the last one partly)."""
    line = b"the quick brown fox jumps over the lazy dog %06d\n"
    lines = []
    size = 0
    k = 0
    while size < (n_splits - 1) * CHUNK + CHUNK // 2:
        lines.append(line % k)
        size += len(lines[-1])
        k += 1
    return b"".join(lines)


def _ingest(src: str, out: str) -> None:
    from mpitiny.io.ingestion import ingest
    ingest([src], out, chunk=str(CHUNK))


def _copy(h5dir: str, name: str) -> str:
    path = os.path.join(h5dir, name)
    shutil.copyfile(os.path.join(h5dir, "good.h5"), path)
    return path


def _set_splits(path: str, table) -> None:
    with h5py.File(path, "r+") as f:
        f["text/splits"][...] = np.asarray(table, dtype=np.int64)


def _replace(path: str, name: str, data) -> None:
    """Replace dataset /text/NAME (attributes of the group kept)."""
    with h5py.File(path, "r+") as f:
        g = f["text"]
        del g[name]
        if data is not None:
            g.create_dataset(name, data=data)


def make_all(dest: str) -> str:
    """Write every file into ``dest/h5/`` (emptied first); return that directory."""
    h5dir = os.path.join(dest, "h5")
    shutil.rmtree(h5dir, ignore_errors=True)
    os.makedirs(h5dir)
    src = os.path.join(h5dir, "input.txt")
    with open(src, "wb") as f:
        f.write(_text())
    good = os.path.join(h5dir, "good.h5")
    _ingest(src, good)
    with h5py.File(good, "r") as f:
        table = f["text/splits"][()]
        extent = f["text/data"].shape[0]
    assert len(table) == 4 and extent == 4 * CHUNK, (table, extent)

    with open(os.path.join(h5dir, "not-hdf5.h5"), "wb") as f:
        f.write(b"this is a text file, not HDF5\n" * 10)
    open(os.path.join(h5dir, "empty-file.h5"), "wb").close()
    with open(good, "rb") as f:
        whole = f.read()
    with open(os.path.join(h5dir, "truncated.h5"), "wb") as f:
        f.write(whole[:len(whole) // 2])
    with h5py.File(os.path.join(h5dir, "not-ingested.h5"), "w") as f:
        f.create_group("text").create_dataset("data", data=np.zeros(16, np.uint8))
    empty = os.path.join(h5dir, "empty-input.txt")
    open(empty, "wb").close()
    _ingest(empty, os.path.join(h5dir, "no-splits.h5"))

    _replace(_copy(h5dir, "splits-float.h5"), "splits", table.astype(np.float64))
    _replace(_copy(h5dir, "splits-1d.h5"), "splits", table.reshape(-1))
    _replace(_copy(h5dir, "data-float.h5"), "data", np.zeros(extent // 4, np.float32))
    _replace(_copy(h5dir, "data-missing.h5"), "data", None)
    with h5py.File(_copy(h5dir, "chunk-bytes-zero.h5"), "r+") as f:
        f["text"].attrs["chunk_bytes"] = 0

    bad = table.copy()
    bad[2, 0] = 10 * CHUNK                              # past the end of data
    _set_splits(_copy(h5dir, "offset-beyond-data.h5"), bad)
    bad = table.copy()
    bad[3, 1] = 2 * CHUNK                               # starts in the last chunk, ends beyond
    _set_splits(_copy(h5dir, "length-beyond-data.h5"), bad)
    bad = table.copy()
    bad[[1, 2]] = bad[[2, 1]]                           # split 2 starts before split 1
    _set_splits(_copy(h5dir, "offsets-not-increasing.h5"), bad)
    bad = table.copy()
    bad[1, 1] = CHUNK + 100                             # split 1 runs into split 2's chunk
    _set_splits(_copy(h5dir, "offsets-overlap.h5"), bad)
    bad = table.copy()
    bad[1, 0] += 100                                    # not on a chunk boundary
    bad[1, 1] -= 100
    _set_splits(_copy(h5dir, "offset-unaligned.h5"), bad)
    bad = table.copy()
    bad[0, 1] = -5
    _set_splits(_copy(h5dir, "negative-length.h5"), bad)

    # A two-rank ingest's main file whose shard directory was not copied along: data is a
    # virtual dataset over missing-shard.h5.shards/part-0000{0,1}.h5, which do not exist.
    path = _copy(h5dir, "missing-shard.h5")
    with h5py.File(path, "r+") as f:
        g = f["text"]
        del g["data"]
        layout = h5py.VirtualLayout(shape=(extent,), dtype=np.uint8)
        half = extent // 2
        for r, at in enumerate((0, half)):
            layout[at:at + half] = h5py.VirtualSource(
                f"missing-shard.h5.shards/part-{r:05d}.h5", "/text/data", shape=(half,),
                dtype=np.uint8)
        g.create_virtual_dataset("data", layout, fillvalue=0)
        g.attrs["writers"] = 2
    return h5dir


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python make_h5.py DIR   (writes DIR/h5/*.h5)")
    print(make_all(sys.argv[1]))
