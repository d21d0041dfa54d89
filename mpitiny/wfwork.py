"""The work of an imported WfCommons task: burn its runtime, read and write its files.

``mpitiny import-wfcommons --work`` (``mpitiny.dag.wfcommons``) turns every task of a workflow
instance into ``run_task(seconds, read=[[name, size], ...], write=[[name, size], ...])``, and
adds one task, ``stage``, that writes the workflow's own input files (those some task reads and
no task writes) before the tasks that read them. Every file lives in the run's data folder,
``RUN_DIR/data/NAME`` (``MPITINY_RUN_DIR``, set by ``mpitiny run``); a name may hold ``/``
(sub-folders are made as needed).

A task, in this order:

1. reads each input to its end, after checking that it exists and has its declared size, and
   that it starts with the header its writer put there: otherwise the task fails with one
   ``WorkFileError`` naming the file and what is wrong (missing, size, content);
2. writes each output, with its declared size, to a temporary file next to it
   (``.NAME.mpitiny-part``; the next attempt of the task truncates it);
3. burns its cores until ``seconds`` after it started, no sleep (``burn``): one core, a busy
   loop that holds the interpreter (``mpitiny.tasks.spin``); ``cores`` c > 1 (the instance's
   ``coreCount``; the task also declares ``"cores": c``, so it holds c rank slots of its node
   meanwhile), c threads that each take square roots over an array of their own in numpy,
   which releases the interpreter's lock for each pass, so the c run at once. The reads and
   writes count into the runtime, as they did in the recorded one; a task whose files alone
   take longer burns nothing and takes that long;
4. renames the temporary files into place (``os.replace``, atomic), so a declared name only
   ever holds a complete file: a task that fails, times out or is killed leaves no half file
   there, and a task that is done is not run again by a resume, so its outputs are not
   rewritten. Files are not fsynced (a crashed node may lose them with the run directory).

Contents: a header line naming the file, ``mpitiny-wfwork NAME\\n`` (cut to the size), then a
fixed filler. ``stage`` skips a file that is already there with its size and header (a stage
task run again after a crash does not write what it finished); it burns nothing. Both return
``{"read": bytes, "written": bytes}`` (their result, in ``results/`` and ``mpitiny show``).
Reads go through one 1 MiB buffer per process, allocated once; writes from one filler block.
"""
from __future__ import annotations

import os
import threading
import time
from typing import BinaryIO, Sequence

import numpy as np

from mpitiny.dag.wfcommons import PART_SUFFIX
from mpitiny.tasks import spin

DATA_DIR = "data"
HEADER = b"mpitiny-wfwork "
BLOCK = 1 << 20
BURN_FLOATS = 1 << 15      # one pass of a burning thread: 256 KiB, tens of µs without the lock

