"""What a dag.json may contain: its keys, the limits on its numbers and ids, and id checks.

The limits keep every count and value inside what the runtime computes exactly: global task
ids fit an int32-ready table, ``range`` values stay exact in int64 arithmetic, priorities and
ranks fit 32 bits.
"""
from __future__ import annotations

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

TOP_KEYS = ("name", "version", "description", "params", "tasks")
TASK_KEYS = ("id", "cmd", "fn", "args", "kwargs", "deps", "foreach", "priority", "rank",
             "part", "retries", "timeout", "walltime", "description", "strict_deps")
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
