"""The parts of served jobs (``mpitiny serve``; the design is ``mpitiny.engine.serving``):
the job slots in each rank's window (``Dispenser``), what the owner of a job keeps
(``OwnedJob``), what every rank knows of a job (``JobRef``) and writes for it (``JobFiles``),
and loading a job (``load_job``).
"""
from __future__ import annotations

import collections
import json
import os
import sys
from typing import Any

import numpy as np

from mpitiny.io import jobs as jf
from mpitiny.io.added import ADDED_BIT
from mpitiny.io.rundir import _LazyFile
from mpitiny.io.values import KIND_JSON, KIND_NAMES, encode
from mpitiny.queue.layout import Layout
from mpitiny.queue.memory import LocalMemory
from mpitiny.queue.release import Release

ANNOUNCE = 0
HEADER_WORDS = 2
CLAIM, COPIED, JOBNO, CANCEL, FIN_HI = 0, 1, 2, 3, 4
SLOT_HEAD = 6
MAX_OWNED = 4              # jobs a rank owns at once
RING = 1 << 14             # tasks a job has out at once beyond those its owner heard back from
SLOT_WORDS = SLOT_HEAD + 2 * RING
JOB_BIT = 1 << 61
GID_BITS = 36
MASK31 = 0x7FFFFFFF
LOOK_SECONDS = 0.1         # the allocation looks at jobs/ about this often
EMPTY_SECONDS, EMPTY_MAX = 0.0002, 0.005
CHUNK_SECONDS, MAX_CHUNK, SHARE_RANKS = 0.005, 64, 16
STATE_SECONDS = 1.0        # how often an owner rewrites a running job's state.json
QUARANTINE = 1.0           # seconds a slot stays unused after its job ended


def job_key(jobno: int, gid) -> Any:
    """The journal key / task-table gid of task ``gid`` of job ``jobno``."""
    return ADDED_BIT | JOB_BIT | (jobno << GID_BITS) | gid


def pack(nxt: int, hi: int) -> int:
    return (nxt << 32) | hi


def unpack(word: int) -> tuple:
    word &= 0xFFFFFFFFFFFFFFFF
    return (word >> 32) & MASK31, word & 0xFFFFFFFF


def slot_base(slot: int) -> int:
    return HEADER_WORDS + slot * SLOT_WORDS


def ring_positions(base: int, first: int, n: int) -> np.ndarray:
    return base + (np.arange(first, first + n, dtype=np.int64) % RING)


