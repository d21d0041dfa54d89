"""Turn a WfCommons workflow instance (WfFormat) into a dag.json of sleeping or working tasks.

Every task of the instance becomes ``{"id": ..., "fn": "mpitiny.tasks:sleep",
"args": [runtime * scale], "deps": [...], "priority": ...}``, and every edge of the instance is
kept, so a run of the result has the real workflow's shape and (scaled) task durations. The
priority is the task's bottom level in milliseconds of recorded runtime (see
``bottom_levels``): ready tasks on the critical path run first.

With ``work`` (``mpitiny import-wfcommons --work``) a task does the work instead:
``{"fn": "mpitiny.wfwork:run_task", "args": [runtime * scale], "kwargs": {"read": [[file,
bytes], ...], "write": [[file, bytes], ...]}}`` burns its cores for its runtime and reads its
input files and writes its output files, sizes times ``size_scale``, in ``RUN_DIR/data``
(``mpitiny.wfwork`` says how). One more task, ``stage_in`` (renamed if the instance has a task
of that id), writes the workflow's own input files (read by some task, written by none), and
the tasks that read them depend on it. A task whose instance records ``coreCount`` c > 1 gets
``"cores": c`` (at most ``max_cores``), sleeping or working. The files are checked here, so
that a run cannot trip on them: every size is a whole number of bytes, a file has at most one
writer and no task reads what it writes, a name is a relative path usable under
``RUN_DIR/data`` (no ``..``, no empty component) and no file is also the folder of another. A
task that reads a file written by a task it does not depend on (directly or not) gets that
dependency added (counted in the description); one written by its own descendant is an error.

Formats read (``work`` reads the files' sizes too):

- WfFormat 1.5 (the WfInstances collection today): ``workflow.specification.tasks`` gives
  ``id``, ``parents``, ``children``, ``inputFiles`` and ``outputFiles``;
  ``workflow.specification.files`` each file's ``id`` and ``sizeInBytes``;
  ``workflow.execution.tasks`` gives ``id`` and ``runtimeInSeconds``.
- WfFormat 1.4 and older: ``workflow.tasks`` (or ``workflow.jobs``), one object per task with
  ``name`` (what ``parents``/``children`` refer to), ``parents``, ``children``,
  ``runtimeInSeconds`` (or ``runtime``) and ``files``: ``name`` (after ``path`` if given),
  ``link`` (``input`` or ``output``) and ``sizeInBytes`` (``size`` before 1.4, also bytes).

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
from dataclasses import dataclass
from typing import Any

from mpitiny.dag.load import MAX_ID_LENGTH, id_problem, load_dag_text
from mpitiny.errors import BadInput, MpitinyError

SLEEP_FN = "mpitiny.tasks:sleep"
WORK_FN = "mpitiny.wfwork:run_task"
STAGE_FN = "mpitiny.wfwork:stage"
STAGE_ID = "stage_in"
PART_SUFFIX = ".mpitiny-part"
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


def _free_id(base: str, taken: set) -> str:
    """``base``, or ``base_2``, ``base_3``... whichever is not in ``taken``."""
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}_{n}"
    return candidate


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


def _cores(task: dict, tid: str, source: str) -> int | None:
    """The cores a task declares (``coreCount``, or ``cores``), None if it declares none."""
    for key in ("coreCount", "cores"):
        value = task.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value < 1 or value != int(value):
            raise _fail(f"task {_show(tid)}: {key} must be a whole number of cores >= 1, not "
                        f"{_show(value)}", source)
        return int(value)
    return None


def _id_list(task: dict, key: str, tid: str, source: str) -> list | None:
    if key not in task or task[key] is None:
        return None
    value = task[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(f"task {_show(tid)}: {key} must be a list of task ids", source)
    return value


def _read_tasks(instance: dict, source: str) -> list:
    """``[(key, parents, children or None, runtime, cores or None)]`` in the instance's task
    order."""
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
        cores: dict = {}
        for k, t in enumerate(execution["tasks"]):
            if not isinstance(t, dict) or not isinstance(t.get("id"), str):
                raise _fail(f"workflow.execution.tasks[{k}] has no string 'id'", source)
            if t["id"] in runtimes:
                raise _fail(f"workflow.execution.tasks: task {_show(t['id'])} is listed twice",
                            source)
            runtimes[t["id"]] = _runtime(t, ("runtimeInSeconds", "runtime"), t["id"], source)
            cores[t["id"]] = _cores(t, t["id"], source)
        out = []
        for k, t in enumerate(spec["tasks"]):
            if not isinstance(t, dict) or not isinstance(t.get("id"), str) or not t["id"]:
                raise _fail(f"workflow.specification.tasks[{k}] has no string 'id'", source)
            tid = t["id"]
            if tid not in runtimes:
                raise _fail(f"task {_show(tid)} has no entry in workflow.execution.tasks "
                            "(no runtime)", source)
            out.append((tid, _id_list(t, "parents", tid, source) or [],
                        _id_list(t, "children", tid, source), runtimes[tid], cores[tid]))
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
                            _runtime(t, ("runtimeInSeconds", "runtime"), tid, source),
                            _cores(t, tid, source)))
            return out
    raise _fail("not a WfCommons instance: no workflow.specification.tasks (WfFormat 1.5) "
                "and no workflow.tasks (older WfFormat)", source)


def _factor(option: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0:
        raise BadInput(f"{option} must be a non-negative number, not {value!r}")


def convert(instance: dict, scale: float, source: str = "", *, work: bool = False,
            size_scale: float = 1.0, max_cores: int | None = None) -> dict:
    """The dag.json dict of a WfCommons instance: one task per task, every edge.

    Each task sleeps for its runtime x ``scale``; with ``work`` it burns its cores that long
    and reads and writes the instance's files (sizes x ``size_scale``) in ``RUN_DIR/data``
    (``mpitiny.wfwork``), after a ``stage_in`` task that writes the workflow's input files.
    A task that declares c > 1 cores (``coreCount``; at most ``max_cores``) gets
    ``"cores": c``: it holds c rank slots of its node while it runs (and with ``work`` burns
    c cores).
    """
    _factor("--scale", scale)
    _factor("--size-scale", size_scale)
    if max_cores is not None and (isinstance(max_cores, bool) or not isinstance(max_cores, int)
                                  or max_cores < 1):
        raise BadInput(f"--max-cores must be a whole number >= 1, not {max_cores!r}")
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
    parents = _parent_positions(rows, index, source)
    edges = sum(map(len, parents))
    runtimes = [round(row[3] * scale, 9) for row in rows]
    declared = [row[4] or 1 for row in rows]
    cores = declared if max_cores is None else [min(c, max_cores) for c in declared]
    plan = None
    if work:
        task_files, sizes = _read_files(instance, len(rows), source)
        plan = _work_plan(keys, task_files, sizes, parents, size_scale, source)
    levels = bottom_levels([row[3] for row in rows], parents)
    ids = _unique_ids(keys)
    stage_id = _free_id(STAGE_ID, set(ids))
    tasks = []
    for k in range(len(rows)):
        task: dict = {"id": ids[k], "fn": SLEEP_FN, "args": [runtimes[k]]}
        deps = [ids[p] for p in parents[k]]
        if plan is not None:
            task["fn"] = WORK_FN
            task["kwargs"] = {"read": plan.reads[k], "write": plan.writes[k]}
            if cores[k] > 1:
                task["kwargs"]["cores"] = cores[k]
            if k in plan.stage_readers:
                deps.append(stage_id)
        if cores[k] > 1:
            task["cores"] = cores[k]
        task["priority"] = min(int(round(levels[k] * 1000)), PRIORITY_MAX)
        if deps:
            task["deps"] = deps
        tasks.append(task)
    if plan is not None and plan.staged:
        tasks.insert(0, {"id": stage_id, "fn": STAGE_FN, "kwargs": {"write": plan.staged},
                         "priority": PRIORITY_MAX})
    return {"name": _dag_name(instance, source), "version": 1,
            "description": _description(instance, source, len(rows), edges, scale, plan,
                                        size_scale, stage_id) + _cores_text(declared, cores, max_cores),
            "tasks": tasks}


def _parent_positions(rows: list, index: dict, source: str) -> list:
    """Each task's parents (positions, each once), checked against ``children`` if given."""
    parent_edges = set()
    parents_of: list = []
    for key, parents, *_ in rows:
        seen: list = []
        for p in parents:
            if p not in index:
                raise _fail(f"task {_show(key)}: parent {_show(p)} is not a task of the "
                            "instance", source)
            if p == key:
                raise _fail(f"task {_show(key)} lists itself as a parent", source)
            if index[p] not in seen:                  # a parent listed twice is one edge
                seen.append(index[p])
                parent_edges.add((p, key))
        parents_of.append(seen)
    if any(row[2] is not None for row in rows):
        child_edges = set()
        for key, _, children, *_ in rows:
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
    return parents_of


