"""Turn a WfCommons workflow instance (WfFormat) into a dag.json of sleeping tasks.

Every task of the instance becomes ``{"id": ..., "fn": "mpitiny.tasks:sleep",
"args": [runtime * scale], "deps": [...], "priority": ...}``, and every edge of the instance is
kept, so a run of the result has the real workflow's shape and (scaled) task durations. The
priority is the task's bottom level in milliseconds of recorded runtime (see
``bottom_levels``): ready tasks on the critical path run first.

Formats read:

- WfFormat 1.5 (the WfInstances collection today): ``workflow.specification.tasks`` gives
  ``id``, ``parents`` and ``children``; ``workflow.execution.tasks`` gives ``id`` and
  ``runtimeInSeconds``.
- WfFormat 1.4 and older: ``workflow.tasks`` (or ``workflow.jobs``), one object per task with
  ``name`` (what ``parents``/``children`` refer to), ``parents``, ``children`` and
  ``runtimeInSeconds`` (or ``runtime``).

Edges are taken from ``parents``; where ``children`` are given they must say the same.
Task ids that mpitiny does not accept (whitespace, ``[ ] { } ,``, unprintable characters, over
256 characters) are rewritten deterministically (``_`` for each bad character, then ``_2``,
``_3``... if that name is taken), so the mapping depends only on the instance.
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
from typing import Any

from mpitiny.dag.load import MAX_ID_LENGTH, id_problem, load_dag_text
from mpitiny.errors import BadInput, MpitinyError

SLEEP_FN = "mpitiny.tasks:sleep"
_BAD_ID_CHAR = re.compile(r"[\[\]{},\s]")
_NAME_BAD = re.compile(r"[/\\\s]")


def _fail(message: str, source: str) -> BadInput:
    return BadInput(message, where=source or None)


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=repr)
    return text if len(text) <= 80 else text[:77] + "..."


def sanitise_id(raw: str) -> str:
    """A task id mpitiny accepts, made from ``raw`` (unchanged if it is already valid)."""
    if id_problem(raw) is None:
        return raw
    text = _BAD_ID_CHAR.sub("_", raw)
    text = "".join(c if c.isprintable() else "_" for c in text)
    return (text or "task")[:MAX_ID_LENGTH]


def _unique_ids(raw_ids: list) -> list:
    """Sanitised, unique ids; valid ids keep their name, rewritten ones avoid every other."""
    taken = {r for r in raw_ids if id_problem(r) is None}
    out = []
    for raw in raw_ids:
        if id_problem(raw) is None:
            out.append(raw)
            continue
        base = sanitise_id(raw)
        candidate, n = base, 1
        while candidate in taken:
            n += 1
            suffix = f"_{n}"
            candidate = base[:MAX_ID_LENGTH - len(suffix)] + suffix
        taken.add(candidate)
        out.append(candidate)
    return out


def _runtime(task: dict, key_names: tuple, tid: str, source: str) -> float:
    for key in key_names:
        if key in task:
            value = task[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value < 0:
                raise _fail(f"task {_show(tid)}: {key} must be a non-negative number, not "
                            f"{_show(value)}", source)
            return float(value)
    raise _fail(f"task {_show(tid)} has no runtime ({' or '.join(key_names)})", source)


def _id_list(task: dict, key: str, tid: str, source: str) -> list | None:
    if key not in task or task[key] is None:
        return None
    value = task[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(f"task {_show(tid)}: {key} must be a list of task ids", source)
    return value


def _read_tasks(instance: dict, source: str) -> list:
    """``[(key, parents, children or None, runtime)]`` in the instance's task order."""
    workflow = instance.get("workflow")
    if not isinstance(workflow, dict):
        raise _fail("not a WfCommons instance: no 'workflow' object", source)
    spec = workflow.get("specification")
    if spec is not None:                                  # WfFormat 1.5
        if not isinstance(spec, dict) or not isinstance(spec.get("tasks"), list):
            raise _fail("workflow.specification.tasks must be a list", source)
        execution = workflow.get("execution")
        if not isinstance(execution, dict) or not isinstance(execution.get("tasks"), list):
            raise _fail("workflow.execution.tasks is missing: the instance has no measured "
                        "runtimes", source)
        runtimes: dict = {}
        for k, t in enumerate(execution["tasks"]):
            if not isinstance(t, dict) or not isinstance(t.get("id"), str):
                raise _fail(f"workflow.execution.tasks[{k}] has no string 'id'", source)
            if t["id"] in runtimes:
                raise _fail(f"workflow.execution.tasks: task {_show(t['id'])} is listed twice",
                            source)
            runtimes[t["id"]] = _runtime(t, ("runtimeInSeconds", "runtime"), t["id"], source)
        out = []
        for k, t in enumerate(spec["tasks"]):
            if not isinstance(t, dict) or not isinstance(t.get("id"), str) or not t["id"]:
                raise _fail(f"workflow.specification.tasks[{k}] has no string 'id'", source)
            tid = t["id"]
            if tid not in runtimes:
                raise _fail(f"task {_show(tid)} has no entry in workflow.execution.tasks "
                            "(no runtime)", source)
            out.append((tid, _id_list(t, "parents", tid, source) or [],
                        _id_list(t, "children", tid, source), runtimes[tid]))
        extra = set(runtimes) - {row[0] for row in out}
        if extra:
            raise _fail(f"workflow.execution.tasks has task {_show(sorted(extra)[0])} that "
                        "workflow.specification.tasks does not list", source)
        return out
    for key in ("tasks", "jobs"):                         # WfFormat <= 1.4
        if key in workflow:
            tasks = workflow[key]
            if not isinstance(tasks, list):
                raise _fail(f"workflow.{key} must be a list", source)
            out = []
            for k, t in enumerate(tasks):
                if not isinstance(t, dict):
                    raise _fail(f"workflow.{key}[{k}] is not an object", source)
                # parents/children refer to "name" in these versions; "id" is optional.
                tid = t.get("name", t.get("id"))
                if not isinstance(tid, str) or not tid:
                    raise _fail(f"workflow.{key}[{k}] has no string 'name'", source)
                out.append((tid, _id_list(t, "parents", tid, source) or [],
                            _id_list(t, "children", tid, source),
                            _runtime(t, ("runtimeInSeconds", "runtime"), tid, source)))
            return out
    raise _fail("not a WfCommons instance: no workflow.specification.tasks (WfFormat 1.5) "
                "and no workflow.tasks (older WfFormat)", source)


