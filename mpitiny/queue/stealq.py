"""Per-rank ready queues that idle ranks steal from with one-sided atomics.

Design
------
Each rank owns a small table of *slots* in its RMA window. A slot is one 64-bit word that
describes a run of ready tasks and how much of it is already claimed::

    bit 63      kind: 0 = a run of global task ids [next, hi)
                      1 = a run of positions [next, hi) in this rank's ring of task ids
    bits 32..62 next  (first unclaimed)
    bits 0..31  hi    (end)

Anybody claims tasks from a slot with one ``Compare_and_swap`` that moves ``next`` forward:
the owner a chunk at a time, a thief half of what is left. Because the word describes its
tasks completely, a compare-and-swap that succeeds always claims tasks that the slot really
still holds, even if the thief's view of the table was stale (the ABA case is harmless), and
``next`` never passes ``hi``. A family of 10^6 instances is one slot, not 10^6 entries.

Tasks that become ready one by one (a DAG) are appended to the owner's *ring* (a plain array
of task ids in the window) and published by growing ``hi`` of the newest ring slot with one
``Fetch_and_op``. A thief that claimed ring positions copies the ids with one ``Get`` and then
adds the count to the victim's ``COPIED`` word; the owner reuses the ring from position 0 only
when every claimed position has been copied (single-step stealing as in SAWS / Scioto, in
MPI-3 terms).

Slots carry a priority word (a hint read together with the slots); the owner and the thieves
take from the highest priority first. The owner takes its newest slot first (depth-first,
the data of a just-finished parent is still warm); thieves take the fullest. A thief that
looks for work above some priority (``steal(victim, min_prio, prio_of)``) takes only such a
slot, or else the inbox entries of such tasks (below).

In a run of several priority levels the owner also keeps its ``TOP`` word (the highest
priority of its published, unclaimed tasks; ``advertise`` / ``refresh_top``), so that a rank
looking for higher-priority work can find who holds some with a one-word ``Get``; and one
rank's queue region holds the run-wide board of ready tasks per level
(``mpitiny.queue.levels``, ``BOARD_WORDS`` at ``board0``). Runs of a single level leave both
alone.

The *inbox* lets another rank place runs of tasks on this rank (``push_remote``: a
fetch-and-add picks an inbox word, a compare-and-swap fills it with ``(first id, count)``;
a single task goes into the ``MAIL`` word instead when that is free: one compare-and-swap,
the hand-off of a DAG's task to its placed child; the owner reads the word every round and
takes what it holds with one swap).
The owner moves inbox entries into its ring between tasks (or runs a lone one at once); while
it is busy (its ``BUSY`` word is set) a thief may take them itself (late binding), and a thief
looking for higher work takes the entries whose tasks are of a high enough priority (an entry
holds the run's first id; the caller's ``prio_of`` maps it to its group's priority), so that
an urgent task placed on a rank busy with a long task does not wait for it. Thieves add what
they took to the owner's ``INBOX_TAKEN`` at once; the owner adds what it took only when it is
no longer busy (``set_busy(False)``, after the chunk: one atomic less between a hand-off's
push and the child's start). Meanwhile a thief may read ``TAIL > TAKEN`` with the owner's
entries gone: it then reads the inbox and finds nothing there, while the owner runs that chunk.

Everything that thieves touch is changed only with atomics; the owner's private bookkeeping
(which slots it uses, ring tail, overflow list) lives in ordinary Python objects. A slot that
is used up (by the owner's claims or by thieves) goes back to the free list the next time the
owner looks at it (``claim``, ``has_work``, ``_collect``); the free list is a stack, so a rank
that hands off one task at a time reuses the same few slots, and thieves scan only those.

A steal costs one ``Get`` of the header, one ``Compare_and_swap`` and, for ring slots, one
more ``Get`` and one ``Accumulate`` (measured costs: ``shared/notes/mpi-facts.md``).

*Asking.* An idle rank that spins rather than sleeps between rounds (``may_ask``: a rank of
its own core, in its first 2 ms of idleness) leaves a request (its rank and a request number)
in a busy rank's ``WANT`` word (``ask``: one compare-and-swap, which fails if another rank's
request is there): the engine asks as soon as a chunk leaves nothing to run here, the rank
that answered the last request or a random one (before the first steal, which reads the
victim's queue first and so asks too late for the task that rank is about to release); a
thief asks the busy victim where it found nothing. The victim reads its own word when it
publishes a task it does not run itself (``give``: a local read) and, for a request it has not
answered yet (``given``), puts the task in the asker's ``MAIL`` word instead; no other atomic
operation is on the way of the task the victim runs next. The asker reads its ``MAIL`` every
round without an MPI call: a DAG's released task then reaches an idle rank without waiting
for that rank's next steal. An asker that gets its ``MAIL`` or steals takes its request as
answered (``settle``) and renews it in one swap when it next asks, or takes it back
(``withdraw``) when it finds work in its inbox or starts to sleep. A request that stands while
its rank works costs at most one task given to a busy rank's ``MAIL``, which the owner runs
next and thieves may take.
"""
from __future__ import annotations