_FILLER = (b"mpitiny wfcommons work file filler " * (BLOCK // 35 + 1))[:BLOCK]
_buffer = bytearray(BLOCK)


class WorkFileError(RuntimeError):
    """An input file of a task is missing, has another size, or is not what was written."""


def data_dir() -> str:
    """``RUN_DIR/data`` of the run this process serves."""
    run_dir = os.environ.get("MPITINY_RUN_DIR")
    if not run_dir:
        raise WorkFileError("MPITINY_RUN_DIR is not set: imported WfCommons tasks run under "
                            "`mpitiny run`, which sets it")
    return os.path.join(run_dir, DATA_DIR)


def header(name: str) -> bytes:
    return HEADER + name.encode("utf-8", "surrogateescape") + b"\n"


def run_task(seconds: float, read: Sequence = (), write: Sequence = (), cores: int = 1) -> dict:
    """Read ``read``, write ``write`` (``[name, size]`` pairs) and burn ``cores`` cores so that
    the whole takes ``seconds`` (more if the files alone take longer)."""
    start = time.perf_counter()
    root = data_dir()
    got = sum(read_input(root, name, size) for name, size in read)
    parts = []
    try:
        for name, size in write:
            parts.append(write_part(root, name, size))
        burn(start + seconds - time.perf_counter(), cores)
        for (name, _), part in zip(write, parts):
            os.replace(part, os.path.join(root, name))
    except BaseException:
        for part in parts:
            _unlink(part)
        raise
    return {"read": got, "written": sum(size for _, size in write)}


def burn(seconds: float, cores: int = 1) -> list:
    """Keep ``cores`` cores busy for ``seconds``. One core: ``spin`` (returns ``[]``). More:
    this thread and ``cores - 1`` others each take square roots of an array of their own
    (``BURN_FLOATS``) until the deadline; numpy releases the interpreter's lock during each
    pass, so the threads burn at once. Returns the passes each thread made."""
    if cores <= 1:
        spin(seconds)
        return []
    deadline = time.perf_counter() + seconds
    passes = [0] * cores

    def passes_until_deadline(k: int) -> None:
        values = np.full(BURN_FLOATS, 2.0)
        clock, sqrt, n = time.perf_counter, np.sqrt, 0
        while clock() < deadline:
            sqrt(values, out=values)
            n += 1
        passes[k] = n

    helpers = [threading.Thread(target=passes_until_deadline, args=(k,), daemon=True,
                                name=f"mpitiny-burn-{k}") for k in range(1, cores)]
    for thread in helpers:
        thread.start()
    passes_until_deadline(0)
    for thread in helpers:
        thread.join()
    return passes


def stage(write: Sequence = ()) -> dict:
    """Write the workflow's input files (``[name, size]`` pairs) not already there whole."""
    root = data_dir()
    written = 0
    for name, size in write:
        if _is_whole(os.path.join(root, name), name, size):
            continue
        part = write_part(root, name, size)
        try:
            os.replace(part, os.path.join(root, name))
        except BaseException:
            _unlink(part)
            raise
        written += size
    return {"read": 0, "written": written}


def read_input(root: str, name: str, size: int) -> int:
    """Read ``root/name`` to its end after checking its size and header; the bytes read."""
    path = os.path.join(root, name)
    try:
        f = open(path, "rb", buffering=0)
    except FileNotFoundError:
        raise WorkFileError(f"input file {name!r} is missing ({path}): the task that writes it "
                            "did not write it, or it was removed") from None
    with f:
        actual = os.fstat(f.fileno()).st_size
        if actual != size:
            raise WorkFileError(f"input file {name!r} has {actual} bytes, the workflow declares "
                                f"{size} ({path})")
        view = memoryview(_buffer)
        total = f.readinto(view)
        expected = header(name)[:size]
        if bytes(view[:len(expected)]) != expected:
            raise WorkFileError(f"input file {name!r} does not start with the header its writer "
                                f"puts there: it is not the file written for it ({path})")
        while True:
            n = f.readinto(view)
            if not n:
                break
            total += n
    if total != size:
        raise WorkFileError(f"input file {name!r}: read {total} bytes, expected {size} ({path})")
    return total


def write_part(root: str, name: str, size: int) -> str:
    """Write ``size`` bytes for ``name`` to its temporary file; the temporary file's path."""
    path = os.path.join(root, name)
    folder, base = os.path.split(path)
    part = os.path.join(folder, "." + base + PART_SUFFIX)
    head = header(name)[:size]
    filler = memoryview(_FILLER)
    with _create(part) as f:
        f.write(head)
        left = size - len(head)
        while left > 0:
            left -= f.write(filler[:min(left, BLOCK)])
    return part


def _create(path: str) -> BinaryIO:
    """``open(path, "wb")`` unbuffered, making its folder first if it is not there."""
    try:
        return open(path, "wb", buffering=0)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return open(path, "wb", buffering=0)


def _is_whole(path: str, name: str, size: int) -> bool:
    try:
        with open(path, "rb", buffering=0) as f:
            if os.fstat(f.fileno()).st_size != size:
                return False
            expected = header(name)[:size]
            return f.read(len(expected)) == expected
    except OSError:
        return False


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
