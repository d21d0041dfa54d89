"""One exception hierarchy; each class carries the process exit status it stands for.

The CLI handles every ``MpitinyError`` in one place (``mpitiny.cli.main``): it prints the
message once (on rank 0 when running under MPI) and exits with ``exit_code``.

Exit statuses of ``mpitiny run``: 0 every task done, 1 some task failed (or was skipped because
a parent failed, or ``--max-fails`` ended the run), 2 bad input (nothing ran), 3 internal error
(the job was aborted), 75 stopped by a signal (SIGTERM, SIGINT, SIGUSR1) with the journals
flushed: run the same command again to resume (75 is ``EX_TEMPFAIL``: "try again later").
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_TASKS_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3
EXIT_RESUMABLE = 75


class MpitinyError(Exception):
    """Base class: a failure with a message meant for the user and an exit status."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, where: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.where = where

    def format(self) -> str:
        """``where: message``, the single line the user sees."""
        return f"{self.where}: {self.message}" if self.where else self.message

    def __str__(self) -> str:
        return self.format()


class BadInput(MpitinyError):
    """A dag.json, parameter or input file that cannot be run; found before any task runs."""

    exit_code = EXIT_BAD_INPUT


class DagError(BadInput):
    """A problem inside a dag.json: ``where`` names the file and the task (``dag.json: tasks[3] 'b'``)."""


class TasksFailed(MpitinyError, RuntimeError):
    """Tasks of a run failed where the caller needs every result (``mpitiny.map``)."""

    exit_code = EXIT_TASKS_FAILED


class InternalError(MpitinyError):
    """A bug or an environment failure inside the runtime; the whole MPI job is aborted."""

    exit_code = EXIT_INTERNAL
