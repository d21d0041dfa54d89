"""Where each task's metadata lives: the hash partition of the DAG state over the ranks.

Every rank computes the same ``Layout`` from the same ``DAG`` and rank count, so any rank can
find any word without asking. Three kinds of words live in the ranks' windows:

- a *gate* per group that waits for whole parents (``Dep.each is None``): the number of parent
  instances still to finish. It lives on rank ``hash(group name) % P`` (unless the DAG
  places its parents: below).
- a *count* per instance of a group with element-wise parents: how many of its parents (plus
  one for the gate, if the group also has one) are still to finish. A map with expression
  items (``"u[{t}-1,{i}-1]"``) gives some instances no parent (the edges of a stencil, the
  first step of a family waiting on its own earlier steps): their counts start lower
  (``count_vec``), and an instance whose count starts at 0 is a root (``waiting_for_none``).
- a *location* (three words) per instance of a group whose results another task reads
  (``inputs``): which rank keeps the value, in its window or its spill file, at what offset,
  how long, and the id of its reader count (``mpitiny.queue.store``).

A plain task's count and location live on ``hash(id) % P``. A family's instances are split into
P contiguous blocks, one per rank, rotated by ``hash(name) % P`` so that small families do not
all land on rank 0; block ``b`` is ``[n*b//P, n*(b+1)//P)``. Both are hashes in the Albatross
sense (uniform, computed, never looked up), and blocks keep a chunk of consecutive instances on
one rank, so that finishing a chunk updates its children with one atomic per block.

Where the DAG says which rank runs a task (a ``rank`` spec; ``placed_on``), its children's words
follow it instead (``follow``), so that the rank that releases a child counts it down in its
own window: between nodes an atomic on a busy rank waits for that rank's progress (a
millisecond with the progress thread, a whole task without it; ``docs/offnode.md``). An
instance's count words (and location) go to the rank its first placed element-wise parent
runs on (the rank that finishes that parent releases it, unless a thief took the parent off a
busy rank first), else to the rank the instance is itself placed on (so a placed root whose
values others read writes their locations where it runs); a gate goes to the rank
all its whole parents are placed on, else to the one rank all the group's counts went to by
those rules, if they went to one. Instances
placed on one rank form one block there (``where[g]`` is that rank); instances spread by a
``"{var}"`` spec keep, per rank, their positions in index order (``where[g]`` holds the rank
and position of each instance and the inverse, 12 bytes per instance, for families of up to
``FOLLOW_MAX`` instances; larger ones keep their blocks). Families over input
splits keep the block partition: it is their placement. Each rank computes all of it from
the DAG alone, as before.

Counts and locations of one group form contiguous runs on each rank, so a block of instances is
updated with one ``Get_accumulate``.

Each count or gate word holds ``remaining + (failed_parents << POISON_SHIFT)``: one atomic
add both counts a parent down and marks the child as upstream-failed.
"""
from __future__ import annotations

import numpy as np

from mpitiny.dag.model import DAG, Edges, stable_hash

POISON_SHIFT = 40
COUNT_MASK = (1 << POISON_SHIFT) - 1
POISON = 1 << POISON_SHIFT
RESERVED = 1 << 61    # on a count word: an idle rank will run that instance (engine loop.reserve;
#                       twice, 1 << 62, when both parents of a pair reserved it: see
#                       release.count_two_reserving)
POISON_BITS = RESERVED - POISON     # the failed parents' marks (up to 2^21 - 1 of them)
LOC_WORDS = 3        # where a kept output is: location, length + 1, object id (queue/store.py)
FOLLOW_MAX = 1 << 22  # instances of a group whose words follow a placement spread over ranks


