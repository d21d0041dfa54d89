"""Read a dag.json (version 1), check everything in it and build the task table (``DAG``).

Every problem in a file is found here, before any task runs, and reported as one ``DagError``
whose ``where`` names the file and the task (``dag.json: tasks[3] (id 'b')``) and whose message
names the key and what is wrong with it (``deps: unknown task 'x'``). Bad input never escapes as
a Python traceback: unreadable, non-UTF-8, empty or non-JSON files are ``DagError`` too.

The checks run in four passes over the ``tasks`` list:

1. each entry on its own: keys, types, id, ``cmd``/``fn``, parameter substitution, ``foreach``
   (kept as ``range`` objects, never expanded), instance counts;
2. ``deps``: every name resolves, element-wise maps (``"pre[{i}]"``) point at existing parent
   instances for every child instance (checked per variable, so a family of 10^6 instances
   costs what its variables cost, not one Python object per instance);
3. cycles, on the graph of entries (iterative, no recursion);
4. ``fn`` entries: the module is imported (once per module) and the function resolved, its
   signature checked against ``args``/``kwargs``, and ``inputs`` detected.

The format itself is documented in ``docs/dag-format.md``; ``schema.json`` next to this file is
a JSON Schema of the same format.
"""
from __future__ import annotations

import difflib
import gc
import importlib
import inspect
import json
import math
import os
import re
import sys
from typing import Any

import numpy as np

from mpitiny.dag.model import (DAG, PLACEHOLDER, Dep, ElementMap, Group, Var, format_value,
                               substitute_params)
from mpitiny.errors import DagError

FORMAT_VERSION = 1
#: Limit on the total number of task instances of one file (global task ids are int32-ready).
MAX_INSTANCES = 2**31 - 2**20
MAX_ID_LENGTH = 256
MAX_NAME_LENGTH = 255
#: ``priority`` must satisfy ``abs(p) < PRIORITY_LIMIT``.
PRIORITY_LIMIT = 2**31
#: ``range`` bounds and steps must satisfy ``abs(v) < RANGE_LIMIT`` (int64 arithmetic stays exact).
RANGE_LIMIT = 2**62

TOP_KEYS = ("name", "version", "description", "params", "tasks")
TASK_KEYS = ("id", "cmd", "fn", "args", "kwargs", "deps", "foreach", "priority", "rank",
             "part", "retries", "timeout", "description")
MAX_RETRIES = 1000
MAX_TIMEOUT = 366 * 86400.0
_TOP_KEYS = frozenset(TOP_KEYS)
_TASK_KEYS = frozenset(TASK_KEYS)

_ID_FORBIDDEN = re.compile(r"[\[\]{},\s]")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DEP = re.compile(r"([^\[\]{},\s]+)(?:\[([^\[\]]*)\])?")
_INT_LITERAL = re.compile(r"[+-]?[0-9]+")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_CHUNK = 1 << 16


def load_dag(path: Any, params: dict | None = None) -> DAG:
    """Read, check and build the DAG of the dag.json at ``path``; ``params`` from ``--param``."""
    try:
        source = os.fspath(path)
    except TypeError:
        raise DagError(f"not a file path: {path!r}") from None
    if isinstance(source, bytes):
        source = os.fsdecode(source)
    try:
        if os.path.isdir(source):
            raise DagError("is a directory, not a dag.json file", where=source)
        with open(source, "rb") as f:
            data = f.read()
    except DagError:
        raise
    except FileNotFoundError:
        raise DagError("no such file", where=source) from None
    except IsADirectoryError:
        raise DagError("is a directory, not a dag.json file", where=source) from None
    except PermissionError:
        raise DagError("cannot read the file: permission denied", where=source) from None
    except (OSError, ValueError) as err:      # ValueError: a NUL byte in the path
        reason = err.strerror if isinstance(err, OSError) and err.strerror else _oneline(err)
        raise DagError(f"cannot read the file: {reason}", where=source) from None
    base_dir = os.path.dirname(os.path.abspath(source))
    return load_dag_text(data, source=source, params=params, base_dir=base_dir)


def load_dag_text(text: str | bytes, source: str = "dag.json", params: dict | None = None,
                  base_dir: str | None = None) -> DAG:
    """Check and build the DAG of a dag.json given as text or bytes.

    ``source`` is the file name used in messages (and stored as ``DAG.source``); ``base_dir``
    is the directory added to ``sys.path`` (after the current directory) to import ``fn``
    modules.
    """
    # The loader allocates a few objects per task and frees almost none: with the cyclic
    # garbage collector on, its repeated full passes over them cost more than the loading.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _Loader(source, params, base_dir).load(text)
    except RecursionError:
        raise DagError("the JSON is nested too deeply", where=source) from None
    finally:
        if gc_was_enabled:
            gc.enable()


# ----------------------------------------------------------------------------------- helpers

