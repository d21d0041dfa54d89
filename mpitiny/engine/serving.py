"""Jobs that share one served run (``mpitiny serve``): the engine side. The files are
``mpitiny.io.jobs``, the command ``mpitiny.serve``.

A served run is an ordinary run (``run_file``) of a one-task DAG that rank 0 holds open
(``adding.held_open``), so it never ends when idle: it ends on ``mpitiny stop`` (every rank
leaves as on a stop signal, journals synced; the command exits 0), on SIGTERM or on the time
limit (walltime: exit 75, resumable, as any run). Each rank's ``Adding`` builds a ``Jobs``
beside its store (``adding.serving``) and calls ``Jobs.work`` each time it looks for work.

**No central rank.** A job is picked up by whichever rank looks first (``look``: at most one
look at ``jobs/`` per ``LOOK_SECONDS`` x P seconds per rank, at random phases, so that the
allocation looks about once per ``LOOK_SECONDS`` however many ranks it has): it renames the
ticket into ``claimed/`` (atomic: one rank wins), loads the DAG with the checks of
``mpitiny run`` (a bad one fails that job alone: its ``state.json`` and ``error.txt`` say why,
once) and becomes the job's *owner*:

- it keeps the job's dependencies in a private single-rank ``Layout`` and ``Release`` (the
  engine's own counting, on a local memory), so families, element-wise deps with offsets,
  whole-group deps and failed parents behave exactly as in ``mpitiny run``;
- it hands out the job's ready tasks through a *dispenser* in its window (one of
  ``MAX_OWNED`` job slots per rank): a ring of task numbers (gids) with a ``CLAIM`` word
  packing ``next`` and ``hi``, as the added-task store's (``mpitiny.queue.added``). Every
  rank, the owner too, takes a chunk from the oldest end with one ``Compare_and_swap``
  (about ``CHUNK_SECONDS`` of work at the job's average task time there, at most a
  1/min(P, 16) share of what is ready), then copies the gids with one ``Get``;
- a rank that finished tasks of a job reports them in the owner's *finish ring* (one
  ``Fetch_and_op`` reserves positions, one ``Put`` writes ``gid * 2 + failed + 1``); the owner
  reads them from its own memory when it looks for work, counts the children down and
  publishes those that became ready. The owner publishes no more than ``RING`` tasks beyond
  those it has heard back from, so neither ring overflows;
- it announces the job to every rank (one atomic add on each rank's ``ANNOUNCE`` word, after
  its ``state.json`` says where the job's dispenser is); a rank that sees its word change
  reads the states of the jobs it does not know.

**Priorities between jobs** (``--priority``, higher first; equal: older first): a rank looks
at the dispensers of the jobs it knows in that order each time it looks for work, that is
between any two tasks. So a new job of higher priority gets every rank within one task
length of its announcement, wherever the lower job's tasks sit. A dispenser found empty is not
looked at again for ``EMPTY_SECONDS`` (doubling to ``EMPTY_MAX``) unless its job is announced
again. Priorities inside a job (a DAG's own ``priority``) are not followed: its ready tasks go
out in the order they became ready.

Why not the added tasks of ``mpitiny.submit`` (``adding``), each job task an added task with
deps on its parents: (1) they have no priorities: a rank takes its own store's newest task
first and steals only when its store is empty, from the oldest end, so a high-priority job
claimed by one rank would wait behind every task the other ranks hold; a priority would need a
ring per level in each store and a run-wide view of the highest waiting level, which the
store does not have; (2) deps would be expanded per instance into ids and polled by the adding
rank, one ``Get`` per remote dep, where the Layout counts a family's deps in arrays; (3)
stores hold at most 65,536 unfinished tasks per rank. What this module reuses of that path:
the journal's records of added keys (a job task's DONE record, ``journal.added_done``, under
the key ``job_key(job, gid)``), the task table rows and the run's counting of added tasks
(``Control.add_tasks``: the progress line shows job tasks).

**A task of a job** is called on its own (``jobtasks.TaskCaller``): its function with the
instance's arguments, or its command in the directory the job was submitted from, with the
entry's ``retries`` and ``timeout`` (else the server's); its line (``tasks/``), value
(``results/``, as ``mpitiny run`` keeps values), failure and what it printed go to the job's
files, its row to the run's task table; the chunk is journaled DONE once its lines reached
the OS, then reported to the owner. Under a time limit a task that would not finish before
the end is not started (by the job's average time on this rank): the run ends resumably.

**Idle**: a rank that has run no job task for ``IDLE_AFTER`` and owns none sleeps
``IDLE_SLEEP`` at each look, so that a server idle for hours takes little CPU.

**Resuming**: a restarted server (the same ``mpitiny serve RUN_DIR``) resumes the run; before
it starts, the tickets of jobs that had not ended go back to ``incoming/``
(``io.jobs.requeue_unfinished``); the rank that picks one up again marks its tasks journaled
done as finished (``Resumed.added_done``, the same on every rank) before handing out the rest.

**Cancelling** (``io.jobs.request_cancel``): the owner sees ``ID/cancel`` at its next look,
sets its slot's ``CANCEL`` word (ranks take no more of it), drops what is queued, waits for
the tasks that are running and ends the job ``cancelled``.

Not in this version: a job's functions that take ``inputs`` (their parents' values) and
resource declarations (``cores``, ``mem``, ``gpus``) are refused at load; ``rank`` placement,
batch forms and split locality are not followed (each task is called on its own wherever it
is taken); ``mpitiny.submit`` from a job's task; a job's releases wait while its owner runs a
long task.
"""
from __future__ import annotations