import bisect
import time

import numpy as np

MASK31 = 0x7FFFFFFF
MASK32 = 0xFFFFFFFF
RING = 1
RANGE = 0
MAX_STEAL = 1 << 20

# Word offsets inside the queue region.
COPIED = 0        # thieves add what they copied out of the ring
INBOX_TAIL = 1    # pushers add 1 to pick an inbox word (and take it back if the inbox is full)
INBOX_TAKEN = 2   # consumers add what they took out; TAIL > TAKEN means entries may wait
BUSY = 3          # the owner's own flag: 1 while it runs tasks (thieves take inbox entries only then)
TOP = 4           # the owner's highest published priority + TOP_BIAS (0: none), several levels only
MAIL = 5          # one task pushed by another rank (an inbox entry that needs no inbox word), or 0
WANT = 6          # an idle rank asking for a task: its rank + 1 + request number << ASKER_BITS
HEADER = 7        # slots start here; then priorities, inbox, ring, board
TOP_BIAS = 1 << 32
ASKER_BITS = 24
ASKER_MASK = (1 << ASKER_BITS) - 1
BOARD_WORDS = 128  # counts of ready tasks per level and their summary (mpitiny.queue.levels)


def pack(kind: int, nxt: int, hi: int) -> int:
    """The signed 64-bit word of a slot."""
    word = (kind << 63) | (nxt << 32) | hi
    return word - (1 << 64) if kind else word


def unpack(word: int) -> tuple:
    """``(kind, next, hi)`` of a slot word."""
    word &= 0xFFFFFFFFFFFFFFFF
    return word >> 63, (word >> 32) & MASK31, word & MASK32


RUN_BITS = 21
MAX_RUN = (1 << RUN_BITS) - 1


def _entry(lo: int, hi: int) -> int:
    """An inbox word for the run ``lo..hi-1`` (never 0, which marks a free word)."""
    return ((lo << RUN_BITS) | (hi - lo)) + 1


def _run_of(entry: int) -> tuple:
    entry -= 1
    lo = entry >> RUN_BITS
    return lo, lo + (entry & MAX_RUN)


def _prio(entry: tuple) -> int:
    return entry[0]


def region_size(nslots: int, inbox: int, ring: int) -> int:
    """Words that a queue with these capacities needs in the window."""
    return HEADER + 2 * nslots + inbox + ring + BOARD_WORDS