class _Stop(Exception):
    """Raised inside the JSON parser's hooks; turned into a DagError by the loader."""

    def __init__(self, message: str, needle: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.needle = needle


def _oneline(value: Any, limit: int = 200) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _show(value: Any, limit: int = 80) -> str:
    """A user value quoted for a one-line message: strings as ``'x'``, others as JSON."""
    if isinstance(value, str):
        text = repr(value)
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, sort_keys=True)
        except (TypeError, ValueError):
            text = repr(value)
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return text


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_ident(name: Any) -> bool:
    return isinstance(name, str) and _IDENT.fullmatch(name) is not None


def id_problem(task_id: str) -> str | None:
    """Why ``task_id`` is not a valid task id, or None if it is."""
    if not task_id:
        return "is empty"
    if len(task_id) > MAX_ID_LENGTH:
        return f"is {len(task_id)} characters long (at most {MAX_ID_LENGTH})"
    m = _ID_FORBIDDEN.search(task_id)
    if m:
        ch = m.group(0)
        what = "whitespace" if ch.isspace() else repr(ch)
        return (f"{_show(task_id)} contains {what}; ids may not contain whitespace "
                "or any of [ ] { } ,")
    if not task_id.isprintable():
        bad = next(c for c in task_id if not c.isprintable())
        return f"{_show(task_id)} contains the unprintable character {bad!r}"
    return None