class Layout:
    """Gate, count and location addresses of every group and instance for ``nranks`` ranks."""

    def __init__(self, dag: DAG, nranks: int, words_before: int) -> None:
        P = self.nranks = nranks
        G = len(dag.groups)
        self.dag = dag
        self.home = np.array([stable_hash(g.name) % P for g in dag.groups], dtype=np.int64)
        self.has_gate = np.zeros(G, dtype=bool)
        self.gate_init = np.zeros(G, dtype=np.int64)
        self.gate_index = np.full(G, -1, dtype=np.int64)
        self.has_counts = np.zeros(G, dtype=bool)
        self.count_init = np.zeros(G, dtype=np.int64)
        self.has_locs = np.zeros(G, dtype=bool)
        self.count_vec: dict = {}     # group -> initial count per instance, where they differ
        self.where: dict = {}         # group -> its words' rank, or per-instance placement
        ngates = np.zeros(P, dtype=np.int64)
        for g in dag.groups:
            if getattr(g, "wants_inputs", False):
                for d in g.deps:       # a command's value is None: nothing to locate
                    self.has_locs[d.parent] = dag.groups[d.parent].kind == "fn"
        for g in dag.groups:
            self.follow(g)
        for g in dag.groups:
            whole = [d for d in g.deps if d.each is None]
            each = [d for d in g.deps if d.each is not None]
            if whole:
                self.has_gate[g.index] = True
                self.gate_init[g.index] = sum(dag.groups[d.parent].size for d in whole)
                h = self.home[g.index]
                self.gate_index[g.index] = ngates[h]
                ngates[h] += 1
            if each:
                self.has_counts[g.index] = True
                self.count_init[g.index] = len(each) + (1 if whole else 0)
                vec = self.varying_counts(g, each, self.count_init[g.index])
                if vec is not None:
                    self.count_vec[g.index] = vec
        # Per-rank offsets of each group's block of counts (and of locations).
        self.count_base = {}
        self.loc_base = {}
        ncounts = np.zeros(P, dtype=np.int64)
        nlocs = np.zeros(P, dtype=np.int64)
        for g in dag.groups:
            if self.has_counts[g.index]:
                self.count_base[g.index] = ncounts.copy()
                ncounts += self.block_sizes(g.index)
            if self.has_locs[g.index]:
                self.loc_base[g.index] = nlocs.copy()
                nlocs += self.block_sizes(g.index)
        self.ngates = ngates
        # per group, for ``owner``: (home, instances spread in blocks or 0, placement or None)
        self._owner_of = [self._owner_entry(g) for g in dag.groups]
        self.ncounts = ncounts
        self.nlocs = nlocs
        self.gates0 = words_before
        self.counts0 = self.gates0 + ngates
        self.locs0 = self.counts0 + ncounts
        self.nwords = self.locs0 + LOC_WORDS * nlocs

    def varying_counts(self, g, each: list, init: int) -> np.ndarray | None:
        """Per instance of group ``g``, how many parents it starts waiting for, where that
        differs between instances: listed edges (each instance its own parents) and maps
        that may drop (one parent, or none). None when every instance waits for ``init``."""
        listed = [d.each for d in each if isinstance(d.each, Edges)]
        dropping = [d for d in each if not isinstance(d.each, Edges) and d.each.may_drop]
        if not listed and not dropping:
            return None
        vec = np.full(g.size, init - len(listed) - len(dropping), dtype=np.int64)
        for e in listed:
            vec += e.counts()
        for d in dropping:
            vec += d.each.all_parents(g, self.dag.groups[d.parent]) >= 0
        return None if not listed and (vec == init).all() else vec

    # --------------------------------------------------------------- following placement
    def placed_on(self, g: int, idx: np.ndarray) -> np.ndarray:
        """The rank each instance ``idx`` of placed group ``g`` runs on: its ``rank`` spec
        modulo the rank count, or, for a family over input splits, the rank that holds the
        split's metadata (its block)."""
        group = self.dag.groups[g]
        spec = group.options.rank
        if spec is None:
            return self.owners(g, idx)[0]
        return group.index_values(spec, np.asarray(idx, dtype=np.int64)) % self.nranks

    def home_of(self, g: int, i: int) -> int:
        """``placed_on`` for one instance ``i``, in plain integers."""
        group = self.dag.groups[g]
        spec = group.options.rank
        if spec is None:
            return int(self.owners(g, np.array([i], dtype=np.int64))[0][0])
        return group.index_value(spec, i) % self.nranks

    def follow(self, group) -> None:
        """Place ``group``'s gate (``home``) and words (``where``) where the tasks that count
        them down run, as far as the DAG says (see the module docstring)."""
        g = group.index
        if group.options.splits is not None:
            return
        ranks = self.follow_ranks(group)
        if ranks is not None:
            self.settle(g, ranks)
        whole = [self.dag.groups[d.parent].options.rank for d in group.deps if d.each is None]
        if whole and all(isinstance(r, int) for r in whole) and \
                len({r % self.nranks for r in whole}) == 1:
            self.home[g] = whole[0] % self.nranks
        elif isinstance(self.where.get(g), int):
            self.home[g] = self.where[g]

    def follow_ranks(self, group) -> np.ndarray | None:
        """Per instance of ``group``, the rank its first placed element-wise parent runs on
        (the first of its maps that gives it a parent), else the rank it is placed on itself,
        else its block's; None when no instance has either of the first two."""
        if not group.size or not (group.deps or group.options.rank is not None and
                                  self.has_locs[group.index]):
            return None
        idx = np.arange(group.size, dtype=np.int64)
        ranks = np.full(group.size, -1, dtype=np.int64)
        for d in group.deps:
            pg = self.dag.groups[d.parent]
            if d.each is None or isinstance(d.each, Edges) or not pg.options.placed:
                continue
            parents = d.each.all_parents(group, pg)
            fill = (parents >= 0) & (ranks < 0)
            ranks[fill] = self.placed_on(pg.index, parents[fill])
        rest = ranks < 0
        if rest.all() and group.options.rank is None:
            return None
        if rest.any():
            ranks[rest] = self.placed_on(group.index, idx[rest]) if group.options.rank \
                is not None else self.owners(group.index, idx[rest])[0]
        return ranks

    def settle(self, g: int, ranks: np.ndarray) -> None:
        """Keep group ``g``'s words on ``ranks`` (one per instance); beyond ``FOLLOW_MAX``
        instances on several ranks, in blocks as before (12 bytes per instance on every
        rank would be too many)."""
        first = int(ranks[0])
        if (ranks == first).all():
            self.where[g] = first
            return
        if len(ranks) > FOLLOW_MAX:
            return
        order = np.argsort(ranks, kind="stable").astype(np.int32)
        starts = np.zeros(self.nranks + 1, dtype=np.int64)
        np.cumsum(np.bincount(ranks, minlength=self.nranks), out=starts[1:])
        pos = np.empty(len(ranks), dtype=np.int32)
        pos[order] = np.arange(len(ranks)) - starts[ranks[order]]
        self.where[g] = (ranks.astype(np.int32), pos, order, starts)

    def _owner_entry(self, group) -> tuple:
        where = self.where.get(group.index)
        if isinstance(where, int):
            return where, 0, None
        spread = group.size if group.is_family and where is None else 0
        return int(self.home[group.index]), spread, where

    # --------------------------------------------------------------- instance ownership
    def block_sizes(self, g: int) -> np.ndarray:
        """How many instances of group ``g`` each rank holds metadata for."""
        group = self.dag.groups[g]
        P = self.nranks
        out = np.zeros(P, dtype=np.int64)
        where = self.where.get(g)
        if isinstance(where, int):
            out[where] = group.size
            return out
        if where is not None:
            return np.diff(where[3])
        if not group.is_family:
            out[self.home[g]] = 1
            return out
        n = group.size
        b = np.arange(P + 1, dtype=np.int64)
        per_block = np.diff(n * b // P)
        out[(np.arange(P) + self.home[g]) % P] = per_block
        return out

    def block(self, g: int, rank: int) -> tuple:
        """Instances ``[lo, hi)`` of group ``g`` whose metadata lives on ``rank``, for a group
        kept in blocks (every group but those ``where`` places per instance)."""
        group = self.dag.groups[g]
        where = self.where.get(g)
        if isinstance(where, int):
            return (0, group.size) if rank == where else (0, 0)
        assert where is None, "a group placed per instance has no blocks"
        if not group.is_family:
            return (0, 1) if rank == self.home[g] else (0, 0)
        b = (rank - int(self.home[g])) % self.nranks
        n = group.size
        return n * b // self.nranks, n * (b + 1) // self.nranks

    def instances_at(self, g: int, rank: int, pos: np.ndarray) -> np.ndarray:
        """The instances of group ``g`` at positions ``pos`` of its words on ``rank``."""
        where = self.where.get(g)
        if where is None or isinstance(where, int):
            return self.block(g, rank)[0] + pos
        return where[2][where[3][rank] + pos].astype(np.int64)

    def owners(self, g: int, idx: np.ndarray) -> tuple:
        """``(rank, position within the group's run on that rank)`` of instances ``idx``."""
        group = self.dag.groups[g]
        idx = np.asarray(idx, dtype=np.int64)
        where = self.where.get(g)
        if isinstance(where, int):
            return np.full(len(idx), where, dtype=np.int64), idx
        if where is not None:
            return where[0][idx].astype(np.int64), where[1][idx].astype(np.int64)
        if not group.is_family:
            return np.full(len(idx), self.home[g], dtype=np.int64), np.zeros(len(idx), dtype=np.int64)
        P, n = self.nranks, group.size
        b = ((idx + 1) * P - 1) // n
        return (b + self.home[g]) % P, idx - (n * b) // P

    def owner(self, g: int, i: int) -> tuple:
        """``owners`` for one instance, in plain integers (the per-task path)."""
        home, n, where = self._owner_of[g]
        if where is not None:
            return int(where[0][i]), int(where[1][i])
        if not n:
            return home, i
        P = self.nranks
        b = ((i + 1) * P - 1) // n
        return (b + home) % P, i - (n * b) // P

    def loc_word(self, g: int, i: int) -> tuple:
        """``(rank, word)`` of the result location of instance ``i`` of group ``g``."""
        rank, pos = self.owner(g, i)
        return rank, int(self.locs0[rank]) + LOC_WORDS * (int(self.loc_base[g][rank]) + pos)

    def gate_addr(self, g: int) -> tuple:
        """``(rank, word)`` of group ``g``'s gate."""
        h = int(self.home[g])
        return h, self.gates0 + int(self.gate_index[g])

    def count_words(self, g: int, rank: int, pos):
        """Word addresses at ``rank`` of the count words of positions ``pos`` (an int or an
        array) of group ``g``'s block there."""
        return self.counts0[rank] + self.count_base[g][rank] + pos

    def init_words(self, rank: int, local: np.ndarray) -> None:
        """Write this rank's initial gate and count values into its own window memory."""
        for g in np.flatnonzero(self.has_gate):
            if self.home[g] == rank:
                local[self.gates0 + self.gate_index[g]] = self.gate_init[g]
        for g in np.flatnonzero(self.has_counts):
            n = int(self.block_sizes(int(g))[rank])
            start = self.counts0[rank] + self.count_base[int(g)][rank]
            vec = self.count_vec.get(int(g))
            local[start:start + n] = self.count_init[g] if vec is None else \
                vec[self.instances_at(int(g), rank, np.arange(n))]

    def count_starts(self, g: int) -> bytes:
        """Per instance of group ``g``, the value its count word starts at (1: it waits for
        one task only), 255 for 255 or more; a ``bytes``, which indexes to plain integers."""
        vec = self.count_vec.get(g)
        if vec is None:
            return bytes([min(int(self.count_init[g]), 255)]) * self.dag.groups[g].size
        return np.minimum(vec, 255).astype(np.uint8).tobytes()

    def waiting_for_none(self, g: int) -> np.ndarray:
        """Instances of group ``g`` (which has dependencies) that wait for no task: listed
        tasks with no ``deps`` in a listing where others have some, family instances whose
        every element-wise parent falls outside its family. They start as roots."""
        vec = self.count_vec.get(g)
        return np.zeros(0, dtype=np.int64) if vec is None else np.flatnonzero(vec == 0)
