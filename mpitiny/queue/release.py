"""What finishing tasks makes ready: the dependency half of the scheduler.

State
-----
There is no central table of ``waiting`` / ``ready`` / ``finished`` tasks. The state of a task
lives in words on the rank that the ``Layout`` assigns to it:

- ``waiting``: its gate and/or count word is above zero;
- ``ready``: it sits in some rank's ``StealQueue`` (the rank that released it);
- ``running``: it was claimed from a queue by the rank that runs it;
- ``finished`` (done, failed, upstream-failed): recorded by the rank that finished it.

How a task becomes ready
------------------------
``finish(group, instances, failed)`` is called by the rank that just ran (or skipped) a chunk of
instances of one group. For every child group:

- a child that waits for the whole parent gets one atomic add on its gate:
  ``-(instances finished) + (instances failed) << 40``. The rank whose add brings the gate's
  count to zero *opens* the child;
- a child with element-wise parents gets one ``Get_accumulate`` per block of its instances'
  count words. Every instance whose count this rank brought to zero is released by this rank.

Opening a group that has no element-wise parents releases all its instances as one run of
task ids; otherwise it counts every instance's count word down by one (the gate's share).
A released instance whose word carries failed-parent marks is *upstream-failed*: it never runs,
and finishing it releases its own children in turn (with the mark).

The children of parent instances are found in the dependencies' inverses
(``mpitiny.queue.children``). Up to ``FEW`` child instances are counted down one ``Fetch_and_op``
each (completed in shared memory without the target's help); more, in blocks of
``Get_accumulate``, one per run of nearby count words. A child that waits for one task only
(its count or gate starts at 1: a chain's link, a tree's node) is released by that task with
no atomic at all: nothing else counts it down, and every task finishes once in a run.

An idle rank may mark a count word ``RESERVED`` (``mpitiny.engine.loop.reserve``: it will run
that instance itself, watching the word), or mark it in its own count-down (``finish_one``'s
``reserve``, ``count_two_reserving``: the first count-down of an instance that waits for two
tasks, so that the other one's cannot land between the two). A
count-down that brings a reserved word to zero leaves the instance alone: not ready, not
upstream-failed here (the word keeps the failed parents' marks for the reserving rank to
read).

Because the rank that releases a task is the rank that ran its last parent, a ready task starts
where its parent's output already is; idle ranks steal it if that rank is busy.

Worked example (diamond a -> b, c -> d; every group a plain task): the gates start at
b:1, c:1, d:2. Rank 0 runs ``a`` and adds -1 to the gates of b and c: both reach 0, so rank 0
queues b and c. Rank 1 steals c. Rank 0 finishes b and adds -1 to d's gate (2 -> 1); rank 1
finishes c and adds -1 (1 -> 0): rank 1 opens and runs d. Had ``b`` failed, rank 0 would have
added ``-1 + (1 << 40)`` and d would have been reported upstream-failed by rank 1.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from mpitiny.arrays import distinct
from mpitiny.queue.children import ChildMaps
from mpitiny.queue.layout import COUNT_MASK, POISON, POISON_BITS, RESERVED, Layout

GAP = 64   # instances between two touched count words that still go into one block update
FEW = 16   # at most this many child instances are counted down one atomic add each
_NONE = np.zeros(0, dtype=np.int64)


class Release:
    """One rank's dependency bookkeeping (driven by the engine, or by tests without MPI)."""

    def __init__(self, layout: Layout, mem) -> None:
        self.layout = layout
        self.dag = layout.dag
        self.mem = mem
        self.maps = ChildMaps(self.dag)
        self.split_children, self.children_of = self.maps.split_children, self.maps.children_of
        self._plans: dict = {}
        self._sole: dict = {}      # child group -> per instance: waits for one task only
        self.waiting: list = []    # finish_one's last count-downs that left (child, j, new) > 0
        self.reserved: tuple | None = None    # (child, j, rank, word) finish_one reserved
        self.me = -1               # with ``send``: this rank (see ``hand_off``)
        self.send: Any = None      # ``hand_off``'s hooks
        self.publish: Any = None

    def hand_off(self, me: int, send, publish) -> None:
        """Let ``finish_one`` give released instances away as it finds them, so that the
        ranks that run them wait for none of this rank's bookkeeping after:

        - ``send(home, child, j)``: an instance placed on another rank goes straight to that
          rank, before any of its siblings placed here is counted down; it returns whether it
          did (else the instance is returned as ready, to queue here);
        - ``publish(child, j)``: with ``finish_one(..., keep=True)``, every released
          instance of a group with no home after the first one found (which is returned, for
          this rank to run next) is queued here for thieves at once."""
        self.me, self.send, self.publish = me, send, publish
        self._plans.clear()

    def finish(self, g: int, idx: np.ndarray, failed: np.ndarray | None = None) -> tuple:
        """Account for instances ``idx`` of group ``g`` having finished.

        ``failed`` marks the instances that failed (None: all succeeded). Returns
        ``(ready, skipped)``: lists of ``(group, instance array)`` that this rank released to
        run, and that are upstream-failed (already propagated further, never to run).
        """
        ready: list = []
        skipped: list = []
        work = [(g, np.asarray(idx, dtype=np.int64), failed)]
        while work:
            pg, pidx, pfailed = work.pop()
            general, literal = self.split_children(pg)
            for child, dep in general:
                self._release(child, dep, pg, pidx, pfailed, ready, skipped, work)
            if literal:
                for k, p in enumerate(pidx.tolist()):
                    for child, dep in literal.get(p, ()):
                        self._release(child, dep, pg, pidx[k:k + 1],
                                      None if pfailed is None else pfailed[k:k + 1],
                                      ready, skipped, work)
        return ready, skipped

    def finish_one(self, g: int, i: int, keep: bool = False, reserve: bool = False) -> tuple:
        """``finish`` for one instance ``i`` of group ``g`` that succeeded: a DAG's hand-off,
        on the critical path. Its element-wise children with at most ``FEW`` instances waiting
        on ``i`` are counted down through a plan built once per group (``_one_plan``), in plain
        integers; any other child, and children that open poisoned, take ``finish``'s path.
        Same result as ``finish(g, [i])``, less what ``hand_off``'s hooks gave away (``keep``:
        this rank will run the first instance returned, so the other ones are published), and
        less the instance it reserved, with ``reserve`` (``_count_pair``: then ``reserved``)."""
        plan = self._plans.get(g)
        if plan is None:
            plan = self._plans[g] = self._one_plan(g)
        ready: list = []
        skipped: list = []
        work: list = []
        waiting = self.waiting = []
        pidx = None
        owner, fetch_add = self.layout.owner, self.mem.fetch_add
        early = keep and self.publish is not None
        for child, dep, cmap, words, placed, starts in plan[0]:
            if cmap is None or words is None:
                if pidx is None:
                    pidx = np.array([i], dtype=np.int64)
                n = len(ready)
                self._release(child, dep, g, pidx, None, ready, skipped, work)
                if placed and len(ready) > n and len(ready[-1][1]) == 1:
                    j = int(ready[-1][1][0])     # a gate opened on one placed task
                    if self._given(child, j, self.layout.home_of(child, j), False):
                        ready.pop()
                continue
            order, offsets = cmap
            lo, hi = int(offsets[i]), int(offsets[i + 1])
            if hi - lo > FEW:
                if pidx is None:
                    pidx = np.array([i], dtype=np.int64)
                self._release(child, dep, g, pidx, None, ready, skipped, work)
                continue
            if hi - lo == 1:                 # one child instance waits on i: a chain's link
                j = int(order[lo])
                if starts[j] == 1:           # and on nothing else: no count to take down
                    self._one_ready(child, j, 0, placed, early, ready, skipped, work)
                    continue
                rank, pos = owner(child, j)
                new = fetch_add(rank, words[rank] + pos, -1) - 1
                if new & COUNT_MASK:
                    waiting.append((child, j, new))
                elif not new & RESERVED:
                    self._one_ready(child, j, new, placed, early, ready, skipped, work)
                continue
            if hi - lo == 2 and not placed and self._count_pair(
                    child, order[lo:hi].tolist(), words, starts, reserve, early, ready, skipped,
                    work):
                continue
            released, lost = self._count_kids(child, order[lo:hi].tolist(), words, placed,
                                              early, bool(ready), starts)
            if released:
                ready.append((child, np.array(released, dtype=np.int64)))
            if lost:
                bad = np.array(lost, dtype=np.int64)
                skipped.append((child, bad))
                work.append((child, bad, np.ones(len(bad), dtype=bool)))
        for child, dep in plan[1].get(i, ()):
            if pidx is None:
                pidx = np.array([i], dtype=np.int64)
            self._release(child, dep, g, pidx, None, ready, skipped, work)
        for pg, lost_idx, lost_failed in work:       # upstream-failed: ``finish``'s path
            more_ready, more_skipped = self.finish(pg, lost_idx, lost_failed)
            ready += more_ready
            skipped += more_skipped
        return ready, skipped

    def _count_pair(self, child: int, pair: list, words: list, starts: bytes, reserve: bool,
                    early: bool, ready: list, skipped: list, work: list) -> bool:
        """``finish_one``'s two child instances (a stencil's), unplaced; False if it left
        them to ``_count_kids`` (the same instance twice, or a sole one with a counted one).
        Counted down together when their words are on one rank (one flush). With
        ``reserve`` (the caller will have nothing else to run), the first, if it waits for
        two tasks, is reserved for this rank by this count-down if it is its first
        (``count_two_reserving``; ``reserved``: see ``mpitiny.engine.loop.reserve``)."""
        a, b = pair
        sole_a, sole_b = starts[a] == 1, starts[b] == 1
        if sole_a and sole_b:                    # e.g. a tree's: nothing to count
            for j in pair:
                self._one_ready(child, j, 0, False, early, ready, skipped, work)
            return True
        if a == b or sole_a or sole_b:
            return False
        mine = None
        if reserve and self.reserved is None and starts[a] == 2:
            found = count_two_reserving(self.layout, self.mem, child, pair, words)
            counted, mine = (None, None) if found is None else found
        else:
            counted = count_two(self.layout, self.mem, child, pair, pair, words)
        if counted is None:
            return False
        if mine is not None:
            self.reserved = (child, a, *mine)
        for j, new in zip(pair, counted):
            if new & COUNT_MASK:
                if mine is None or j != a:
                    self.waiting.append((child, j, new))
            elif not new & RESERVED:
                self._one_ready(child, j, new, False, early, ready, skipped, work)
        return True

    def _one_ready(self, child: int, j: int, new: int, placed: bool, early: bool, ready: list,
                   skipped: list, work: list) -> None:
        """``finish_one``'s instance ``j`` of ``child`` whose count reached zero (``new``: its
        count word after the count-down): upstream-failed (``skipped``, and its own children
        through ``work``), or given away (``_given``), or ``ready``."""
        if new & POISON_BITS:
            bad = np.array([j], dtype=np.int64)
            skipped.append((child, bad))
            work.append((child, bad, np.ones(1, dtype=bool)))
        elif not self._given(child, j, self.layout.home_of(child, j) if placed else None,
                             early and bool(ready)):
            ready.append((child, np.array([j], dtype=np.int64)))

    def _count_kids(self, child: int, kids: list, words: list, placed: bool, early: bool,
                    kept: bool, starts: bytes) -> tuple:
        """``finish_one``'s count-down of a few instances ``kids`` of ``child`` (one atomic
        add each, a repeated one counted as many times as named, none for one whose count
        starts at 1):
        ``(released, lost)``, the instances it released (less those given away: see
        ``hand_off``; ``kept``: one to run next was found already) and those released
        upstream-failed."""
        owner, fetch_add = self.layout.owner, self.mem.fetch_add
        released: list = []
        lost: list = []
        each = kids if len(kids) < 2 else list(dict.fromkeys(kids))
        homes = homes_first(self.layout, self.me, child, each) if placed else None
        counted = None                  # instance -> its new count, for two on one rank
        if homes is None:
            counting = [j for j in each if starts[j] != 1]
            two = count_two(self.layout, self.mem, child, kids, counting, words)
            if two is not None:
                counted = dict(zip(counting, two))
        for j in each:
            if starts[j] == 1:
                new = 0
            elif counted is not None:
                new = counted[j]
            else:
                delta = -kids.count(j) if len(kids) > 1 else -1
                rank, pos = owner(child, j)
                new = fetch_add(rank, words[rank] + pos, delta) + delta
            if new & COUNT_MASK:
                self.waiting.append((child, j, new))
            elif not new & RESERVED:
                if new & POISON_BITS:
                    lost.append(j)
                elif not self._given(child, j, None if homes is None else homes[j],
                                     early and (kept or bool(released))):
                    released.append(j)
        return released, lost

    def _given(self, child: int, j: int, home: int | None, keeping: bool) -> bool:
        """Whether released instance ``j`` of ``child`` was given away (``hand_off``): sent
        to ``home`` (its rank if ``child`` is placed, else None) when that is another rank, or,
        unplaced, published because this rank keeps another one (``keeping``)."""
        if home is not None:
            return home != self.me and self.send(home, child, j)
        if keeping:
            self.publish(child, j)
        return keeping

    def _one_plan(self, g: int) -> tuple:
        """``finish_one``'s plan for parent group ``g``: ``([(child, dep, cmap, words,
        placed, starts)], literal)``, where ``cmap`` is the child map (``children_of``) of an
        element-wise child that is not the identity (else None), ``words[rank]`` the first
        count word of ``child`` on ``rank`` (None: the child has no count words), ``placed``
        whether its released instances are sent home here (``hand_off``) and ``starts[j]``
        the value instance ``j`` of ``child``'s count starts at (``Layout.count_starts``). One
        that waits for one task only (its count starts at 1) is released by the instance of
        ``g`` it waits on without an atomic, as no other task counts it down and every task
        finishes once in a run (a resumed run's cached tasks too)."""
        general, literal = self.split_children(g)
        plan = []
        for child, dep in general:
            cmap = words = starts = None
            if dep.each is not None and not dep.each.is_identity(self.dag.groups[child],
                                                                  self.dag.groups[g]):
                self.children_of(child, dep, g, np.zeros(1, dtype=np.int64))
                cmap = self.maps.inverse[(child, g, dep.each)]
                if self.layout.has_counts[child]:
                    base = self.layout.count_base[child]
                    words = [int(self.layout.counts0[r]) + int(base[r])
                             for r in range(self.layout.nranks)]
                    starts = self.layout.count_starts(child)
            placed = self.send is not None and self.dag.groups[child].options.placed
            plan.append((child, dep, cmap, words, bool(placed), starts))
        return plan, literal

    def _release(self, child: int, dep, pg: int, pidx: np.ndarray, pfailed, ready: list,
                 skipped: list, work: list) -> None:
        """Count ``child`` down for parents ``pidx``; collect what that made ready or skipped."""
        if dep.each is None:
            opened = self._count_gate(child, pidx, pfailed)
            if opened is None:
                return
            released, poisoned = self._open(child, opened)
        else:
            released, poisoned = self._count_each(child, dep, pg, pidx, pfailed)
        if len(released):
            bad = poisoned if poisoned is not None and poisoned.any() else None
            good = released if bad is None else released[~bad]
            if len(good):
                ready.append((child, good))
            if bad is not None:
                lost = released[bad]
                skipped.append((child, lost))
                work.append((child, lost, np.ones(len(lost), dtype=bool)))

    # ------------------------------------------------------------------ gates
    def _count_gate(self, child: int, pidx: np.ndarray, pfailed) -> bool | None:
        """Count the gate down; returns whether it opened poisoned, or None if still closed.
        A gate that waits for one task only opens when that task finishes, with no atomic (the
        word stays at 1, never read again: every task finishes once in a run)."""
        nfail = int(pfailed.sum()) if pfailed is not None else 0
        if self.layout.gate_init[child] == 1:
            return nfail > 0
        delta = -len(pidx) + nfail * POISON
        rank, word = self.layout.gate_addr(child)
        new = self.mem.fetch_add(rank, word, delta) + delta
        if new & COUNT_MASK:
            return None
        return bool(new >> 40)

    def _open(self, child: int, poisoned: bool) -> tuple:
        group = self.dag.groups[child]
        if not self.layout.has_counts[child]:
            released = np.arange(group.size, dtype=np.int64)
            return released, np.full(group.size, poisoned) if poisoned else None
        delta = -1 + (POISON if poisoned else 0)
        out_idx, out_bad = [], []
        for rank, n in enumerate(self.layout.block_sizes(child).tolist()):
            if not n:
                continue
            start = int(self.layout.count_words(child, rank, 0))
            old = self.mem.fetch_add_block(rank, start, np.full(n, delta, dtype=np.int64))
            new = old + delta
            hit = np.flatnonzero((new & (COUNT_MASK | RESERVED)) == 0)
            out_idx.append(self.layout.instances_at(child, rank, hit))
            out_bad.append((new[hit] & POISON_BITS) != 0)
        return _concat(out_idx), _concat_bool(out_bad)

    # ------------------------------------------------------------------ element-wise
    def _count_each(self, child: int, dep, parent: int, pidx: np.ndarray, pfailed) -> tuple:
        """The instances of ``child`` that finishing ``pidx`` of ``parent`` released, and
        which of them are poisoned (None: none). Those that wait for one task only (their
        count starts at 1, as in ``finish_one``) are released with no atomic; the others are
        counted down."""
        cidx = self.children_of(child, dep, parent, pidx)
        if not len(cidx):
            return cidx, None
        if dep.each.is_identity(self.dag.groups[child], self.dag.groups[parent]) or pfailed is None:
            cfail = pfailed
        else:
            cfail = np.repeat(pfailed, self.maps.fanout(child, dep, parent, pidx))
        sole = self._sole.get(child)
        if sole is None:
            sole = self._sole[child] = \
                np.frombuffer(self.layout.count_starts(child), dtype=np.uint8) == 1
        alone = sole[cidx]
        if not alone.any():
            return self._count_down(child, cidx, cfail)
        if alone.all():
            return cidx, cfail
        counted, poisoned = self._count_down(child, cidx[~alone],
                                             None if cfail is None else cfail[~alone])
        released = np.concatenate([cidx[alone], counted])
        if cfail is None and poisoned is None:
            return released, None
        first = cfail[alone] if cfail is not None else np.zeros(int(alone.sum()), dtype=bool)
        rest = poisoned if poisoned is not None else np.zeros(len(counted), dtype=bool)
        return released, np.concatenate([first, rest])

    def _count_down(self, child: int, cidx: np.ndarray, cfail) -> tuple:
        """``_count_each``'s count-down of ``cidx`` (``cfail``: which of them a failed parent
        names): one atomic add each for a few, else one ``Get_accumulate`` per block."""
        if len(cidx) <= FEW:
            return count_few(self.layout, self.mem, child, cidx, cfail)
        delta = np.full(len(cidx), -1, dtype=np.int64)
        if cfail is not None:
            delta += cfail.astype(np.int64) * POISON
        ranks, pos = self.layout.owners(child, cidx)
        out_idx, out_bad = [], []
        for rank in distinct(ranks):
            sel = ranks == rank
            rpos, rdelta = pos[sel], delta[sel]
            order = np.argsort(rpos, kind="stable")
            rpos, rdelta = rpos[order], rdelta[order]
            uniq, first = np.unique(rpos, return_index=True)
            udelta = np.add.reduceat(rdelta, first)
            # Runs of nearby positions become one block update (zeros in the gaps).
            cuts = np.flatnonzero(np.diff(uniq) > GAP) + 1
            for run_pos, run_delta in zip(np.split(uniq, cuts), np.split(udelta, cuts)):
                lo = int(run_pos[0])
                block = np.zeros(int(run_pos[-1]) - lo + 1, dtype=np.int64)
                block[run_pos - lo] = run_delta
                start = int(self.layout.count_words(child, int(rank), lo))
                old = self.mem.fetch_add_block(int(rank), start, block)
                new = old + block
                hit = np.flatnonzero((block != 0) & ((new & (COUNT_MASK | RESERVED)) == 0))
                out_idx.append(self.layout.instances_at(child, int(rank), lo + hit))
                out_bad.append((new[hit] & POISON_BITS) != 0)
        return _concat(out_idx), _concat_bool(out_bad)



