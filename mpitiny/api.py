"""Build and run DAGs from Python instead of dag.json (the public surface; the engine is
``mpitiny.engine``).

Every rank runs the same script (SPMD), builds the same DAG and calls ``run``::

    # squares.py, started with: mpiexec -n 4 python squares.py
    import mpitiny

    def square(i):
        return i * i

    def total(inputs):
        return sum(inputs.values())

    dag = mpitiny.DAG("squares")
    sq = dag.family("sq", square, args=["{i}"], foreach={"i": range(1000)})
    dag.task("sum", total, deps=[sq])
    status = mpitiny.run(dag, out="runs/squares")      # 0: every task done (on every rank)
    # dag.save("squares.json") writes the same DAG as dag.json for `mpitiny run`

    squares = mpitiny.map(square, range(100))          # a bag of tasks, results in order

Inside a running task, ``mpitiny.submit(fn, *args, deps=(), **kwargs)`` adds a task to the
run and returns its id at once (``mpitiny.submit_family(fn, rows)``: one task per row of
arguments); the parent waits for nothing, its children run later on any rank::

    def expand(node):
        for child in children(node):
            mpitiny.submit(expand, child)

Functions are named by module and qualified name (``module:function``), so they must be
importable on every rank: defined at the top level of the script (``__main__`` works, since
every rank runs the same script) or of a module. Values follow dag.json: ``foreach`` takes
ranges, lists or ``{"split": "data.h5"}``; ``deps`` takes task/family handles, ids, or
``handle.each("{i}")`` for an element-wise dependency (``"sq[{i}]"``).
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable

from mpitiny.dag.model import BATCH_ATTR
from mpitiny.errors import BadInput, TasksFailed


class Handle:
    """A task or family of a ``DAG``; use it in another task's ``deps``."""

    def __init__(self, dag: "DAG", id: str) -> None:
        self.dag = dag
        self.id = id

    def each(self, *items: str) -> str:
        """An element-wise dependency: ``sq.each("{i}")`` is ``"sq[{i}]"``."""
        return "%s[%s]" % (self.id, ",".join(str(x) for x in items))

    def __repr__(self) -> str:
        return f"<mpitiny task {self.id!r}>"


def function_name(fn: Callable | str) -> str:
    """``"module:qualname"`` of a top-level function (strings are taken as they are)."""
    if isinstance(fn, str):
        return fn
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "")
    if module == "__main__":          # the script itself: name it by its file, so that the
        import sys                    # exported dag.json works with `mpitiny run` too
        script = getattr(sys.modules["__main__"], "__file__", None) or ""
        stem = os.path.splitext(os.path.basename(script))[0]
        if stem.isidentifier():
            module = stem
    if not module or "<" in qualname:
        raise BadInput(f"{fn!r} cannot be named for the other ranks: use a function defined at "
                       "the top level of a module or of the script")
    return f"{module}:{qualname}"


def with_batch(many: Callable[[list], list]) -> Callable[[Callable], Callable]:
    """Give a task function a batch form: ``many(calls)`` runs the calls ``[(args, kwargs),
    ...]`` of several instances of a family at once and returns one value per call, in order.

    The runtime calls it for each chunk of two or more instances a rank claims (``mpitiny
    run --no-batch`` turns this off); a batched family's chunk is the instances a rank takes
    at once, ~20 ms of work (``mpitiny.engine.loop.BATCH_SECONDS``), so tiny tasks share one
    call's fixed cost. The instances stay tasks: each is claimed, stolen, recorded (the
    call's time split evenly) and released on its own. The
    values as a whole must give the children what the per-instance calls would: a combiner
    may return the counts of the whole chunk as one value and empty ones for the others
    (``jobs/wordcount.py``). They are journaled as one unit, so a resumed run never keeps some
    of them without the others. If ``many`` raises, the chunk runs again one call per
    instance, so a failure is reported for the instance that failed (each call's kwargs
    hold its instance's ``inputs``, read once). Families with a time limit per task are not
    batched::

        def count_many(calls):
            ...
        @mpitiny.with_batch(count_many)
        def count(split): ...
    """
    def attach(fn: Callable) -> Callable:
        setattr(fn, BATCH_ATTR, many)
        return fn
    return attach


def _foreach_json(foreach: dict) -> dict:
    out: dict = {}
    for name, values in foreach.items():
        if isinstance(values, range):
            out[name] = {"range": [values.start, values.stop, values.step]}
        elif isinstance(values, dict):
            out[name] = values
        else:
            out[name] = list(values)
    return out