def _dag_name(instance: dict, source: str) -> str:
    name = instance.get("name")
    if not isinstance(name, str) or not name.strip():
        name = os.path.splitext(os.path.basename(source))[0] if source else "wfcommons"
    name = _NAME_BAD.sub("_", name).strip("._") or "wfcommons"
    return "".join(c if c.isprintable() else "_" for c in name)[:200]


def _description(instance: dict, source: str, tasks: int, edges: int, scale: float,
                 plan: WorkPlan | None, size_scale: float, stage_id: str) -> str:
    origin = os.path.basename(source) if source else "a WfCommons instance"
    version = instance.get("schemaVersion")
    text = (f"Imported from {origin}" + (f" (WfFormat {version})" if version else "") +
            f": {tasks} tasks, {edges} edges; ")
    if plan is None:
        return text + f"each task sleeps for its recorded runtime x {scale:g}."
    text += (f"each task burns its cores for its recorded runtime x {scale:g}, reads its input "
             f"files and writes its output files (sizes x {size_scale:g}) in RUN_DIR/data")
    if plan.staged:
        text += (f"; task {stage_id!r} first writes the workflow's input files "
                 f"({_files(len(plan.staged))})")
    if plan.added:
        text += (f"; {plan.added} dependencies added (a task reads a file of a task it did not "
                 "depend on)")
    return text + "."


