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
open-addressing table in its RMA window, 5 words a slot::

    [hash, key location, value, value kind, owner]

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

Exactly-once effects
--------------------
Tasks run at least once (a retry, a crash, a resume), but what a task does to the store takes
effect once. The engine tells the store which task runs (``task``, a task id); while it runs,
each update takes effect at once (``add`` returns the true total) and is logged:

- a failed attempt's updates are undone (``undo``: its adds subtracted, its puts put back if
  nobody changed them since), so a retry starts clean;
- ``put_if_absent`` records its task as the key's *owner* (the slot's fifth word): the same
  task asking again (a retry, a rerun of a task that crashed) gets True again, any other task
  False; a claim is not undone (another task may already have been told False);
- a task that succeeds hands its log to the engine (``take_log``: the net effect, encoded),
  which journals it with the task's DONE record; a resumed run starts with an empty store and
  ``replay``s the logs of every task journaled done, each rank the keys it holds, before any
  task runs. Tasks that were not journaled done run again and log again.

So the store of a resumed run holds exactly the effects of the tasks done so far, once each.
"""
from __future__ import annotations

import json
import time
from typing import Any, Iterator

import numpy as np

SLOT_WORDS = 5
VALUE, KIND, OWNER = 2, 3, 4   # words of a slot after the hash and the key location
HEAP_TOP = 0          # word 0 of the region: bytes used in this rank's heap
HEADER_WORDS = 2
LOC_BITS = 24         # location word: offset << 24 | length  (keys and values < 16 MiB)
KIND_INT, KIND_JSON, KIND_ABSENT = 0, 1, 2   # ABSENT: a key whose creation was undone
# (an ABSENT key that an ``add`` gave a value since holds that integer: ``_absent``)


class StateStoreFull(RuntimeError):
    """The run's state store has no room left (raise ``--state-mem``)."""


try:                # hashlib's own blake2b, without importing hashlib (OpenSSL: 3 ms a rank)
    from _blake2 import blake2b
except ImportError:     # pragma: no cover  (a Python built without it)
    from hashlib import blake2b


def _hash(key: bytes) -> int:
    h = int.from_bytes(blake2b(key, digest_size=8).digest(), "little") >> 1
    return h or 1