class Dispenser:
    """The operations on job slots: the owner's on its own memory, every rank's on others'."""

    def __init__(self, mem) -> None:
        self.mem, self.local, self.rank = mem, mem.local, mem.rank
        self.floor = [0] * MAX_OWNED     # ring positions below this were copied out
        self.cursor = [0] * MAX_OWNED    # finish-ring positions the owner has read

    def open(self, slot: int, jobno: int) -> int:
        """Start a slot for a job: its ``hi`` (where the job's positions start)."""
        b = slot_base(slot)
        self.mem.sync()
        self.local[b + CANCEL] = 0
        self.local[b + JOBNO] = jobno
        self.mem.sync()
        return unpack(int(self.local[b + CLAIM]))[1]

    def close(self, slot: int) -> None:
        self.local[slot_base(slot) + JOBNO] = 0
        self.mem.sync()

    def publish(self, slot: int, gids: np.ndarray) -> int:
        """Append ready ``gids`` to the slot's ring (plain stores, then one atomic that makes
        them visible); returns how many found room (a leading part)."""
        b = slot_base(slot)
        self.mem.sync()
        nxt, hi = unpack(int(self.local[b + CLAIM]))
        if RING - (hi - self.floor[slot]) < len(gids) and int(self.local[b + COPIED]) == nxt:
            self.floor[slot] = nxt
        k = min(len(gids), RING - (hi - self.floor[slot]))
        if k <= 0:
            return 0
        self.local[ring_positions(b + SLOT_HEAD, hi, k)] = gids[:k]
        self.mem.sync()
        old = self.mem.fetch_add(self.rank, b + CLAIM, k)
        assert unpack(old)[1] == hi, "a job's ring changed under its owner"
        return k

    def drop_queued(self, slot: int) -> int:
        """Take every queued position of the slot out (a cancelled job): how many."""
        b = slot_base(slot)
        word = int(self.mem.get(self.rank, b + CLAIM, 1)[0])
        while True:
            nxt, hi = unpack(word)
            old = self.mem.cas(self.rank, b + CLAIM, word, pack(hi, hi))
            if old == word:
                self.mem.add(self.rank, b + COPIED, hi - nxt)
                return nxt
            word = old

    def take(self, owner: int, slot: int, jobno: int, want: int, share: int):
        """Up to ``want`` (at most a 1/``share`` of them) of the oldest queued gids of job
        ``jobno`` at ``owner``: an array (empty: none queued), or None: the job is no longer
        there (ended or cancelled)."""
        b = slot_base(slot)
        head = self.mem.get(owner, b, SLOT_HEAD)
        if int(head[JOBNO]) != jobno or head[CANCEL]:
            return None
        word = int(head[CLAIM])
        for _ in range(4):
            nxt, hi = unpack(word)
            if hi <= nxt:
                break
            n = max(1, min(want, (hi - nxt) // share))
            old = self.mem.cas(owner, b + CLAIM, word, pack(nxt + n, hi))
            if old == word:
                return self.copy_out(owner, b, nxt, n)
            word = old
        return np.zeros(0, dtype=np.int64)

    def copy_out(self, owner: int, b: int, nxt: int, n: int) -> np.ndarray:
        first = nxt % RING
        gids = self.mem.get(owner, b + SLOT_HEAD + first, min(n, RING - first))
        if len(gids) < n:
            gids = np.concatenate([gids, self.mem.get(owner, b + SLOT_HEAD, n - len(gids))])
        self.mem.add(owner, b + COPIED, n)
        return gids

    def report(self, owner: int, slot: int, gids: np.ndarray, failed: np.ndarray) -> None:
        """Tell ``owner`` that tasks ``gids`` of its job in ``slot`` finished."""
        entries = gids * 2 + failed.astype(np.int64) + 1
        b = slot_base(slot) + SLOT_HEAD + RING
        pos = self.mem.fetch_add(owner, slot_base(slot) + FIN_HI, len(entries))
        first = pos % RING
        head = min(len(entries), RING - first)
        self.mem.put(owner, b + first, entries[:head])
        if head < len(entries):
            self.mem.put(owner, b, entries[head:])

    def finished(self, slot: int) -> tuple | None:
        """``(gids, failed)`` reported in the slot's finish ring since the last call."""
        b = slot_base(slot)
        self.mem.sync()
        hi = int(self.local[b + FIN_HI])
        at = self.cursor[slot]
        if hi <= at:
            return None
        where = ring_positions(b + SLOT_HEAD + RING, at, hi - at)
        got = self.local[where]
        zero = np.flatnonzero(got == 0)
        n = int(zero[0]) if len(zero) else len(got)      # not written yet: read it next time
        if not n:
            return None
        got = got[:n] - 1
        self.local[where[:n]] = 0
        self.mem.sync()
        self.cursor[slot] = at + n
        return got >> 1, (got & 1).astype(bool)


class OwnedJob:
    """A job this rank picked up: its dependencies, ready tasks, counts, state file."""

    def __init__(self, jid: str, info: dict, dag, slot: int, first: int, done: np.ndarray):
        self.jid, self.jobno, self.info, self.dag, self.slot = jid, int(jid), info, dag, slot
        self.layout = Layout(dag, 1, 0)
        mem = LocalMemory(1, int(self.layout.nwords[0])).view(0)
        self.layout.init_words(0, mem.local)
        self.release = Release(self.layout, mem)
        self.first = first                  # the slot's ring position of the job's first task
        self.pending: collections.deque = collections.deque()
        self.out = self.back = 0            # tasks published, and heard back from
        self.done_before = int(done.sum())
        self.counts = {"done": self.done_before, "failed": 0, "upstream_failed": 0}
        self.cancelled = False
        self.state_at = 0.0
        self.where: dict = {}               # owner, slot, picked, host (for state.json)
        self.skipped: list = []             # (gids) upstream-failed, to record
        self.queue_roots(done)

    @property
    def total(self) -> int:
        return self.dag.total

    def finished_count(self) -> int:
        return sum(self.counts.values())

    def queue_roots(self, done: np.ndarray) -> None:
        """The roots not done, after the tasks done in earlier incarnations are counted as
        finished (their children's counts go down; a released child already done is not
        queued again)."""
        base = self.dag.base
        for g in range(len(self.dag.groups)):
            d = np.flatnonzero(done[base[g]:base[g + 1]])
            if len(d):
                self.enqueue(self.release.finish(g, d, None), done)
        for group in self.dag.roots():
            gids = np.arange(base[group.index], base[group.index + 1], dtype=np.int64)
            self.pending.append(gids[~done[gids]])

    def enqueue(self, released: tuple, done: np.ndarray | None = None) -> None:
        ready, skipped = released
        base = self.dag.base
        for g, idx in ready:
            gids = base[g] + np.asarray(idx, dtype=np.int64)
            if done is not None:
                gids = gids[~done[gids]]
            if len(gids):
                self.pending.append(gids)
        for g, idx in skipped:
            gids = base[g] + np.asarray(idx, dtype=np.int64)
            self.counts["upstream_failed"] += len(gids)
            self.skipped.append(gids)

    def returned(self, gids: np.ndarray, failed: np.ndarray) -> None:
        """Tasks of this job finished (on any rank): count them, release their children."""
        self.back += len(gids)
        nfailed = int(failed.sum())
        self.counts["failed"] += nfailed
        self.counts["done"] += len(gids) - nfailed
        if self.cancelled:
            return
        order = np.argsort(gids, kind="stable")
        gids, failed = gids[order], failed[order]
        groups = np.searchsorted(self.dag.base, gids, side="right") - 1
        cuts = np.flatnonzero(np.diff(groups)) + 1
        for seg in np.split(np.arange(len(gids)), cuts):
            g = int(groups[seg[0]])
            mask = failed[seg] if failed[seg].any() else None
            self.enqueue(self.release.finish(g, gids[seg] - self.dag.base[g], mask))

    def publish(self, disp: Dispenser) -> None:
        """Hand out ready tasks while fewer than ``RING`` are out and not heard back from,
        once at most half of that many are (a big job's tasks go out in large batches: one
        atomic each)."""
        if self.out - self.back > RING // 2:
            return
        while self.pending and not self.cancelled:
            room = RING - (self.out - self.back)
            if room <= 0:
                return
            head = self.pending.popleft()
            k = disp.publish(self.slot, head[:room])
            self.out += k
            if k < len(head):
                self.pending.appendleft(head[k:])
                return

    def ended(self) -> bool:
        if self.cancelled:
            return self.back >= self.out
        return self.finished_count() >= self.total

    def state(self, **more) -> dict:
        return {"state": "running", "name": self.dag.name, "tasks": self.total,
                "priority": self.info.get("priority", 0), **self.counts,
                "submitted": self.info.get("submitted"), **more}


class JobFiles:
    """What one rank writes for one job (``io.jobs``): task lines, results, failures, logs."""

    def __init__(self, run_dir: str, jid: str, rank: int) -> None:
        self.root = jf.jobs_dir(run_dir, jid)
        self.name = f"rank-{rank:05d}"
        self.open: dict = {}

    def file(self, sub: str):
        f = self.open.get(sub)
        if f is None:
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
            f = self.open[sub] = open(os.path.join(self.root, sub, f"{self.name}.jsonl"), "a",
                                      encoding="utf-8")
        return f

    def line(self, sub: str, value: dict) -> None:
        self.file(sub).write(json.dumps(value) + "\n")

    def result(self, tid: str, value) -> None:
        """A task's value, as ``mpitiny run`` keeps it (``io.values.encode``): JSON in the
        line; bytes and numpy arrays in ``results/rank-R.bin``, the line giving where.
        TypeError / ValueError for a value that cannot be kept."""
        kind, data = encode(value)
        if kind == KIND_JSON:
            self.file("results").write('{"id": %s, "value": %s}\n' % (json.dumps(tid),
                                                                      data.decode()))
            return
        self.file("results")
        binary = self.open.get("bin")
        if binary is None:
            binary = self.open["bin"] = open(os.path.join(self.root, "results",
                                                          f"{self.name}.bin"), "ab")
        offset = binary.tell()
        binary.write(data)
        self.line("results", {"id": tid, "type": KIND_NAMES[kind], "file": f"{self.name}.bin",
                              "offset": offset, "length": len(data)})

    def log_fds(self) -> tuple:
        fds = self.open.get("logs")
        if fds is None:
            os.makedirs(os.path.join(self.root, "logs"), exist_ok=True)
            fds = self.open["logs"] = tuple(
                os.open(os.path.join(self.root, "logs", f"{self.name}.{ext}"),
                        os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) for ext in ("out", "err"))
        return fds

    def streams(self) -> tuple:
        """``(out, err)``: what function tasks print (``logs/rank-R.fn.out`` / ``.fn.err``,
        created at the first write)."""
        pair = self.open.get("streams")
        if pair is None:
            os.makedirs(os.path.join(self.root, "logs"), exist_ok=True)
            pair = self.open["streams"] = tuple(
                _LazyFile(os.path.join(self.root, "logs", f"{self.name}.fn.{ext}"))
                for ext in ("out", "err"))
        return pair

    def flush(self) -> None:
        for sub, f in sorted(self.open.items(), key=lambda item: item[0] != "bin"):
            if sub == "streams":
                for stream in f:
                    stream.flush()
            elif sub != "logs":
                f.flush()

    def close(self) -> None:
        for sub, f in self.open.items():
            if sub == "logs":
                for fd in f:
                    os.close(fd)
            elif sub == "streams":
                for stream in f:
                    stream.close()
            else:
                f.close()
        self.open = {}


class JobRef:
    """A job some rank owns, as every rank sees it (from its ``state.json``)."""

    def __init__(self, jid: str, state: dict) -> None:
        self.jid, self.jobno = jid, int(jid)
        self.owner, self.slot = int(state["owner"]), int(state["slot"])
        self.priority = int(state.get("priority", 0))
        self.picked = float(state.get("picked", 0.0))
        self.empty_until = 0.0
        self.wait = EMPTY_SECONDS
        self.avg = float("nan")
        self.dag: Any = None
        self.info: dict = {}
        self.files: JobFiles | None = None

    def order(self) -> tuple:
        return (-self.priority, self.jobno)


def load_job(run_dir: str, jid: str) -> tuple:
    """``(info, dag)`` of a job, checked as ``mpitiny run`` checks a DAG and for what a served
    job cannot do; raises ``MpitinyError`` (or any error loading raised) otherwise."""
    from mpitiny.dag.load import load_dag_text
    from mpitiny.errors import BadInput
    info = jf.read_job(run_dir, jid)
    if info is None:
        raise BadInput("job.json is missing or unreadable", where=jf.jobs_dir(run_dir, jid))
    with open(jf.jobs_dir(run_dir, jid, "dag.json"), "rb") as f:
        text = f.read()
    source = info.get("source") or "dag.json"
    dag = load_dag_text(text, source=source, params=info.get("params") or {},
                        base_dir=os.path.dirname(source))
    for g in dag.groups:
        if g.wants_inputs:
            raise BadInput(f"{g.where} ({g.name}): a served job's functions cannot take "
                           "`inputs` (their parents' values) in this version", where=source)
        if g.options.resources:
            raise BadInput(f"{g.where} ({g.name}): a served job cannot declare cores, mem "
                           "or gpus in this version", where=source)
    if dag.total >= 1 << GID_BITS:
        raise BadInput(f"{dag.total} tasks: a served job has fewer than 2**{GID_BITS}",
                       where=source)
    return info, dag


def say(text: str) -> None:
    """One line on the rank's real stderr (a task's prints go to the run's logs)."""
    stream = sys.__stderr__
    if stream is not None:
        stream.write(f"mpitiny serve: {text}\n")
        stream.flush()

