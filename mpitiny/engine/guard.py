"""What keeps a rank alive and in control while it runs tasks: timeouts, stop signals,
isolation of suspect tasks in a child process, and built-in fault injection.

* **Timeouts of Python tasks**: ``Guard.call`` arms ``SIGALRM`` (``setitimer``); the handler
  raises ``TaskTimeout`` inside the task, which unwinds like any exception: the task fails
  (or is retried) and the rank goes on with its next task. C code that never returns to the
  interpreter cannot be interrupted that way, so ``faulthandler``'s watchdog thread (which
  needs no GIL) ends the rank ``GRACE_SECONDS`` later, writing every thread's traceback to the
  rank's ``logs/rank-R.err``; the job then ends, and when it is resumed the task runs alone in a
  child process that is killed at its timeout (``run_isolated``).
* **Timeouts of commands**: each command runs in a new session (its own process group);
  past its timeout the whole group gets SIGTERM, then SIGKILL after ``KILL_GRACE`` seconds.
* **Stop requests**: SIGTERM, SIGINT and SIGUSR1 (Slurm's warning before the time limit) set
  ``Guard.stop_signal``; if a task is running, ``StopRun`` is raised in it (a command's process
  group is killed), so the rank stops within moments, journals the task as stopped (not
  crashed) and the engine ends the run with the "resumable" status.
* **The run's hard end** (``stop_at``, under a time limit): a timer thread marks the time up
  (``time_up``) and, if a task is running, sends the main thread ``SIGALRM``, whose handler
  raises ``StopRun`` in the task (a command's process group is killed): a task that overran
  what the run expected of it is stopped (``cut_off``) and runs again when the run resumes,
  instead of running past the end the run promised.
* **Isolation** (``run_isolated``): a task that crashed its rank in an earlier incarnation runs
  in a forked child that never touches MPI; the child sends back the encoded value or the
  error text through a pipe. A child killed by a signal, ``os._exit`` or a timeout is reported
  as that task's crash, and the rank survives.
* **Fault injection**: ``MPITINY_FAULT="rank=R:after=N:mode=raise|exit|kill|hang|segv"``
  makes rank R fail after it has run N tasks (``Fault``).
"""
from __future__ import annotations

import faulthandler
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback

from mpitiny.errors import BadInput

GRACE_SECONDS = 10.0
KILL_GRACE = 2.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


_early = [0]       # a stop signal that came while the run was starting (install_early)


def _note_early(signum, frame) -> None:
    _early[0] = signum


def install_early() -> dict:
    """Catch stop signals from the moment ``mpitiny run`` starts (loading the DAG, MPI_Init,
    allocating windows), so that Slurm's warning arriving then still ends in a clean,
    resumable stop instead of killing the rank; ``Guard.install`` takes the signal over.
    Returns the handlers to put back at the end (``restore``)."""
    _early[0] = 0
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, _note_early) for sig in STOP_SIGNALS}


def announce_ready() -> None:
    """Tell the batch script that every rank catches stop signals now, by creating the file
    ``$MPITINY_READY_FILE`` names (if set): ``slurm/common.sh`` holds Slurm's early warning
    until then, since a rank still starting Python would die of it. Called on rank 0 after a
    collective that every rank enters after ``install_early``."""
    path = os.environ.get("MPITINY_READY_FILE")
    if path:
        try:
            open(path, "a").close()
        except OSError:
            pass


def restore(handlers: dict) -> None:
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


class TaskTimeout(Exception):
    """Raised inside a Python task that ran past its ``timeout``."""


class StopRun(BaseException):
    """Raised inside a running task when the rank is asked to stop (SIGTERM, SIGUSR1, SIGINT)."""


