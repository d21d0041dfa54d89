"""Task functions for tests/test_reliability.py: each logs that it ran (one O_APPEND line)."""
import ctypes
import os
import signal
import sys
import time

from mpitiny.io.commit import atomic_output


def _log(log: str, tid: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(fd, f"{tid} {os.environ.get('MPITINY_ATTEMPT')}\n".encode())
    os.close(fd)


def square(i: int, log: str, delay: float = 0.0) -> int:
    _log(log, f"sq[{i}]")
    time.sleep(delay)
    return i * i


def plus(i: int, log: str, inputs: dict) -> int:
    _log(log, f"plus[{i}]")
    (value,) = inputs.values()
    return value + 1


def total(out: str, log: str, inputs: dict) -> int:
    _log(log, "total")
    result = sum(inputs.values())
    with atomic_output(out) as f:
        f.write(f"{result}\n".encode())
    return result


def flaky(i: int, log: str, succeed_at: int) -> int:
    """Fails until its attempt number reaches ``succeed_at``."""
    _log(log, f"flaky[{i}]")
    attempt = int(os.environ["MPITINY_ATTEMPT"])
    if attempt < succeed_at:
        raise RuntimeError(f"attempt {attempt} of flaky[{i}] fails on purpose")
    return attempt


def misbehave(how: str, log: str = "") -> None:
    """A task that does something bad: hang, blocked_hang, segv, kill, os_exit, sys_exit, keyboard, raise."""
    if log:
        _log(log, f"misbehave[{how}]")
    if how == "hang":
        time.sleep(3600)
    elif how == "blocked_hang":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(3600)
    elif how == "segv":
        ctypes.string_at(0)
    elif how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "os_exit":
        os._exit(3)
    elif how == "sys_exit":
        sys.exit(4)
    elif how == "keyboard":
        raise KeyboardInterrupt
    elif how == "raise":
        raise ValueError("bad")
