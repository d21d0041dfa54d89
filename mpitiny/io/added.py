"""The identity of tasks added while a run goes on (``mpitiny.submit``), and the file that
names them.

An added task's id number (its *key*, the ``gid`` of its row in the task table and of its
journal records) is ``child_key(parent, k)``: a 62-bit hash of its parent's number (a DAG
task's gid, or an added parent's key) and of ``k``, how many tasks that parent had added
before it. ``ADDED_BIT`` is set in every key, so keys never meet the gids of the DAG's own
tasks (``0 .. total-1``). The same parent adding the same tasks in the same order therefore
adds the same keys in every run: a parent run again after a crash (or retried) adds nothing
twice, because the keys it adds again are known to be added already (``mpitiny.engine.adding``).

Collisions: two of n keys share their 62 bits with probability about n² / 2⁶³ (10⁻⁷ at
n = 10⁶).

Each rank writes the id text of every added task it ran, one ``KEY<TAB>ID`` line each, to
``tasks/rank-R.added`` (``NAMES_EXT``), beside its task table, so the report, the trace and
tests can name the rows (``read_added_ids``).
"""
from __future__ import annotations

import glob
import os
import struct

try:                # hashlib's own blake2b, without importing hashlib (OpenSSL: 3 ms a rank)
    from _blake2 import blake2b
except ImportError:     # pragma: no cover  (a Python built without it)
    from hashlib import blake2b

ADDED_BIT = 1 << 62
NAMES_EXT = ".added"
_PAIR = struct.Struct("<qq")


def child_key(parent: int, k: int) -> int:
    """The key of the ``k``-th task (from 0) that task ``parent`` adds."""
    digest = blake2b(_PAIR.pack(parent, k), digest_size=8).digest()
    return ADDED_BIT | (int.from_bytes(digest, "little") & (ADDED_BIT - 1))


def is_added(gid: int) -> bool:
    return gid >= ADDED_BIT


def task_text(name: str, key: int) -> str:
    """The id an added task is shown by: its function's name and its key in hex."""
    return f"{name}@{key & (ADDED_BIT - 1):016x}"


def names_path(run_dir: str, rank: int) -> str:
    return os.path.join(run_dir, "tasks", f"rank-{rank:05d}{NAMES_EXT}")


def read_added_ids(run_dir: str) -> dict:
    """``{key: id}`` of every added task the ranks of the run's last incarnation ran."""
    out: dict = {}
    for path in sorted(glob.glob(os.path.join(run_dir, "tasks", f"rank-*{NAMES_EXT}"))):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.endswith("\n"):
                    key, text = line.rstrip("\n").split("\t", 1)
                    out[int(key)] = text
    return out
