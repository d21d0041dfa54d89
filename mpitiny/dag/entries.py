"""Pass 1 of loading a dag.json: each entry of ``tasks`` on its own, to a ``Group``.

An entry's keys, types, id (unique in the file), ``cmd`` or ``fn`` with ``args``/``kwargs``
(run parameters substituted), ``foreach`` (``mpitiny.dag.foreach``), ``priority``, the
options (``rank``, ``part``, ``retries``, ``timeout``, ``walltime``, ``cores``, ``mem``,
``gpus``, ``ranks``: a ``TaskOptions``), the shape of ``deps`` and ``strict_deps`` are
checked here;
what ``deps`` name is resolved in pass 2 (``mpitiny.dag.deps``), once every entry is known.
The checks run in a fixed order, so a file with several problems always reports the same
first one. A ``mem`` or ``gpus`` that no node has is an error here (the node's memory and
GPUs: ``mpitiny.dag.limits.node_mem`` / ``gpus_per_node``).
"""
from __future__ import annotations

from typing import Any, NamedTuple

from mpitiny.dag.columns import PlainColumns, read_columns
from mpitiny.dag.foreach import Foreach, ForeachParser
from mpitiny.dag.limits import (ID_FORBIDDEN, MAX_CORES, MAX_GPUS, MAX_ID_LENGTH,
                                MAX_INSTANCES, MAX_RANKS, MAX_RETRIES, MAX_TIMEOUT, MAX_WALLTIME,
                                PRIORITY_LIMIT, TASK_KEY_SET, TASK_KEYS, gpus_per_node, id_problem,
                                is_int, node_mem, parse_size, show_size)
from mpitiny.dag.messages import Reporter, kind, show
from mpitiny.errors import DagError
from mpitiny.dag.model import PLACEHOLDER, Group, TaskOptions, format_value, substitute_params

_NO_FOREACH = Foreach()
_NO_ARGS: list = []
#: The keys of the entries that ``parse_plain`` reads (any other key: ``parse_entry``).
_FAST_KEYS = frozenset(("id", "fn", "args", "cmd", "deps", "priority", "rank"))


class PlainEntry(NamedTuple):
    """A checked plain task (no ``foreach``) of the file, before it becomes a group."""

    at: int                # the entry's position in ``tasks``
    id: str
    kind: str
    cmd: str | None
    fn: str | None
    args: list
    kwargs: dict
    priority: int
    options: TaskOptions
    where: str             # "" when ``parse_plain`` read it: see ``place``
    strict_deps: bool = False

    @property
    def place(self) -> str:
        """Where the entry is, for messages: ``"tasks[3] (id 'b')"``."""
        return self.where or f"tasks[{self.at}] (id '{self.id}')"

    def group(self, index: int) -> Group:
        """This task as a group of its own."""
        return Group(index=index, name=self.id, kind=self.kind, cmd=self.cmd, fn=self.fn,
                     args=self.args, kwargs=self.kwargs, priority=self.priority, deps=[],
                     options=self.options, where=self.place, strict_deps=self.strict_deps)


