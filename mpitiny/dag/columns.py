"""Pass 1 for a file of plain tasks only, in columns: what ``EntryParser`` checks entry by
entry, checked over the whole ``tasks`` list at once.

A generated file (WfCommons, Task Bench, 10^5 tasks listed one by one) is usually nothing but
plain tasks with ``id``, ``fn`` and ``args`` (or ``cmd``), ``deps`` and perhaps an integer
``priority`` or ``rank``. ``read_columns`` checks such a list with one comprehension per key
(types, ids, their uniqueness, forbidden characters, ...) and returns its columns; anything
else, or anything doubtful, returns None and the file is read entry by entry, which reports the
first problem exactly as always. Only files that are valid here take this path, so it changes
no message, only the cost (~1 µs per task instead of ~4).
"""
from __future__ import annotations

from itertools import chain, repeat
from typing import Any

from mpitiny.dag.limits import ID_FORBIDDEN, MAX_ID_LENGTH, MAX_INSTANCES, PRIORITY_LIMIT

#: The keys a task of a columnar file may have.
COLUMN_KEYS = frozenset(("id", "fn", "args", "cmd", "deps", "priority", "rank"))
_KIND_KEYS = frozenset(("fn", "cmd"))


class PlainColumns:
    """The plain tasks of a file as columns (entry ``k`` is row ``k``)."""

    def __init__(self, ids: list, fns: list, cmds: list, args: list, priorities: list,
                 ranks: list, deps: list) -> None:
        self.ids = ids
        self.fns = fns              # None for a cmd task
        self.cmds = cmds            # None for a fn task
        self.args = args
        self.priorities = priorities
        self.ranks = ranks
        self.deps = deps            # as written: a list of ids, or ()

    def __len__(self) -> int:
        return len(self.ids)


def _column(tasks: list, key: str, default: Any = None) -> list:
    """The values of ``key`` (``default`` where absent), in C loops."""
    return list(map(dict.get, tasks, repeat(key, len(tasks)), repeat(default, len(tasks))))


def _types(values) -> set:
    return set(map(type, values))


def _valid_ids(ids: list) -> bool:
    if _types(ids) != {str}:
        return False
    joined = "".join(ids)
    lengths = set(map(len, ids))
    return (len(set(ids)) == len(ids) and 0 < min(lengths) and max(lengths) <= MAX_ID_LENGTH
            and ID_FORBIDDEN.search(joined) is None and joined.isprintable())


def _valid_ints(values: list, low: int, none_ok: bool) -> bool:
    if none_ok:
        values = [v for v in values if v is not None]
    return not values or (_types(values) == {int} and low <= min(values)
                          and max(values) < PRIORITY_LIMIT)


def read_columns(tasks: list, params: dict, valid_fn: Any) -> PlainColumns | None:
    """The columns of ``tasks`` if every entry is a plain task that ``EntryParser`` would
    accept as is (``valid_fn(fn)``: the syntax check of a ``fn`` string); else None."""
    if params or len(tasks) >= MAX_INSTANCES or _types(tasks) != {dict} or \
            not all(map(COLUMN_KEYS.issuperset, tasks)) or \
            set(map(len, map(_KIND_KEYS.intersection, tasks))) != {1}:
        return None
    ids = _column(tasks, "id")
    if not _valid_ids(ids):
        return None
    fns = _column(tasks, "fn")
    cmds = _column(tasks, "cmd")
    if not all(valid_fn(f) for f in set(fns) - {None}):
        return None
    commands = [c for c in cmds if c is not None]
    if commands and (_types(commands) != {str} or not all(commands)
                     or any(map(str.isspace, commands)) or "\x00" in "".join(commands)):
        return None
    args = _column(tasks, "args", ())
    if not _types(args) <= {list, tuple}:    # a tuple: the default (JSON has none)
        return None
    if commands and any(a != () for a, f in zip(args, fns) if f is None):
        return None                      # a cmd task takes no args
    priorities = _column(tasks, "priority", 0)
    ranks = _column(tasks, "rank")
    deps = _column(tasks, "deps", ())
    if not (_valid_ints(priorities, 1 - PRIORITY_LIMIT, False) and _valid_ints(ranks, 0, True)
            and _types(deps) <= {list, tuple}
            and _types(chain.from_iterable(deps)) <= {str}):
        return None
    return PlainColumns(ids, fns, cmds, args, priorities, ranks, deps)
