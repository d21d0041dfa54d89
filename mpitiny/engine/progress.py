"""Live progress of a run, shown by rank 0 and kept in ``RUN_DIR/progress.json``.

Every rank adds its finished (and failed) task counts to two words of rank 0's window, when it
runs out of work and at least every ``REPORT_SECONDS`` while busy; each rank's ``BUSY`` word
says whether it is running a task. Rank 0 reads its own counter words and gets the busy words
one-sidedly, so watching the run costs the workers nothing but those few atomics.

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
        import psutil
        self.process = psutil.Process()

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
        total = self.total
        left = total - done
        eta = left / self.rate if self.rate > 0 else None
        record = {"name": self.name, "state": "finished" if final else "running",
                  "done": done, "total": total, "failed": failed,
                  "rate": round(self.rate, 1), "eta_seconds": None if eta is None else round(eta, 1),
                  "busy_ranks": busy, "ranks": self.nranks, "rss_mb": self.process.memory_info().rss >> 20,
                  "elapsed_seconds": round(t - self.start, 3), "updated": t}
        write_atomic(self.path, json.dumps(record).encode(), durable=final)
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
    """One line about a run: from summary.json when it has finished, else progress.json."""
    summary = os.path.join(run_dir, "summary.json")
    if os.path.exists(summary):
        with open(summary, encoding="utf-8") as f:
            s = json.load(f)
        line = (f"{s['name']}: {'stopped' if s.get('stopped') else 'finished'}: {s['done']} "
                f"done, {s['failed']} failed, {s['upstream_failed']} upstream-failed of "
                f"{s['tasks']} in {s['wall_seconds']:.2f} s on {s['ranks']} ranks (exit status "
                f"{s['exit_status']})")
        if s.get("cached"):
            line += f"; run {s['incarnation']}: {s['cached']} were done in earlier runs"
        if s.get("stopped"):
            line += f"; stopped by {s['stopped']}: run the same command again to resume"
        return line
    line = None
    if os.path.exists(os.path.join(run_dir, "progress.json")):
        with open(os.path.join(run_dir, "progress.json"), encoding="utf-8") as f:
            p = json.load(f)
        age = time.time() - p["updated"]
        line = f"{p['name']}: {format_line(p, tty=False)[len('mpitiny: '):]} (updated {age:.0f} s ago)"
        if age < STALE_SECONDS:
            return line
    from mpitiny.io import journal
    info = journal.read_run_info(run_dir)
    if info is None or "tasks" not in info:
        if line is None:
            raise OSError(f"{run_dir}: no progress.json, summary.json or journal")
        return line
    done = journal.read_journals(run_dir, int(info["tasks"])).ndone
    return ((line + "; " if line else f"{info['name']}: ") +
            f"not finished: {done} of {info['tasks']} tasks journaled done (run "
            f"{info['incarnation']}); if its job is gone, run the same command again to resume")