class EntryParser(Reporter):
    """Builds the groups of a file's ``tasks`` list, one entry at a time (``parse_all``)."""

    def __init__(self, source: str, params: dict) -> None:
        super().__init__(source)
        self.params = params
        self.foreach = ForeachParser(source, params)
        self.first: dict = {}          # task id -> index of the entry that has it
        self.total = 0                 # instances of the entries so far
        self.cmd_cache: dict = {}      # command as written -> with the parameters substituted
        self.fn_ok: set = set()        # "module:function" strings of valid syntax
        self.options_seen: dict = {(None,) * 11: TaskOptions()}   # their values -> TaskOptions

    def parse_all(self, tasks: list) -> tuple[list, list]:
        """``(entries, raw deps)``: per entry a ``Group`` (with no ``deps`` yet) for a family,
        a ``PlainEntry`` for a plain task (``mpitiny.dag.listing`` makes the groups of those),
        and each entry's ``deps`` list as written (checked to be a list of strings)."""
        groups: list = []
        raw_deps: list = []
        fast = self.parse_plain
        for index, task in enumerate(tasks):
            entry = fast(index, task)
            if entry is None:
                group, deps = self.parse_entry(index, task)
            else:
                group, deps = entry
            groups.append(group)
            raw_deps.append(deps)
        return groups, raw_deps

    def read_columns(self, tasks: list) -> PlainColumns | None:
        """The whole ``tasks`` list as columns, if it holds only plain tasks that need no
        message (``mpitiny.dag.columns``); else None."""
        return read_columns(tasks, self.params, self.valid_fn)

    def valid_fn(self, fn: Any) -> bool:
        """Whether ``fn`` is a ``"module:function"`` string (no message: that is pass 1's)."""
        if type(fn) is not str:
            return False
        try:
            self.check_fn_syntax(fn, "")
        except DagError:
            return False
        self.fn_ok.add(fn)
        return True

    def plain_entries(self, cols: PlainColumns) -> list:
        """The ``PlainEntry`` of every row of ``cols`` (for ``Lister.build``)."""
        options: dict = {None: self.options_seen[(None,) * 11]}
        for r in set(cols.ranks):
            if r not in options:
                options[r] = self.options_seen.setdefault(
                    (None, None, r, None, None, None, None, None, None, None, None),
                    TaskOptions(rank=r))
        return [PlainEntry(k, t, "fn" if f is not None else "cmd", c, f, list(a), {}, p,
                           options[r], "")
                for k, (t, f, c, a, p, r) in enumerate(zip(cols.ids, cols.fns, cols.cmds,
                                                            cols.args, cols.priorities,
                                                            cols.ranks))]

    def parse_plain(self, index: int, task: Any) -> tuple | None:
        """``parse_entry`` for the common plain task (``id``, ``fn`` with ``args`` or
        ``cmd``, ``deps``, an integer ``priority`` or ``rank``), at a fraction of its cost;
        None for anything else or anything doubtful: ``parse_entry`` then checks the entry
        (and reports its problem, as always)."""
        if type(task) is not dict or not _FAST_KEYS.issuperset(task):
            return None
        tid = task.get("id")
        if (type(tid) is not str or not 0 < len(tid) <= MAX_ID_LENGTH or tid in self.first
                or ID_FORBIDDEN.search(tid) or not tid.isprintable()):
            return None
        fn, cmd, args = task.get("fn"), task.get("cmd"), task.get("args", _NO_ARGS)
        if fn is not None:
            if type(fn) is not str or cmd is not None or fn not in self.fn_ok \
                    or type(args) is not list:
                return None
            if self.params and args:
                args = substitute_params(args, self.params)
        elif (type(cmd) is not str or "args" in task or not cmd or cmd.isspace()
              or "\x00" in cmd or (self.params and "{" in cmd)):
            return None
        priority, rank = task.get("priority", 0), task.get("rank")
        deps = task.get("deps", ())
        if (type(priority) is not int or not -PRIORITY_LIMIT < priority < PRIORITY_LIMIT
                or rank is not None and (type(rank) is not int or not 0 <= rank < PRIORITY_LIMIT)
                or type(deps) is not list and deps != ()
                or any(type(d) is not str for d in deps)
                or self.total + 1 >= MAX_INSTANCES):
            return None
        options = self.options_seen.get(
            (None, None, rank, None, None, None, None, None, None, None, None))
        if options is None:
            return None
        self.first[tid] = index
        self.total += 1
        return PlainEntry(index, tid, "fn" if fn is not None else "cmd", cmd, fn,
                          args if fn is not None else [], {}, priority, options, ""), deps

    def parse_entry(self, index: int, task: Any) -> tuple[Any, Any]:
        """The ``Group`` (a family) or ``PlainEntry`` of entry ``index`` and its ``deps`` as
        written."""
        where = self.check_id(index, task)
        # foreach first: its variable names decide which placeholders are parameters.
        foreach = self.foreach.parse(task["foreach"], where) if "foreach" in task else _NO_FOREACH
        has_cmd, has_fn = "cmd" in task, "fn" in task
        if has_cmd == has_fn:
            raise self.error("needs exactly one of 'cmd' (a shell command) or 'fn' "
                             "(\"package.module:function\")" +
                             (", not both" if has_cmd else ""), where)
        cmd = fn = None
        args: list = []
        kwargs: dict = {}
        if has_cmd:
            cmd = self.parse_cmd(task, where)
        else:
            fn, args, kwargs = self.parse_fn(task, where)
        priority = self.parse_priority(task, where)
        options = self.parse_options(task, foreach, where)
        if "description" in task and not isinstance(task["description"], str):
            raise self.error(f"description: must be a string, not "
                             f"{kind(task['description'])}", where)
        deps = self.check_deps(task, where)
        strict = task.get("strict_deps", False)
        if type(strict) is not bool:
            raise self.error(f"strict_deps: must be true or false, not {show(strict)}", where)
        self.total += foreach.size
        if self.total >= MAX_INSTANCES:
            raise self.error(f"too many task instances: {self.total} up to this entry (the "
                             f"limit for a whole file is 2**31 - 2**20 = {MAX_INSTANCES - 1})",
                             where)
        if foreach is _NO_FOREACH:
            return PlainEntry(index, task["id"], "cmd" if has_cmd else "fn", cmd, fn, args,
                              kwargs, priority, options, where, strict), deps
        group = Group(index=index, name=task["id"], kind="cmd" if has_cmd else "fn", cmd=cmd,
                      fn=fn, args=args, kwargs=kwargs, vars=foreach.variables,
                      priority=priority, deps=[], options=options, where=where,
                      strict_deps=strict)
        return group, deps

    def check_id(self, index: int, task: Any) -> str:
        """Checks that entry ``index`` is an object with a valid, new id and known keys;
        returns where it is for messages: ``"tasks[3] (id 'b')"``."""
        where = f"tasks[{index}]"
        if not isinstance(task, dict):
            raise self.error(f"must be an object (a task), not {kind(task)}", where)
        if "id" not in task:
            raise self.error("missing key 'id'", where)
        tid = task["id"]
        if not isinstance(tid, str):
            raise self.error(f"id: must be a string, not {kind(tid)}", where)
        if (not tid or len(tid) > MAX_ID_LENGTH or ID_FORBIDDEN.search(tid)
                or not tid.isprintable()):
            raise self.error(f"id: {id_problem(tid)}", where)
        where = f"tasks[{index}] (id '{tid}')"
        if tid in self.first:
            raise self.error(f"id: duplicate id {show(tid)}: tasks[{self.first[tid]}] and "
                             f"tasks[{index}] both use it", where)
        self.first[tid] = index
        if not TASK_KEY_SET.issuperset(task):
            key = next(k for k in task if k not in TASK_KEY_SET)
            raise self.error(f"unknown key {show(key)} (allowed: {', '.join(TASK_KEYS)})",
                             where)
        return where

    def parse_cmd(self, task: dict, where: str) -> str:
        """The shell command of a ``cmd`` entry, its run parameters substituted."""
        cmd = task["cmd"]
        if not isinstance(cmd, str):
            raise self.error(f"cmd: must be a string, not {kind(cmd)}", where)
        if not cmd or cmd.isspace():
            raise self.error("cmd: is empty", where)
        if "\x00" in cmd:
            raise self.error("cmd: contains a NUL character", where)
        for key in ("args", "kwargs") if len(task) > 2 else ():
            if key in task:
                raise self.error(f"{key}: only 'fn' tasks take {key}; a 'cmd' task "
                                 "puts its arguments in the command line", where)
        params = self.params
        if params and "{" in cmd:
            done = self.cmd_cache.get(cmd)
            if done is None:
                done = self.cmd_cache[cmd] = PLACEHOLDER.sub(
                    lambda m: format_value(params[m.group(1)]) if m.group(1) in params
                    else m.group(0), cmd)
            cmd = done
        return cmd

    def parse_fn(self, task: dict, where: str) -> tuple[str, list, dict]:
        """``(fn, args, kwargs)`` of a ``fn`` entry, run parameters substituted (the
        function itself is imported in pass 4, ``mpitiny.dag.functions``)."""
        fn = task["fn"]
        if not isinstance(fn, str):
            raise self.error(f"fn: must be a string \"package.module:function\", not "
                             f"{kind(fn)}", where)
        if fn not in self.fn_ok:
            self.check_fn_syntax(fn, where)
            self.fn_ok.add(fn)
        args: list = []
        kwargs: dict = {}
        if "args" in task:
            args = task["args"]
            if not isinstance(args, list):
                raise self.error(f"args: must be a list, not {kind(args)}", where)
        if "kwargs" in task:
            kwargs = task["kwargs"]
            if not isinstance(kwargs, dict):
                raise self.error(f"kwargs: must be an object, not {kind(kwargs)}", where)
        if self.params:
            if args:
                args = substitute_params(args, self.params)
            if kwargs:
                kwargs = substitute_params(kwargs, self.params)
        return fn, args, kwargs

    def check_fn_syntax(self, fn: str, where: str) -> None:
        """``fn`` must read ``package.module:function`` (dotted identifiers, one colon)."""
        module, sep, attr = fn.partition(":")
        ok = (sep and module and attr
              and all(part.isidentifier() for part in module.split("."))
              and all(part.isidentifier() for part in attr.split(".")))
        if not ok:
            raise self.error(f"fn: {show(fn)} is not of the form \"package.module:function\" "
                             "(a dotted module path, a colon, a function name)", where)

    def parse_priority(self, task: dict, where: str) -> int:
        """``priority``: an integer with ``|priority| < 2**31`` (0 if not given)."""
        priority = task.get("priority", 0)
        if type(priority) is not int and not is_int(priority):
            raise self.error(f"priority: must be an integer, not {kind(priority)}", where)
        if not -PRIORITY_LIMIT < priority < PRIORITY_LIMIT:
            raise self.error(f"priority: {priority} is out of range (|priority| < 2**31)",
                             where)
        return priority

    def parse_options(self, task: dict, foreach: Foreach, where: str) -> TaskOptions:
        """The entry's ``TaskOptions``: its split source, ``rank``, ``part``, ``retries``,
        ``timeout``, ``walltime``, ``cores``, ``mem`` and ``gpus``; None for what it does not
        set."""
        rank = part = retries = None
        if "rank" in task:
            rank = self.parse_index_spec(task["rank"], foreach.variables, where)
        if "part" in task:
            part = self.parse_index_spec(task["part"], foreach.variables, where, "part")
        if "retries" in task:
            retries = task["retries"]
            if type(retries) is not int or not 0 <= retries <= MAX_RETRIES:
                raise self.error(f"retries: must be an integer from 0 to {MAX_RETRIES}, "
                                 f"not {show(retries)}", where)
        timeout = self.parse_seconds(task, "timeout", MAX_TIMEOUT, where)
        walltime = self.parse_seconds(task, "walltime", MAX_WALLTIME, where)
        # Frozen, so entries with the same options share one object.
        key = (foreach.splits, foreach.split_var, rank, part, retries, timeout, walltime,
               *self.parse_resources(task, where), self.parse_ranks(task, timeout, where))
        options = self.options_seen.get(key)
        if options is None:
            options = self.options_seen[key] = TaskOptions(*key)
        return options

    def parse_resources(self, task: dict, where: str) -> tuple:
        """``(cores, mem in bytes, gpus)`` of an entry (None for what it does not set): a
        ``mem`` more than a node has, or ``gpus`` more than ``--gpus-per-node``, can never
        run and is an error here (``cores`` more than the ranks of a node: when the run
        starts, ``mpitiny.engine.resources``)."""
        cores = mem = gpus = None
        if "cores" in task:
            cores = task["cores"]
            if not is_int(cores) or not 1 <= cores <= MAX_CORES:
                raise self.error(f"cores: must be an integer from 1 to {MAX_CORES}, not "
                                 f"{show(cores)}", where)
        if "mem" in task:
            mem = parse_size(task["mem"])
            if mem is None:
                raise self.error("mem: must be a number of bytes or a string like \"20GB\" "
                                 f"or \"512MiB\", not {show(task['mem'])}", where)
            most, source = node_mem()
            if mem > most:
                raise self.error(f"mem: {show(task['mem'])} ({show_size(mem)}) is more than a "
                                 f"node has ({show_size(most)}: {source}), so the task can "
                                 "never run", where)
        if "gpus" in task:
            gpus = task["gpus"]
            if not is_int(gpus) or not 0 <= gpus <= MAX_GPUS:
                raise self.error(f"gpus: must be an integer from 0 to {MAX_GPUS}, not "
                                 f"{show(gpus)}", where)
            if gpus > gpus_per_node():
                raise self.error(f"gpus: {gpus} is more than a node has ({gpus_per_node()}: "
                                 "mpitiny run --gpus-per-node or MPITINY_GPUS_PER_NODE, "
                                 "default 0), so the task can never run", where)
        return cores, mem, gpus

    def parse_ranks(self, task: dict, timeout: float | None, where: str) -> int | None:
        """``ranks``: how many ranks an instance holds at once (None if not set): a function
        runs on each, a command on the first while the others wait. More than 1: not with
        node resources, nor a function with ``timeout``; more than the run's ranks is an
        error when the run starts (``mpitiny.engine.gang``)."""
        if "ranks" not in task:
            return None
        ranks = task["ranks"]
        if not is_int(ranks) or not 1 <= ranks <= MAX_RANKS:
            raise self.error(f"ranks: must be an integer from 1 to {MAX_RANKS}, not "
                             f"{show(ranks)}", where)
        if ranks > 1 and timeout is not None and "fn" in task:
            raise self.error("ranks: a function on several ranks cannot have a timeout (a rank "
                             "interrupted in a collective would leave the others in it)", where)
        if ranks > 1 and any(key in task for key in ("cores", "mem", "gpus")):
            raise self.error("ranks: a task of several ranks cannot declare cores, mem or "
                             "gpus", where)
        return ranks

    def parse_seconds(self, task: dict, key: str, most: float, where: str) -> float | None:
        """``timeout`` or ``walltime``: a number of seconds > 0, at most ``most`` (a year);
        None if the entry does not set it."""
        if key not in task:
            return None
        value = task[key]
        if type(value) not in (int, float) or not value > 0 or not value <= most:
            raise self.error(f"{key}: must be a number of seconds > 0 (at most one year), "
                             f"not {show(value)}", where)
        return float(value)

    def parse_index_spec(self, spec: Any, variables: tuple, where: str,
                         key: str = "rank") -> int | str:
        """``rank`` (or ``part``): a non-negative integer, or ``"{var}"`` naming a foreach
        variable of non-negative integers (a ``"{param}"`` is substituted first)."""
        if isinstance(spec, str) and self.params:
            spec = substitute_params(spec, self.params)
        if type(spec) is int or is_int(spec):
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
                         f"integer foreach variable of this task, not {show(spec)}", where)

    def check_deps(self, task: dict, where: str) -> Any:
        """The entry's ``deps`` as written, checked to be a list of strings (``()`` if none)."""
        deps = task.get("deps", ())
        if deps:
            if not isinstance(deps, list):
                raise self.error(f"deps: must be a list of task ids, not {kind(deps)}",
                                 where)
            for dep in deps:
                if not isinstance(dep, str):
                    raise self.error(f"deps: entries must be strings (task ids), not "
                                     f"{kind(dep)} {show(dep)}", where)
        elif not isinstance(deps, (list, tuple)):
            raise self.error(f"deps: must be a list of task ids, not {kind(deps)}", where)
        return deps
