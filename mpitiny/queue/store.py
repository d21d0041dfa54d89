"""Task outputs that other tasks read: in the rank's RMA window while they fit, else on disk.

A task's return value that some child reads (a child function with an ``inputs`` parameter)
is kept by the rank that ran the task, the *holder*:

- in its result window (``RmaBytes``), if the window has room, the values kept there stay under
  ``--mem-limit``, and the process's resident memory (psutil RSS) is under its share of the
  node (80 % of the node's memory / ranks on the node): any rank then reads it with one
  ``Get``, without the holder's help;
- otherwise in the holder's spill file ``spill/rank-R.bin`` under the run directory, which any
  rank reads with ``pread`` (the run directory is on a shared file system on a cluster).

Where the value is (holder, medium, kind, offset, length, object id) is written at the task's
metadata owner (``Layout.loc_word``), so a child finds it by the parent's task id alone.

Each kept value has a *reader count* in the holder's word window, set to the number of child
instances that will read it. A reader subtracts one after reading and adds one to the holder's
``RELEASED`` word; the holder, between task chunks, notices ``RELEASED`` moved, finds the
values whose count reached zero, and frees their window space. So outputs are freed when no
consumer is left, and a window of a few hundred MiB serves a job with far more intermediate data.

Values are kept encoded (``mpitiny.io.values``); of a ``Parts`` value a child that wants
only part p (``"part"`` in its dag.json entry: a reducer and its partition of every map
output) reads that part's bytes and nothing else (``fetch_many(..., part=p)``).
"""
from __future__ import annotations

import bisect
import os
import time
from typing import BinaryIO

import numpy as np

from mpitiny import procstat
from mpitiny.io.values import (KIND_BYTES, KIND_PARTS, buffers_of, decode, encode,
                               part_spans_of_rows, parts_head_bytes, parts_span, parts_spans,
                               size_of)

MEDIUM_WINDOW, MEDIUM_FILE = 0, 1
OFFSET_BITS = 44
RELEASED = 0          # word 0 of the object region: how many reads finished (readers add 1)
OBJECTS0 = 1          # then one reader-count word per object id


def pack_location(rank: int, medium: int, kind: int, offset: int) -> int:
    return (rank << 47) | (medium << 46) | (kind << OFFSET_BITS) | offset


def unpack_location(word: int) -> tuple:
    """``(rank, medium, kind, offset)``."""
    return (word >> 47, (word >> 46) & 1, (word >> OFFSET_BITS) & 3,
            word & ((1 << OFFSET_BITS) - 1))


class FreeList:
    """First-fit allocation of byte ranges in a window, with coalescing frees."""

    def __init__(self, size: int) -> None:
        self.starts = [0]
        self.sizes = [size]
        self.used = 0

    def alloc(self, n: int) -> int:
        n = max(n, 1)
        for k, size in enumerate(self.sizes):
            if size >= n:
                start = self.starts[k]
                if size == n:
                    del self.starts[k], self.sizes[k]
                else:
                    self.starts[k] += n
                    self.sizes[k] -= n
                self.used += n
                return start
        return -1

    def free(self, start: int, n: int) -> None:
        n = max(n, 1)
        self.used -= n
        k = bisect.bisect_left(self.starts, start)
        self.starts.insert(k, start)
        self.sizes.insert(k, n)
        if k + 1 < len(self.starts) and start + n == self.starts[k + 1]:
            self.sizes[k] += self.sizes.pop(k + 1)
            self.starts.pop(k + 1)
        if k > 0 and self.starts[k - 1] + self.sizes[k - 1] == start:
            self.sizes[k - 1] += self.sizes.pop(k)
            self.starts.pop(k)