def convert(instance: dict, scale: float, source: str = "") -> dict:
    """The dag.json dict of a WfCommons instance: one sleeping task per task, every edge."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) \
            or not math.isfinite(scale) or scale < 0:
        raise BadInput(f"--scale must be a non-negative number, not {scale!r}")
    if not isinstance(instance, dict):
        raise _fail("not a WfCommons instance: the top level is not a JSON object", source)
    rows = _read_tasks(instance, source)
    if not rows:
        raise _fail("the instance has no tasks", source)
    keys = [row[0] for row in rows]
    index: dict = {}
    for k, key in enumerate(keys):
        if key in index:
            raise _fail(f"task id {_show(key)} is used twice", source)
        index[key] = k
    ids = _unique_ids(keys)

    parent_edges = set()
    parents_of: list = []
    for key, parents, _, _ in rows:
        seen: list = []
        for p in parents:
            if p not in index:
                raise _fail(f"task {_show(key)}: parent {_show(p)} is not a task of the "
                            "instance", source)
            if p == key:
                raise _fail(f"task {_show(key)} lists itself as a parent", source)
            if p not in seen:                      # a parent listed twice is one edge
                seen.append(p)
                parent_edges.add((p, key))
        parents_of.append(seen)
    if any(row[2] is not None for row in rows):
        child_edges = set()
        for key, _, children, _ in rows:
            for c in children or ():
                if c not in index:
                    raise _fail(f"task {_show(key)}: child {_show(c)} is not a task of the "
                                "instance", source)
                child_edges.add((key, c))
        only_children = sorted(child_edges - parent_edges)
        only_parents = sorted(parent_edges - child_edges)
        if only_children:
            p, c = only_children[0]
            raise _fail(f"parents and children disagree: {_show(p)} lists child {_show(c)} "
                        f"but {_show(c)} does not list it as a parent "
                        f"({len(only_children) + len(only_parents)} such edges)", source)
        if only_parents:
            p, c = only_parents[0]
            raise _fail(f"parents and children disagree: {_show(c)} lists parent {_show(p)} "
                        f"but {_show(p)} does not list it as a child "
                        f"({len(only_children) + len(only_parents)} such edges)", source)

    tasks = []
    levels = bottom_levels([row[3] for row in rows], [[index[p] for p in ps] for ps in parents_of])
    for k, (_, _, _, runtime) in enumerate(rows):
        task: dict = {"id": ids[k], "fn": SLEEP_FN, "args": [round(runtime * scale, 9)],
                      "priority": min(int(round(levels[k] * 1000)), PRIORITY_MAX)}
        if parents_of[k]:
            task["deps"] = [ids[index[p]] for p in parents_of[k]]
        tasks.append(task)

    name = instance.get("name")
    if not isinstance(name, str) or not name.strip():
        name = os.path.splitext(os.path.basename(source))[0] if source else "wfcommons"
    name = _NAME_BAD.sub("_", name).strip("._") or "wfcommons"
    name = "".join(c if c.isprintable() else "_" for c in name)[:200]
    origin = os.path.basename(source) if source else "a WfCommons instance"
    version = instance.get("schemaVersion")
    description = (f"Imported from {origin}" + (f" (WfFormat {version})" if version else "") +
                   f": {len(tasks)} tasks, {len(parent_edges)} edges; each task sleeps for "
                   f"its recorded runtime x {scale:g}.")
    return {"name": name, "version": 1, "description": description, "tasks": tasks}


PRIORITY_MAX = 2**31 - 1


def bottom_levels(runtimes: list, parents: list) -> list:
    """Per task, the longest path (in recorded seconds) from its start to the workflow's end.

    Used as the priority of the imported tasks (in milliseconds): among ready tasks a rank then
    runs the one on the longest remaining chain first, the classic list-scheduling heuristic
    (HEFT's upward rank without communication costs).
    """
    n = len(runtimes)
    children: list = [[] for _ in range(n)]
    pending = [0] * n
    for k, ps in enumerate(parents):
        for p in ps:
            children[p].append(k)
            pending[p] += 1
    level = [0.0] * n
    order = [k for k in range(n) if not pending[k]]
    for k in order:                       # appends while iterating: sinks first
        level[k] = runtimes[k] + max((level[c] for c in children[k]), default=0.0)
        for p in parents[k]:
            pending[p] -= 1
            if not pending[p]:
                order.append(p)
    return level


def dumps(dag: dict) -> str:
    """dag.json text with one task per line (diff- and grep-friendly)."""
    head = {k: v for k, v in dag.items() if k != "tasks"}
    lines = ["{"]
    for key, value in head.items():
        lines.append(f" {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)},")
    lines.append(' "tasks": [')
    tasks = [json.dumps(t, ensure_ascii=False) for t in dag.get("tasks", [])]
    lines.append(",\n".join("  " + t for t in tasks))
    lines.append(" ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def summary(dag: dict) -> dict:
    """Tasks, edges, total and longest sleep, and the critical path (longest chain) in seconds."""
    tasks = dag["tasks"]
    position = {t["id"]: k for k, t in enumerate(tasks)}
    length = [0.0] * len(tasks)
    seconds = [float(t["args"][0]) for t in tasks]
    parents = [[position[d] for d in t.get("deps", ())] for t in tasks]
    children: list = [[] for _ in tasks]
    waiting = [len(p) for p in parents]
    for k, ps in enumerate(parents):
        for p in ps:
            children[p].append(k)
    ready = [k for k in range(len(tasks)) if not waiting[k]]
    for k in ready:                       # appends while iterating: a topological order
        length[k] += seconds[k]
        for c in children[k]:
            length[c] = max(length[c], length[k])
            waiting[c] -= 1
            if not waiting[c]:
                ready.append(c)
    return {"tasks": len(tasks), "edges": sum(len(p) for p in parents),
            "total": sum(seconds), "longest": max(seconds, default=0.0),
            "critical_path": max(length, default=0.0)}


def convert_file(instance_path: str, output_path: str, scale: float) -> str:
    """Convert the instance file to a dag.json at ``output_path``; a one-line summary."""
    source = os.fspath(instance_path)
    try:
        with open(source, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise BadInput("no such file", where=source) from None
    except IsADirectoryError:
        raise BadInput("is a directory, not a WfCommons instance file", where=source) from None
    except OSError as err:
        raise BadInput(f"cannot read the file: {err.strerror or err}", where=source) from None
    try:
        instance = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise BadInput("not UTF-8 text (is this a binary file?)", where=source) from None
    except RecursionError:
        raise BadInput("the JSON is nested too deeply", where=source) from None
    except ValueError as err:
        raise BadInput(f"not valid JSON: {' '.join(str(err).split())}", where=source) from None
    dag = convert(instance, scale, source)
    text = dumps(dag)
    # What is written must load: the same checks as `mpitiny validate` (cycles included).
    try:
        load_dag_text(text, source=os.fspath(output_path))
    except MpitinyError as err:
        raise BadInput(f"the converted workflow is not a valid DAG: {err.format()}",
                       where=source) from None

    target = os.path.abspath(os.fspath(output_path))
    directory = os.path.dirname(target)
    if os.path.isdir(target):
        raise BadInput("is a directory", where=os.fspath(output_path))
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(target) + ".",
                                   suffix=".tmp")
    except OSError as err:
        raise BadInput(f"cannot write there: {err.strerror or err}",
                       where=os.fspath(output_path)) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(err, OSError):
            raise BadInput(f"cannot write the file: {err.strerror or err}",
                           where=os.fspath(output_path)) from None
        raise
    s = summary(dag)
    return (f"{output_path}: {s['tasks']} tasks, {s['edges']} edges, total sleep "
            f"{s['total']:.3f} s, longest sleep {s['longest']:.3f} s, critical path "
            f"{s['critical_path']:.3f} s (scale {scale:g})")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