import random
import socket
import sys
import time

import numpy as np

from mpitiny.engine.control import chunk_done
from mpitiny.engine.jobslots import (
    ANNOUNCE, CANCEL, CHUNK_SECONDS, EMPTY_MAX, EMPTY_SECONDS, HEADER_WORDS, LOOK_SECONDS,
    MAX_CHUNK, MAX_OWNED, QUARANTINE, SHARE_RANKS, SLOT_WORDS, STATE_SECONDS, Dispenser,
    JobFiles, JobRef, OwnedJob, job_key, load_job, say, slot_base)
from mpitiny.engine.jobtasks import TaskCaller, row_name
from mpitiny.engine.types import End
from mpitiny.errors import MpitinyError
from mpitiny.io import jobs as jf
from mpitiny.io.rundir import UPSTREAM_FAILED

IDLE_AFTER = 0.25      # seconds without a job task (and owning none) before a rank
IDLE_SLEEP = 0.002     # sleeps this long at each look: an idle server uses little CPU


class Jobs:
    """One rank's side of a served run, built beside its added-task store
    (``adding.serving``); ``work`` is called each time the rank looks for work."""

    def __init__(self, adding) -> None:
        e = self.e = adding.e
        self.rank, self.nranks, self.run_dir = e.rank, e.nranks, e.run_dir
        self.mem = e.world.words(HEADER_WORDS + MAX_OWNED * SLOT_WORDS)
        self.disp = Dispenser(self.mem)
        self.owned: dict = {}                 # slot -> OwnedJob
        self.free_at = [0.0] * MAX_OWNED      # when each slot may take a job again
        self.known: dict = {}                 # id -> JobRef of the jobs running anywhere
        self.view: list = []                  # the same, highest priority first
        self.ended: set = set()
        self.files: dict = {}                 # id -> JobFiles of this rank
        self.announced = 0
        self.rng = random.Random(99991 + 7919 * self.rank)
        self.period = LOOK_SECONDS * self.nranks
        self.next_look = time.monotonic() + self.rng.uniform(0, min(self.period, 1.0))
        self.stopping = False
        self.host = socket.gethostname()
        self.share = min(self.nranks, SHARE_RANKS)
        self.done_keys = None if e.resumed is None else e.resumed.added_done
        self.caller = TaskCaller(e, self.run_dir)
        self.idle_since: float | None = None

    @property
    def windows(self) -> list:
        return [self.mem]

    def work(self) -> bool:
        """Look at ``jobs/`` when due, tend the jobs this rank owns, learn of announced jobs,
        run a chunk of the highest-priority job that has one queued; whether it ran one."""
        now = time.monotonic()
        if now >= self.next_look:
            self.look(now)
        if self.owned:
            self.tend(now)
        self.mem.sync()
        if int(self.mem.local[ANNOUNCE]) != self.announced:
            self.refresh()
        ran = self.run_next(time.monotonic()) if self.view else False
        if ran or self.owned:
            self.idle_since = None
        elif self.idle_since is None:
            self.idle_since = now
        elif now - self.idle_since > IDLE_AFTER:
            time.sleep(IDLE_SLEEP)     # a server idle for hours: a few hundred looks a second
        return ran

    # ------------------------------------------------------------------ the run directory
    def look(self, now: float) -> None:
        """The stop request, cancel requests of owned jobs, one waiting job to pick up."""
        self.next_look = now + self.period * self.rng.uniform(0.5, 1.5)
        if self.stopping:
            return
        if jf.stop_requested(self.run_dir):
            self.stopping = True
            say(f"stop requested (rank {self.rank}): ending the run, journals synced")
            self.e.request_stop(End.SIGNAL)
            return
        for job in list(self.owned.values()):
            if not job.cancelled and jf.cancel_requested(self.run_dir, job.jid):
                self.cancel(job)
        if self.free_slot(now) is not None:
            jid = jf.claim_next(self.run_dir)
            if jid is not None:
                self.claim(jid)

    def free_slot(self, now: float) -> int | None:
        for s in range(MAX_OWNED):
            if s not in self.owned and now >= self.free_at[s]:
                return s
        return None

    def claim(self, jid: str) -> None:
        """Own a job just picked up: load it (a bad one fails alone), count what is left of
        it, publish its ready tasks, say where it is, announce it."""
        picked = time.time()
        try:
            info, dag = load_job(self.run_dir, jid)
        except MpitinyError as exc:
            self.fail_job(jid, exc.format(), picked)
            return
        except Exception as exc:                   # noqa: BLE001 (the job's own error)
            self.fail_job(jid, f"loading failed: {type(exc).__name__}: {exc}", picked)
            return
        slot = self.free_slot(time.monotonic())
        assert slot is not None
        done = np.zeros(dag.total, dtype=bool)
        if self.done_keys is not None and len(self.done_keys):
            done = np.isin(job_key(int(jid), np.arange(dag.total, dtype=np.int64)),
                           self.done_keys)
        job = OwnedJob(jid, info, dag, slot, self.disp.open(slot, int(jid)), done)
        job.where = {"owner": self.rank, "slot": slot, "picked": picked, "host": self.host}
        self.owned[slot] = job
        left = dag.total - job.done_before
        if left:
            self.e.control.add_tasks(left)
            self.e.counts.added += left
        self.record_skipped(job)
        job.publish(self.disp)
        jf.write_state(self.run_dir, jid, job.state(**job.where))
        self.announce()

    def fail_job(self, jid: str, message: str, picked: float) -> None:
        """A job that cannot run: one message, in its state and ``error.txt``."""
        from mpitiny.io.commit import write_atomic
        info = jf.read_job(self.run_dir, jid) or {}
        write_atomic(jf.jobs_dir(self.run_dir, jid, "error.txt"), (message + "\n").encode())
        jf.write_state(self.run_dir, jid, {
            "state": "failed", "error": message, "priority": info.get("priority", 0),
            "submitted": info.get("submitted"), "picked": picked, "ended": time.time()})
        say(f"job {jid} failed: {message}")

    def announce(self) -> None:
        for r in range(self.nranks):
            self.mem.add(r, ANNOUNCE, 1)

    def refresh(self) -> None:
        """Learn where the running jobs are (their ``state.json``), forget the ended ones."""
        self.announced = int(self.mem.local[ANNOUNCE])
        for jid in jf.job_ids(self.run_dir):
            if jid in self.ended:
                continue
            st = jf.read_state(self.run_dir, jid)
            if st.get("state") in jf.FINAL:
                self.ended.add(jid)
                self.forget(jid)
            elif st.get("state") == "running" and "owner" in st:
                ref = self.known.get(jid)
                if ref is None or (ref.owner, ref.slot) != (st["owner"], st["slot"]):
                    self.known[jid] = JobRef(jid, st)
                else:
                    ref.empty_until, ref.wait = 0.0, EMPTY_SECONDS
        self.view = sorted(self.known.values(), key=JobRef.order)

    def forget(self, jid: str) -> None:
        self.known.pop(jid, None)
        files = self.files.pop(jid, None)
        if files is not None and not any(j.jid == jid for j in self.owned.values()):
            files.close()
        elif files is not None:
            self.files[jid] = files

    def job_files(self, jid: str) -> JobFiles:
        files = self.files.get(jid)
        if files is None:
            files = self.files[jid] = JobFiles(self.run_dir, jid, self.rank)
        return files

    # ------------------------------------------------------------------ owning jobs
    def tend(self, now: float) -> None:
        """For each owned job: what other ranks finished, releases, publishing, its state."""
        for slot, job in list(self.owned.items()):
            got = self.disp.finished(slot)
            if got is not None:
                job.returned(*got)
            self.record_skipped(job)
            job.publish(self.disp)
            if job.ended():
                self.conclude(job, now)
            elif now - job.state_at > STATE_SECONDS:
                job.state_at = now
                jf.write_state(self.run_dir, job.jid, job.state(**job.where))

    def record_skipped(self, job: OwnedJob) -> None:
        """Rows and lines for a job's upstream-failed tasks (they never run)."""
        if not job.skipped:
            return
        files, now, e = self.job_files(job.jid), time.time(), self.e
        for gids in job.skipped:
            for gid in gids.tolist():
                group, i = job.dag.locate(gid)
                tid = group.instance_id(i)
                files.line("tasks", {"id": tid, "gid": gid, "status": "upstream_failed",
                                     "rank": self.rank, "start": now, "end": now,
                                     "attempt": 0})
                e.adding.name(int(job_key(job.jobno, gid)), row_name(job.jid, group.name, tid),
                              full=True)
            e.records.add_run(job_key(job.jobno, gids), UPSTREAM_FAILED,
                              np.full(len(gids), now), np.full(len(gids), now))
            e.unreported += len(gids)
            e.unreported_failed += len(gids)
        job.skipped = []
        files.flush()

    def cancel(self, job: OwnedJob) -> None:
        """Take no more of the job's tasks out; it ends once the running ones came back."""
        job.cancelled = True
        job.pending.clear()
        self.mem.local[slot_base(job.slot) + CANCEL] = 1
        self.mem.sync()
        job.out = self.disp.drop_queued(job.slot) - job.first

    def conclude(self, job: OwnedJob, now: float) -> None:
        """The job ended: its ``summary.json`` and final state; its slot rests a while."""
        self.job_files(job.jid).flush()
        failed = job.counts["failed"] + job.counts["upstream_failed"]
        state = "cancelled" if job.cancelled else "failed" if failed else "done"
        lines = [x for x in jf.read_lines(self.run_dir, job.jid, "tasks")
                 if x["status"] != "upstream_failed"]
        summary = job.state(**job.where, state=state, ended=time.time(),
                            not_run=job.total - job.finished_count(),
                            first_start=min((x["start"] for x in lines), default=None),
                            last_end=max((x["end"] for x in lines), default=None))
        jf.write_json(jf.jobs_dir(self.run_dir, job.jid, "summary.json"), summary)
        jf.write_state(self.run_dir, job.jid, summary)
        if job.cancelled:
            self.e.unreported += job.total - job.finished_count()
        self.disp.close(job.slot)
        del self.owned[job.slot]
        self.free_at[job.slot] = now + QUARANTINE
        self.announce()

    # ------------------------------------------------------------------ running tasks
    def run_next(self, now: float) -> bool:
        """Take and run a chunk of the first job (by priority) that has tasks queued."""
        gone = []
        ran = False
        for ref in self.view:
            if ref.empty_until > now:
                continue
            want = 1 if ref.avg != ref.avg else \
                max(1, min(MAX_CHUNK, int(CHUNK_SECONDS / max(ref.avg, 1e-7))))
            gids = self.disp.take(ref.owner, ref.slot, ref.jobno, want, self.share)
            if gids is None:
                gone.append(ref)
            elif not len(gids):
                ref.empty_until = now + ref.wait
                ref.wait = min(EMPTY_MAX, ref.wait * 2)
            else:
                ref.wait = EMPTY_SECONDS
                self.run_chunk(ref, gids)
                ran = True
                break
        for ref in gone:
            self.known.pop(ref.jid, None)
            self.view.remove(ref)
        return ran

    def run_chunk(self, ref: JobRef, gids: np.ndarray) -> None:
        e = self.e
        ref.files = self.job_files(ref.jid)
        if ref.dag is None and not self.load(ref, gids):
            return
        e.queue.set_busy(True)
        t0 = time.perf_counter()
        ran: list = []
        failed: list = []
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = ref.files.streams()     # what its tasks print: the job's logs
        try:
            for gid in gids.tolist():
                if e.ending() or not self.in_time(ref):
                    break               # not reported: the run stops; resumed, they run again
                outcome = self.caller.run_task(ref, gid)
                if outcome is None:
                    break
                ran.append(gid)
                failed.append(outcome)
        finally:
            sys.stdout, sys.stderr = saved
        if ran:
            self.finish_chunk(ref, np.array(ran, dtype=np.int64), np.array(failed, dtype=bool))
        took = time.perf_counter() - t0
        if ran:
            per = took / len(ran)
            ref.avg = per if ref.avg != ref.avg else 0.8 * ref.avg + 0.2 * per
        chunk_done(e, took)

    def load(self, ref: JobRef, gids: np.ndarray) -> bool:
        """Load a job this rank did not pick up, to run its tasks; if it cannot (a module
        that does not import on this node), the tasks taken fail with that error."""
        try:
            ref.info, ref.dag = load_job(self.run_dir, ref.jid)
            return True
        except Exception as exc:                   # noqa: BLE001 (the job's own error)
            error = exc.format() if isinstance(exc, MpitinyError) else \
                f"{type(exc).__name__}: {exc}"
        assert ref.files is not None
        now = time.time()
        for gid in gids.tolist():
            ref.files.line("failures", {"gid": gid, "rank": self.rank, "host": self.host,
                                        "time": now, "error": f"rank {self.rank} on "
                                        f"{self.host} could not load the job: {error}"})
            ref.files.line("tasks", {"id": f"#{gid}", "gid": gid, "status": "failed",
                                     "rank": self.rank, "start": now, "end": now, "attempt": 1})
        self.finish_chunk(ref, gids, np.ones(len(gids), dtype=bool))
        return False

    def in_time(self, ref: JobRef) -> bool:
        """Whether a task of the job can still finish before the run's end (walltime)."""
        limit = self.e.control.limit
        if limit is None:
            return True
        per = ref.avg if ref.avg == ref.avg else 0.0
        if time.time() + per <= limit.stop_at:
            return True
        self.e.control.held_back(1, self.e.counts)
        return False

    def finish_chunk(self, ref: JobRef, gids: np.ndarray, failed: np.ndarray) -> None:
        """Journal the chunk DONE (after its lines reached the OS), tell the owner, count."""
        e = self.e
        assert ref.files is not None
        ref.files.flush()
        keys = job_key(ref.jobno, gids).tolist()
        e.journal.added_done([(0, 0, k, f) for k, f in zip(keys, failed.tolist())])
        mine = self.owned.get(ref.slot) if ref.owner == self.rank else None
        if mine is not None and mine.jobno == ref.jobno:
            mine.returned(gids, failed)
        else:
            self.disp.report(ref.owner, ref.slot, gids, failed)
        e.unreported += len(gids)
        e.unreported_failed += int(failed.sum())

    def close(self) -> None:
        """The run ends: the owned jobs are ``interrupted`` (a restart resumes them)."""
        for job in self.owned.values():
            jf.write_state(self.run_dir, job.jid, {**job.state(**job.where),
                                                   "state": "interrupted"})
        for files in self.files.values():
            files.close()
        self.files = {}
