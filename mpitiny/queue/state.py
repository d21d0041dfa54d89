"""A key-value store that the tasks of one run share (Tiny Tasks §3.5), one-sided and atomic.

Tasks use it through ``mpitiny.state`` (one ``StateStore`` per rank, set by the engine)::

    from mpitiny import state
    state.add("lines", 120)                 # -> the new total, atomically, whoever else adds
    state.put_if_absent(b"word", 1)         # -> True for exactly one caller per key
    state.put("config", {"k": 3})           # any JSON value
    state.get("lines")                      # -> 120 (or the default)
    dict(state.items())                     # every key of the run (read one-sidedly)

Design
------
Keys (str or bytes) are hashed (BLAKE2b, 64 bits); the hash picks the owner rank and a start
slot, so the store is partitioned over all ranks like the DAG metadata. Each rank's part is an
open-addressing table in its RMA window, 4 words a slot::

    [hash, key location, value, value kind]

plus a heap of key and value bytes (bump-allocated with a fetch-and-add on a heap-top word).
Inserting claims an empty slot with ``Compare_and_swap(0 -> hash)``; the claimer then writes the
key bytes and publishes their location. Whoever finds ``hash`` in a slot waits for the location
(the claimer is mid-insert for microseconds), compares the bytes, and probes on if they differ.
``add`` is one ``Fetch_and_op`` on the value word of an integer entry; ``put`` writes a JSON
value into the heap and swaps its location into the value word. No rank is asked anything, and
per-key updates are atomic: 8 ranks adding to one counter lose nothing.

Value kinds: 0 integer (``add`` / ``put`` of an int), 1 JSON (``put`` of anything else).
Capacity is fixed per run (``mpitiny run --state-mem``); a full table or heap fails the calling
task with ``StateStoreFull``.
"""
from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Iterator

import numpy as np

SLOT_WORDS = 4
HEAP_TOP = 0          # word 0 of the region: bytes used in this rank's heap
HEADER_WORDS = 2
LOC_BITS = 24         # location word: offset << 24 | length  (keys and values < 16 MiB)
KIND_INT, KIND_JSON = 0, 1


class StateStoreFull(RuntimeError):
    """The run's state store has no room left (raise ``--state-mem``)."""


def _hash(key: bytes) -> int:
    h = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1
    return h or 1


def _as_bytes(key) -> bytes:
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode("utf-8", "surrogateescape")
    raise TypeError(f"state keys are str or bytes, not {type(key).__name__}")


class StateStore:
    """The store as seen from one rank: ``mem`` is a word memory (RMA or local), ``heap`` bytes."""

    def __init__(self, mem, base: int, slots: int, heap, heap_base: int = 0) -> None:
        if slots & (slots - 1):
            raise ValueError("slots must be a power of two")
        self.mem = mem
        self.nranks = mem.nranks
        self.base = base
        self.slots = slots
        self.table0 = base + HEADER_WORDS
        self.heap = heap
        self.heap_base = heap_base

    @staticmethod
    def words(slots: int) -> int:
        return HEADER_WORDS + SLOT_WORDS * slots

    # ------------------------------------------------------------------ public operations
    def add(self, key, amount: int = 1) -> int:
        """Add ``amount`` to the integer at ``key`` (0 if absent); returns the new value."""
        rank, slot, _ = self._find(_as_bytes(key), create=True)
        return self.mem.fetch_add(rank, slot + 2, int(amount)) + int(amount)

    def put(self, key, value: Any) -> None:
        """Set ``key`` to ``value`` (an int, or any JSON value)."""
        rank, slot, _ = self._find(_as_bytes(key), create=True)
        self._set(rank, slot, value)

    def put_if_absent(self, key, value: Any = 1) -> bool:
        """Set ``key`` to ``value`` only if no one did before; True for the one caller who did."""
        rank, slot, created = self._find(_as_bytes(key), create=True)
        if created:
            self._set(rank, slot, value)
        return created

    def get(self, key, default: Any = None) -> Any:
        found = self._find(_as_bytes(key), create=False)
        if found is None:
            return default
        rank, slot, _ = found
        return self._value(rank, self.mem.get(rank, slot, SLOT_WORDS))

    def items(self) -> Iterator[tuple]:
        """Every ``(key bytes, value)`` of the store (a snapshot, read one-sidedly)."""
        for rank in range(self.nranks):
            table = self.mem.get(rank, self.table0, SLOT_WORDS * self.slots).reshape(-1, 4)
            for row in table[np.flatnonzero(table[:, 0])]:
                loc = int(row[1])
                if not loc:
                    continue
                yield self._read(rank, loc), self._value(rank, row)

    # ------------------------------------------------------------------ internals
    def _find(self, key: bytes, create: bool):
        """``(rank, slot word, created)`` of ``key``; None if absent and not ``create``."""
        h = _hash(key)
        rank = h % self.nranks
        start = (h >> 20) & (self.slots - 1)
        for probe in range(self.slots):
            slot = self.table0 + SLOT_WORDS * ((start + probe) & (self.slots - 1))
            seen = int(self.mem.get(rank, slot, 1)[0])
            if seen == 0:
                if not create:
                    return None
                seen = self.mem.cas(rank, slot, 0, h)
                if seen == 0:
                    self.mem.put(rank, slot + 1, np.array([self._write(rank, key)], np.int64))
                    return rank, slot, True
            if seen == h and self._key_at(rank, slot) == key:
                return rank, slot, False
        if create:
            raise StateStoreFull(f"state store table of rank {rank} is full ({self.slots} keys)")
        return None

    def _key_at(self, rank: int, slot: int) -> bytes:
        for spin in range(100000):
            loc = int(self.mem.get(rank, slot + 1, 1)[0])
            if loc:
                return self._read(rank, loc)
            time.sleep(1e-6 * min(spin, 100))    # its inserter is between two operations
        raise RuntimeError("a state store key was never published")   # pragma: no cover

    def _write(self, rank: int, data: bytes) -> int:
        if len(data) >= 1 << LOC_BITS:
            raise StateStoreFull(f"state store entries are limited to {1 << LOC_BITS} bytes")
        offset = self.mem.fetch_add(rank, self.base + HEAP_TOP, len(data) + 1) + 1
        if offset + len(data) > self.heap.size:
            raise StateStoreFull(f"state store heap of rank {rank} is full "
                                 f"({self.heap.size >> 20} MiB)")
        self.heap.write(rank, self.heap_base + offset, data)
        return (offset << LOC_BITS) | len(data)

    def _read(self, rank: int, loc: int) -> bytes:
        return self.heap.read(rank, self.heap_base + (loc >> LOC_BITS), loc & ((1 << LOC_BITS) - 1))

    def _set(self, rank: int, slot: int, value: Any) -> None:
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            self.mem.put(rank, slot + 3, np.array([KIND_INT], np.int64))
            self.mem.swap(rank, slot + 2, int(value))
        else:
            loc = self._write(rank, json.dumps(value).encode())
            self.mem.put(rank, slot + 3, np.array([KIND_JSON], np.int64))
            self.mem.swap(rank, slot + 2, loc)

    def _value(self, rank: int, row) -> Any:
        if int(row[3]) == KIND_JSON:
            return json.loads(self._read(rank, int(row[2])))
        return int(row[2])