class StealQueue:
    """One rank's queue: owner operations on its own window, thief operations on others'."""

    def __init__(self, mem, base: int, nslots: int = 32, inbox: int = 1024,
                 ring: int = 1 << 16) -> None:
        self.mem = mem
        self.rank = mem.rank
        self.base = base
        self.nslots = nslots
        self.slot0 = base + HEADER
        self.prio0 = self.slot0 + nslots
        self.inbox0 = self.prio0 + nslots
        self.ninbox = inbox
        self.ring0 = self.inbox0 + inbox
        self.nring = ring
        self.board0 = self.ring0 + ring
        self.local = mem.local
        # Owner's private bookkeeping.
        self.free = list(range(nslots - 1, -1, -1))
        self.active: list = []          # [(prio, seq, slot)] sorted ascending
        self.seq = 0
        self.ring_tail = 0
        self.ring_slot = -1             # slot whose hi == ring_tail and may grow
        self.ring_prio: int | None = None
        self.owner_ring_claims = 0      # ring positions the owner claimed since the last reset
        self.copied_base = 0
        self.slot_info: dict = {}       # slot -> (publish time, stolen?): for the task trace
        self.claimed_info = (0.0, False)  # that of the slot the last claim came from
        self.claimed_prio = 0             # and its priority
        self.top_word = 0                 # what this rank's TOP word holds
        self.last_victim = -1             # the rank ``steal`` looked at last
        self.asked = -1                   # the rank whose WANT word holds this rank's request
        self.token = 0                    # and that request's word
        self.answered = False             # whether a task came to MAIL since it asked
        self.requests = 0                 # requests made so far (numbers them)
        self.given = 0                    # the last request to this rank that it answered
        self.may_ask = False              # whether it may ask now (its owner spins: Backoff)
        self.untallied = 0                # inbox entries taken here, not yet on INBOX_TAKEN
        self.pending: list = []         # overflow: [(prio, kind, payload)] sorted by prio,
                                        # not visible to thieves

    # ------------------------------------------------------------------ owner side
    def push_range(self, lo: int, hi: int, prio: int = 0, stolen: bool = False) -> None:
        """Publish task ids ``lo..hi-1`` (ready) for this rank and for thieves."""
        if hi <= lo:
            return
        while hi - lo > MASK31 // 2:
            self.push_range(lo, lo + MASK31 // 2, prio, stolen)
            lo += MASK31 // 2
        if not self._publish(RANGE, lo, hi, prio, stolen):
            self._defer(prio, RANGE, (lo, hi))

    def push_ids(self, ids, prio: int = 0, stolen: bool = False) -> None:
        """Publish individual ready task ids (appended to the ring)."""
        n = len(ids)
        if n == 0:
            return
        if self.ring_tail + n > self.nring and (n > self.nring or not self._reset_ring()):
            self._defer(prio, RING, np.asarray(ids, dtype=np.int64))
            return
        start = self.ring_tail
        self.local[self.ring0 + start:self.ring0 + start + n] = ids
        self.ring_tail += n
        self.mem.sync()
        if self.ring_slot >= 0 and self.ring_prio == prio and self._is_active(self.ring_slot):
            disp = self.slot0 + self.ring_slot
            old = self.mem.fetch_add(self.rank, disp, n)
            kind, _, hi = unpack(old)
            if kind == RING and hi == start:
                return
            raise AssertionError("ring slot changed under its owner")   # pragma: no cover
        if not self._publish(RING, start, start + n, prio, stolen):
            self.ring_slot = -1
            self.ring_tail = start   # nothing was published: take the positions back
            self._defer(prio, RING, np.array(ids, dtype=np.int64))

    def claim(self, want):
        """Take up to ``want`` of this rank's highest-priority ready tasks, or None.

        ``want``: a count, or a function ``want(first, available)`` of the first task id to
        be taken and of how many tasks that run holds, returning the count (the engine sizes a
        chunk by how long tasks of that id's group take, and leaves the other ranks a share).
        Returns ``(lo, hi)`` for a run of ids, or a numpy array of ids.
        """
        if isinstance(want, int):
            count = want
            want = lambda first, available: count      # noqa: E731
        if self.pending:
            if not self.free:
                self._collect()
            if self.free:
                self._refill()
        self.mem.sync()
        for pos in range(len(self.active) - 1, -1, -1):
            prio, _, slot = self.active[pos]
            if self.pending and self.pending[-1][0] > prio:
                break
            disp = self.slot0 + slot
            word = int(self.local[disp])
            while True:
                kind, nxt, hi = unpack(word)
                if nxt >= hi:
                    self._retire(pos)
                    break
                first = nxt if kind == RANGE else int(self.local[self.ring0 + nxt])
                take = max(1, min(want(first, hi - nxt), hi - nxt))
                old = self.mem.cas(self.rank, disp, word, word + (take << 32))
                if old == word:
                    self.claimed_info = self.slot_info.get(slot) or (time.time(), False)
                    self.claimed_prio = prio
                    if kind == RANGE:
                        return nxt, nxt + take
                    self.owner_ring_claims += take
                    return self.local[self.ring0 + nxt:self.ring0 + nxt + take].copy()
                word = old
        if self.pending:
            return self._claim_pending(want)
        return None

    def set_busy(self, busy: bool) -> None:
        """Tell thieves whether this rank is running tasks (so its inbox waits for them); once
        it is not, count the inbox entries it took since (``untallied``) on ``INBOX_TAKEN``."""
        self.local[self.base + BUSY] = 1 if busy else 0
        if not busy and self.untallied:
            self.mem.add(self.rank, self.base + INBOX_TAKEN, self.untallied)
            self.untallied = 0

    def has_work(self) -> bool:
        """Whether this rank still holds unclaimed ready tasks (its own view). Slots that
        thieves used up are freed on the way (as ``_collect`` does): a rank that runs
        released tasks directly, never claiming, would otherwise keep them all and scan
        ever more of them (up to ``nslots``) each time it releases a task."""
        return self._collect() or bool(self.pending)

    def top_prio(self) -> int | None:
        """The highest priority of this rank's unclaimed ready tasks (None: it holds none)."""
        self.mem.sync()
        top = self.pending[-1][0] if self.pending else None
        for prio, _, slot in reversed(self.active):
            if top is not None and prio <= top:
                break
            _, nxt, hi = unpack(int(self.local[self.slot0 + slot]))
            if nxt < hi:
                return prio
        return top

    def advertise(self, prio: int) -> None:
        """Raise this rank's TOP word to ``prio`` (after publishing tasks of that priority)."""
        word = prio + TOP_BIAS
        if word > self.top_word:
            self.top_word = word
            self.local[self.base + TOP] = word

    def refresh_top(self) -> None:
        """Set the TOP word to the highest priority of the tasks still published (after a
        claim; thieves do not update it, so between claims it may promise too much)."""
        word = 0
        for prio, _, slot in reversed(self.active):
            _, nxt, hi = unpack(int(self.local[self.slot0 + slot]))
            if nxt < hi:
                word = prio + TOP_BIAS
                break
        if word != self.top_word:
            self.top_word = word
            self.local[self.base + TOP] = word

    def take_inbox(self) -> list:
        """Runs ``(lo, hi)`` of task ids other ranks placed here since the last call."""
        local, base = self.local, self.base
        mail = []
        if local[base + MAIL]:
            old = self.mem.swap(self.rank, base + MAIL, 0)
            if old:
                mail.append(_run_of(old))
                settle(self)                     # (or a send answered it: harmless)
        waiting = int(local[base + INBOX_TAIL]) - int(local[base + INBOX_TAKEN]) - self.untallied
        if not waiting:
            return mail
        withdraw(self)
        return mail + self._take_waiting(waiting)

    def awaits_answer(self) -> bool:
        """Whether a request of this rank stands unanswered at some rank (``ask``)."""
        return self.asked >= 0 and not self.answered

    def has_mail(self) -> bool:
        """Whether a task waits in this rank's ``MAIL`` word (its own view, no MPI call): an
        idle rank looks again before it waits, as a hand-off may have come during a steal."""
        return bool(self.local[self.base + MAIL])

    def _take_waiting(self, waiting: int) -> list:
        """``take_inbox``'s entries in inbox words (``waiting``: how many were pushed there)."""
        local = self.local
        self.mem.sync()
        if waiting == 1:                  # one push: its word is one of the 4 after TAIL - 1
            tail = int(local[self.base + INBOX_TAIL]) - 1
            for k in range(4):
                pos = (tail + k) % self.ninbox
                if local[self.inbox0 + pos]:
                    got = self._take_entries(self.rank, (pos,))
                    if got:
                        return got
        box = local[self.inbox0:self.inbox0 + self.ninbox].copy()   # other ranks write it
        return self._take_entries(self.rank, np.flatnonzero(box))

    def _take_entries(self, rank: int, positions) -> list:
        got = []
        for k in positions:
            old = self.mem.swap(rank, self.inbox0 + int(k), 0)
            if old:
                got.append(_run_of(old))
        if got and rank == self.rank:
            self.untallied += len(got)
        elif got:
            self.mem.add(rank, self.base + INBOX_TAKEN, len(got))
        return got

    def _publish(self, kind: int, lo: int, hi: int, prio: int, stolen: bool = False) -> bool:
        if not self.free:
            self._collect()
            if not self.free:
                return False
        slot = self.free.pop()
        self.local[self.prio0 + slot] = prio
        self.mem.swap(self.rank, self.slot0 + slot, pack(kind, lo, hi))
        self.seq += 1
        self.slot_info[slot] = (time.time(), stolen)
        entry = (prio, self.seq, slot)
        self.active.append(entry)
        self.active.sort()
        if kind == RING:
            self.ring_slot, self.ring_prio = slot, prio
        return True

    def _is_active(self, slot: int) -> bool:
        return any(s == slot for _, _, s in self.active)

    def _retire(self, pos: int) -> None:
        slot = self.active.pop(pos)[2]
        if slot == self.ring_slot:
            self.ring_slot = -1
        self.free.append(slot)

    def _collect(self) -> bool:
        """Free every slot that is used up; whether a slot with unclaimed tasks is left."""
        active, local, slot0 = self.active, self.local, self.slot0
        live = False
        for pos in range(len(active) - 1, -1, -1):
            _, nxt, hi = unpack(int(local[slot0 + active[pos][2]]))
            if nxt < hi:
                live = True
            else:
                self._retire(pos)
        return live

    def _reset_ring(self) -> bool:
        """Start the ring over at 0 if no ring position is unclaimed or still being copied."""
        self._collect()
        for _, _, slot in self.active:
            if unpack(int(self.local[self.slot0 + slot]))[0] == RING:
                return False
        self.mem.sync()
        copied = int(self.local[self.base + COPIED])
        if copied - self.copied_base != self.ring_tail - self.owner_ring_claims:
            return False
        self.copied_base = copied
        self.ring_tail = 0
        self.owner_ring_claims = 0
        self.ring_slot = -1
        return True

    def _defer(self, prio: int, kind: int, payload) -> None:
        """Keep work that found no slot or ring space, in priority order (last = highest)."""
        bisect.insort_right(self.pending, (prio, kind, payload), key=_prio)

    def _refill(self) -> None:
        """Move overflow entries into free slots, highest priority first."""
        while self.pending and self.free:
            prio, kind, payload = self.pending.pop()
            before = len(self.pending)
            if kind == RANGE:
                self.push_range(payload[0], payload[1], prio)
            else:
                self.push_ids(payload, prio)
            if len(self.pending) > before:
                return

    def _claim_pending(self, want):
        self.claimed_info = (time.time(), False)
        prio, kind, payload = self.pending.pop()
        self.claimed_prio = prio
        want = max(1, want(int(payload[0]), payload[1] - payload[0] if kind == RANGE
                           else len(payload)))
        if kind == RANGE:
            lo, hi = payload
            if hi - lo > want:
                self.pending.append((prio, kind, (lo + want, hi)))
                return lo, lo + want
            return lo, hi
        if len(payload) > want:
            self.pending.append((prio, kind, payload[want:]))
            return payload[:want]
        return payload

    # ------------------------------------------------------------------ thief side
    def steal(self, victim: int, min_prio: int | None = None, prio_of=None):
        """Take about half of ``victim``'s highest-priority ready tasks, without asking it;
        with ``min_prio``, only tasks of at least that priority: from a slot, else (given
        ``prio_of(task id)``, the priority of a task's group) inbox entries of such tasks.

        Returns ``(prio, (lo, hi))``, ``(prio, ids)``, ``(None, [(lo, hi), ...])`` (runs taken
        from the inbox of a busy victim: late binding) or None.
        """
        mem = self.mem
        self.last_victim = victim
        head = mem.get(victim, self.base + INBOX_TAIL, HEADER - INBOX_TAIL + 2 * self.nslots)
        words = head[HEADER - INBOX_TAIL:HEADER - INBOX_TAIL + self.nslots]
        prios = head[HEADER - INBOX_TAIL + self.nslots:]
        best, best_key = -1, (0, 0)     # best_key: (priority, tasks left) of slot ``best``
        for slot in np.flatnonzero(words):
            _, nxt, hi = unpack(int(words[slot]))
            if nxt < hi:
                key = (int(prios[slot]), hi - nxt)
                if (best < 0 or key > best_key) and (min_prio is None or key[0] >= min_prio):
                    best, best_key = int(slot), key
        if best >= 0:
            disp = self.slot0 + best
            word = int(words[best])
            for _ in range(4):
                kind, nxt, hi = unpack(word)
                left = hi - nxt
                if left <= 0:
                    break
                take = min((left + 1) // 2, MAX_STEAL)
                old = mem.cas(victim, disp, word, word + (take << 32))
                if old == word:
                    settle(self)
                    prio = best_key[0]
                    if kind == RANGE:
                        return prio, (nxt, nxt + take)
                    ids = mem.get(victim, self.ring0 + nxt, take)
                    mem.add(victim, self.base + COPIED, take)
                    return prio, ids
                word = old
        mail = int(head[MAIL - INBOX_TAIL])
        if (head[0] > head[INBOX_TAKEN - INBOX_TAIL] or mail) and head[BUSY - INBOX_TAIL] \
                and (min_prio is None or prio_of is not None):
            got = self._steal_inbox(victim, min_prio, prio_of, mail,
                                    head[0] > head[INBOX_TAKEN - INBOX_TAIL])
            if got is not None:
                settle(self)
            return got
        if min_prio is None and head[BUSY - INBOX_TAIL]:
            ask(self, victim, int(head[WANT - INBOX_TAIL]))
        return None

    def _steal_inbox(self, victim: int, min_prio: int | None = None, prio_of=None,
                     mail: int = 0, boxed: bool = True):
        """The ``MAIL`` word of a busy ``victim`` (``mail``: as its header showed it) if it
        holds a task, else half of the entries of its inbox (``boxed``: the header said some
        may wait there; at least one); with ``min_prio``, only tasks of at least that
        priority. An entry that changed between the ``Get`` and its swap (the owner took it,
        another rank pushed anew) is taken as it is now: its tasks are queued at their own
        priority all the same."""
        if mail and (min_prio is None or prio_of(_run_of(mail)[0]) >= min_prio):
            old = self.mem.swap(victim, self.base + MAIL, 0)
            if old:
                return None, [_run_of(old)]
        if not boxed:
            return None
        box = self.mem.get(victim, self.inbox0, self.ninbox)
        full = np.flatnonzero(box)
        if min_prio is not None:
            full = [k for k in full if prio_of(_run_of(int(box[k]))[0]) >= min_prio]
        if not len(full):
            return None
        got = self._take_entries(victim, full[: max(1, (len(full) + 1) // 2)])
        return (None, got) if got else None

    def push_remote(self, target: int, lo: int, hi: int) -> int:
        """Place the ready tasks ``lo..hi-1`` in ``target``'s inbox, one entry per run of up to
        2**21 ids; a single task in its ``MAIL`` word if that is free (one atomic: a hand-off).
        Returns where it stopped: ``hi`` if all were placed, else the first id that found the
        inbox full (the caller keeps those)."""
        if hi - lo == 1 and self.mem.cas(target, self.base + MAIL, 0, _entry(lo, hi)) == 0:
            return hi
        while lo < hi:
            end = min(hi, lo + MAX_RUN)
            pos = self.mem.fetch_add(target, self.base + INBOX_TAIL, 1)
            for k in range(4):
                disp = self.inbox0 + (pos + k) % self.ninbox
                if self.mem.cas(target, disp, 0, _entry(lo, end)) == 0:
                    break
            else:
                self.mem.fetch_add(target, self.base + INBOX_TAIL, -1)
                return lo
            lo = end
        return hi


def ask(q: StealQueue, victim: int, seen: int | None = None) -> None:
    """Leave a request of ``q``'s rank in ``victim``'s ``WANT`` word unless it has one
    pending at some rank (``seen``: the word as a steal just read it; another rank's request
    there is left alone). A request that was answered is replaced in the same swap when
    ``victim`` holds it, else taken back first."""
    if not q.may_ask or q.asked >= 0 and not q.answered:
        return
    if q.asked >= 0 and q.asked != victim:
        withdraw(q)
    old = q.token if q.asked >= 0 else 0
    if seen is not None and seen != old:
        return
    q.requests += 1
    token = q.rank + 1 + (q.requests << ASKER_BITS)
    if q.mem.cas(victim, q.base + WANT, old, token) == old:
        q.asked, q.token, q.answered = victim, token, False
    else:
        q.asked = -1


def settle(q: StealQueue) -> None:
    """``q``'s rank found work by stealing or in its ``MAIL``: its request counts as
    answered. It is replaced or taken back the next time the rank asks (or sleeps), not now:
    that would be one more atomic operation before that task starts; until then it costs at
    most one task given to this rank while it is busy, which thieves may take from its
    ``MAIL`` word."""
    q.answered = q.asked >= 0


def withdraw(q: StealQueue) -> None:
    """Take back ``q``'s request (it found work some other way, or stops spinning)."""
    if q.asked >= 0:
        q.mem.cas(q.asked, q.base + WANT, q.token, 0)
        q.asked = -1
        q.answered = False


def give(q: StealQueue, lo: int) -> bool:
    """Put task ``lo`` in the ``MAIL`` word of the rank that asked ``q``'s owner for a task, if
    one did, and that word is free; whether it did. Each request is answered once (``given``);
    the asker takes it back or replaces it, so that no atomic operation but the offer is on
    the way of the task this rank runs next."""
    want = int(q.local[q.base + WANT])
    if not want or want == q.given:
        return False
    q.given = want
    return offer(q, asker(want), lo)


def random_other(rng, rank: int, nranks: int) -> int:
    """A rank other than ``rank`` of ``nranks`` (at least 2), drawn uniformly with ``rng``:
    whom a thief steals from or asks."""
    other = rng.randrange(nranks - 1)
    return other + (other >= rank)


def asker(want: int) -> int:
    """The rank whose request a ``WANT`` word holds (-1: none)."""
    return (want & ASKER_MASK) - 1


def offer(q: StealQueue, target: int, lo: int) -> bool:
    """Put task ``lo`` in ``target``'s ``MAIL`` word; False if that holds a task already."""
    return q.mem.cas(target, q.base + MAIL, 0, _entry(lo, lo + 1)) == 0