def _absent(row) -> bool:
    """Whether a slot's row holds no value: its creation was undone and no ``add`` since."""
    return int(row[KIND]) == KIND_ABSENT and int(row[VALUE]) == 0


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
        self.task = -1                  # the task running now (its updates are logged)
        self.ops: list | None = None    # its updates so far

    @staticmethod
    def words(slots: int) -> int:
        return HEADER_WORDS + SLOT_WORDS * slots

    # ------------------------------------------------------------------ public operations
    def add(self, key, amount: int = 1) -> int:
        """Add ``amount`` to the integer at ``key`` (0 if absent); returns the new value."""
        key = _as_bytes(key)
        rank, slot, created = self._find(key, create=True)
        total = self.mem.fetch_add(rank, slot + VALUE, int(amount)) + int(amount)
        if self.task >= 0:
            self._log().append(("add", key, int(amount), created))
        return total

    def put(self, key, value: Any) -> None:
        """Set ``key`` to ``value`` (an int, or any JSON value)."""
        key = _as_bytes(key)
        rank, slot, created = self._find(key, create=True)
        old = self._set(rank, slot, value)
        if self.task >= 0:
            self._log().append(("put", key, value, time.time(), old, created))

    def put_if_absent(self, key, value: Any = 1) -> bool:
        """Set ``key`` to ``value`` only if no one did before; True for the one caller who did
        (and again for the same task when it runs again)."""
        key = _as_bytes(key)
        rank, slot, created = self._find(key, create=True)
        if not created:
            kind, owner = self.mem.get(rank, slot + KIND, 2).tolist()
            if kind == KIND_ABSENT:     # its creation was undone: claim it now
                created = self.mem.cas(rank, slot + KIND, KIND_ABSENT, KIND_INT) == KIND_ABSENT
            elif self.task >= 0 and owner == self.task + 1:
                self._log().append(("claim", key, value))
                return True
        if created:
            self._set(rank, slot, value)
            if self.task >= 0:
                self.mem.put(rank, slot + OWNER, np.array([self.task + 1], np.int64))
                self._log().append(("claim", key, value))
        return created

    def get(self, key, default: Any = None) -> Any:
        found = self._find(_as_bytes(key), create=False)
        if found is None:
            return default
        rank, slot, _ = found
        row = self.mem.get(rank, slot, SLOT_WORDS)
        return default if _absent(row) else self._value(rank, row)

    def items(self) -> Iterator[tuple]:
        """Every ``(key bytes, value)`` of the store (a snapshot, read one-sidedly)."""
        for rank in range(self.nranks):
            table = self.mem.get(rank, self.table0, SLOT_WORDS * self.slots)
            table = table.reshape(-1, SLOT_WORDS)
            for row in table[np.flatnonzero(table[:, 0])]:
                loc = int(row[1])
                if not loc or _absent(row):
                    continue
                yield self._read(rank, loc), self._value(rank, row)

    # ------------------------------------------------------------------ exactly once
    def _log(self) -> list:
        if self.ops is None:
            self.ops = []
        return self.ops

    def take_log(self) -> bytes | None:
        """The net effect of the running task's updates, encoded for the journal (None if it
        made none); the log starts over."""
        ops, self.ops = self.ops, None
        if not ops:
            return None
        adds: dict = {}
        puts: dict = {}
        claims: dict = {}
        for op in ops:
            if op[0] == "add":
                adds[op[1]] = adds.get(op[1], 0) + op[2]
            elif op[0] == "put":
                puts[op[1]] = (op[2], op[3])
            else:
                claims[op[1]] = op[2]
        return json.dumps({"add": [[k.hex(), n] for k, n in adds.items()],
                           "put": [[k.hex(), v, t] for k, (v, t) in puts.items()],
                           "claim": [[k.hex(), v] for k, v in claims.items()]}).encode()

    def undo(self) -> None:
        """Take back the running task's updates (its attempt failed): adds subtracted, puts
        put back where nobody changed the key since, keys they created absent again; claims
        stay (see the module docstring)."""
        ops, self.ops = self.ops, None
        for op in reversed(ops or ()):
            if op[0] == "add":
                rank, slot, _ = self._find(op[1], create=True)
                left = self.mem.fetch_add(rank, slot + VALUE, -op[2]) - op[2]
                if op[3] and left == 0:            # created by this add: absent again
                    self.mem.cas(rank, slot + KIND, KIND_INT, KIND_ABSENT)
            elif op[0] == "put":
                rank, slot, _ = self._find(op[1], create=True)
                old_kind, old_word, kind, word = op[4]
                self._restore(rank, slot, (KIND_ABSENT if op[5] else old_kind, old_word, kind,
                                           word))

    def replay(self, logs: list) -> int:
        """Apply the journaled logs ``[(task id, log bytes)]`` of the tasks done in earlier
        runs to this rank's own keys (every rank replays the same logs, each its part);
        returns how many updates it applied. Puts of one key apply in the order they were
        made; claims keep their task as owner."""
        puts: list = []
        applied = 0
        for gid, data in logs:
            log = json.loads(data)
            for key_hex, n in log["add"]:
                key = bytes.fromhex(key_hex)
                if self._owner_rank(key) == self.mem.rank:
                    rank, slot, _ = self._find(key, create=True)
                    self.mem.fetch_add(rank, slot + VALUE, n)
                    applied += 1
            for key_hex, value in log["claim"]:
                key = bytes.fromhex(key_hex)
                if self._owner_rank(key) == self.mem.rank:
                    rank, slot, created = self._find(key, create=True)
                    if created:
                        self._set(rank, slot, value)
                        self.mem.put(rank, slot + OWNER, np.array([gid + 1], np.int64))
                    applied += 1
            for key_hex, value, stamp in log["put"]:
                key = bytes.fromhex(key_hex)
                if self._owner_rank(key) == self.mem.rank:
                    puts.append((stamp, key, value))
        for _, key, value in sorted(puts, key=lambda p: p[0]):
            rank, slot, _ = self._find(key, create=True)
            self._set(rank, slot, value)
            applied += 1
        return applied

    # ------------------------------------------------------------------ internals
    def _owner_rank(self, key: bytes) -> int:
        return _hash(key) % self.nranks

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

    def _set(self, rank: int, slot: int, value: Any) -> tuple:
        """Set the slot's value; returns the ``(kind, value word)`` it held before and the
        one it holds now."""
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            kind, word = KIND_INT, int(value)
        else:
            kind, word = KIND_JSON, self._write(rank, json.dumps(value).encode())
        old_kind = int(self.mem.get(rank, slot + KIND, 1)[0])
        self.mem.put(rank, slot + KIND, np.array([kind], np.int64))
        return old_kind, self.mem.swap(rank, slot + VALUE, word), kind, word

    def _restore(self, rank: int, slot: int, before: tuple) -> None:
        """Put back what a ``put`` replaced, unless the key changed again since."""
        old_kind, old_word, kind, word = before
        if self.mem.cas(rank, slot + VALUE, word, old_word) == word:
            self.mem.put(rank, slot + KIND, np.array([old_kind], np.int64))

    def _value(self, rank: int, row) -> Any:
        """The value of a slot's row (an ABSENT key's is the integer an ``add`` left)."""
        if int(row[KIND]) == KIND_JSON:
            return json.loads(self._read(rank, int(row[VALUE])))
        return int(row[VALUE])


