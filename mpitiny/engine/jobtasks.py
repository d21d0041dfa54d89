"""Calling one task of a served job (``mpitiny serve``; the design is
``mpitiny.engine.serving``): its function or command, retries, timeout, and what it leaves in
the job's files and the run's task table.
"""
from __future__ import annotations

import json
import os
import shlex
import socket
import time
import traceback

from mpitiny.engine.guard import StopRun
from mpitiny.engine.jobslots import JobRef, job_key
from mpitiny.io import jobs as jf
from mpitiny.io.rundir import DONE as ROW_DONE
from mpitiny.io.rundir import FAILED as ROW_FAILED

TASK_LINE = ('{"id": %s, "gid": %d, "status": "%s", "rank": %d, "start": %r, "end": %r, '
             '"attempt": %d}\n')


def row_name(jid: str, family: str, tid: str) -> str:
    """How the run's report and trace name a job's task (``tasks/rank-R.added``): "job 3 sq"
    is its family there."""
    return f"job {jid} {family}@{tid}"


class TaskCaller:
    """Runs tasks of jobs on one rank, for ``serving.Jobs``."""

    def __init__(self, engine, run_dir: str) -> None:
        self.e = engine
        self.rank, self.run_dir = engine.rank, run_dir
        self.host = socket.gethostname()
        self.env: dict | None = None

    def run_task(self, ref: JobRef, gid: int) -> bool | None:
        """Run task ``gid`` of a job and write its lines and row: whether it failed (None:
        the run is stopping and it did not finish)."""
        group, i = ref.dag.locate(gid)
        tid = group.instance_id(i)
        t0 = time.time()
        try:
            error, value, attempt = self.call(ref, group, i, tid)
        except StopRun:
            return None
        t1 = time.time()
        files = ref.files
        assert files is not None
        if error is None and value is not None:
            try:
                files.result(tid, value)
            except (TypeError, ValueError) as exc:
                error = f"its value cannot be kept: {type(exc).__name__}: {exc}"
        if error is not None:
            files.line("failures", {"id": tid, "gid": gid, "rank": self.rank, "host": self.host,
                                    "attempt": attempt, "time": t1, "error": error})
        files.file("tasks").write(TASK_LINE % (json.dumps(tid), gid, "done" if error is None
                                               else "failed", self.rank, t0, t1, attempt))
        key = int(job_key(ref.jobno, gid))
        self.e.records.add_run([key], ROW_DONE if error is None else ROW_FAILED, [t0], [t1],
                               attempt=attempt, queued=ref.picked,
                               stolen=ref.owner != self.rank)
        self.e.adding.name(key, row_name(ref.jid, group.name, tid), full=True)
        return error is not None

    def call(self, ref: JobRef, group, i: int, tid: str) -> tuple:
        """``(error text or None, value, attempt)`` of a task and its retries."""
        opts, guard = self.e.opts, self.e.guard
        retries = group.options.retries if group.options.retries is not None else opts.retries
        timeout = group.options.timeout if group.options.timeout is not None else opts.timeout
        error = None
        attempt = 1
        for attempt in range(1, retries + 2):
            if group.kind == "cmd":
                error = self.command(ref, group, i, tid, attempt, timeout)
                if error is None:
                    return None, None, attempt
                continue
            try:
                args, kwargs = group.call_args(i)
                return None, guard.call(group.function, args, kwargs, timeout), attempt
            except StopRun:
                raise
            except (Exception, SystemExit, KeyboardInterrupt):
                error = traceback.format_exc()
        return error, None, attempt

    def command(self, ref: JobRef, group, i: int, tid: str, attempt: int,
                timeout: float | None) -> str | None:
        """A command task, in the directory it was submitted from, output to the job's logs."""
        assert ref.files is not None
        out, err = ref.files.log_fds()
        header = f"### task {tid} (rank {self.rank}, attempt {attempt})\n".encode()
        os.write(out, header)
        os.write(err, header)
        if self.env is None:
            self.env = dict(os.environ)
        env = dict(self.env, MPITINY_JOB=ref.jid,
                   MPITINY_JOB_DIR=os.path.abspath(jf.jobs_dir(self.run_dir, ref.jid)))
        cmd = group.command(i)
        cwd = ref.info.get("cwd")
        if cwd:
            cmd = f"cd {shlex.quote(cwd)} && {cmd}"
        return self.e.guard.run_command(cmd, env, out, err, timeout)
