"""``mpitiny.procstat``: the figures read from /proc agree with psutil's, and psutil stands in
where /proc cannot be read."""
from __future__ import annotations

import builtins
import mmap
import os
import sys

import psutil
import pytest

from mpitiny import procstat


def test_node_memory_is_psutil_s():
    assert procstat.total_memory() == psutil.virtual_memory().total


def test_resident_memory_follows_an_allocation():
    before = procstat.rss()
    assert abs(before - psutil.Process().memory_info().rss) < 8 << 20
    block = mmap.mmap(-1, 64 << 20)    # fresh pages: freed heap that is still resident is not
    block[::4096] = b"x" * len(block[::4096])         # reused, as a bytearray's may be
    assert procstat.rss() - before > 48 << 20
    block.close()


def test_bytes_written_to_storage_are_counted(tmp_path):
    _, written = procstat.io_bytes()
    path = tmp_path / "f"
    with open(path, "wb") as f:
        f.write(os.urandom(1 << 20))
        f.flush()
        os.fsync(f.fileno())
    assert procstat.io_bytes()[1] - written >= 1 << 20


def test_a_busy_interval_shows_cpu_and_an_idle_one_almost_none():
    """The busy interval's CPU % is the share of a core this process had in it, whatever the
    load (a busy loop on a loaded machine may get less than half a core)."""
    import time

    def now():
        return time.process_time(), time.monotonic()

    outer0 = now()
    sampler = procstat.Sampler()
    inner0 = now()
    while time.process_time() < inner0[0] + 0.2:
        pass
    inner1 = now()
    busy = sampler.sample()
    outer1 = now()
    time.sleep(0.2)
    idle = sampler.sample()
    # the sampler's interval lies between the inner and the outer one, however the process
    # was scheduled: its CPU % between least CPU over most wall time and most over least
    low = 100 * (inner1[0] - inner0[0]) / (outer1[1] - outer0[1])
    high = 100 * (outer1[0] - outer0[0]) / (inner1[1] - inner0[1])
    assert len(busy) == 5 and low - 0.1 <= busy[1] <= high + 0.1 and idle[1] < busy[1] / 2
    assert busy[2] > 0 and busy[0] > 1e9               # RSS, and a wall-clock time


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_without_proc_psutil_gives_the_figures(monkeypatch):
    real_open = builtins.open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc/"):
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(procstat, "open", no_proc, raising=False)   # procstat's reads only
    monkeypatch.setattr(procstat, "_psutil_process", None)
    assert abs(procstat.rss() - psutil.Process().memory_info().rss) < 8 << 20
    assert procstat.io_bytes() == tuple(psutil.Process().io_counters()[2:4])
    assert procstat._psutil_process is not None
