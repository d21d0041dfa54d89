"""What a dag.json may contain: its keys, the limits on its numbers and ids, and id checks.

The limits keep every count and value inside what the runtime computes exactly: global task
ids fit an int32-ready table, ``range`` values stay exact in int64 arithmetic, priorities and
ranks fit 32 bits.
"""
from __future__ import annotations

import functools
import os
import re
from typing import Any

from mpitiny.dag.messages import show

FORMAT_VERSION = 1
#: Limit on the total number of task instances of one file (global task ids are int32-ready).
MAX_INSTANCES = 2**31 - 2**20
MAX_ID_LENGTH = 256
MAX_NAME_LENGTH = 255
#: ``priority`` must satisfy ``abs(p) < PRIORITY_LIMIT``.
PRIORITY_LIMIT = 2**31
#: ``range`` bounds and steps must satisfy ``abs(v) < RANGE_LIMIT`` (int64 arithmetic stays exact).
RANGE_LIMIT = 2**62
MAX_RETRIES = 1000
MAX_TIMEOUT = 366 * 86400.0
#: ``walltime`` (seconds a task is expected to take, at most) has the same bounds as ``timeout``.
MAX_WALLTIME = MAX_TIMEOUT
#: ``cores`` and ``gpus`` of one task: at most this many (the GPUs of a node are one word's bits).
MAX_CORES = 1 << 20
MAX_GPUS = 63
#: ``ranks`` of one task (a multi-rank task's gang is gathered in one word's low bits).
MAX_RANKS = 1 << 20

TOP_KEYS = ("name", "version", "description", "params", "tasks")
TASK_KEYS = ("id", "cmd", "fn", "args", "kwargs", "deps", "foreach", "priority", "rank",
             "part", "retries", "timeout", "walltime", "description", "strict_deps", "cores",
             "mem", "gpus", "ranks")
TOP_KEY_SET = frozenset(TOP_KEYS)
TASK_KEY_SET = frozenset(TASK_KEYS)

ID_FORBIDDEN = re.compile(r"[\[\]{},\s]")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_int(value: Any) -> bool:
    """A JSON integer (``True``/``False`` are not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_ident(name: Any) -> bool:
    """A valid parameter or foreach variable name: letters, digits and _, no leading digit."""
    return isinstance(name, str) and _IDENT.fullmatch(name) is not None


def id_problem(task_id: str) -> str | None:
    """Why ``task_id`` is not a valid task id, or None if it is."""
    if not task_id:
        return "is empty"
    if len(task_id) > MAX_ID_LENGTH:
        return f"is {len(task_id)} characters long (at most {MAX_ID_LENGTH})"
    m = ID_FORBIDDEN.search(task_id)
    if m:
        ch = m.group(0)
        what = "whitespace" if ch.isspace() else repr(ch)
        return (f"{show(task_id)} contains {what}; ids may not contain whitespace "
                "or any of [ ] { } ,")
    if not task_id.isprintable():
        bad = next(c for c in task_id if not c.isprintable())
        return f"{show(task_id)} contains the unprintable character {bad!r}"
    return None


_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B|B)?\s*")
_UNITS: dict = {None: 1, "B": 1, **{p + "B": 1000 ** (k + 1) for k, p in enumerate("KMGT")},
                **{p + "iB": 1024 ** (k + 1) for k, p in enumerate("KMGT")}}


def parse_size(value: Any) -> int | None:
    """Bytes of a ``mem`` value: an integer >= 0, or a string like ``"20GB"`` / ``"1.5GiB"``
    (B, KB, MB, GB, TB: powers of 1000; KiB, MiB, GiB, TiB: of 1024); None if it is neither."""
    if is_int(value):
        return value if value >= 0 else None
    if not isinstance(value, str):
        return None
    m = _SIZE.fullmatch(value)
    if m is None:
        return None
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def show_size(n: int) -> str:
    """``n`` bytes for people: ``"15.5 GiB"``."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def node_mem() -> tuple[int, str]:
    """The memory of a node, for ``mem``: ``MPITINY_NODE_MEM`` (``mpitiny run --node-mem``)
    if set, else this machine's; and where that figure comes from, for messages."""
    return _node_mem(os.environ.get("MPITINY_NODE_MEM", "").strip())


@functools.lru_cache(maxsize=4)
def _node_mem(text: str) -> tuple[int, str]:
    size = parse_size(text) if text else None
    if size is not None:
        return size, "--node-mem / MPITINY_NODE_MEM"
    from mpitiny import procstat
    return procstat.total_memory(), "this machine's memory; --node-mem sets it"


def gpus_per_node() -> int:
    """The GPUs of a node, for ``gpus``: ``MPITINY_GPUS_PER_NODE`` (``mpitiny run
    --gpus-per-node``), default 0."""
    text = os.environ.get("MPITINY_GPUS_PER_NODE", "").strip()
    return min(int(text), MAX_GPUS) if text.isdigit() else 0
