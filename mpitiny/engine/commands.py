"""Running shell-command tasks: each in its own process group, its output appended to the
rank's ``logs/rank-R.out`` / ``.err`` under a header line, with its offsets in the task row; a
non-zero exit status (or a timeout, which kills the group) fails the task, with the tail of
its stderr in the failure record.
"""
from __future__ import annotations

import os
import time

import numpy as np

from mpitiny.engine.guard import StopRun
from mpitiny.engine.running import TaskRunner
from mpitiny.engine.types import Chunk
from mpitiny.io.rundir import DONE, FAILED, read_log_tail


class CommandRunner:
    """Runs the command tasks of one rank (failures are recorded by its ``TaskRunner``)."""

    def __init__(self, runner: TaskRunner, crashes: np.ndarray | None = None) -> None:
        self.runner = runner
        self.base = runner.base
        self.opts = runner.opts
        self.files = runner.files
        self.records = runner.records
        self.guard = runner.guard
        self.counts = runner.counts
        self.control = runner.control
        self.rank = runner.rank
        self.crashes = crashes            # per gid, crashes in earlier incarnations
        self.cmd_env: dict | None = None

    def run_cmd(self, group, instances, chunk: Chunk) -> tuple:
        """Run each instance's shell command; stdout/stderr go to this rank's log files.
        Returns the failed positions and how many instances ran (see ``TaskRunner.run_fn``).
        In a run that counts resources, once what they use of the node is free, their GPUs
        in their environment (``mpitiny.engine.resources``)."""
        if self.cmd_env is None:
            self.cmd_env = dict(os.environ)
        gang = self.runner.gang          # "ranks": the others wait (mpitiny.engine.gang)
        if group.options.ranks is not None and gang is not None:
            return gang.run.command(group, instances, self.cmd_env,
                                    lambda: self.run_all(group, instances, chunk))
        node = self.runner.node
        if node is not None:
            with node.held(group.index, self.cmd_env):
                return self.run_all(group, instances, chunk)
        return self.run_all(group, instances, chunk)

    def run_all(self, group, instances, chunk: Chunk) -> tuple:
        """``run_cmd`` once its resources are held."""
        out_fd, err_fd = self.files.log_fds()
        env = self.cmd_env
        assert env is not None
        timeout = self.runner.timeout(group)
        retries = self.runner.retries(group)
        first = int(self.base[group.index])
        failed: list = []
        start_by = self.control.start_by    # a time limit: start no task after this (else 0)
        for k, i in enumerate(instances):
            if self.opts.max_fails and self.control.ending():  # --max-fails: start no more
                return failed, k
            if start_by and time.time() > start_by:           # would not finish in time
                return failed, k
            i = int(i)
            tid = group.instance_id(i)
            env["MPITINY_TASK_ID"] = tid
            crashes = 0 if self.crashes is None else int(self.crashes[first + i])
            for attempt in range(crashes + 1, crashes + retries + 2):
                header = f"### task {tid} (rank {self.rank}, attempt {attempt})\n".encode()
                os.write(out_fd, header)
                os.write(err_fd, header)
                out0, err0 = os.fstat(out_fd).st_size, os.fstat(err_fd).st_size
                env["MPITINY_ATTEMPT"] = str(attempt)
                t0 = time.time()
                try:
                    error = self.guard.run_command(group.command(i), env, out_fd, err_fd, timeout)
                except StopRun:
                    return failed, k
                t1 = time.time()
                if error is None or attempt > crashes + retries:
                    break
                self.counts.retried += 1
            out1, err1 = os.fstat(out_fd).st_size, os.fstat(err_fd).st_size
            status = DONE
            if error is not None:
                status = FAILED
                failed.append(k)
                tail = read_log_tail(self.files.err_path, err0, err1 - err0)
                self.runner.fail(first + i, tid, None, t1, f"{error}; command: {group.command(i)}"
                          + (f"\nstderr (last part):\n{tail}" if tail else ""), attempt=attempt)
            self.records.add_one(first + i, status, t0, t1, attempt, (out0, out1 - out0),
                                 (err0, err1 - err0), chunk.queued_at, chunk.stolen)
        return failed, len(instances)
