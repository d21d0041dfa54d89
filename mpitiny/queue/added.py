"""Each rank's store of the tasks added while the run goes on, which idle ranks steal from
one-sidedly (the engine side is ``mpitiny.engine.adding``).

An added task is known only to the rank that added it: its function and arguments (its
*payload*, a pickle) travel with it. So next to the DAG's queues (``stealq``, whose tasks every
rank can rebuild from the DAG it holds), each rank has:

- a word window: a header, a *ready ring* of slot numbers and a table of *slots*, six words
  each, one per added task the rank holds::

      KEY    the task's key (``mpitiny.io.added``)
      OFF    where its payload starts in the arena (published tasks)
      LEN    how long it is
      STATE  FREE, HELD (kept by the owner: waiting for its deps, or no room to publish),
             READY (in the ring), TAKEN (claimed and copied out), DONE, FAILED
      ORANK, OSLOT  -1, or where the task's own slot is: a thief that took several tasks
             runs one and publishes the others again in its own store (``forward``), so that
             they stay stealable; their status stays in their first slot

- a byte window, the *arena*: the payloads of published tasks, a ring of bytes.

**Publishing** (owner): copy the payloads of a batch (a family) into the arena, set their
slots, write the slot numbers at ring positions ``hi``, ``hi + 1``, ... (plain stores: no
other rank looks there yet) and grow ``hi`` with one ``Fetch_and_op``.

**Claiming**: the ring's ``CLAIM`` word packs ``next`` (bits 32..62) and ``hi`` (bits 0..31):
positions ``[next, hi)`` are ready. The owner takes the newest (a chunk of them, at most half
when other ranks may steal) with a ``Compare_and_swap`` that lowers ``hi`` (depth first: a
tree search's memory stays small); a thief takes the oldest half
with one that raises ``next`` (the biggest subtrees of a tree search), then copies the slot
numbers (``Get``), the slots (``Get``) and the payloads (``Get`` on the arena, one flush), marks
the slots TAKEN (one ``Accumulate`` over them) and adds what it copied to ``COPIED``. A busy
owner is never asked anything (the operations are those of ``stealq``, measured to stay
one-sided in ``shared/notes/mpi-facts.md``).

**Reuse**: positions below ``next`` were all taken by thieves; the owner writes ring position
``p`` only when ``p - RING`` is below a position every thief has copied (``COPIED == next``).
Arena bytes are freed in the order they were allocated, as their slots become TAKEN; slots are
reused once DONE or FAILED (a forwarded task's second slot once TAKEN). A payload that finds
no room stays with the owner (HELD, run by it, not stealable): the store being full slows
stealing, never loses a task.

**Status** (for deps): whoever finishes a task sets its slot DONE or FAILED at its owner (one
``Fetch_and_op``, a plain store on its own rank); a rank waiting on it reads the slot
(``status``). A slot word that at most one rank writes at a time (its owner while the task is
HELD or after the owner claimed it, its finisher at the end) is written with plain stores; the
ring's ``CLAIM`` word, which thieves and owner race for, only with atomics. A slot whose key is no
longer the task's was reused, which happens only after the task finished.
"""
from __future__ import annotations

from collections import deque

import numpy as np

CLAIM, COPIED = 0, 1
HEADER = 4
KEY, OFF, LEN, STATE, ORANK, OSLOT = 0, 1, 2, 3, 4, 5
SLOT_WORDS = 6
FREE, HELD, READY, TAKEN, DONE, FAILED = 0, 1, 2, 3, 4, 5
MASK31 = 0x7FFFFFFF
MAX_STEAL = 64          # slots a thief takes at once


class StoreFull(Exception):
    """Every slot of a rank's store holds a task that has not finished."""


def pack(nxt: int, hi: int) -> int:
    return (nxt << 32) | hi


def unpack(word: int) -> tuple:
    word &= 0xFFFFFFFFFFFFFFFF
    return (word >> 32) & MASK31, word & 0xFFFFFFFF


