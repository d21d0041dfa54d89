"""This process's memory, CPU and I/O figures, read where the kernel keeps them.

Every rank needs a few of them: the node's memory (the result store's share), its own resident
memory (the store spills above its share; progress and trace samples), its CPU time and the
bytes it read and wrote (trace samples). psutil gives them all, but its import is a sizeable
part of a rank's start (figures in docs/startup.md). On Linux they come from ``os.sysconf``
and ``/proc/self`` (one small read each); elsewhere from psutil, imported the first time one
is asked for.
"""
from __future__ import annotations

import os
import time

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_psutil_process = None


def _process():
    """psutil's view of this process (imported on first use: the fallback)."""
    global _psutil_process
    if _psutil_process is None:
        import psutil
        _psutil_process = psutil.Process()
    return _psutil_process


def total_memory() -> int:
    """Bytes of physical memory of this node."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * _PAGE
    except (AttributeError, ValueError, OSError):
        import psutil
        return int(psutil.virtual_memory().total)


def rss() -> int:
    """This process's resident memory in bytes."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return int(_process().memory_info().rss)


def io_bytes() -> tuple:
    """``(bytes read, bytes written)`` by this process from and to storage (0, 0 if unknown)."""
    try:
        with open("/proc/self/io", "rb") as f:
            fields = dict(line.split(b":") for line in f.read().splitlines() if b":" in line)
        return int(fields[b"read_bytes"]), int(fields[b"write_bytes"])
    except (OSError, KeyError, ValueError):
        pass
    try:
        counters = _process().io_counters()
        return counters.read_bytes, counters.write_bytes
    except (AttributeError, OSError):
        return 0, 0


class Sampler:
    """Samples ``(time, CPU %, RSS bytes, bytes read, bytes written)`` of this process; the
    CPU % is over the time since the previous sample (or since the sampler was made), as
    ``psutil.Process.cpu_percent(None)`` gives it: 100 is one core busy."""

    def __init__(self) -> None:
        self.cpu_at, self.wall_at = time.process_time(), time.monotonic()

    def sample(self) -> tuple:
        cpu, wall = time.process_time(), time.monotonic()
        percent = 100.0 * (cpu - self.cpu_at) / (wall - self.wall_at) if wall > self.wall_at else 0.0
        self.cpu_at, self.wall_at = cpu, wall
        return (time.time(), round(percent, 1), rss(), *io_bytes())