def _cores_text(declared: list, cores: list, max_cores: int | None) -> str:
    """What the description says of the tasks that use more than one core (``cores``; they
    declared ``declared``)."""
    several = sum(c > 1 for c in cores)
    capped = sum(d > c for d, c in zip(declared, cores))
    if not several and not capped:
        return ""
    text = f" {several} tasks use more than one core (up to {max(cores)})"
    if capped:
        text += f"; {capped} declare more than --max-cores {max_cores} and use that many"
    return text + "."


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


# ------------------------------------------------------------------ --work: the files


@dataclass
class WorkPlan:
    """What the tasks of a ``--work`` import read and write (``[name, bytes]`` pairs)."""
    reads: list            # per task
    writes: list           # per task
    staged: list           # the workflow's input files, written by the stage task
    stage_readers: set     # positions of the tasks that read one of them
    added: int             # dependencies added: a reader that did not depend on the writer


def _size(value: Any, name: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0 or value != int(value):
        raise _fail(f"file {_show(name)}: the size must be a non-negative whole number of "
                    f"bytes, not {_show(value)}", source)
    return int(value)


def _read_files(instance: dict, count: int, source: str) -> tuple:
    """Per task ``(input names, output names)`` in task order, and ``{name: bytes}``."""
    workflow = instance["workflow"]
    spec = workflow.get("specification")
    if spec is not None:                                  # WfFormat 1.5
        files = spec.get("files")
        if not isinstance(files, list):
            raise _fail("workflow.specification.files must be a list (--work needs the "
                        "files' sizes)", source)
        sizes: dict = {}
        for k, f in enumerate(files):
            if not isinstance(f, dict) or not isinstance(f.get("id"), str):
                raise _fail(f"workflow.specification.files[{k}] has no string 'id'", source)
            sizes[f["id"]] = _size(f.get("sizeInBytes"), f["id"], source)
        task_files = [(_file_names(t, "inputFiles", source),
                       _file_names(t, "outputFiles", source)) for t in spec["tasks"]]
    else:                                                 # WfFormat <= 1.4: per task files
        tasks = workflow.get("tasks", workflow.get("jobs"))
        sizes, task_files = {}, []
        for t in tasks:
            task_files.append(_old_task_files(t, sizes, source))
    for k, (inputs, outputs) in enumerate(task_files):
        for name in inputs + outputs:
            if name not in sizes:
                raise _fail(f"file {_show(name)} (of task {k + 1} of {count}) has no size in "
                            "the instance", source)
    return task_files, sizes


def _file_names(task: dict, key: str, source: str) -> list:
    value = task.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(f"task {_show(task.get('id'))}: {key} must be a list of file ids", source)
    return list(dict.fromkeys(value))


def _old_task_files(task: dict, sizes: dict, source: str) -> tuple:
    """``(inputs, outputs)`` of a WfFormat <= 1.4 task (``files`` with ``link``), adding
    each file's size (``sizeInBytes``, or ``size`` before 1.4) to ``sizes``."""
    inputs: list = []
    outputs: list = []
    tid = task.get("name", task.get("id"))
    for k, f in enumerate(task.get("files") or []):
        if not isinstance(f, dict) or not isinstance(f.get("name"), str):
            raise _fail(f"task {_show(tid)}: files[{k}] has no string 'name'", source)
        name = f.get("path", "") + f["name"] if isinstance(f.get("path"), str) else f["name"]
        size = _size(f.get("sizeInBytes", f.get("size")), name, source)
        if sizes.setdefault(name, size) != size:
            raise _fail(f"file {_show(name)} is given two sizes, {sizes[name]} and {size}",
                        source)
        link = str(f.get("link", "")).lower()
        if link not in ("input", "output"):
            raise _fail(f"task {_show(tid)}: file {_show(name)} has link {_show(f.get('link'))}"
                        ": it must be 'input' or 'output'", source)
        (inputs if link == "input" else outputs).append(name)
    return list(dict.fromkeys(inputs)), list(dict.fromkeys(outputs))


def file_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a file under ``RUN_DIR/data`` (None if it can)."""
    if not name:
        return "it is empty"
    if name.startswith("/"):
        return "it is an absolute path"
    if "\0" in name:
        return "it holds a NUL character"
    for part in name.split("/"):
        if part in ("", ".", ".."):
            return f"it has a path component {part!r}"
        if len(part.encode("utf-8", "surrogateescape")) > 250:
            return "a path component is over 250 bytes"
    if name.endswith(PART_SUFFIX):
        return f"it ends with {PART_SUFFIX}, the suffix of mpitiny's temporary files"
    return None


def _work_plan(keys: list, task_files: list, sizes: dict, parents: list, size_scale: float,
               source: str) -> WorkPlan:
    """Check the files (one writer each, usable names) and make every reader depend on the
    writer of each file it reads (adding the dependency where the instance lacks it)."""
    writer: dict = {}
    for k, (inputs, outputs) in enumerate(task_files):
        for name in outputs:
            if name in writer:
                raise _fail(f"file {_show(name)} is written by two tasks, "
                            f"{_show(keys[writer[name]])} and {_show(keys[k])}", source)
            if name in inputs:
                raise _fail(f"task {_show(keys[k])} both reads and writes file {_show(name)}",
                            source)
            writer[name] = k
    _check_names({n for ins, outs in task_files for n in ins + outs}, source)
    added = 0
    for k, (inputs, _) in enumerate(task_files):
        for name in inputs:
            w = writer.get(name)
            if w is None or w in parents[k] or _reaches(parents, k, w):
                continue
            if _reaches(parents, w, k):
                raise _fail(f"task {_show(keys[k])} reads file {_show(name)}, which its "
                            f"descendant {_show(keys[w])} writes", source)
            parents[k].append(w)
            added += 1

    def pairs(names: list) -> list:
        return [[n, int(round(sizes[n] * size_scale))] for n in names]

    staged = list(dict.fromkeys(n for ins, _ in task_files for n in ins if n not in writer))
    readers = {k for k, (ins, _) in enumerate(task_files) if any(n not in writer for n in ins)}
    return WorkPlan([pairs(ins) for ins, _ in task_files],
                    [pairs(outs) for _, outs in task_files], pairs(staged), readers, added)


def _check_names(names: set, source: str) -> None:
    """Every file name usable under ``RUN_DIR/data``, and none also a folder of another."""
    folders: set = set()
    for name in names:
        problem = file_name_problem(name)
        if problem:
            raise _fail(f"file {_show(name)} cannot be written under RUN_DIR/data: {problem}",
                        source)
        parts = name.split("/")
        folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
    clash = sorted(folders & names)
    if clash:
        raise _fail(f"file {_show(clash[0])} is also the folder of another file", source)


def _reaches(parents: list, start: int, target: int) -> bool:
    """Whether ``target`` is an ancestor of ``start``."""
    seen = {start}
    stack = [start]
    while stack:
        for p in parents[stack.pop()]:
            if p == target:
                return True
            if p not in seen:
                seen.add(p)
                stack.append(p)
    return False


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
    """Tasks, edges, total and longest runtime, and the critical path (longest chain) in
    seconds, of the instance's tasks (not the stage task); with ``--work`` also the bytes
    written, read and staged."""
    stage = {t["id"] for t in dag["tasks"] if t["fn"] == STAGE_FN}
    tasks = [t for t in dag["tasks"] if t["id"] not in stage]
    position = {t["id"]: k for k, t in enumerate(tasks)}
    length = [0.0] * len(tasks)
    seconds = [float(t["args"][0]) for t in tasks]
    parents = [[position[d] for d in t.get("deps", ()) if d not in stage] for t in tasks]
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
    out = {"tasks": len(tasks), "edges": sum(len(p) for p in parents),
           "total": sum(seconds), "longest": max(seconds, default=0.0),
           "critical_path": max(length, default=0.0)}
    if any(t["fn"] == WORK_FN for t in tasks):
        def total(entries: list, key: str) -> int:
            return sum(size for t in entries for _, size in t.get("kwargs", {}).get(key, ()))
        out.update(outputs=sum(len(t["kwargs"]["write"]) for t in tasks),
                   written=total(tasks, "write"), read=total(tasks, "read"),
                   staged_files=sum(len(t["kwargs"]["write"]) for t in dag["tasks"]
                                    if t["id"] in stage),
                   staged=total([t for t in dag["tasks"] if t["id"] in stage], "write"))
    return out


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def convert_file(instance_path: str, output_path: str, scale: float, *, work: bool = False,
                 size_scale: float = 1.0, max_cores: int | None = None) -> str:
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
    dag = convert(instance, scale, source, work=work, size_scale=size_scale,
                  max_cores=max_cores)
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
    what = "work" if work else "sleep"
    line = (f"{output_path}: {s['tasks']} tasks, {s['edges']} edges, total {what} "
            f"{s['total']:.3f} s, longest {what} {s['longest']:.3f} s, critical path "
            f"{s['critical_path']:.3f} s (scale {scale:g})")
    if work:
        line += (f"; {_files(s['outputs'])} written ({_megabytes(s['written'])}), "
                 f"{_megabytes(s['read'])} read, workflow inputs staged: "
                 f"{_files(s['staged_files'])} ({_megabytes(s['staged'])}) "
                 f"(size scale {size_scale:g})")
    several = [t["cores"] for t in dag["tasks"] if "cores" in t]
    if several:
        line += f"; {len(several)} tasks of more than one core (up to {max(several)})"
    return line


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