class ResultStore:
    """One rank's kept outputs, and its way of reading anybody's."""

    def __init__(self, rank: int, window, counts, objects: int, spill_dir: str,
                 mem_limit: int | None = None, rss_limit: int | None = None) -> None:
        self.rank = rank
        self.window = window          # RmaBytes / LocalBytes: the values
        self.counts = counts          # word memory: RELEASED + reader counts
        self.capacity = window.size if mem_limit is None else min(window.size, mem_limit)
        self.space = FreeList(window.size)
        self.free_ids = list(range(objects - 1, -1, -1))
        self.live: dict = {}          # object id -> (offset, length)
        self.released_seen = 0
        self.spill_dir = spill_dir
        self._spill: BinaryIO | None = None
        self._spill_size = 0
        self._readers: dict = {}      # rank -> open spill file of that rank
        self.spilled = 0
        self.kept = 0
        self.rss_limit = rss_limit
        self._rss_checked = 0.0
        self._rss_over = False

    @staticmethod
    def words(objects: int) -> int:
        return OBJECTS0 + objects

    def keep(self, value, readers: int) -> tuple:
        """Keep ``value`` for ``readers`` reads; returns the 3 location words."""
        return self.keep_encoded(*encode(value), readers)

    def keep_encoded(self, kind: int, data, readers: int) -> tuple:
        """``keep`` of an encoded value (``bytes``, or ``Pieces`` copied one by one)."""
        self.collect()
        n = size_of(data)
        offset = -1
        if self.free_ids and self.space.used + n <= self.capacity and not self._over_limit():
            offset = self.space.alloc(n)
        if offset >= 0:
            oid = self.free_ids.pop()
            at = offset
            for piece in buffers_of(data):
                self.window.local[at:at + len(piece)] = np.frombuffer(piece, np.uint8)
                at += len(piece)
            self.counts.local[OBJECTS0 + oid] = readers
            self.live[oid] = (offset, n)
            self.kept += 1
            return pack_location(self.rank, MEDIUM_WINDOW, kind, offset), n + 1, oid
        offset = self._spill_append(data)
        self.spilled += 1
        return pack_location(self.rank, MEDIUM_FILE, kind, offset), n + 1, -1

    def fetch(self, loc: int, length: int, oid: int):
        """Read a kept value (from any rank) and count this read at its holder."""
        return self.fetch_many([(loc, length, oid)])[0]

    def fetch_many(self, locations, part: int | None = None, names: list | None = None) -> list:
        """``fetch`` of every ``(loc, length, oid)``, batched: the remote reads are issued
        together and completed with one flush per holder; then (not before: a holder frees a
        value once its count reaches 0) each holder's reader counts go down, again with one
        flush per holder.

        ``part``: of a ``Parts`` value read only that part's bytes (its offsets first: one
        more batch of small reads for remote values); other values are read whole.
        ``names[k]`` names value k in the error for a part out of range."""
        data: list = [None] * len(locations)
        kinds: list = []
        reads: dict = {}
        remote: list = []
        here: list = []
        for k, (loc, length, oid) in enumerate(locations):
            rank, medium, kind, offset = unpack_location(int(loc))
            n = int(length) - 1
            kinds.append(KIND_BYTES if part is not None and kind == KIND_PARTS else kind)
            if part is not None and kind == KIND_PARTS:
                where = names[k] if names else "a value"
                if medium == MEDIUM_FILE:
                    lo, hi = parts_span(self._read_here(rank, medium, offset,
                                                        min(n, parts_head_bytes(part))),
                                        part, where)
                    data[k] = self._read_here(rank, medium, offset + lo, hi - lo)
                elif rank == self.rank:
                    here.append((k, offset))
                else:
                    remote.append((k, rank, offset, n, where))
            elif medium == MEDIUM_FILE or rank == self.rank:
                data[k] = self._read_here(rank, medium, offset, n)
            else:
                remote.append((k, rank, offset, n, None))
            if oid >= 0:
                reads.setdefault(rank, []).append(OBJECTS0 + int(oid))
        if here:
            assert part is not None
            self._read_parts_here(here, part, names, data)
        if remote:
            self._read_remote(remote, part, data)
        for rank, words in reads.items():
            self.counts.add_many(rank, words, -1)
            self.counts.add(rank, RELEASED, len(words))
        return [decode(kind, d) for kind, d in zip(kinds, data)]

    def _read_parts_here(self, here: list, part: int, names: list | None, data: list) -> None:
        """Fill ``data`` with part ``part`` of the Parts values ``(k, offset)`` in this
        rank's window: their counts and offsets read for all at once (9,770 parents of a
        reducer: 3 numpy gathers instead of two reads and a parse each)."""
        local = self.window.local
        k, offset = (np.array(c, np.int64) for c in zip(*here))
        whole = np.ndarray((max(len(local) - 7, 0),), "<u8", local, strides=(1,))
        at = offset[:, None] + np.array([0, 8 * (part + 1), 8 * (part + 2)])
        np.minimum(at, len(whole) - 1, out=at)     # a value without the part raises first
        rel_start, rel_end = part_spans_of_rows(          # (indexing: take() copies the strided view)
            whole[at], part,
            lambda j: parts_span(bytes(local[offset[j]:offset[j] + 8]), part,
                                 names[k[j]] if names else "a value"))
        start, end = offset + rel_start, offset + rel_end
        view = memoryview(local)
        for kk, a, b in zip(k.tolist(), start.tolist(), end.tolist()):
            data[kk] = view[a:b].tobytes()

    def _read_here(self, rank: int, medium: int, offset: int, n: int) -> bytes:
        """Bytes of a value on disk (any rank's spill file) or in this rank's window."""
        if medium == MEDIUM_FILE:
            return self._spill_read(rank, offset, n)
        return bytes(self.window.local[offset:offset + n])

    def _read_remote(self, remote: list, part: int | None, data: list) -> None:
        """Fill ``data`` for the values in other ranks' windows: ``(k, rank, offset, n,
        where)``, where ``where`` is set for the Parts values of which only ``part`` is read."""
        whole = [r for r in remote if r[4] is None]
        split = [r for r in remote if r[4] is not None]
        if split:                                  # the offsets of the Parts values first
            assert part is not None
            size = parts_head_bytes(part)
            heads = self.window.read_many([(rank, offset, min(n, size))
                                           for _, rank, offset, n, _ in split])
            spans = parts_spans(heads, part, size, [r[4] for r in split])
            whole += [(k, rank, offset + lo, hi - lo, None)
                      for (k, rank, offset, _, _), (lo, hi) in zip(split, spans)]
        for (k, *_), got in zip(whole, self.window.read_many([(rank, offset, n)
                                                              for _, rank, offset, n, _ in whole])):
            data[k] = got

    def collect(self) -> None:
        """Free the window space of values that every reader has read."""
        released = int(self.counts.local[RELEASED])
        if released == self.released_seen or not self.live:
            return
        self.released_seen = released
        self.counts.sync()
        for oid in [o for o in self.live if self.counts.local[OBJECTS0 + o] <= 0]:
            offset, n = self.live.pop(oid)
            self.space.free(offset, n)
            self.free_ids.append(oid)

    def _over_limit(self) -> bool:
        """Whether the whole process is above ``rss_limit`` (psutil RSS, checked 4 times a
        second at most): then new outputs go to disk even if the window has room."""
        if self.rss_limit is None:
            return False
        now = time.monotonic()
        if now - self._rss_checked > 0.25:
            self._rss_checked = now
            self._rss_over = procstat.rss() > self.rss_limit
        return self._rss_over

    def in_window(self) -> int:
        return self.space.used

    def close(self) -> None:
        if self._spill is not None:
            self._spill.close()
            self._spill = None
        for f in self._readers.values():
            f.close()
        self._readers = {}

    def _spill_path(self, rank: int) -> str:
        return os.path.join(self.spill_dir, f"rank-{rank:05d}.bin")

    def _spill_append(self, data) -> int:
        if self._spill is None:
            os.makedirs(self.spill_dir, exist_ok=True)
            self._spill = open(self._spill_path(self.rank), "ab")
            self._spill_size = self._spill.tell()
        offset = self._spill_size
        assert self._spill is not None
        for piece in buffers_of(data):
            self._spill.write(piece)
        self._spill.flush()           # readers on other ranks open the file by name
        self._spill_size += size_of(data)
        return offset

    def _spill_read(self, rank: int, offset: int, n: int) -> bytes:
        f = self._readers.get(rank)
        if f is None:
            f = self._readers[rank] = open(self._spill_path(rank), "rb")
        return os.pread(f.fileno(), n, offset)
