"""Live progress of a run, shown by rank 0 and kept in ``RUN_DIR/progress.json``.

Every rank adds its finished (and failed) task counts to two words of rank 0's window, when it
runs out of work and at least every ``REPORT_SECONDS`` while busy (beyond ``TREE_RANKS`` ranks
the finished counts climb a combining tree on the way, so ``done`` lags by a few rounds, and
by up to ``DRAIN_SECONDS`` for the subtree of a rank busy with a long task:
``mpitiny.engine.control``); each rank's ``BUSY`` word says whether it is running a task.
Rank 0 reads its own counter words and gets the busy words one-sidedly, so watching the run
costs the workers nothing but those few atomics.

On a terminal, rank 0 redraws one line (``\\r``); when stderr is a file (a Slurm log) it
prints a line every ``interval`` seconds, parseable as ``key=value`` pairs::

    mpitiny: progress done=4500/10000 pct=45.0 failed=0 rate=1520.3/s eta=3.6s busy=100% rss=81MB elapsed=3.0s

``progress.json`` holds the same figures, rewritten atomically each time, for
``mpitiny status RUN_DIR`` (from another shell, while the run goes on).
"""
from __future__ import annotations

import json
import os
import time

from mpitiny import procstat
from mpitiny.engine.control import RunWatch
from mpitiny.io.commit import write_atomic

STALE_SECONDS = 60.0      # `mpitiny status`: progress this old means the run may be gone


class Progress:
    """Rank 0's view of the run's progress; ``tick`` is called between task chunks."""

    def __init__(self, watch: RunWatch, name: str, total: int, nranks: int, run_dir: str,
                 stream, interval: float | None, quiet: bool) -> None:
        self.watch = watch
        self.name = name
        self.total = total
        self.nranks = nranks
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (0.5 if self.tty else 10.0)
        self.show = not quiet
        self.path = os.path.join(run_dir, "progress.json")
        self.start = time.time()
        self.next = time.monotonic() + min(self.interval, 1.0)
        self.last_done = 0
        self.last_time = self.start
        self.rate = 0.0

    def tick(self, final: bool = False, working: bool = False) -> None:
        """Show and save progress if ``interval`` has passed; ``working``: rank 0 is between
        two of its own chunks (so it counts as busy, although its flag is down)."""
        now = time.monotonic()
        if not final and now < self.next:
            return
        self.next = now + self.interval
        done = self.watch.finished()
        failed = self.watch.failed()
        busy = 0 if final else int(working) + self.watch.busy_others()
        t = time.time()
        if t > self.last_time:
            current = (done - self.last_done) / (t - self.last_time)
            self.rate = current if self.rate == 0 else 0.5 * self.rate + 0.5 * current
        self.last_done, self.last_time = done, t
        total = self.total + self.watch.added()      # with the tasks added so far
        left = total - done
        eta = left / self.rate if self.rate > 0 else None
        record = {"name": self.name, "state": "finished" if final else "running",
                  "done": done, "total": total, "failed": failed,
                  "rate": round(self.rate, 1), "eta_seconds": None if eta is None else round(eta, 1),
                  "busy_ranks": busy, "ranks": self.nranks, "rss_mb": procstat.rss() >> 20,
                  "elapsed_seconds": round(t - self.start, 3), "updated": t}
        write_atomic(self.path, json.dumps(record).encode(), durable=False)
        if self.show:
            self.stream.write(format_line(record, self.tty) + ("\n" if not self.tty or final else ""))
            self.stream.flush()