class DAG:
    """A dag.json built in code: ``task``/``family`` add entries, ``to_dict``/``save`` export."""

    def __init__(self, name: str, params: dict | None = None, description: str | None = None) -> None:
        self.name = name
        self.params = dict(params or {})
        self.description = description
        self.tasks: list = []

    def task(self, id: str, fn: Callable | str | None = None, *, cmd: str | None = None,
             args: list | None = None, kwargs: dict | None = None, deps: Iterable = (),
             priority: int = 0, rank: int | str | None = None, retries: int | None = None,
             timeout: float | None = None, walltime: float | None = None,
             ranks: int | None = None, cores: int | None = None, mem: str | int | None = None,
             gpus: int | None = None) -> Handle:
        """Add a plain task: a Python function ``fn`` or a shell command ``cmd``; ``retries``,
        ``timeout`` and ``walltime`` (seconds), ``ranks`` (a task run by that many ranks at
        once, its function given their communicator as ``comm``) and what it uses of a node
        (``cores``, ``mem`` as ``"20GB"`` or bytes, ``gpus``) as in dag.json
        (docs/dag-format.md)."""
        entry: dict = {"id": id}
        if (fn is None) == (cmd is None):
            raise BadInput(f"task {id!r}: give exactly one of fn and cmd")
        if fn is not None:
            entry["fn"] = function_name(fn)
            if args:
                entry["args"] = list(args)
            if kwargs:
                entry["kwargs"] = dict(kwargs)
        else:
            entry["cmd"] = cmd
        dep_ids = [d.id if isinstance(d, Handle) else str(d) for d in deps]
        if dep_ids:
            entry["deps"] = dep_ids
        if priority:
            entry["priority"] = priority
        if rank is not None:
            entry["rank"] = rank
        for key, value in (("retries", retries), ("timeout", timeout), ("walltime", walltime),
                           ("ranks", ranks), ("cores", cores), ("mem", mem), ("gpus", gpus)):
            if value is not None:
                entry[key] = value
        self.tasks.append(entry)
        return Handle(self, id)

    def family(self, id: str, fn: Callable | str | None = None, *, foreach: dict,
               **options: Any) -> Handle:
        """Add a family: one instance per combination of the ``foreach`` values."""
        handle = self.task(id, fn, **options)
        self.tasks[-1]["foreach"] = _foreach_json(foreach)
        return handle

    def to_dict(self) -> dict:
        out: dict = {"name": self.name, "version": 1}
        if self.description:
            out["description"] = self.description
        if self.params:
            out["params"] = self.params
        out["tasks"] = self.tasks
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def save(self, path: str) -> None:
        """Write the DAG as a dag.json that ``mpitiny run`` / ``validate`` accept."""
        from mpitiny.io.commit import write_atomic
        write_atomic(path, self.to_json().encode())


def submit(fn: Callable, /, *args: Any, deps: Iterable = (), **kwargs: Any) -> str:
    """From inside a running task: add the task ``fn(*args, **kwargs)`` to the run; returns
    its id (``name@key``, a ``str``) at once. Any idle rank may run it, possibly before the
    caller has returned; the run ends only when it (and whatever it adds) has finished.

    ``deps``: ids that ``submit`` returned in this run (by this task or another, passed along
    as arguments); the task starts after they all have finished and is upstream-failed if one
    failed. ``fn`` must be a top-level function (other ranks import it by name), the
    arguments picklable. Its return value, if not None, goes to the run's results under its
    id; ``--retries`` and ``--timeout`` apply as to the DAG's tasks.

    A task's id depends only on its parent's and on how many tasks the parent submitted before
    it, so a parent that runs again (a retry, or a run resumed after a crash) adds no task
    twice, and a resumed run runs each added task that was not done, once. What an attempt
    added stands even if that attempt then fails (its retry adds the same ids: nothing more).
    Outside a running task (or from a batch form) it raises
    ``mpitiny.engine.adding.SubmitError`` (a ``RuntimeError``). Design:
    ``mpitiny.engine.adding``."""
    from mpitiny.engine.adding import submit_rows
    return submit_rows(fn, (args,), kwargs, deps)[0]


def submit_family(fn: Callable, rows: Iterable, /, deps: Iterable = (),
                  **kwargs: Any) -> list:
    """``[submit(fn, *row, deps=deps, **kwargs) for row in rows]`` in one step (the run's
    count of tasks is updated once for all of them): one task per row of positional
    arguments (a row that is not a tuple or list is one argument). Returns their ids."""
    from mpitiny.engine.adding import submit_rows
    return submit_rows(fn, [r if isinstance(r, (tuple, list)) else (r,) for r in rows],
                       kwargs, deps)


