"""The data plane of one rank: task values other tasks read, the shared state store, and
the split readers of families over ingested inputs.

A value that children read (``inputs``) is kept where it was made: in this rank's byte
window (``ResultStore``; past ``--mem-limit``, in ``RUN_DIR/spill/``), together with how many
child instances will read it (``readers``). Its location goes to three words at the task's
owner (``Layout.loc_word``), written before the children are released (``publish_locations``),
so a child anywhere finds it with one ``Get`` and reads it one-sidedly (``fetch_inputs``);
each read counts the value's readers down, and the holder frees it when they are all done.

What stays constant: the windows and the layout. What changes: the locations waiting to be
published (``pending_locs``), the reader counts computed per group (``_readers``), the split
readers opened so far.
"""
from __future__ import annotations

import os

import numpy as np

from mpitiny import procstat
from mpitiny.arrays import distinct

from mpitiny.engine.journaling import ChunkJournal
from mpitiny.errors import MpitinyError
from mpitiny.queue.layout import LOC_WORDS, Layout
from mpitiny.queue.release import Release
from mpitiny.queue.state import StateStore
from mpitiny.io.values import Pieces, encode_pieces
from mpitiny.queue.store import ResultStore

STORE_OBJECTS = 1 << 16   # kept outputs per rank in its window at once (more go to disk)
RESULT_COPY_LIMIT = 64 << 10   # values other tasks read go to results/ only if JSON and small


class TaskResultError(Exception):
    """A task ran but its return value cannot be kept (reported as the task's failure)."""


