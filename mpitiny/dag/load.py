"""Read a dag.json (version 1), check everything in it and build the task table (``DAG``).

Every problem in a file is found here, before any task runs, and reported as one ``DagError``
whose ``where`` names the file and the task (``dag.json: tasks[3] (id 'b')``) and whose message
names the key and what is wrong with it (``deps: unknown task 'x'``). Bad input never escapes as
a Python traceback: unreadable, non-UTF-8, empty or non-JSON files are ``DagError`` too.

The text is decoded and parsed strictly (``mpitiny.dag.jsontext``); the top level (name,
version, params) is checked here; then four passes run over the ``tasks`` list:

1. each entry on its own (``mpitiny.dag.entries``): keys, types, id, ``cmd``/``fn``, parameter
   substitution, ``foreach`` (``mpitiny.dag.foreach``: kept as ``range`` objects, never
   expanded), options, instance counts;
2. groups and ``deps`` (``mpitiny.dag.listing``, ``mpitiny.dag.deps``): plain tasks of one
   shape become one group (a listing, stored in columns like a family), every name resolves,
   element-wise maps (``"pre[{i}]"``) point at existing parent instances for every child
   instance (checked per variable, so a family of 10^6 instances costs what its variables
   cost, not one Python object per instance);
3. cycles, on the graph of entries, or of tasks when some are listed (iterative);
4. ``fn`` entries (``mpitiny.dag.functions``): the module is imported (once per module) and
   the function resolved, its signature checked against ``args``/``kwargs``, ``inputs`` and
   the batch form detected.

The format itself is documented in ``docs/dag-format.md``; ``schema.json`` next to this file is
a JSON Schema of the same format; its keys and limits are in ``mpitiny.dag.limits``.
"""
from __future__ import annotations

import gc
import os
from typing import Any

from mpitiny.dag.entries import EntryParser
from mpitiny.dag.functions import FunctionImporter
from mpitiny.dag.jsontext import StrictJsonReader
from mpitiny.dag.listing import Lister
from mpitiny.dag.limits import (FORMAT_VERSION, MAX_ID_LENGTH, MAX_INSTANCES, MAX_NAME_LENGTH,
                                MAX_RETRIES, MAX_TIMEOUT, PRIORITY_LIMIT, RANGE_LIMIT,
                                TASK_KEYS, TOP_KEY_SET, TOP_KEYS, id_problem, is_ident, is_int)
from mpitiny.dag.messages import Reporter, kind, oneline, show
from mpitiny.dag.model import DAG
from mpitiny.errors import DagError

# The file's keys and limits, and the id check, are part of this module's interface.
__all__ = ["FORMAT_VERSION", "MAX_ID_LENGTH", "MAX_INSTANCES", "MAX_NAME_LENGTH", "MAX_RETRIES",
           "MAX_TIMEOUT", "PRIORITY_LIMIT", "RANGE_LIMIT", "TASK_KEYS", "TOP_KEYS",
           "id_problem", "load_dag", "load_dag_text"]


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
        text = _read_text(source)
    except DagError:
        raise
    except FileNotFoundError:
        raise DagError("no such file", where=source) from None
    except IsADirectoryError:
        raise DagError("is a directory, not a dag.json file", where=source) from None
    except PermissionError:
        raise DagError("cannot read the file: permission denied", where=source) from None
    except (OSError, ValueError) as err:      # ValueError: a NUL byte in the path
        reason = err.strerror if isinstance(err, OSError) and err.strerror else oneline(err)
        raise DagError(f"cannot read the file: {reason}", where=source) from None
    base_dir = os.path.dirname(os.path.abspath(source))
    box = [text]
    del text
    return _load_owned(box, source, params, base_dir)


def _read_text(source: str) -> str | bytes:
    """The file as str (UTF-8, newlines as written), one copy in memory; as bytes when it is
    not UTF-8, for the message that names the offending byte."""
    try:
        with open(source, encoding="utf-8", newline="") as f:
            return f.read()
    except UnicodeDecodeError:
        with open(source, "rb") as f:
            return f.read()


def load_dag_text(text: str | bytes, source: str = "dag.json", params: dict | None = None,
                  base_dir: str | None = None) -> DAG:
    """Check and build the DAG of a dag.json given as text or bytes.

    ``source`` is the file name used in messages (and stored as ``DAG.source``); ``base_dir``
    is the directory added to ``sys.path`` (after the current directory) to import ``fn``
    modules.
    """
    box = [text]
    del text
    return _load_owned(box, source, params, base_dir)