def homes_first(layout: Layout, me: int, child: int, each: list) -> dict:
    """The homes of instances ``each`` of a placed ``child``, and ``each`` reordered so that
    those placed on other ranks than ``me`` come first (they are counted down and sent
    first)."""
    homes = {j: layout.home_of(child, j) for j in each}
    each.sort(key=lambda j: homes[j] == me)
    return homes


def count_few(layout: Layout, mem, child: int, cidx: np.ndarray, cfail) -> tuple:
    """``Release._count_down`` for a few child instances: one atomic add per instance (summed
    where an instance is named twice), in plain integers. The path of a dependency
    between single tasks and of a stencil's neighbours, where a hand-off's latency is
    spent: one ``Fetch_and_op`` completes in shared memory without the target (~2 us
    with the target in a Python task), where a ``Get_accumulate`` of a few words waits
    for the target's progress (~40 us)."""
    counts0, base = layout.counts0, layout.count_base[child]
    fails = [False] * len(cidx) if cfail is None else cfail.tolist()
    deltas: dict = {}
    for j, failed in zip(cidx.tolist(), fails):
        deltas[j] = deltas.get(j, 0) + (-1 + POISON if failed else -1)
    released: list = []
    poisoned: list = []
    for j, delta in deltas.items():
        rank, pos = layout.owner(child, j)
        new = mem.fetch_add(rank, int(counts0[rank]) + int(base[rank]) + pos, delta) + delta
        if not new & (COUNT_MASK | RESERVED):
            released.append(j)
            poisoned.append(bool(new & POISON_BITS))
    if not released:
        return _NONE, None
    return np.array(released, dtype=np.int64), \
        np.array(poisoned, dtype=bool) if any(poisoned) else None