class DataPlane:
    """Keeps, publishes and fetches the values that flow between tasks, for one rank."""

    def __init__(self, world, dag, layout: Layout, mem, release: Release, files,
                 journal: ChunkJournal, run_dir: str, opts) -> None:
        self.dag = dag
        self.layout = layout
        self.mem = mem                       # the rank's word memory (location words)
        self.release = release
        self.files = files
        self.journal = journal
        self.heap = self.object_counts = None
        self.store: ResultStore | None = None
        if layout.has_locs.any():
            self.heap = world.bytes(opts.result_mem)
            self.object_counts = world.words(ResultStore.words(STORE_OBJECTS))
            rss_limit = int(0.8 * procstat.total_memory() / world.ranks_here)
            self.store = ResultStore(world.rank, self.heap, self.object_counts, STORE_OBJECTS,
                                     os.path.join(run_dir, "spill"), opts.mem_limit, rss_limit)
        slots = 1 << max(10, (opts.state_mem // 256).bit_length() - 1)
        self.state_mem = world.words(StateStore.words(slots))
        self.state_heap = world.bytes(opts.state_mem)
        self.state = StateStore(self.state_mem, 0, slots, self.state_heap)
        self.pending_locs: list = []
        self._readers: dict = {}
        self._split_readers: dict = {}       # group -> its Splits (opened once per run)

    @property
    def windows(self) -> list:
        """The windows of the data plane (state store, kept outputs)."""
        kept = [self.heap, self.object_counts] if self.heap is not None else []
        return [self.state_heap, self.state_mem, *kept]

    # ------------------------------------------------------------------ keeping values
    def store_result(self, group, i: int, gid: int, value, attempt: int = 1) -> None:
        """Keep a return value for the tasks that read it, if any; write it to the run's
        results unless it is intermediate data (read by other tasks, and bytes, an array or
        JSON over ``RESULT_COPY_LIMIT``): those live in the store / spill files only."""
        try:
            kind, data = encode_pieces(value)
        except (TypeError, ValueError) as exc:
            raise TaskResultError(
                f"return value of type {type(value).__name__} cannot be kept ({exc}); return "
                "JSON values, bytes or numpy arrays") from None
        self.store_encoded(group, i, gid, kind, data, value is None, attempt=attempt)

    def store_encoded(self, group, i: int, gid: int, kind: int, data,
                      is_none: bool = False, journal: bool = True, attempt: int = 1) -> None:
        """``store_result`` after encoding; a value other tasks read is also journaled (with
        the attempt that made it), unless ``journal`` is False (reloaded from a journal)."""
        consumed = self.layout.has_locs[group.index]
        if not is_none and (not consumed or (kind == 0 and len(data) <= RESULT_COPY_LIMIT)):
            self.files.result(group.instance_id(i), kind,
                              data.join() if isinstance(data, Pieces) else data)
        if consumed:
            assert self.store is not None
            if journal and self.journal.on:
                self.journal.value(gid, kind, data, attempt)
            loc, length, oid = self.store.keep_encoded(kind, data, self.readers(group.index, i))
            owner, word = self.layout.loc_word(group.index, i)
            self.pending_locs.append((owner, word, loc, length, oid))

    def readers(self, g: int, i: int) -> int:
        """How many child instances will read instance ``i`` of group ``g`` (``inputs``)."""
        fixed = self._readers.get(g)
        general, literal = self.release.split_children(g)
        if fixed is None:
            fixed, varying = 0, []
            for c, dep in general:
                child = self.dag.groups[c]
                if not child.wants_inputs:
                    continue
                if dep.each is None:
                    fixed += child.size
                elif dep.each.is_identity(child, self.dag.groups[g]):
                    fixed += 1
                else:
                    varying.append((c, dep))
            self._readers[g] = fixed = (fixed, varying)
        count, varying = fixed
        for c, dep in varying:
            count += len(self.release.children_of(c, dep, g, np.array([i], dtype=np.int64)))
        for c, _ in literal.get(i, ()):
            if self.dag.groups[c].wants_inputs:
                count += self.dag.groups[c].size
        return count

    def publish_locations(self) -> None:
        """Write the locations of this chunk's kept results at their owners, one ``Put`` per
        run of neighbouring words (before the children are released, so they find them)."""
        if not self.pending_locs:
            return
        assert self.heap is not None and self.object_counts is not None
        self.heap.sync()
        self.object_counts.sync()
        locs = sorted(self.pending_locs)
        self.pending_locs = []
        start = 0
        for k in range(1, len(locs) + 1):
            if k == len(locs) or locs[k][0] != locs[start][0] or \
                    locs[k][1] != locs[k - 1][1] + LOC_WORDS:
                owner, word = locs[start][0], locs[start][1]
                self.mem.put(owner, word, np.array([v for loc in locs[start:k] for v in loc[2:]],
                                                   dtype=np.int64))
                start = k

    # ------------------------------------------------------------------ reading values
    def fetch_inputs(self, group, i: int) -> dict:
        """``{parent task id: parent return value}`` for instance ``i`` (one-sided reads;
        many parents' locations and values are read in batches, ``parent_locations``)."""
        out: dict = {}
        part = group.options.part
        if part is not None:
            part = int(group.index_values(part, [i])[0])
        for dep in group.deps:
            parent = self.dag.groups[dep.parent]
            if dep.each is None:
                pidx = range(parent.size)
            elif dep.each.is_identity(group, parent):
                pidx = (i,)
            else:
                pidx = dep.each.parent_indices(group, parent, np.array([i], dtype=np.int64))
                pidx = pidx[pidx >= 0]       # an expression item outside the parent: none
            if parent.kind == "cmd":        # shell tasks return nothing: their value is None
                out.update((parent.instance_id(int(p)), None) for p in pidx)
                continue
            pidx = [int(p) for p in pidx]
            locs = self.parent_locations(parent.index, pidx)
            names = parent.instance_ids(pidx)
            for name, (_, length, _) in zip(names, locs):
                if length <= 0:
                    raise RuntimeError(f"result of {name} not found")
            assert self.store is not None
            out.update(zip(names, self.store.fetch_many(locs, part, names)))
        return out

    def parent_locations(self, g: int, pidx: list) -> list:
        """The location words ``(loc, length, oid)`` of instances ``pidx`` of group ``g``:
        one ``Get`` per owner rank over the span of their words when that span is dense
        (a whole family: each owner holds a contiguous block), else one per instance."""
        if len(pidx) < 4:
            return [tuple(int(w) for w in self.mem.get(*self.layout.loc_word(g, p), LOC_WORDS))
                    for p in pidx]
        lay = self.layout
        ranks, pos = lay.owners(g, np.asarray(pidx, dtype=np.int64))
        base = np.asarray(lay.loc_base[g], dtype=np.int64)
        words = lay.locs0[ranks] + LOC_WORDS * (base[ranks] + pos)
        locs = np.empty((len(pidx), LOC_WORDS), dtype=np.int64)
        for r in distinct(ranks).tolist():
            at = np.flatnonzero(ranks == r)
            w = words[at]
            lo, hi = int(w.min()), int(w.max()) + LOC_WORDS
            if hi - lo <= 4 * LOC_WORDS * len(at):
                span = self.mem.get(r, lo, hi - lo)
                locs[at] = span[(w - lo)[:, None] + np.arange(LOC_WORDS)]
            else:
                for k, word in zip(at.tolist(), w.tolist()):
                    locs[k] = self.mem.get(r, word, LOC_WORDS)
        return [tuple(row) for row in locs.tolist()]

    def split_reader(self, group):
        """The split reader of a family over one dataset's splits, or None: opened before the
        family's first task runs (not inside it), for prefetching and the bytes each task read."""
        where = group.options.splits
        if where is None:
            return None
        reader = self._split_readers.get(group.index, False)
        if reader is False:
            from mpitiny.io.splits import open_splits
            try:
                reader = open_splits(where[0], where[1])
            except MpitinyError:
                reader = None    # the task itself will report the problem when it reads
            self._split_readers[group.index] = reader
        return reader

    # ------------------------------------------------------------------ end of the run
    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    def stats(self) -> dict:
        return {"outputs_in_window": self.store.kept if self.store else 0,
                "outputs_spilled": self.store.spilled if self.store else 0}
