"""What a rank writes to its journal as its chunks run (the format is ``mpitiny.io.journal``).

A chunk's life in the journal: START records for its tasks before any runs (none for a chunk
of one task: the ``.now`` file names it as it runs); a value record
for each kept value as it is stored (``value``; a batch call's values as one unit); STOPPED
records for tasks a stop request kept from running; and, once the chunk's results and kept
values have reached the OS (``chunk_done``), DONE / FAILED records, so that a record never
names what a crash could still lose. Tasks whose values other tasks read get no DONE record:
their value record says they are done.

Tasks added while the run goes on (``mpitiny.engine.adding``): the payload of each, as it is
added (``added``: a value record of kind ``VK_ADDED``, written with the adding task's chunk,
so before that task's DONE record), and a DONE record for each once it ran (``added_done``:
after its result and the payloads it added reached the OS).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from mpitiny.io import journal as jnl


class ChunkJournal:
    """This rank's journal as the engine writes it; ``on`` is False under ``--no-journal``
    (or before ``open``), and then every method but ``open`` is a no-op for its callers to
    skip."""

    def __init__(self, files, has_locs: np.ndarray) -> None:
        self.files = files
        self.has_locs = has_locs          # per group: its values are read by other tasks
        self.file: jnl.Journal | None = None
        self.on = False
        self.pending: list = []           # (group, first gid, instances, failed) of this chunk
        self.due = False                  # a chunk ran since the last ``chunk_done``
        self.now: Any = [-1, 1]           # what runs now: [first task id, count] (``.now``)

    def open(self, run_dir: str, incarnation: int, rank: int) -> None:
        """Create the journal file (raises ``OSError`` if the run directory refuses it)."""
        self.file = jnl.Journal(run_dir, incarnation, rank)
        self.now = self.file.now
        self.on = True

    @property
    def _file(self) -> jnl.Journal:
        assert self.file is not None, "the journal is not open"
        return self.file

    def started(self, tasks) -> None:
        """START records for a chunk about to run (``Chunk.tasks``: a run ``(lo, hi)`` or an
        array of task ids); none for one task (a DAG's hand-off), which the ``.now`` file
        names as it starts, as a reader of the journal needs."""
        if isinstance(tasks, tuple):
            if tasks[1] - tasks[0] > 1:
                self._file.add(jnl.START, tasks[0], tasks[1])
        elif len(tasks) > 1:
            self.runs(jnl.START, 0, tasks)
        self.now[1] = 1
        self.due = True

    def between_tasks(self) -> None:
        """None of this rank's tasks runs now (``.now``): a crash here hits none of them."""
        self.now[0] = -1

    def pending_ends(self) -> bool:
        """Whether chunks ran whose ends ``chunk_done`` has not journaled yet."""
        return self.due

    def state(self, gid: int, log: bytes, others=(), attempt: int = 1) -> None:
        """The state updates of task ``gid`` (a DONE record with them as its value); with
        ``others``, the other tasks of a batch call that made them, done in the same unit."""
        self._file.add_value(gid, jnl.VK_STATE, log, attempt)
        for other in others:
            self._file.add_value(int(other), jnl.VK_DONE, b"", attempt)

    def finished(self, g: int, first: int, instances, failed: list) -> None:
        """Instances of group ``g`` finished (``failed``: positions that failed): journaled by
        ``chunk_done``."""
        self.pending.append((g, first, instances, failed))

    def stopped(self, first: int, instances) -> None:
        self.runs(jnl.STOPPED, first, instances)

    def value(self, gid: int, kind: int, data: bytes, attempt: int) -> None:
        self._file.add_value(gid, kind, data, attempt)

    def added(self, key: int, payload: bytes) -> None:
        """A task added now, with what it runs (``mpitiny.engine.adding``)."""
        self._file.add_value(key, jnl.VK_ADDED, payload)

    def added_done(self, done: list) -> None:
        """Added tasks ran (``done``: ``(owner, slot, key, failed)``): DONE records for those
        that did not fail, after their results and the tasks they added reached the OS."""
        if not self.on:
            return
        self.files.flush_results()
        self._file.write_values()
        for *_, key, failed in done:
            if not failed:
                self._file.add(jnl.DONE, key, key + 1)

    def begin_unit(self) -> None:
        self._file.begin_unit()

    def end_unit(self) -> None:
        self._file.end_unit()

    def add(self, kind: int, lo: int, hi: int, attempt: int = 1) -> None:
        self._file.add(kind, lo, hi, attempt)

    def chunk_done(self) -> None:
        """DONE / FAILED records of the chunk just run, after its results and kept values
        reached the OS."""
        pending, self.pending = self.pending, []
        self.now[0] = -1
        self.due = False
        self.files.flush_results()
        self._file.write_values()
        singles = []
        for g, first, instances, failed in pending:
            consumed = self.has_locs[g]          # their DONE records came with the values
            if not failed and len(instances) == 1:
                if not consumed:
                    singles.append(first + int(instances[0]))
                continue
            ok = None
            if failed:
                ok = np.ones(len(instances), dtype=bool)
                ok[failed] = False
                self.runs(jnl.FAILED, first, instances, ~ok)
            if not consumed:
                self.runs(jnl.DONE, first, instances, ok)
        if singles:
            self.runs(jnl.DONE, 0, singles)

    def runs(self, kind: int, first: int, instances, mask=None) -> None:
        """Records of ``kind`` for instances (a range: one record; else one per contiguous
        run or per task); ``mask`` selects some of them."""
        if mask is None:
            if isinstance(instances, range):
                if len(instances):
                    self._file.add(kind, first + instances.start, first + instances.stop)
                return
            if len(instances) == 1:
                gid = first + int(instances[0])
                self._file.add(kind, gid, gid + 1)
                return
            if isinstance(instances, list) and len(instances) <= jnl.FEW_RECORDS:
                self._file.add_ids(kind, [first + int(i) for i in instances])
                return        # a few tasks kept running one after another (their DONEs)
        gids = first + np.asarray(instances, dtype=np.int64)
        if mask is not None:
            gids = gids[mask]
        if len(gids) and int(gids[-1]) - int(gids[0]) == len(gids) - 1 and \
                (len(gids) < 3 or np.all(np.diff(gids) == 1)):
            self._file.add(kind, int(gids[0]), int(gids[-1]) + 1)
        else:
            self._file.add_ids(kind, gids)

    def sync(self) -> None:
        """Results and failures to the OS, then the journal (and kept values) to disk."""
        self.files.flush()
        self._file.sync()

    def close(self, durable: bool = True) -> None:
        if self.on:
            self.files.flush()
            self._file.close(durable)