def pair_words(layout: Layout, child: int, a: int, b: int, words: list) -> tuple | None:
    """``(rank, word of a, word of b)``: the count words of instances ``a`` and ``b`` of
    ``child`` if both are on one rank (one flush counts both down), else None."""
    rank, pos = layout.owner(child, a)
    rank_b, pos_b = layout.owner(child, b)
    if rank != rank_b:
        return None
    return rank, words[rank] + pos, words[rank] + pos_b


def count_two(layout: Layout, mem, child: int, kids: list, each: list,
              words: list) -> tuple | None:
    """The new counts of two distinct instances ``each`` of ``child`` whose count words are on
    one rank, counted down together (one flush for both; ``kids`` names each as many times as
    it is counted); None otherwise."""
    if len(each) != 2:
        return None
    a, b = each
    where = pair_words(layout, child, a, b, words)
    if where is None:
        return None
    rank, word_a, word_b = where
    da, db = -kids.count(a), -kids.count(b)
    old_a, old_b = mem.fetch_add_two(rank, word_a, da, word_b, db)
    return old_a + da, old_b + db


def count_two_reserving(layout: Layout, mem, child: int, pair: list, words: list) -> tuple | None:
    """``count_two`` of two distinct instances counted once each, the first of which waits
    for two tasks, that reserves it if this count-down is its first: its add is
    ``RESERVED - 1`` instead of -1, in the same flush (no atomic more, and no window in which
    the other task's count-down could come between). ``(new count of each as ``count_two``
    gives it, (rank, word) of the first if reserved here, else None)``, or None if the words
    are on two ranks. The first's word after the other task's count-down, then, holds
    ``RESERVED`` twice (the next bit up) if that one reserved too, or ``RESERVED`` with a count
    of zero if it came first (its count-down released the instance, and nothing reads the
    mark: the other has counted down already, and a word is reserved only by a rank whose
    count-down left it above zero); the first's new count given here has the mark when it is
    left to the rank that reserved it (as ``count_two``'s), and does not when it is ready."""
    where = pair_words(layout, child, pair[0], pair[1], words)
    if where is None:
        return None
    rank, word_a, word_b = where
    old_a, old_b = mem.fetch_add_two(rank, word_a, RESERVED - 1, word_b, -1)
    if old_a & RESERVED or old_a & COUNT_MASK < 2:     # left to its reserver, or ready here
        return (old_a - 1, old_b - 1), None
    return (old_a - 1 + RESERVED, old_b - 1), (rank, word_a)


def _concat(parts: list) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _concat_bool(parts: list) -> np.ndarray | None:
    return np.concatenate(parts) if parts else None