def run(dag: DAG | str, out: str | None = None, params: dict | None = None,
        quiet: bool = False, **engine_options: Any) -> int:
    """Run ``dag`` (a ``DAG`` or a dag.json path) on every rank of the MPI job; every rank must
    call it. Returns the run's exit status on every rank (0 all done, 1 some failed, 75
    stopped by a signal). Bad input raises ``BadInput`` (``.exit_code`` 2) on every rank, with
    the same message.

    Like ``mpitiny run``, a second call with the same ``out`` resumes: tasks done there are
    kept, failed and skipped ones run again, and a complete run (every task done) runs nothing
    and returns 0; ``out`` holding another DAG's run raises ``BadInput``; ``resume="no"``
    (``--fresh``) moves the earlier run aside to ``OUT.old-N`` and starts over."""
    from mpitiny.engine import run_file
    if isinstance(dag, DAG):
        return run_file(None, params or {}, out_dir=out, quiet=quiet,
                        dag_text=dag.to_json(), **engine_options)
    return run_file(dag, params or {}, out_dir=out, quiet=quiet, **engine_options)


_MAP_CALLS: dict = {}


def _map_item(key: str, i: int):
    fn, items = _MAP_CALLS[key]
    return fn(items[i])


def map(fn: Callable, items: Iterable, out: str | None = None, quiet: bool = True) -> list:
    """``[fn(x) for x in items]`` as a bag of tasks over every rank, results in order.

    SPMD: every rank calls it with the same ``fn`` and ``items`` and gets the whole list back.
    Results travel as JSON values (or bytes / numpy arrays) through the run directory (``out``,
    default ``mpitiny-runs/map-<fn name>``). A task that raises makes ``map`` raise
    ``TasksFailed`` (a ``RuntimeError``) naming the first failed item, on every rank.

    Every call computes afresh (``fn`` or the items may have changed since): the run
    directory holds the last call's run, which replaces an earlier map run there, is never
    resumed, and stays for inspection (``mpitiny show OUT 'item[3]'``). An ``out`` holding
    the run of a DAG that is not a map raises ``BadInput`` and is left as it is.
    """
    from mpitiny.engine import run_file
    items = list(items)
    key = function_name(fn).replace(":", ".")
    _MAP_CALLS[key] = (fn, items)
    dag = DAG(f"map-{key}")
    dag.family("item", _map_item, args=[key, "{i}"], foreach={"i": range(len(items))})
    out = out or os.path.join("mpitiny-runs", f"map-{key}")[:200]
    try:
        if not items:
            return []
        status = run_file(None, {}, out_dir=out, dag_text=dag.to_json(), scratch=True,
                          quiet=quiet)
    finally:
        _MAP_CALLS.pop(key, None)
    if status != 0:
        raise TasksFailed(_map_failure(fn, items, out, status))
    from mpitiny.io.rundir import read_results
    values = read_results(out)
    return [values.get(f"item[{i}]") for i in range(len(items))]


def _map_failure(fn: Callable, items: list, out: str, status: int) -> str:
    """``TasksFailed``'s message: a failed item (the lowest of the first ones to fail), its
    index and value, and its error."""
    try:
        with open(os.path.join(out, "summary.json"), encoding="utf-8") as f:
            summary = json.load(f)
    except (OSError, ValueError) as exc:
        return f"mpitiny.map: the run in {out} ended with exit status {status} ({exc})"
    first = summary.get("failures_first") or []
    if not first:
        return (f"mpitiny.map: the run in {out} ended with exit status {status} "
                f"({summary.get('stopped') or 'failed'}) before every item was done")
    rec = min(first, key=_item_index)     # the lowest failed item among the first failures
    i = _item_index(rec)
    value = repr(items[i]) if 0 <= i < len(items) else "?"
    if len(value) > 80:
        value = value[:77] + "..."
    more = summary.get("failed", 1) - 1
    return (f"mpitiny.map: {getattr(fn, '__qualname__', fn)}(items[{i}]) failed, items[{i}] = "
            f"{value}" + (f" ({more} more items failed: {out}/failures/)" if more > 0 else "")
            + f":\n{rec.get('error', '')}")


def _item_index(failure: dict) -> int:
    tid = str(failure.get("id", ""))
    return int(tid[len("item["):-1]) if tid.startswith("item[") else -1