class Guard:
    """Signal handling of one rank while it runs tasks."""

    def __init__(self) -> None:
        self.stop_signal = 0
        self.in_task = False
        self.timeout = 0.0
        self.time_up = False
        self.cut_off = 0       # tasks stopped mid-way at the run's hard end
        self.log_file = None
        self._saved: dict = {}
        self._deadline: threading.Timer | None = None

    def install(self, log_file=None) -> None:
        """Take over the stop signals and SIGALRM; ``log_file`` (a file object) receives the
        Python tracebacks of a segmentation fault or of a task hung past its timeout."""
        self.log_file = log_file
        self.stop_signal = self.stop_signal or _early[0]
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in STOP_SIGNALS:
            self._saved[sig] = signal.signal(sig, self._on_stop)
        self._saved[signal.SIGALRM] = signal.signal(signal.SIGALRM, self._on_alarm)
        if self.log_file is not None:
            faulthandler.enable(file=self.log_file)

    def stop_at(self, when: float) -> None:
        """Arm the run's hard end at ``when`` (``time.time()`` seconds)."""
        self._deadline = threading.Timer(max(0.0, when - time.time()), self._time_is_up)
        self._deadline.daemon = True
        self._deadline.start()

    def _time_is_up(self) -> None:
        self.time_up = True
        main = threading.main_thread().ident
        if self.in_task and main is not None:
            signal.pthread_kill(main, signal.SIGALRM)

    def uninstall(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        self._saved = {}
        if self.log_file is not None:
            faulthandler.disable()
            self.log_file = None

    def _on_stop(self, signum, frame) -> None:
        self.stop_signal = signum
        if self.in_task:
            self.in_task = False
            raise StopRun(signal.Signals(signum).name)

    def _on_alarm(self, signum, frame) -> None:
        if self.in_task:
            self.in_task = False
            if self.time_up:
                self.cut_off += 1
                raise StopRun("the run's time limit")
            raise TaskTimeout(f"timed out after {self.timeout:g} s")

    def call(self, fn, args, kwargs, timeout: float | None):
        """``fn(*args, **kwargs)`` with a stop request or ``timeout`` raising inside it."""
        self.in_task = True
        if timeout:
            self.timeout = timeout
            signal.setitimer(signal.ITIMER_REAL, timeout)
            if self.log_file is not None:
                faulthandler.dump_traceback_later(timeout + GRACE_SECONDS, exit=True,
                                                  file=self.log_file)
        try:
            if self.stop_signal:
                raise StopRun(signal.Signals(self.stop_signal).name)
            return fn(*args, **kwargs)
        finally:
            self.in_task = False
            if timeout:
                signal.setitimer(signal.ITIMER_REAL, 0)
                if self.log_file is not None:
                    faulthandler.cancel_dump_traceback_later()

    def run_command(self, command: str, env: dict, out_fd: int, err_fd: int,
                    timeout: float | None) -> str | None:
        """Run a shell command in its own process group; None if it succeeded, else why not.
        Raises ``StopRun`` (after killing the group) when the rank is asked to stop."""
        try:
            proc = subprocess.Popen(command, shell=True, stdout=out_fd, stderr=err_fd,
                                    stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        except OSError as exc:
            return f"command could not start: {exc}"
        self.in_task = True
        try:
            if self.stop_signal:
                raise StopRun(signal.Signals(self.stop_signal).name)
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.in_task = False
            kill_group(proc)
            return f"timed out after {timeout:g} s: its process group was killed"
        except BaseException:
            self.in_task = False
            kill_group(proc)
            raise
        finally:
            self.in_task = False
        if code == 0:
            return None
        return f"command exited with status {code}" if code > 0 else \
            f"command killed by signal {-code} ({_signal_name(-code)})"


def kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the command's whole process group, SIGKILL if it is still there later."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(wait)
            if sig == signal.SIGTERM:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)    # leftovers of the group
                except (ProcessLookupError, PermissionError):
                    pass
            return
        except subprocess.TimeoutExpired:
            continue


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


# ---------------------------------------------------------------------- isolation
def run_isolated(call, timeout: float | None, serve=None, child_setup=None) -> tuple:
    """Run ``call()`` (returns ``(kind, data)`` of the encoded value) in a forked child.

    Returns ``("ok", kind, data)``, ``("error", text)`` for an exception, or ``("crash", text)``
    when the child died (signal, ``os._exit``, timeout). The child never calls MPI and leaves
    with ``os._exit``, so the parent's MPI state is untouched. What the child needs from the
    rank it asks for: ``child_setup(request)`` runs in the child first, and ``request(bytes)
    -> bytes`` there is answered by ``serve(bytes) -> bytes`` here (the shared state store).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    rfd, wfd = os.pipe()                 # child -> parent: requests, then the outcome
    qfd, afd = os.pipe()                 # parent -> child: answers
    pid = os.fork()
    if pid == 0:                                     # the child
        os.close(rfd)
        os.close(afd)
        _child(call, wfd, qfd, child_setup)
    os.close(wfd)
    os.close(qfd)
    try:
        outcome, timed_out = _serve_child(pid, rfd, afd, serve, timeout)
    finally:
        os.close(rfd)
        os.close(afd)
    _, status = os.waitpid(pid, 0)
    if timed_out:
        return ("crash", f"timed out after {timeout:g} s (run alone in a child process, "
                         "which was killed)")
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return ("crash", f"killed by signal {sig} ({_signal_name(sig)})")
    if outcome is None:
        return ("crash", f"the task's process exited with status {os.WEXITSTATUS(status)} "
                         "before returning (os._exit?)")
    tag, payload = outcome
    if tag == b"E":
        return ("error", payload.decode("utf-8", "replace"))
    return ("ok", struct.unpack("<q", payload[:8])[0], payload[8:])


def _frame(tag: bytes, payload: bytes) -> bytes:
    return tag + struct.pack("<q", len(payload)) + payload


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exactly(fd: int, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            raise EOFError("the rank closed the pipe")
        out += chunk
    return bytes(out)


def _child(call, wfd: int, qfd: int, child_setup) -> None:
    """The forked child: run ``call``, send its outcome, leave with ``os._exit``."""
    code = 0
    try:
        for sig in (*STOP_SIGNALS, signal.SIGALRM):
            signal.signal(sig, signal.SIG_DFL)

        def request(payload: bytes) -> bytes:
            _write_all(wfd, _frame(b"Q", payload))
            head = _read_exactly(qfd, 9)
            return _read_exactly(qfd, struct.unpack("<q", head[1:])[0])

        try:
            if child_setup is not None:
                child_setup(request)
            kind, data = call()
            msg = _frame(b"V", struct.pack("<q", kind) + data)
        except BaseException as exc:              # noqa: B902 - reported as the task's error
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            msg = _frame(b"E", text.encode("utf-8", "replace"))
        sys.stdout.flush()
        sys.stderr.flush()
        _write_all(wfd, msg)
    except BaseException:                        # noqa: B902
        code = 70
    finally:
        os._exit(code)


def _serve_child(pid: int, rfd: int, afd: int, serve, timeout: float | None) -> tuple:
    """Answer the child's requests until it sends its outcome or dies; returns (outcome frame
    ``(tag, payload)`` or None, whether it was killed at its timeout)."""
    buf = bytearray()
    deadline = (time.monotonic() + timeout) if timeout else None
    poller = select.poll()          # not select.select: it refuses descriptors from 1024 on
    poller.register(rfd, select.POLLIN)
    try:
        while True:
            while len(buf) >= 9:
                size = struct.unpack("<q", buf[1:9])[0]
                if len(buf) < 9 + size:
                    break
                tag, payload = bytes(buf[:1]), bytes(buf[9:9 + size])
                del buf[:9 + size]
                if tag != b"Q":
                    return (tag, payload), False
                answer = serve(payload) if serve is not None else b""
                _write_all(afd, _frame(b"A", answer))
            wait = None if deadline is None else 1000 * max(0.0, deadline - time.monotonic())
            ready = poller.poll(wait)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                return None, True
            chunk = os.read(rfd, 1 << 20)
            if not chunk:
                return None, False
            buf += chunk
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise


# ---------------------------------------------------------------------- fault injection
FAULT_MODES = ("raise", "exit", "kill", "hang", "segv")


class Fault:
    """``MPITINY_FAULT=rank=R:after=N:mode=MODE``: rank R fails once it has run N tasks, as
    its next task starts.

    Modes: ``raise`` (an internal error: the job is aborted), ``exit`` (``os._exit(9)``),
    ``kill`` (SIGKILL to itself, like ``kill -9``), ``hang`` (sleeps for ever), ``segv``
    (a segmentation fault).
    """

    def __init__(self, after: int, mode: str) -> None:
        if mode not in FAULT_MODES:
            raise BadInput(f"MPITINY_FAULT: mode must be one of {', '.join(FAULT_MODES)}")
        self.left = after
        self.mode = mode

    def take(self, n: int) -> int | None:
        """Count ``n`` tasks about to run; if the fault is due among them, how many run first."""
        if self.left < n:
            return max(self.left, 0)
        self.left -= n
        return None

    def fire(self, journal=None, task: int = -1) -> None:
        """Fail now; with a ``journal`` (``ChunkJournal``), as ``task`` starts: its ``.now``
        file names the task, as after a real crash inside it."""
        if journal is not None and journal.on:
            journal.now[0], journal.now[1] = task, 1
        if self.mode == "exit":
            os._exit(9)
        if self.mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.mode == "hang":
            while True:
                time.sleep(3600)
        if self.mode == "segv":
            import ctypes
            ctypes.string_at(0)
        raise RuntimeError("fault injected by MPITINY_FAULT")


def parse_fault(spec: str | None, rank: int) -> Fault | None:
    """The fault ``spec`` injects on ``rank``, if any; a bad spec is the same ``BadInput``
    on every rank."""
    if not spec:
        return None
    fields = dict(part.split("=", 1) for part in spec.split(":") if "=" in part)
    fault = Fault(int(fields.get("after", 0)), fields.get("mode", "raise"))
    return fault if int(fields.get("rank", -1)) == rank else None
