"""Where each task's metadata lives: the hash partition of the DAG state over the ranks.

Every rank computes the same ``Layout`` from the same ``DAG`` and rank count, so any rank can
find any word without asking. Three kinds of words live in the ranks' windows:

- a *gate* per group that waits for whole parents (``Dep.each is None``): the number of parent
  instances still to finish. It lives on rank ``hash(group name) % P``.
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
LOC_WORDS = 3        # where a kept output is: location, length + 1, object id (queue/store.py)


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
        ngates = np.zeros(P, dtype=np.int64)
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
            if getattr(g, "wants_inputs", False):
                for d in g.deps:       # a command's value is None: nothing to locate
                    self.has_locs[d.parent] = dag.groups[d.parent].kind == "fn"
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
        # per group: (home, instances spread in blocks, or 0 if it is one task), for ``owner``
        self._owner_of = [(int(self.home[g.index]), g.size if g.is_family else 0)
                          for g in dag.groups]
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

    # --------------------------------------------------------------- instance ownership
    def block_sizes(self, g: int) -> np.ndarray:
        """How many instances of group ``g`` each rank holds metadata for."""
        group = self.dag.groups[g]
        P = self.nranks
        out = np.zeros(P, dtype=np.int64)
        if not group.is_family:
            out[self.home[g]] = 1
            return out
        n = group.size
        b = np.arange(P + 1, dtype=np.int64)
        per_block = np.diff(n * b // P)
        out[(np.arange(P) + self.home[g]) % P] = per_block
        return out

    def block(self, g: int, rank: int) -> tuple:
        """Instances ``[lo, hi)`` of group ``g`` whose metadata lives on ``rank``."""
        group = self.dag.groups[g]
        if not group.is_family:
            return (0, 1) if rank == self.home[g] else (0, 0)
        b = (rank - int(self.home[g])) % self.nranks
        n = group.size
        return n * b // self.nranks, n * (b + 1) // self.nranks

    def owners(self, g: int, idx: np.ndarray) -> tuple:
        """``(rank, position within the group's run on that rank)`` of instances ``idx``."""
        group = self.dag.groups[g]
        idx = np.asarray(idx, dtype=np.int64)
        if not group.is_family:
            return np.full(len(idx), self.home[g], dtype=np.int64), np.zeros(len(idx), dtype=np.int64)
        P, n = self.nranks, group.size
        b = ((idx + 1) * P - 1) // n
        return (b + self.home[g]) % P, idx - (n * b) // P

    def owner(self, g: int, i: int) -> tuple:
        """``owners`` for one instance, in plain integers (the per-task path)."""
        home, n = self._owner_of[g]
        if not n:
            return home, 0
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
            lo, hi = self.block(int(g), rank)
            start = self.counts0[rank] + self.count_base[int(g)][rank]
            vec = self.count_vec.get(int(g))
            local[start:start + hi - lo] = self.count_init[g] if vec is None else vec[lo:hi]

    def waiting_for_none(self, g: int) -> np.ndarray:
        """Instances of group ``g`` (which has dependencies) that wait for no task: listed
        tasks with no ``deps`` in a listing where others have some, family instances whose
        every element-wise parent falls outside its family. They start as roots."""
        vec = self.count_vec.get(g)
        return np.zeros(0, dtype=np.int64) if vec is None else np.flatnonzero(vec == 0)