def format_line(p: dict, tty: bool) -> str:
    pct = 100.0 * p["done"] / p["total"] if p["total"] else 100.0
    eta = "?" if p["eta_seconds"] is None else f"{p['eta_seconds']:.1f}s"
    busy = 100 * p["busy_ranks"] // max(p["ranks"], 1)
    if tty:
        width = 30
        fill = int(width * pct / 100)
        return (f"\r[{'#' * fill}{'.' * (width - fill)}] {pct:5.1f}% {p['done']:,}/{p['total']:,}"
                f" failed {p['failed']:,}  {p['rate']:,.0f}/s  ETA {eta}  busy {busy}%"
                f"  {p['rss_mb']} MB ")
    return (f"mpitiny: progress done={p['done']}/{p['total']} pct={pct:.1f} failed={p['failed']} "
            f"rate={p['rate']:.1f}/s eta={eta} busy={busy}% rss={p['rss_mb']}MB "
            f"elapsed={p['elapsed_seconds']:.1f}s")


def status(run_dir: str) -> str:
    """One line about a run directory, naming its case and what running the same command
    again does:

    - ``running``: progress.json is fresh (updated in the last ``STALE_SECONDS``);
    - ``interrupted``: journals of a run that did not complete (stopped, or killed: no
      summary.json and stale progress): N of M done, the same command resumes it;
    - ``complete with failures``: the same command reruns the failed and skipped tasks;
    - ``complete``: every task done, the same command runs nothing.

    A run without journal (``--no-journal``) is ``finished``, and the same command starts over.
    Raises OSError if the directory holds none of summary.json, progress.json, a journal."""
    from mpitiny.io import journal
    info = journal.read_run_info(run_dir)
    summary = os.path.join(run_dir, "summary.json")
    if os.path.exists(summary):
        with open(summary, encoding="utf-8") as f:
            return _finished(json.load(f), info)
    line = None
    if os.path.exists(os.path.join(run_dir, "progress.json")):
        with open(os.path.join(run_dir, "progress.json"), encoding="utf-8") as f:
            p = json.load(f)
        age = time.time() - p["updated"]
        figures = format_line(p, tty=False)[len("mpitiny: "):]
        if age < STALE_SECONDS:
            return f"{p['name']}: running: {figures} (updated {age:.0f} s ago)"
        line = f"{p['name']}: {figures} (updated {age:.0f} s ago)"
    if info is None or "tasks" not in info:
        if line is None:
            raise OSError(f"{run_dir}: no progress.json, summary.json or journal")
        return line + "; no journal: running the same command again starts over"
    done = journal.read_journals(run_dir, int(info["tasks"])).ndone
    stale = f"; its progress was last updated {age:.0f} s ago" if line is not None else ""
    return (f"{info['name']}: interrupted: {done} of {info['tasks']} tasks done (journaled, run "
            f"{info['incarnation']}){stale}; if its job is gone, running the same command "
            "again resumes it")


def _finished(s: dict, info: dict | None) -> str:
    """``status`` of a run that wrote its summary.json."""
    bad = s["failed"] + s["upstream_failed"]
    counts = (f"{s['done']} done, {s['failed']} failed, {s['upstream_failed']} upstream-failed "
              f"of {s['tasks']}")
    took = f"in {s['wall_seconds']:.2f} s on {s['ranks']} ranks (exit status {s['exit_status']})"
    cached = f"; run {s['incarnation']}: {s['cached']} were done in earlier runs" \
        if s.get("cached") else ""
    if info is None:
        return (f"{s['name']}: finished: {counts} {took}{cached}; no journal: running the "
                "same command again starts over")
    if s.get("stopped"):
        return (f"{s['name']}: interrupted (stopped by {s['stopped']}): {s['done']} of "
                f"{s['tasks']} tasks done, {s['failed']} failed, {s['upstream_failed']} "
                f"upstream-failed, {s['not_run']} not run {took}{cached}; running the same "
                "command again resumes it")
    if bad:
        return (f"{s['name']}: complete with failures: {counts} {took}{cached}; running the "
                f"same command again reruns the {bad} failed or skipped "
                f"task{'s' if bad > 1 else ''}")
    return (f"{s['name']}: complete: all {s['tasks']} tasks done {took}{cached}; running the "
            "same command again does nothing (--fresh starts over)")