class AddedStore:
    """One rank's store: owner operations on its own windows, thief operations on others'.
    ``mem``: a word memory of ``words(nslots, ring)`` words; ``arena``: a byte memory."""

    def __init__(self, mem, arena, nslots: int, ring: int) -> None:
        self.mem, self.arena = mem, arena
        self.rank = mem.rank
        self.nslots, self.ring = nslots, ring
        self.ring0 = HEADER
        self.slots0 = HEADER + ring
        self.local = mem.local
        self.free = list(range(nslots - 1, -1, -1))     # popped from the end: 0, 1, 2, ...
        self.floor = 0                 # ring positions below this were copied out by thieves
        self.size = len(arena.local)
        self.head = self.tail = 0      # arena bytes [tail, head) hold published payloads
        self.allocs: deque = deque()   # (slot, end position) in the order allocated
        self.published = 0             # tasks this rank ever published

    @staticmethod
    def words(nslots: int, ring: int) -> int:
        return HEADER + ring + SLOT_WORDS * nslots

    def word(self, slot: int, field: int) -> int:
        return self.slots0 + SLOT_WORDS * slot + field

    # ------------------------------------------------------------------ owner side
    def new_slot(self, key: int, origin: tuple = (-1, -1)) -> int:
        """A slot for a task this rank now holds (HELD); ``StoreFull`` if none is free.
        ``origin``: the task's own slot, for a task taken from another rank (``forward``)."""
        if not self.free:
            self._collect()
            if not self.free:
                raise StoreFull(f"rank {self.rank} holds {self.nslots} added tasks that have "
                                "not finished")
        slot = self.free.pop()
        row = self.word(slot, 0)
        self.local[row + KEY] = key
        self.local[row + STATE] = HELD          # a free slot: no other rank writes it
        self.local[row + ORANK], self.local[row + OSLOT] = origin
        return slot

    def drop(self, slot: int) -> None:
        """Give back a slot whose task went elsewhere (a forward that found no room)."""
        self.local[self.word(slot, STATE)] = FREE
        self.free.append(slot)

    def forward(self, items: list) -> int:
        """Publish tasks ``[(owner, slot, key, payload)]`` taken from other ranks again here
        (their status stays where it is); returns how many (a leading part) found room."""
        if len(self.free) < len(items):
            self._collect()
        slots = [self.new_slot(key, (owner, slot))
                 for owner, slot, key, _ in items[:len(self.free)]]
        k = self.publish([(slot, item[3]) for slot, item in zip(slots, items)])
        for slot in slots[k:]:
            self.drop(slot)
        return k

    def _collect(self) -> None:
        self.mem.sync()
        rows = self.local[self.slots0:self.slots0 + SLOT_WORDS * self.nslots]
        states = rows[STATE::SLOT_WORDS]
        forwarded = rows[ORANK::SLOT_WORDS] >= 0
        self.free = np.flatnonzero((states >= DONE) | (states == FREE)
                                   | (forwarded & (states == TAKEN)))[::-1].tolist()

    def publish(self, items: list) -> int:
        """Make HELD tasks ``[(slot, payload)]`` stealable, all with one ``Fetch_and_op``;
        returns how many of them (a leading part) found room in the arena and the ring (the
        others stay HELD). Until that atomic no other rank sees them, so their slots and ring
        positions are written with plain stores."""
        self.mem.sync()
        nxt, hi = unpack(int(self.local[CLAIM]))
        room = self.ring - (hi - self.floor)
        if room < len(items) and int(self.local[COPIED]) == nxt:
            self.floor = nxt
            room = self.ring - (hi - self.floor)
        k = 0
        for slot, payload in items[:max(room, 0)]:
            n = len(payload)
            at = self._allocate(slot, n)
            if at < 0:
                break
            self.arena.local[at:at + n] = np.frombuffer(payload, dtype=np.uint8)
            row = self.word(slot, 0)
            self.local[row + OFF], self.local[row + LEN], self.local[row + STATE] = at, n, READY
            self.local[self.ring0 + (hi + k) % self.ring] = slot
            k += 1
        if k:
            self.published += k
            self.arena.sync()
            self.mem.sync()
            old = self.mem.fetch_add(self.rank, CLAIM, k)
            assert unpack(old)[1] == hi, "the ready ring changed under its owner"
        return k

    def _allocate(self, slot: int, n: int) -> int:
        """Arena offset for ``n`` bytes (-1: no room), freeing what thieves copied first."""
        self._release()
        start = self.head
        if start % self.size + n > self.size:          # no wrapping: skip to the next lap
            start += self.size - start % self.size
        if n > self.size or start + n - self.tail > self.size:
            return -1
        self.head = start + n
        self.allocs.append((slot, self.head))
        return start % self.size

    def _release(self) -> None:
        if not self.allocs:
            self.head = self.tail = 0
            return
        self.mem.sync()
        while self.allocs and self.local[self.word(self.allocs[0][0], STATE)] >= TAKEN:
            self.tail = self.allocs.popleft()[1]

    def pop(self, want: int = 1, share: int = 1) -> list:
        """The newest of this rank's published tasks, up to ``want`` of them but at most a
        1/``share`` of them (the rest for thieves), with one ``Compare_and_swap``:
        ``[(owner, slot, key, payload)]`` (owner, slot: where its status lives: here, or
        where a forwarded task came from), newest first; empty if none."""
        if not self.published:
            return []
        self.mem.sync()
        word = int(self.local[CLAIM])
        while True:
            nxt, hi = unpack(word)
            if nxt >= hi:
                return []
            take = max(1, min(want, (hi - nxt) // share))
            old = self.mem.cas(self.rank, CLAIM, word, pack(nxt, hi - take))
            if old == word:
                break
            word = old
        out = []
        for pos in range(hi - 1, hi - 1 - take, -1):
            slot = int(self.local[self.ring0 + pos % self.ring])
            row = self.word(slot, 0)
            at, n = int(self.local[row + OFF]), int(self.local[row + LEN])
            self.local[row + STATE] = TAKEN      # claimed by the owner: no other rank writes it
            out.append((*self.origin(self.rank, slot, self.local[row:]), int(self.local[row]),
                        self.arena.local[at:at + n].tobytes()))
        self.mem.sync()
        return out

    @staticmethod
    def origin(rank: int, slot: int, row) -> tuple:
        """``(rank, slot)`` where the status of the task in ``rank``'s ``slot`` lives."""
        return (rank, slot) if row[ORANK] < 0 else (int(row[ORANK]), int(row[OSLOT]))

    def has_ready(self) -> bool:
        nxt, hi = unpack(int(self.local[CLAIM]))
        return nxt < hi

    # ------------------------------------------------------------------ thief side
    def steal(self, victim: int) -> list:
        """Take the oldest half (at most ``MAX_STEAL``) of ``victim``'s published tasks,
        without asking it: ``[(owner, slot, key, payload)]`` (as ``pop``), empty if it had
        none."""
        mem = self.mem
        word = int(mem.get(victim, CLAIM, 1)[0])
        for _ in range(4):
            nxt, hi = unpack(word)
            left = hi - nxt
            if left <= 0:
                return []
            take = min((left + 1) // 2, MAX_STEAL)
            old = mem.cas(victim, CLAIM, word, pack(nxt + take, hi))
            if old == word:
                return self._copy_out(victim, nxt, take)
            word = old
        return []

    def _copy_out(self, victim: int, nxt: int, take: int) -> list:
        mem = self.mem
        first = nxt % self.ring
        slots = mem.get(victim, self.ring0 + first, min(take, self.ring - first))
        if len(slots) < take:
            slots = np.concatenate([slots, mem.get(victim, self.ring0, take - len(slots))])
        lo, hi = int(slots.min()), int(slots.max()) + 1
        if hi - lo <= 4 * take:
            span = mem.get(victim, self.word(lo, 0), SLOT_WORDS * (hi - lo))
            rows = [span[SLOT_WORDS * (s - lo):SLOT_WORDS * (s - lo + 1)] for s in slots.tolist()]
        else:
            rows = [mem.get(victim, self.word(s, 0), SLOT_WORDS) for s in slots.tolist()]
        payloads = self.arena.read_many([(victim, int(r[OFF]), int(r[LEN])) for r in rows])
        mem.add_many(victim, [self.word(s, STATE) for s in slots.tolist()], TAKEN - READY)
        mem.add(victim, COPIED, take)
        return [(*self.origin(victim, s, r), int(r[KEY]), p)
                for s, r, p in zip(slots.tolist(), rows, payloads)]

    # ------------------------------------------------------------------ any rank
    def finish(self, owner: int, slot: int, failed: bool) -> None:
        """Mark a task DONE (or FAILED) at the rank that holds its slot (its one writer now:
        here a plain store)."""
        if owner == self.rank:
            self.local[self.word(slot, STATE)] = FAILED if failed else DONE
            self.mem.sync()
        else:
            self.mem.swap(owner, self.word(slot, STATE), FAILED if failed else DONE)

    def status(self, owner: int, slot: int, key: int) -> int:
        """The state of the task ``key`` in ``owner``'s slot (DONE if the slot was reused)."""
        if owner == self.rank:
            self.mem.sync()
            row = self.local[self.word(slot, 0):self.word(slot, 0) + SLOT_WORDS]
        else:
            row = self.mem.get(owner, self.word(slot, 0), SLOT_WORDS)
        return int(row[STATE]) if int(row[KEY]) == key else DONE
