"""Pieces of a split: a map task over part of an ingested split (jobs/linesort.py,
jobs/grep.py).

An 8 MiB split of real text is one map of 5-40 ms, and where the work of a job is uneven (a
split of 1.6 M short lines for linesort, a split of source code full of matches for grep)
one such map was 0.1-0.2 of a whole run. Those jobs run ``pieces`` maps per split instead
(a second ``foreach`` variable ``piece``), each over a run of whole lines of it:

* ``piece_bounds(raw, piece, pieces)``: bytes ``[lo, hi)`` of piece ``piece``, cut after the
  first newline at or after each ``k / pieces`` of the bytes: whole lines, in order, covering
  the split (a piece is empty when one line spans the cut and the next).
* ``read_split(input, split)``: the split in this thread's reused buffer (``scratch``), kept
  there until the thread reads another split, so that the next pieces of a split on the same
  rank (the pieces of a split are consecutive instances, and the ranks run blocks of
  consecutive instances) do not read it again. A piece of another rank reads it itself.
* ``scratch(name, size)``: a uint8 buffer per thread and name, grown when too small: fresh
  pages cost a page fault each, on every task.

The module is small on purpose: grep imports it, and every rank imports grep before its
first task.
"""
from __future__ import annotations

import threading

import numpy as np

from mpitiny.io.splits import open_splits

_SCRATCH = threading.local()


def scratch(name: str, size: int) -> np.ndarray:
    """A uint8 buffer of ``size`` bytes, reused by this thread's later calls for ``name``
    (grown when too small): the maps' and reducers' buffers are as large as a split or a
    partition, and fresh pages cost a page fault each on every task."""
    have = getattr(_SCRATCH, name, None)
    if have is None or len(have) < size:
        have = np.empty(max(size, 1), np.uint8)
        setattr(_SCRATCH, name, have)
    return have[:size]


def read_split(input: str, split: int) -> tuple:
    """``(buffer, valid bytes)`` of split ``split`` in this thread's reused buffer (one byte
    longer than the split's chunks). The buffer keeps the split until this thread reads
    another, so the next piece of the same split takes it without a second read (one read of
    an 8 MiB split costs 1-3 ms here, a grep piece's work 1-8 ms)."""
    s = open_splits(input)
    have = getattr(_SCRATCH, "split_held", None)
    if have is not None and have[0] is s and have[1] == split:
        return have[2], have[3]
    _SCRATCH.split_held = None
    buf = scratch("split", s.span_bytes(split) + 1)
    n = s.read_into(split, buf)
    _SCRATCH.split_held = (s, split, buf, n)
    return buf, n


def piece_bounds(raw: np.ndarray, piece: int, pieces: int) -> tuple:
    """Bytes ``[lo, hi)`` of piece ``piece`` of ``pieces`` of ``raw`` (uint8): cut after the
    first newline at or after each ``k / pieces`` of the bytes, so the pieces are whole
    lines, in order, and cover ``raw``."""
    if not 0 <= piece < pieces:
        raise ValueError(f"piece {piece} of {pieces}")

    def cut(k: int) -> int:
        if k <= 0 or k >= pieces:
            return 0 if k <= 0 else len(raw)
        at = len(raw) * k // pieces - 1
        step = 4096
        while at < len(raw):
            found = raw[at:at + step].tobytes().find(b"\n")
            if found >= 0:
                return at + found + 1
            at, step = at + step, step * 2
        return len(raw)
    return cut(piece), cut(piece + 1)