def _load_owned(box: list, source: str, params: dict | None, base_dir: str | None) -> DAG:
    """``load_dag_text`` of the text in the one-element list ``box``, which the loader empties:
    the text (48 MB for 10^6 listed tasks) is freed once parsed, not held to the end."""
    # The loader allocates a few objects per task and frees almost none: with the cyclic
    # garbage collector on, its repeated full passes over them cost more than the loading.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _Loader(source, params, base_dir).load(box)
    except RecursionError:
        raise DagError("the JSON is nested too deeply", where=source) from None
    finally:
        if gc_was_enabled:
            gc.enable()


class _Loader(Reporter):
    """One loading of one file: the top level, then the four passes over ``tasks``."""

    def __init__(self, source: str, params: dict | None, base_dir: str | None) -> None:
        super().__init__(source)
        self.given = dict(params or {})
        self.base_dir = base_dir
        self.params: dict = {}

    def load(self, box: list) -> DAG:
        """The checked ``DAG`` of the file's text, the one item of ``box`` (taken out)."""
        data = StrictJsonReader(self.source).read_owned(box)
        if not isinstance(data, dict):
            raise self.error(f"the top level must be a JSON object with 'name' and 'tasks', "
                             f"not {kind(data)}")
        unknown = [k for k in data if k not in TOP_KEY_SET]
        if unknown:
            raise self.error(f"unknown key {show(unknown[0])} at the top level (allowed: "
                             f"{', '.join(TOP_KEYS)})")
        name = self.check_name(data)
        if "version" in data:
            version = data["version"]
            if not is_int(version) or version != FORMAT_VERSION:
                raise self.error(f"{show(version)} is not supported; this mpitiny "
                                 f"reads dag.json version {FORMAT_VERSION}", "version")
        if "description" in data and not isinstance(data["description"], str):
            raise self.error(f"must be a string, not {kind(data['description'])}",
                             "description")
        self.params = self.resolve_params(data.get("params", {}))
        if "tasks" not in data:
            raise self.error("missing key 'tasks' (the list of tasks)")
        tasks = data["tasks"]
        if not isinstance(tasks, list):
            raise self.error(f"must be a list of tasks, not {kind(tasks)}", "tasks")
        if not tasks:
            raise self.error("is empty: a dag.json needs at least one task", "tasks")

        parser = EntryParser(self.source, self.params)
        columns = parser.read_columns(tasks)
        n_entries = len(tasks)
        if columns is not None:              # plain tasks only, all valid: in columns
            del data, tasks                  # their dicts are freed: the columns have it all
            groups = Lister(self.source, self.params).build_columns(
                columns, lambda: parser.plain_entries(columns))
            raw_deps = columns.deps
        else:
            entries, raw_deps = parser.parse_all(tasks)
            groups = Lister(self.source, self.params).build(entries, raw_deps)
        FunctionImporter(self.source, self.base_dir).import_all(groups)
        return DAG(name, groups, self.params, source=self.source, entries=n_entries,
                   dep_entries=sum(map(len, raw_deps)))

    def check_name(self, data: dict) -> str:
        """The DAG's ``name``, which names its run directory."""
        if "name" not in data:
            raise self.error("missing key 'name' (the name of the DAG; it names the run "
                             "directory)")
        name = data["name"]
        if not isinstance(name, str):
            raise self.error(f"must be a string, not {kind(name)}", "name")
        problem = None
        if not name or name.isspace():
            problem = "is empty"
        elif len(name) > MAX_NAME_LENGTH:
            problem = f"is {len(name)} characters long (at most {MAX_NAME_LENGTH})"
        elif name in (".", "..") or "/" in name or "\\" in name:
            problem = f"{show(name)} cannot be a directory name (no '/', '\\', '.' or '..')"
        elif not name.isprintable():
            problem = f"{show(name)} contains unprintable characters"
        if problem:
            raise self.error(problem + " (the name of the DAG names its run directory)",
                             "name")
        return name

    def resolve_params(self, declared: Any) -> dict:
        """The run parameters: the file's defaults, overridden by ``--param`` values."""
        if not isinstance(declared, dict):
            raise self.error(f"must be an object of parameter names and default values, "
                             f"not {kind(declared)}", "params")
        for key in declared:
            if not is_ident(key):
                raise self.error(f"{show(key)} is not a valid parameter name (letters, digits "
                                 "and _, not starting with a digit)", "params")
        for key in self.given:
            if key not in declared:
                known = ", ".join(declared) if declared else "none"
                shown = key if isinstance(key, str) and key.isprintable() else repr(key)
                raise self.error(f"--param {shown}: the file declares no parameter {show(key)} "
                                 f"(declared: {known})", "params")
        values = dict(declared)
        values.update(self.given)
        for key, value in declared.items():
            if value is None and key not in self.given:
                raise self.error(f"parameter {show(key)} is required (its default is null): "
                                 f"give it with --param {key}=VALUE", "params")
        return values