def _range_length(start: int, stop: int, step: int) -> int:
    """``len(range(start, stop, step))`` without OverflowError for huge ranges."""
    if step > 0:
        return max(0, (stop - start + step - 1) // step)
    return max(0, (start - stop - step - 1) // -step)


def _describe_var(var: Var) -> str:
    values = var.values
    if isinstance(values, range):
        if values.step == 1:
            return f"{var.name} in range({values.start}, {values.stop})"
        return f"{var.name} in range({values.start}, {values.stop}, {values.step})"
    shown = ", ".join(_show(v, 30) for v in values[:5])
    more = f", ... ({len(values)} values)" if len(values) > 5 else ""
    return f"{var.name} in [{shown}{more}]"


def _first_missing(cvar: Var, pvar: Var) -> int:
    """The first position of ``cvar`` whose value is not among ``pvar``'s values, or -1."""
    c, p = cvar.values, pvar.values
    if isinstance(c, range) and isinstance(p, range):
        # Two values in p fix the alignment (p[0], p[1] aligned => the step is a multiple of
        # p's step); after that the values inside p's bounds form a prefix: bisect its end.
        n = len(c)
        if c[0] not in p:
            return 0
        if n == 1:
            return -1
        if c[1] not in p:
            return 1
        if c[-1] in p:
            return -1
        lo, hi = 1, n - 1            # c[lo] in p, c[hi] not in p
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if c[mid] in p:
                lo = mid
            else:
                hi = mid
        return hi
    # A list on either side: the scan stops at the first chunk with a miss, and a range child
    # can only have as many hits as the parent list has values, so this is bounded by the file.
    n = len(c)
    for start in range(0, n, _CHUNK):
        pos = np.arange(start, min(n, start + _CHUNK), dtype=np.int64)
        found = pvar.indices_of(cvar.values_at(pos))
        bad = np.flatnonzero(found < 0)
        if bad.size:
            return start + int(bad[0])
    return -1


# ------------------------------------------------------------------------------------ loader

class _Loader:
    def __init__(self, source: str, params: dict | None, base_dir: str | None) -> None:
        self.source = source
        self.given = dict(params or {})
        self.base_dir = base_dir
        self.params: dict = {}
        self.modules: dict = {}        # module name -> module, or the error message
        self.functions: dict = {}      # "mod:attr" -> (callable, signature or None, wants_inputs)
        self.bound: set = set()        # (fn, nargs, kwargs keys) known to bind
        self.split_source: tuple | None = None   # (path, dataset, var) of the entry's split family

    # -- messages
    def error(self, message: str, where: str | None = None) -> DagError:
        return DagError(message, where=f"{self.source}: {where}" if where else self.source)

    # -- text and JSON
    def decode(self, text: str | bytes) -> str:
        if isinstance(text, (bytes, bytearray, memoryview)):
            data = bytes(text)
            if data.startswith(b"\xef\xbb\xbf"):
                data = data[3:]
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as err:
                raise self.error(
                    f"not UTF-8 text: byte 0x{data[err.start]:02x} at offset {err.start} is "
                    "not valid UTF-8 (a dag.json must be JSON text in UTF-8)") from None
        elif isinstance(text, str):
            if text.startswith("\ufeff"):
                text = text[1:]
        else:
            raise TypeError(f"load_dag_text expects str or bytes, not {type(text).__name__}")
        if not text or text.isspace():
            raise self.error("the file is empty (expected a JSON object with 'name' and "
                             "'tasks')")
        return text

    def parse(self, text: str) -> Any:
        def parse_float(literal: str) -> float:
            value = float(literal)
            if not math.isfinite(value):
                raise _Stop(f"the number {literal} is out of range (larger than a double)",
                            literal)
            return value

        def parse_constant(literal: str) -> None:
            raise _Stop(f"{literal} is not a JSON value (JSON has no NaN or Infinity)", literal)

        def pairs(items: list) -> dict:
            obj = dict(items)
            if len(obj) != len(items):
                seen: set = set()
                for key, _ in items:
                    if key in seen:
                        break
                    seen.add(key)
                task_id = obj.get("id")
                inside = (f"the object with id {_show(task_id)}" if isinstance(task_id, str)
                          else "a JSON object")
                raise _Stop(f"duplicate key {_show(key)} in {inside}")
            return obj

        try:
            return json.loads(text, parse_float=parse_float, parse_constant=parse_constant,
                              object_pairs_hook=pairs)
        except json.JSONDecodeError as err:
            hint = " (the file looks binary)" if "\x00" in text[:4096] else ""
            raise self.error(f"not valid JSON: {err.msg} at line {err.lineno} column "
                             f"{err.colno}{hint}") from None
        except _Stop as stop:
            line = ""
            if stop.needle:
                at = text.find(stop.needle)
                if at >= 0:
                    line = f"line {text.count(chr(10), 0, at) + 1}: "
            raise self.error(line + stop.message) from None
        except ValueError as err:            # e.g. an integer with more than 4300 digits
            raise self.error(f"not valid JSON: {_oneline(err)}") from None

    def check_strings(self, text: str, data: Any) -> None:
        """Reject lone surrogates (``"\\ud800"``): they cannot be encoded to UTF-8 later."""
        if _SURROGATE_ESCAPE.search(text) is None:
            return
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise self.error("a string contains an unpaired UTF-16 surrogate escape "
                             "(\\ud800-\\udfff); strings must be valid Unicode") from None

    # -- the whole file
    def load(self, text: str | bytes) -> DAG:
        text = self.decode(text)
        data = self.parse(text)
        self.check_strings(text, data)
        if not isinstance(data, dict):
            raise self.error(f"the top level must be a JSON object with 'name' and 'tasks', "
                             f"not {_kind(data)}")
        unknown = [k for k in data if k not in _TOP_KEYS]
        if unknown:
            raise self.error(f"unknown key {_show(unknown[0])} at the top level (allowed: "
                             f"{', '.join(TOP_KEYS)})")
        name = self.check_name(data)
        if "version" in data:
            version = data["version"]
            if not _is_int(version) or version != FORMAT_VERSION:
                raise self.error(f"{_show(version)} is not supported; this mpitiny "
                                 f"reads dag.json version {FORMAT_VERSION}", "version")
        if "description" in data and not isinstance(data["description"], str):
            raise self.error(f"must be a string, not {_kind(data['description'])}",
                             "description")
        self.params = self.resolve_params(data.get("params", {}))
        if "tasks" not in data:
            raise self.error("missing key 'tasks' (the list of tasks)")
        tasks = data["tasks"]
        if not isinstance(tasks, list):
            raise self.error(f"must be a list of tasks, not {_kind(tasks)}", "tasks")
        if not tasks:
            raise self.error("is empty: a dag.json needs at least one task", "tasks")

        groups, raw_deps = self.build_groups(tasks)
        self.resolve_deps(groups, raw_deps)
        self.check_cycles(groups)
        self.import_functions(groups)
        return DAG(name, groups, self.params, source=self.source)

    def check_name(self, data: dict) -> str:
        if "name" not in data:
            raise self.error("missing key 'name' (the name of the DAG; it names the run "
                             "directory)")
        name = data["name"]
        if not isinstance(name, str):
            raise self.error(f"must be a string, not {_kind(name)}", "name")
        problem = None
        if not name or name.isspace():
            problem = "is empty"
        elif len(name) > MAX_NAME_LENGTH:
            problem = f"is {len(name)} characters long (at most {MAX_NAME_LENGTH})"
        elif name in (".", "..") or "/" in name or "\\" in name:
            problem = f"{_show(name)} cannot be a directory name (no '/', '\\', '.' or '..')"
        elif not name.isprintable():
            problem = f"{_show(name)} contains unprintable characters"
        if problem:
            raise self.error(problem + " (the name of the DAG names its run directory)",
                             "name")
        return name

    def resolve_params(self, declared: Any) -> dict:
        if not isinstance(declared, dict):
            raise self.error(f"must be an object of parameter names and default values, "
                             f"not {_kind(declared)}", "params")
        for key in declared:
            if not _is_ident(key):
                raise self.error(f"{_show(key)} is not a valid parameter name (letters, digits "
                                 "and _, not starting with a digit)", "params")
        for key in self.given:
            if key not in declared:
                known = ", ".join(declared) if declared else "none"
                shown = key if isinstance(key, str) and key.isprintable() else repr(key)
                raise self.error(f"--param {shown}: the file declares no parameter {_show(key)} "
                                 f"(declared: {known})", "params")
        values = dict(declared)
        values.update(self.given)
        for key, value in declared.items():
            if value is None and key not in self.given:
                raise self.error(f"parameter {_show(key)} is required (its default is null): "
                                 f"give it with --param {key}=VALUE", "params")
        return values

    # -- pass 1: each task on its own
    def build_groups(self, tasks: list) -> tuple:
        groups: list = []
        raw_deps: list = []
        first: dict = {}
        params = self.params
        total = 0
        cmd_cache: dict = {}
        fn_ok: set = set()
        for index, task in enumerate(tasks):
            where = f"tasks[{index}]"
            if not isinstance(task, dict):
                raise self.error(f"must be an object (a task), not {_kind(task)}", where)
            if "id" not in task:
                raise self.error("missing key 'id'", where)
            tid = task["id"]
            if not isinstance(tid, str):
                raise self.error(f"id: must be a string, not {_kind(tid)}", where)
            if (not tid or len(tid) > MAX_ID_LENGTH or _ID_FORBIDDEN.search(tid)
                    or not tid.isprintable()):
                raise self.error(f"id: {id_problem(tid)}", where)
            where = f"tasks[{index}] (id '{tid}')"
            if tid in first:
                raise self.error(f"id: duplicate id {_show(tid)}: tasks[{first[tid]}] and "
                                 f"tasks[{index}] both use it", where)
            first[tid] = index
            if not _TASK_KEYS.issuperset(task):
                key = next(k for k in task if k not in _TASK_KEYS)
                raise self.error(f"unknown key {_show(key)} (allowed: {', '.join(TASK_KEYS)})",
                                 where)

            # foreach first: its variable names decide which placeholders are parameters.
            variables: tuple = ()
            size = 1
            if "foreach" in task:
                variables, size = self.parse_foreach(task["foreach"], where)

            has_cmd, has_fn = "cmd" in task, "fn" in task
            if has_cmd == has_fn:
                raise self.error("needs exactly one of 'cmd' (a shell command) or 'fn' "
                                 "(\"package.module:function\")" +
                                 (", not both" if has_cmd else ""), where)
            cmd = fn = None
            args: list = []
            kwargs: dict = {}
            if has_cmd:
                cmd = task["cmd"]
                if not isinstance(cmd, str):
                    raise self.error(f"cmd: must be a string, not {_kind(cmd)}", where)
                if not cmd or cmd.isspace():
                    raise self.error("cmd: is empty", where)
                if "\x00" in cmd:
                    raise self.error("cmd: contains a NUL character", where)
                for key in ("args", "kwargs") if len(task) > 2 else ():
                    if key in task:
                        raise self.error(f"{key}: only 'fn' tasks take {key}; a 'cmd' task "
                                         "puts its arguments in the command line", where)
                if params and "{" in cmd:
                    done = cmd_cache.get(cmd)
                    if done is None:
                        done = cmd_cache[cmd] = PLACEHOLDER.sub(
                            lambda m: format_value(params[m.group(1)]) if m.group(1) in params
                            else m.group(0), cmd)
                    cmd = done
                kind = "cmd"
            else:
                fn = task["fn"]
                if not isinstance(fn, str):
                    raise self.error(f"fn: must be a string \"package.module:function\", not "
                                     f"{_kind(fn)}", where)
                if fn not in fn_ok:
                    self.check_fn_syntax(fn, where)
                    fn_ok.add(fn)
                if "args" in task:
                    args = task["args"]
                    if not isinstance(args, list):
                        raise self.error(f"args: must be a list, not {_kind(args)}", where)
                if "kwargs" in task:
                    kwargs = task["kwargs"]
                    if not isinstance(kwargs, dict):
                        raise self.error(f"kwargs: must be an object, not {_kind(kwargs)}",
                                         where)
                if params:
                    if args:
                        args = substitute_params(args, params)
                    if kwargs:
                        kwargs = substitute_params(kwargs, params)
                kind = "fn"

            priority = task.get("priority", 0)
            if type(priority) is not int and not _is_int(priority):
                raise self.error(f"priority: must be an integer, not {_kind(priority)}", where)
            if not -PRIORITY_LIMIT < priority < PRIORITY_LIMIT:
                raise self.error(f"priority: {priority} is out of range (|priority| < 2**31)",
                                 where)
            options = {}
            if self.split_source is not None:
                path, dataset, var_name = self.split_source
                options["splits"] = (path, dataset)
                options["split_var"] = var_name
                self.split_source = None
            if "rank" in task:
                options["rank"] = self.parse_rank(task["rank"], variables, params, where)
            if "part" in task:
                options["part"] = self.parse_rank(task["part"], variables, params, where, "part")
            if "retries" in task:
                retries = task["retries"]
                if type(retries) is not int or not 0 <= retries <= MAX_RETRIES:
                    raise self.error(f"retries: must be an integer from 0 to {MAX_RETRIES}, "
                                     f"not {_show(retries)}", where)
                options["retries"] = retries
            if "timeout" in task:
                timeout = task["timeout"]
                if (type(timeout) not in (int, float) or not timeout > 0
                        or not timeout <= MAX_TIMEOUT):
                    raise self.error(f"timeout: must be a number of seconds > 0 (at most one "
                                     f"year), not {_show(timeout)}", where)
                options["timeout"] = float(timeout)
            if "description" in task and not isinstance(task["description"], str):
                raise self.error(f"description: must be a string, not "
                                 f"{_kind(task['description'])}", where)
            deps = task.get("deps", ())
            if deps:
                if not isinstance(deps, list):
                    raise self.error(f"deps: must be a list of task ids, not {_kind(deps)}",
                                     where)
                for dep in deps:
                    if not isinstance(dep, str):
                        raise self.error(f"deps: entries must be strings (task ids), not "
                                         f"{_kind(dep)} {_show(dep)}", where)
            elif not isinstance(deps, (list, tuple)):
                raise self.error(f"deps: must be a list of task ids, not {_kind(deps)}", where)

            total += size
            if total >= MAX_INSTANCES:
                raise self.error(f"too many task instances: {total} up to this entry (the "
                                 f"limit for a whole file is 2**31 - 2**20 = {MAX_INSTANCES - 1})",
                                 where)
            group = Group(index=index, name=tid, kind=kind, cmd=cmd, fn=fn, args=args,
                          kwargs=kwargs, vars=variables, priority=priority, deps=[],
                          options=options, where=where)
            groups.append(group)
            raw_deps.append(deps)
        return groups, raw_deps

    def parse_rank(self, spec: Any, variables: tuple, params: dict, where: str,
                   key: str = "rank"):
        """``rank`` (or ``part``): an integer, or ``"{var}"`` naming an integer foreach variable
        (or a param)."""
        if isinstance(spec, str) and params:
            spec = substitute_params(spec, params)
        if type(spec) is int or _is_int(spec):
            if not 0 <= spec < PRIORITY_LIMIT:
                raise self.error(f"{key}: {spec} is out of range (0 <= {key} < 2**31)", where)
            return int(spec)
        if isinstance(spec, str):
            m = PLACEHOLDER.fullmatch(spec)
            var = next((v for v in variables if m and v.name == m.group(1)), None)
            if var is not None and (isinstance(var.values, range) or all(
                    type(x) is int for x in var.values)):
                if min(var.values) < 0:
                    raise self.error(f"{key}: foreach variable {var.name!r} has negative values",
                                     where)
                return spec
        raise self.error(f"{key}: must be a non-negative integer or \"{{var}}\" naming an "
                         f"integer foreach variable of this task, not {_show(spec)}", where)

    def check_fn_syntax(self, fn: str, where: str) -> None:
        module, sep, attr = fn.partition(":")
        ok = (sep and module and attr
              and all(part.isidentifier() for part in module.split("."))
              and all(part.isidentifier() for part in attr.split(".")))
        if not ok:
            raise self.error(f"fn: {_show(fn)} is not of the form \"package.module:function\" "
                             "(a dotted module path, a colon, a function name)", where)

    def parse_foreach(self, spec: Any, where: str) -> tuple:
        if not isinstance(spec, dict):
            raise self.error(f"foreach: must be an object of variable -> values, not "
                             f"{_kind(spec)}", where)
        if not spec:
            raise self.error("foreach: is empty (give at least one variable, or drop "
                             "'foreach')", where)
        variables = []
        size = 1
        self.split_source = None
        for name, values in spec.items():
            if not _is_ident(name):
                raise self.error(f"foreach: {_show(name)} is not a valid variable name "
                                 "(letters, digits and _, not starting with a digit)", where)
            if name in self.params:
                raise self.error(f"foreach: variable {_show(name)} has the name of a "
                                 "parameter; rename one of them", where)
            label = f"foreach {_show(name)}"
            if isinstance(values, dict) and "split" in values and "range" not in values:
                var = self.parse_split(name, values, label, where)
            elif isinstance(values, str) and name == "split":
                var = self.parse_split(name, {"split": values}, label, where)
            elif isinstance(values, dict):
                var = self.parse_range(name, values, label, where)
            elif isinstance(values, list):
                var = self.parse_list(name, values, label, where)
            else:
                raise self.error(f"{label}: must be {{\"range\": [start, stop, step]}} or a "
                                 f"list of values (or {{\"split\": \"FILE.h5:/dataset\"}}), "
                                 f"not {_kind(values)}", where)
            size *= len(var)
            if size >= MAX_INSTANCES:
                raise self.error(f"foreach: the family has too many instances (at least "
                                 f"{size}; the limit for a whole file is 2**31 - 2**20 = "
                                 f"{MAX_INSTANCES - 1})", where)
            variables.append(var)
        return tuple(variables), size

    def parse_split(self, name: str, spec: dict, label: str, where: str) -> Var:
        """A split family: ``{"split": "data.h5:/text"}`` (or ``"split": "data.h5:/text"``
        for a variable named split): the values are the split indices ``range(0, n)`` of an
        ingested dataset (mpitiny.io.h5data); n is read from the file (the shape of its
        split table). Sets ``self.split_source = (absolute path, dataset)``."""
        if list(spec) != ["split"]:
            extra = next(k for k in spec if k != "split")
            raise self.error(f"{label}: unknown key {_show(extra)}; write "
                             "{\"split\": \"FILE.h5:/dataset\"}", where)
        if self.split_source is not None:
            raise self.error(f"{label}: a family can iterate over the splits of one dataset "
                             "only (it already has a split variable)", where)
        text = spec["split"]
        if isinstance(text, str) and self.params:
            text = substitute_params(text, self.params)
        if not isinstance(text, str) or not text:
            raise self.error(f"{label}: split must be a non-empty string \"FILE.h5\" or "
                             f"\"FILE.h5:/dataset\", not {_kind(text)} {_show(text)}", where)
        from mpitiny.errors import BadInput
        from mpitiny.io.h5data import count_splits, parse_spec
        try:
            path, dataset = parse_spec(text)
            count = count_splits(path, dataset)
        except BadInput as err:
            raise self.error(f"{label}: {err.format()}", where) from None
        except Exception as err:           # h5py raising something unexpected: still bad input
            raise self.error(f"{label}: split {_show(text)}: cannot read it: "
                             f"{type(err).__name__}: {_oneline(err)}", where) from None
        if count == 0:
            raise self.error(f"{label}: split {_show(text)}: the dataset has no splits (the "
                             "ingested input was empty)", where)
        if count >= MAX_INSTANCES:
            raise self.error(f"{label}: split {_show(text)}: {count} splits (the limit for a "
                             f"whole file is 2**31 - 2**20 = {MAX_INSTANCES - 1})", where)
        self.split_source = (os.path.abspath(path), dataset, name)
        return Var(name, range(0, count))

    def parse_range(self, name: str, spec: dict, label: str, where: str) -> Var:
        if list(spec) != ["range"]:
            extra = next((k for k in spec if k != "range"), None)
            what = f"unknown key {_show(extra)}" if extra is not None else "missing 'range'"
            raise self.error(f"{label}: {what}; write {{\"range\": [start, stop, step]}}",
                             where)
        bounds = spec["range"]
        if not isinstance(bounds, list) or not 1 <= len(bounds) <= 3:
            raise self.error(f"{label}: range must be a list [stop], [start, stop] or "
                             f"[start, stop, step], not {_show(bounds)}", where)
        numbers = []
        for value in bounds:
            if isinstance(value, str):
                m = PLACEHOLDER.fullmatch(value)
                if m and m.group(1) in self.params:
                    value = self.params[m.group(1)]
                elif m:
                    raise self.error(f"{label}: range: {_show(value)} is not a parameter of "
                                     "this file", where)
            if not _is_int(value):
                raise self.error(f"{label}: range values must be integers, not {_kind(value)} "
                                 f"{_show(value)}", where)
            if not -RANGE_LIMIT < value < RANGE_LIMIT:
                raise self.error(f"{label}: range value {value} is out of range "
                                 "(|value| < 2**62)", where)
            numbers.append(value)
        if len(numbers) == 1:
            start, stop, step = 0, numbers[0], 1
        elif len(numbers) == 2:
            (start, stop), step = numbers, 1
        else:
            start, stop, step = numbers
        if step == 0:
            raise self.error(f"{label}: range step must not be 0", where)
        length = _range_length(start, stop, step)
        if length == 0:
            raise self.error(f"{label}: range({start}, {stop}, {step}) is empty", where)
        if length >= MAX_INSTANCES:
            raise self.error(f"{label}: range({start}, {stop}, {step}) has {length} values "
                             f"(the limit for a whole file is 2**31 - 2**20 = "
                             f"{MAX_INSTANCES - 1})", where)
        return Var(name, range(start, stop, step))

    def parse_list(self, name: str, values: list, label: str, where: str) -> Var:
        if not values:
            raise self.error(f"{label}: the list of values is empty", where)
        if len(values) >= MAX_INSTANCES:
            raise self.error(f"{label}: too many values", where)
        if self.params:
            values = [substitute_params(v, self.params) if isinstance(v, str) else v
                      for v in values]
        spellings: dict = {}
        equal: dict = {}
        for k, value in enumerate(values):
            if isinstance(value, (list, dict)) or value is None:
                raise self.error(f"{label}: values must be strings, numbers or booleans, not "
                                 f"{_kind(value)} {_show(value)}", where)
            if _is_int(value) and not -RANGE_LIMIT < value < RANGE_LIMIT:
                raise self.error(f"{label}: the integer {value} is out of range "
                                 "(|value| < 2**62)", where)
            key = ("b", value) if isinstance(value, bool) else (
                ("s", value) if isinstance(value, str) else ("n", value))
            spelling = format_value(value)
            other = equal.get(key)
            if other is not None:
                same = ("is listed twice" if type(values[other]) is type(value) else
                        f"equals {_show(values[other])} (the same JSON number)")
            else:
                other = spellings.get(spelling)
                if other is not None:
                    same = f"and {_show(values[other])} look the same in task ids"
            if other is not None:
                raise self.error(f"{label}: the value {_show(value)} {same} (positions "
                                 f"{other} and {k}); values must be distinct", where)
            equal[key] = k
            spellings[spelling] = k
        return Var(name, tuple(values))

    # -- pass 2: dependencies
    def resolve_deps(self, groups: list, raw_deps: list) -> None:
        by_name = {g.name: g.index for g in groups}
        whole: list = [None] * len(groups)     # one shared (frozen) Dep per parent
        for group, raw in zip(groups, raw_deps):
            if not raw:
                continue
            seen: dict = {}
            deps = group.deps
            for text in raw:
                parent = by_name.get(text)
                if parent is not None:
                    dep = whole[parent]
                    if dep is None:
                        dep = whole[parent] = Dep(parent)
                else:
                    dep = self.parse_dep(group, text, groups, by_name)
                    parent = dep.parent
                if parent == group.index:
                    raise self.error(f"deps: {_show(text)}: a task cannot depend on itself",
                                     group.where)
                key = (parent, dep.each.items if dep.each is not None else None)
                if key in seen:
                    same = ("is listed twice" if seen[key] == text else
                            f"and {_show(seen[key])} are the same dependency")
                    raise self.error(f"deps: {_show(text)} {same}", group.where)
                seen[key] = text
                deps.append(dep)

    def parse_dep(self, child: Group, text: str, groups: list, by_name: dict) -> Dep:
        m = _DEP.fullmatch(text)
        if m is None:
            raise self.error(f"deps: {_show(text)} is not a task id or 'id[item,...]' "
                             "(ids contain no whitespace or [ ] { } ,)", child.where)
        name, items_text = m.group(1), m.group(2)
        parent_index = by_name.get(name)
        if parent_index is None:
            hint = ""
            if len(by_name) <= 20000 and len(name) <= 2 * MAX_ID_LENGTH:   # difflib: O(len)
                close = difflib.get_close_matches(name, by_name, n=1)
                if close:
                    hint = f" (did you mean {_show(close[0])}?)"
            raise self.error(f"deps: unknown task {_show(name)}{hint}", child.where)
        if items_text is None:
            return Dep(parent_index)
        parent = groups[parent_index]
        if parent_index == child.index:
            raise self.error(f"deps: {_show(text)}: a task cannot depend on itself",
                             child.where)
        if not parent.vars:
            raise self.error(f"deps: {_show(text)}: {_show(name)} is a plain task, not a "
                             f"family (no foreach); write {_show(name)} to wait for it",
                             child.where)
        texts = [t.strip() for t in items_text.split(",")]
        if len(texts) != len(parent.vars):
            names = ", ".join(v.name for v in parent.vars)
            raise self.error(f"deps: {_show(text)} gives {len(texts)} item(s) but family "
                             f"{_show(name)} has {len(parent.vars)} variable(s) ({names})",
                             child.where)
        child_vars = [v.name for v in child.vars]
        items = []
        for item_text, pvar in zip(texts, parent.vars):
            if not item_text:
                raise self.error(f"deps: {_show(text)} has an empty item", child.where)
            m = PLACEHOLDER.fullmatch(item_text)
            if m:
                var = m.group(1)
                if var in child_vars:
                    items.append(("var", var))
                    continue
                if var not in self.params:
                    mine = ", ".join(child_vars) if child_vars else "none"
                    raise self.error(f"deps: {_show(text)}: {item_text} is not a foreach "
                                     f"variable of this task (its variables: {mine}) nor a "
                                     "parameter", child.where)
                value = self.params[var]
                if isinstance(value, (list, dict)) or value is None:
                    raise self.error(f"deps: {_show(text)}: parameter {var} is "
                                     f"{_kind(value)}, not a value of {_show(name)}",
                                     child.where)
            elif "{" in item_text or "}" in item_text:
                raise self.error(f"deps: {_show(text)}: item {_show(item_text)} must be "
                                 "{variable} or a literal value", child.where)
            elif _INT_LITERAL.fullmatch(item_text) and len(item_text) < 40:
                value = int(item_text)
            else:
                value = item_text
            items.append(("lit", self.match_literal(pvar, value)))
        each = ElementMap(tuple(items))
        self.check_elementwise(child, parent, each, text)
        return Dep(parent_index, each)

    @staticmethod
    def match_literal(pvar: Var, value: Any) -> Any:
        """The parent's own value that a literal item means (``1.5``, ``true``, ``"7"``)."""
        if pvar.index_of(value) >= 0 or isinstance(pvar.values, range):
            return value
        spelled = format_value(value)
        for v in pvar.values:
            if format_value(v) == spelled:
                return v
        return value

    def check_elementwise(self, child: Group, parent: Group, each: ElementMap,
                          text: str) -> None:
        """Every child instance must map to an existing parent instance."""
        if each.is_identity(child, parent):
            return
        strides = [1] * len(child.vars)
        for k in range(len(child.vars) - 2, -1, -1):
            strides[k] = strides[k + 1] * len(child.vars[k + 1])
        first_bad = None
        for (kind, item), pvar in zip(each.items, parent.vars):
            if kind == "lit":
                if pvar.index_of(item) < 0:
                    first_bad = 0
                    break
                continue
            k = child.var_index(item)
            pos = _first_missing(child.vars[k], pvar)
            if pos >= 0:
                j = pos * strides[k]
                first_bad = j if first_bad is None else min(first_bad, j)
        if first_bad is None:
            return
        values = child.values(first_bad)
        wanted = [values[item] if kind == "var" else item for kind, item in each.items]
        missing = "%s[%s]" % (parent.name, ",".join(format_value(v) for v in wanted))
        domain = "; ".join(_describe_var(v) for v in parent.vars)
        raise self.error(f"deps: {_show(text)}: {child.instance_id(first_bad)} would wait for "
                         f"{missing}, which does not exist ({domain})", child.where)

    # -- pass 3: cycles
    def check_cycles(self, groups: list) -> None:
        n = len(groups)
        indegree = [len(g.deps) for g in groups]
        children: list = [[] for _ in range(n)]
        for g in groups:
            for d in g.deps:
                children[d.parent].append(g.index)
        ready = [i for i in range(n) if indegree[i] == 0]
        done = 0
        while ready:
            i = ready.pop()
            done += 1
            for c in children[i]:
                indegree[c] -= 1
                if indegree[c] == 0:
                    ready.append(c)
        if done == n:
            return
        # Every group left over waits for at least one other left-over group: walk parents
        # from the first one until a group repeats.
        start = next(i for i in range(n) if indegree[i] > 0)
        position: dict = {}
        path: list = []
        node = start
        while node not in position:
            position[node] = len(path)
            path.append(node)
            node = next(d.parent for d in groups[node].deps if indegree[d.parent] > 0)
        cycle = path[position[node]:]
        first = cycle.index(min(cycle))
        cycle = cycle[first:] + cycle[:first]
        names = [groups[i].name for i in cycle + [cycle[0]]]
        if len(names) > 21:           # keep the one-line message readable
            names = names[:10] + [f"... ({len(names) - 20} more) ..."] + names[-10:]
        text = " -> ".join(names)
        raise self.error(f"deps: dependency cycle: {text} (each task waits for the next)",
                         groups[cycle[0]].where)

    # -- pass 4: functions
    def import_functions(self, groups: list) -> None:
        if not any(g.kind == "fn" for g in groups):
            return
        self.extend_path()
        for g in groups:
            if g.kind != "fn":
                continue
            entry = self.functions.get(g.fn)
            if entry is None:
                entry = self.resolve_function(g.fn, g.where)
                self.functions[g.fn] = entry
            function, signature, wants_inputs = entry
            g.function = function
            g.wants_inputs = wants_inputs
            if wants_inputs and "inputs" in g.kwargs:
                raise self.error("kwargs: 'inputs' is set by mpitiny (the results of the "
                                 f"parents) because {_oneline(g.fn)} has a parameter named "
                                 "'inputs'; "
                                 "do not set it in kwargs", g.where)
            if signature is not None:
                key = (g.fn, len(g.args), tuple(g.kwargs))
                if key not in self.bound:
                    extra = {"inputs": {}} if wants_inputs else {}
                    try:
                        signature.bind(*g.args, **g.kwargs, **extra)
                    except TypeError as err:
                        raise self.error(f"fn: {_oneline(g.fn)} cannot be called with these "
                                         f"args/kwargs: {_oneline(err)}", g.where) from None
                    self.bound.add(key)

    def extend_path(self) -> None:
        """Put the current directory, then the dag file's directory, first on sys.path."""
        paths = []
        try:
            paths.append(os.getcwd())
        except OSError:
            pass
        if self.base_dir:
            paths.append(os.path.abspath(self.base_dir))
        for p in reversed(paths):
            if p not in sys.path:
                sys.path.insert(0, p)
        importlib.invalidate_caches()

    def import_module(self, name: str, where: str) -> Any:
        found = self.modules.get(name)
        if found is None:
            try:
                found = importlib.import_module(name)
            except ModuleNotFoundError as err:
                missing = err.name or ""
                if missing and (name == missing or name.startswith(missing + ".")):
                    found = (f"no module named {_show(missing)} (looked in the current "
                             "directory, the dag file's directory and sys.path)")
                else:
                    found = (f"importing {_oneline(name)} failed: ModuleNotFoundError: "
                             f"{_oneline(err)}")
            except (Exception, SystemExit) as err:   # the module raised while importing
                found = (f"importing {_oneline(name)} failed: {type(err).__name__}: "
                         f"{_oneline(err)}")
            self.modules[name] = found
        if isinstance(found, str):
            raise self.error(f"fn: {found}", where)
        return found

    def resolve_function(self, fn: str, where: str) -> tuple:
        module_name, _, attr = fn.partition(":")
        obj = self.import_module(module_name, where)
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise self.error(f"fn: module {_oneline(module_name)} has no attribute "
                                 f"{_show(attr)}", where) from None
            except Exception as err:       # a module __getattr__ that raises
                raise self.error(f"fn: looking up {_show(attr)} in {_oneline(module_name)} "
                                 f"failed: {type(err).__name__}: {_oneline(err)}",
                                 where) from None
        if not callable(obj):
            raise self.error(f"fn: {_oneline(fn)} is not callable (it is {_kind(obj)})", where)
        try:
            signature = inspect.signature(obj)
        except (TypeError, ValueError):
            return obj, None, False
        param = signature.parameters.get("inputs")
        wants = param is not None and param.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                     inspect.Parameter.KEYWORD_ONLY)
        return obj, signature, wants