class RemoteState:
    """The store as seen from a task run alone in a child process of a rank (which must not
    call MPI): every operation is a request to the rank (``request(bytes) -> bytes``), which
    performs it on its ``StateStore`` (``serve``), logged for the task like any other."""

    def __init__(self, request) -> None:
        self.request = request

    def _call(self, *args) -> Any:
        answer = json.loads(self.request(json.dumps(args).encode()))
        if "error" in answer:
            raise StateStoreFull(answer["error"]) if answer.get("full") else \
                RuntimeError(answer["error"])
        return answer["result"]

    def add(self, key, amount: int = 1) -> int:
        return self._call("add", _as_bytes(key).hex(), int(amount))

    def put(self, key, value: Any) -> None:
        self._call("put", _as_bytes(key).hex(), value)

    def put_if_absent(self, key, value: Any = 1) -> bool:
        return self._call("put_if_absent", _as_bytes(key).hex(), value)

    def get(self, key, default: Any = None) -> Any:
        found = self._call("get", _as_bytes(key).hex())
        return default if found is None else found[0]

    def items(self) -> Iterator[tuple]:
        for key_hex, value in self._call("items"):
            yield bytes.fromhex(key_hex), value


def serve(store: StateStore, request: bytes) -> bytes:
    """Perform a ``RemoteState`` request on ``store``; the answer (never raises)."""
    try:
        method, *args = json.loads(request)
        if method == "items":
            result: Any = [[k.hex(), v] for k, v in store.items()]
        elif method == "get":
            missing = object()
            value = store.get(bytes.fromhex(args[0]), missing)
            result = None if value is missing else [value]
        elif method in ("add", "put", "put_if_absent"):
            result = getattr(store, method)(bytes.fromhex(args[0]), args[1])
        else:
            raise ValueError(f"unknown state operation {method!r}")
        return json.dumps({"result": result}).encode()
    except StateStoreFull as exc:
        return json.dumps({"error": str(exc), "full": True}).encode()
    except Exception as exc:
        return json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode()
