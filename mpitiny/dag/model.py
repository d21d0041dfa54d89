"""The task table every rank builds from a dag.json: groups, their instances and their edges.

A *group* is one entry of the file's ``tasks`` list. A plain task is a group of size 1; a
family (``foreach``) is a group of ``size`` instances, numbered 0..size-1 in the order of
``itertools.product`` over its variables (the last variable varies fastest). Nothing here
holds one Python object per family instance: an instance is its index, and its variable
values, id, command line and arguments are computed from that index when it runs.

Global task ids (*gids*) concatenate the groups: instance ``i`` of group ``g`` is
``dag.base[g] + i``. A contiguous run of gids is therefore a run of instances, which is what
the queues store (see ``mpitiny.queue``).

Edges are between groups (``Dep``):

- ``each is None``: the child waits for *every* instance of the parent (a dependency on a plain
  task, or on a whole family);
- ``each`` an ``ElementMap``: child instance ``j`` waits only for the one parent instance that
  the map computes from ``j``'s variable values (``"pre[{i}]"``), or for none when an
  expression item falls outside the parent's values (``"u[{t}-1,{i}+1]"`` at an edge). A
  family may wait element-wise on its own instances (``dag.children[g]`` then holds ``g``);
  the loader has checked that no instance waits, through any chain, on itself.

Placeholders ``{name}`` in ``cmd``, ``args`` and ``kwargs`` are replaced by a foreach variable
of the instance or by a run parameter. Only known names are replaced, so shell braces such as
``${HOME}`` or ``awk '{print $1}'`` pass through untouched. In ``args``/``kwargs`` a string that
is exactly one placeholder becomes the value itself (``"{i}"`` gives the int ``i``).
"""
from __future__ import annotations

import copy
import json
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from mpitiny.dag import expr

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

#: Instances evaluated at once when a map is computed for a whole family.
_CHUNK = 1 << 16

#: The attribute ``mpitiny.with_batch`` sets on a task function: its batch form, a callable
#: ``many(calls) -> values``. The loader reads it into ``Group.batch_function``.
BATCH_ATTR = "__mpitiny_batch__"


def stable_hash(text: str) -> int:
    """A hash of a task or family id that every rank (and every run) computes alike."""
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


def format_value(value: Any) -> str:
    """How a variable value appears in ids and command lines: ints and strings as themselves."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class Var:
    """One foreach variable: a name and its values (a ``range`` or a tuple of JSON values)."""

    name: str
    values: range | tuple

    def __len__(self) -> int:
        return len(self.values)

    def index_of(self, value: Any) -> int:
        """The position of ``value`` among the values, or -1."""
        if isinstance(self.values, range):
            if isinstance(value, bool) or not isinstance(value, int):
                return -1
            return self.values.index(value) if value in self.values else -1
        for k, v in enumerate(self.values):
            if v == value and type(v) is type(value):
                return k
        return -1

    def indices_of(self, values: np.ndarray) -> np.ndarray:
        """Vectorised ``index_of`` for an integer array (ranges) or object array (lists)."""
        if isinstance(self.values, range):
            r = self.values
            if values.dtype.kind not in "iu":
                # Values of a list variable (object array): only true ints can be in a range;
                # astype would truncate 1.5, turn True into 1, or fail on strings/huge ints.
                return np.fromiter((self.index_of(v.item() if isinstance(v, np.generic) else v)
                                    for v in values), dtype=np.int64, count=len(values))
            v = values.astype(np.int64)
            pos = (v - r.start) // r.step
            ok = ((v - r.start) % r.step == 0) & (pos >= 0) & (pos < len(r))
            return np.where(ok, pos, -1)
        lookup: dict = {}
        for k, v in enumerate(self.values):
            lookup.setdefault((type(v), v) if _hashable(v) else None, k)
        out = np.empty(len(values), dtype=np.int64)
        for n, v in enumerate(values):
            v = v.item() if isinstance(v, np.generic) else v
            out[n] = lookup.get((type(v), v), -1) if _hashable(v) else -1
        return out

    def values_at(self, idx: np.ndarray) -> np.ndarray:
        """The values at positions ``idx``: an int array for ranges, an object array otherwise."""
        if isinstance(self.values, range):
            return self.values.start + idx.astype(np.int64) * self.values.step
        table = np.empty(len(self.values), dtype=object)
        table[:] = list(self.values)
        return table[idx]


def _hashable(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool)) or v is None


@dataclass(frozen=True)
class ElementMap:
    """An element-wise dependency ``parent[item, ...]``.

    Each item is ``("var", name)`` (a foreach variable of the child), ``("lit", value)`` or
    ``("expr", tree)`` (an integer expression of the child's variables, ``mpitiny.dag.expr``).
    Child instance ``j`` depends on the parent instance whose variables equal the items
    evaluated at ``j``. ``"pre[{i}]"`` from ``post`` (both over ``i``) pairs ``post[i]`` with
    ``pre[i]``; ``"pre[3]"`` makes every child wait for ``pre[3]`` only; ``"u[{t}-1,{i}]"``
    pairs ``x[t,i]`` with ``u[t-1,i]``. An expression may fall outside the parent's values
    (``may_drop``): that child instance then has no parent through this map (-1).
    """

    items: tuple

    @property
    def may_drop(self) -> bool:
        """Whether some child instances may have no parent here (an expression item)."""
        return any(kind == "expr" for kind, _ in self.items)

    def parent_indices(self, child: "Group", parent: "Group", idx: np.ndarray) -> np.ndarray:
        """Parent instance index for each child instance in ``idx``; -1 where none exists."""
        idx = np.asarray(idx, dtype=np.int64)
        child_pos = child.var_positions(idx)
        result = np.zeros(len(idx), dtype=np.int64)
        ok = np.ones(len(idx), dtype=bool)
        stride = 1
        for k in range(len(parent.vars) - 1, -1, -1):
            pvar = parent.vars[k]
            kind, item = self.items[k]
            if kind == "var":
                cvar_k = child.var_index(item)
                values = child.vars[cvar_k].values_at(child_pos[cvar_k])
                pos = pvar.indices_of(values)
            elif kind == "expr":
                pos = pvar.indices_of(expr.evaluate(item, child.int_values(child_pos, item),
                                                    len(idx)))
            else:
                pos = np.full(len(idx), pvar.index_of(item), dtype=np.int64)
            ok &= pos >= 0
            result += np.where(pos >= 0, pos, 0) * stride
            stride *= len(pvar)
        return np.where(ok, result, -1)

    def is_identity(self, child: "Group", parent: "Group") -> bool:
        """True when child instance j always depends on parent instance j (same variables)."""
        key = (child.index, parent.index)
        cache = self.__dict__.setdefault("_identity", {})
        if key not in cache:
            cache[key] = self._is_identity(child, parent)
        return cache[key]

    def _is_identity(self, child: "Group", parent: "Group") -> bool:
        if len(child.vars) != len(parent.vars):
            return False
        for (kind, item), cvar, pvar in zip(self.items, child.vars, parent.vars):
            if kind != "var" or item != cvar.name or cvar.values != pvar.values:
                return False
        return True

    def all_parents(self, child: "Group", parent: "Group") -> np.ndarray:
        """``parent_indices`` of every child instance, computed in chunks."""
        if child.size <= _CHUNK:
            return self.parent_indices(child, parent, np.arange(child.size, dtype=np.int64))
        out = np.empty(child.size, dtype=np.int64)
        for lo in range(0, child.size, _CHUNK):
            hi = min(child.size, lo + _CHUNK)
            out[lo:hi] = self.parent_indices(child, parent, np.arange(lo, hi, dtype=np.int64))
        return out

    def spelling(self) -> str:
        return ",".join("{%s}" % v if k == "var" else expr.spell(v) if k == "expr"
                        else format_value(v) for k, v in self.items)


class Edges:
    """Instance-level edges from one parent group to one child group, listed one by one (the
    dependencies of listed tasks, ``Listing``): child instance ``j`` waits for the parent
    instances ``parents[offsets[j]:offsets[j + 1]]`` (several, or none). It stands where an
    ``ElementMap`` would (``Dep.each``), in columns: no Python object per edge."""

    items = None          # not an element-wise map: no items, never the identity

    def __init__(self, offsets: np.ndarray, parents: np.ndarray) -> None:
        self.offsets = offsets
        self.parents = parents

    def is_identity(self, child: "Group", parent: "Group") -> bool:
        return False

    def counts(self) -> np.ndarray:
        """How many parent instances each child instance waits for."""
        return np.diff(self.offsets)

    def children(self) -> np.ndarray:
        """The child instance of each edge (in the order of ``parents``)."""
        return np.repeat(np.arange(len(self.offsets) - 1, dtype=np.int64), self.counts())

    def parent_indices(self, child: "Group", parent: "Group", idx: np.ndarray) -> np.ndarray:
        """The parent instances that the child instances ``idx`` wait for, concatenated."""
        idx = np.asarray(idx, dtype=np.int64)
        if len(idx) == 1:
            j = int(idx[0])
            return self.parents[int(self.offsets[j]):int(self.offsets[j + 1])]
        return np.concatenate([self.parents[self.offsets[j]:self.offsets[j + 1]] for j in idx]) \
            if len(idx) else np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class Dep:
    """An edge from a parent group: on all of its instances (``each=None``), element-wise
    (an ``ElementMap``) or listed instance by instance (an ``Edges``)."""

    parent: int
    each: "ElementMap | Edges | None" = None


class Listing:
    """Plain tasks of one shape (same ``fn`` and argument layout, or ``cmd``; same priority and
    options) stored as one group, in columns: their ids, their arguments position by position
    (``args``, ``kwargs``) or their command lines (``cmds``), and the entry of the file each
    came from (``entries``, for messages). Instance ``i`` is the ``i``-th such task in file
    order."""

    def __init__(self, ids: list, entries: list, args: list | None = None,
                 kwargs: dict | None = None, cmds: list | None = None) -> None:
        self.ids = ids
        self.entries = entries
        self.args = args or []          # per position: the column of values
        self.kwargs = kwargs or {}      # per key: the column of values
        self.cmds = cmds
        self.constant = all(_is_constant(c) for c in self.args) and not self.kwargs

    def __len__(self) -> int:
        return len(self.ids)

    def call_args(self, i: int) -> tuple:
        """``(args, kwargs)`` of member ``i``, freshly built (containers copied)."""
        args = tuple(_fresh(c[i]) for c in self.args)
        return args, {k: _fresh(c[i]) for k, c in self.kwargs.items()}


def _fresh(value: Any) -> Any:
    return copy.deepcopy(value) if isinstance(value, (list, dict)) else value


def _is_constant(column: list) -> bool:
    """Whether every value of an argument column is the same immutable value."""
    first = column[0]
    if isinstance(first, (list, dict)):
        return False
    kind = type(first)
    return all(v == first and type(v) is kind for v in column)


@dataclass(frozen=True)
class TaskOptions:
    """The per-entry options of dag.json that say where and how the instances run.

    Every attribute is None when the entry does not set it (the run's default applies):

    - ``splits``: ``(absolute path, dataset)`` of the ingested dataset whose splits a split
      family (``{"split": "data.h5:/text"}``) iterates over; ``split_var`` names that variable;
    - ``rank``: the rank that runs the instances: an int, or ``"{var}"`` naming an integer
      foreach variable (its value is the rank);
    - ``part``: which part of a parent's ``mpitiny.Parts`` value an instance reads, the same
      kind of spec as ``rank``;
    - ``retries``: how many times a failed attempt runs again (an int);
    - ``timeout``: the time limit of one attempt, in seconds (a float);
    - ``walltime``: how long an instance is expected to take at most, in seconds (a float):
      under a time limit (``mpitiny run --time-limit``, a Slurm job's end) an instance is
      not started unless it can finish before the end by this estimate (without it, by the
      running average of its group);
    - ``cores``, ``mem`` (bytes) and ``gpus``: what one instance uses of its node while it
      runs (``mpitiny.engine.resources``): an instance holds ``cores`` rank slots of one
      node, and ``mem`` and ``gpus`` of the node's;
    - ``ranks``: how many ranks run an instance at once, its function getting their
      communicator in ``comm`` (``mpitiny.engine.gang``).
    """

    splits: tuple[str, str] | None = None
    split_var: str | None = None
    rank: int | str | None = None
    part: int | str | None = None
    retries: int | None = None
    timeout: float | None = None
    walltime: float | None = None
    cores: int | None = None
    mem: int | None = None
    gpus: int | None = None
    ranks: int | None = None

    @property
    def resources(self) -> bool:
        """Whether the entry declares what it uses of a node (``cores``, ``mem``, ``gpus``)."""
        return self.cores is not None or self.mem is not None or self.gpus is not None

    @property
    def placed(self) -> bool:
        """Whether the instances have a home rank: a ``rank`` spec or the shards of splits."""
        return self.rank is not None or self.splits is not None


@dataclass
class Group:
    """One entry of dag.json's ``tasks``: a plain task (``vars == ()``) or a family."""

    index: int
    name: str
    kind: str                      # "fn" or "cmd"
    cmd: str | None = None
    fn: str | None = None
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    vars: tuple = ()               # tuple[Var, ...]
    priority: int = 0
    deps: list = field(default_factory=list)   # list[Dep]
    options: TaskOptions = field(default_factory=TaskOptions)
    where: str = ""                # "tasks[3]" for messages
    listing: Listing | None = None  # listed plain tasks of one shape, stored as one group
    strict_deps: bool = False      # an expression item outside the parent: error, not dropped

    def __post_init__(self) -> None:
        self.size = 1 if self.listing is None else len(self.listing)
        for v in self.vars:
            self.size *= len(v)
        self._radix = [len(v) for v in self.vars]
        self._var_names = [v.name for v in self.vars]
        self._cmd_builder: Callable[[dict], str] | None = None
        self._call_builder: Callable[[dict], tuple] | None = None
        # Set by the loader (mpitiny.dag.load): the imported callable of a "fn" entry, its
        # batch form (``mpitiny.with_batch``; None if it has none), and whether it has a
        # parameter named ``inputs`` (the parents' results are passed in it).
        self.function: Callable | None = None
        self.batch_function: Callable[[list], list] | None = None
        self.wants_inputs: bool = False

    @property
    def is_family(self) -> bool:
        """Whether the group has many instances (a foreach family or a listing)."""
        return bool(self.vars) or self.listing is not None

    def var_index(self, name: str) -> int:
        return self._var_names.index(name)

    def index_values(self, spec: int | str, idx: np.ndarray) -> np.ndarray:
        """An integer option of instances ``idx`` (int64): ``spec`` is an integer, or
        ``"{var}"`` naming an integer foreach variable (``rank``, ``part``)."""
        if isinstance(spec, int):
            return np.full(len(idx), spec, dtype=np.int64)
        k = self.var_index(spec[1:-1])
        return self.vars[k].values_at(self.var_positions(idx)[k]).astype(np.int64)

    def index_value(self, spec: int | str, i: int) -> int:
        """``index_values`` of the one instance ``i``, in plain integers (a hand-off's
        placement: numpy's fixed cost is ~5 us a call)."""
        if isinstance(spec, int):
            return spec
        k = self.var_index(spec[1:-1])
        for j in range(len(self.vars) - 1, k, -1):
            i //= self._radix[j]
        return int(self.vars[k].values[i % self._radix[k]])

    def int_values(self, positions: list, tree: tuple) -> dict:
        """The values of the variables that expression ``tree`` reads, as int64 arrays, for
        instances whose ``var_positions`` are ``positions``."""
        out = {}
        for name in expr.names(tree):
            k = self.var_index(name)
            out[name] = np.asarray(self.vars[k].values_at(positions[k]), dtype=np.int64)
        return out

    def var_positions(self, idx: np.ndarray) -> list:
        """Per variable, the value positions of instances ``idx`` (mixed radix, last fastest)."""
        rest = np.asarray(idx, dtype=np.int64).copy()
        out: list = [None] * len(self.vars)
        for k in range(len(self.vars) - 1, -1, -1):
            out[k] = rest % self._radix[k]
            rest //= self._radix[k]
        return out

    def values(self, i: int) -> dict:
        """The foreach variables of instance ``i`` as a dict (empty for a plain task)."""
        if not self.vars:
            return {}
        if len(self.vars) == 1:
            return {self._var_names[0]: self.vars[0].values[i]}
        out = {}
        for k in range(len(self.vars) - 1, -1, -1):
            i, pos = divmod(i, self._radix[k])
            out[self._var_names[k]] = self.vars[k].values[pos]
        return out

    def instance_id(self, i: int) -> str:
        """``name`` for a plain task, ``name[v]`` or ``name[v1,v2]`` for a family instance,
        the task's own id for a listed task."""
        if self.listing is not None:
            return self.listing.ids[i]
        if not self.vars:
            return self.name
        vals = self.values(i)
        return "%s[%s]" % (self.name, ",".join(format_value(vals[n]) for n in self._var_names))

    def instance_ids(self, idx) -> list:
        """``instance_id`` of each of the instances ``idx`` (a reducer names its 10^4 parents:
        a family of one range variable formats its ints in one comprehension)."""
        if self.listing is not None:
            ids = self.listing.ids
            return [ids[i] for i in np.asarray(idx).tolist()]
        if len(self.vars) == 1 and isinstance(self.vars[0].values, range):
            name = self.name
            return [f"{name}[{v}]" for v in self.vars[0].values_at(np.asarray(idx)).tolist()]
        return [self.instance_id(int(i)) for i in idx]

    def command(self, i: int) -> str:
        """The shell command of instance ``i`` with its placeholders substituted."""
        if self.listing is not None and self.listing.cmds is not None:
            return self.listing.cmds[i]
        if self._cmd_builder is None:
            self._cmd_builder = compile_string(self.cmd or "", set(self._var_names))
        return self._cmd_builder(self.values(i))

    def constant_call(self) -> tuple | None:
        """``(args, kwargs)`` shared by every instance, or None if they hold placeholders (or
        differ between the listed tasks)."""
        if self.listing is not None and not self.listing.constant:
            return None
        if self._call_builder is None:
            self._call_builder = compile_call(self.args, self.kwargs, set(self._var_names))
        return getattr(self._call_builder, "constant", None)

    def call_args(self, i: int) -> tuple:
        """``(args, kwargs)`` of instance ``i`` with placeholders substituted, freshly built."""
        if self.listing is not None:
            return self.listing.call_args(i)
        if self._call_builder is None:
            self._call_builder = compile_call(self.args, self.kwargs, set(self._var_names))
        return self._call_builder(self.values(i) if self.vars else _NO_VALUES)


_NO_VALUES: dict = {}


def compile_string(template: str, names: set) -> Callable[[dict], str]:
    """A function values -> ``template`` with its ``{name}`` placeholders (of ``names``) filled."""
    pieces: list = []
    last = 0
    for m in PLACEHOLDER.finditer(template):
        if m.group(1) in names:
            pieces.append(template[last:m.start()])
            pieces.append((m.group(1),))
            last = m.end()
    if not pieces:
        return lambda values: template
    pieces.append(template[last:])

    def build(values: dict) -> str:
        return "".join(p if isinstance(p, str) else format_value(values[p[0]]) for p in pieces)
    return build


def _compile_value(value: Any, names: set) -> Callable[[dict], Any] | None:
    """None when ``value`` has no placeholder of ``names`` (so it can be shared as is)."""
    if isinstance(value, str):
        m = PLACEHOLDER.fullmatch(value)
        if m and m.group(1) in names:
            key = m.group(1)
            return lambda values: values[key]
        if any(m.group(1) in names for m in PLACEHOLDER.finditer(value)):
            return compile_string(value, names)
        return None
    if isinstance(value, list):
        parts = [_compile_value(v, names) for v in value]
        if all(p is None for p in parts) and not _has_container(value):
            return None
        fixed = [(p, v) for p, v in zip(parts, value)]
        return lambda values: [p(values) if p else copy.deepcopy(v) for p, v in fixed]
    if isinstance(value, dict):
        by_key = {k: _compile_value(v, names) for k, v in value.items()}
        if all(p is None for p in by_key.values()) and not _has_container(list(value.values())):
            return lambda values: copy.deepcopy(value)
        return lambda values: {k: (p(values) if (p := by_key[k]) else copy.deepcopy(v))
                               for k, v in value.items()}
    return None


def _has_container(seq: Sequence) -> bool:
    return any(isinstance(v, (list, dict)) for v in seq)


def compile_call(args: list, kwargs: dict, names: set) -> Callable[[dict], tuple]:
    """A function values -> ``(args, kwargs)``; constant, immutable arguments are shared."""
    arg_parts = [_compile_value(a, names) for a in args]
    kw_parts = {k: _compile_value(v, names) for k, v in kwargs.items()}
    const_args = tuple(args)
    if all(p is None for p in arg_parts) and not _has_container(args) and not kwargs:
        def constant(values: dict) -> tuple:
            return const_args, {}
        constant.constant = (const_args, {})  # type: ignore[attr-defined]
        return constant

    def build(values: dict) -> tuple:
        a = tuple(p(values) if p else (copy.deepcopy(v) if isinstance(v, (list, dict)) else v)
                  for p, v in zip(arg_parts, args))
        kw = {k: (p(values) if p else copy.deepcopy(kwargs[k])) for k, p in kw_parts.items()}
        return a, kw
    return build


def substitute_params(value: Any, params: dict) -> Any:
    """Replace ``{param}`` placeholders of run parameters in a JSON value (at load time)."""
    if isinstance(value, str):
        m = PLACEHOLDER.fullmatch(value)
        if m and m.group(1) in params:
            return params[m.group(1)]
        return PLACEHOLDER.sub(
            lambda m: format_value(params[m.group(1)]) if m.group(1) in params else m.group(0),
            value)
    if isinstance(value, list):
        return [substitute_params(v, params) for v in value]
    if isinstance(value, dict):
        return {k: substitute_params(v, params) for k, v in value.items()}
    return value


class DAG:
    """The whole task table: groups, their gid bases, the reverse edges, run parameters."""

    def __init__(self, name: str, groups: list, params: dict | None = None,
                 source: str = "", entries: int | None = None,
                 dep_entries: int | None = None) -> None:
        self.name = name
        # The file's entries and ``deps`` strings (listed tasks share their groups).
        self.entries = len(groups) if entries is None else entries
        self.dep_entries = sum(len(g.deps) for g in groups) if dep_entries is None \
            else dep_entries
        self.groups: list = groups
        self.params = dict(params or {})
        self.source = source
        sizes = np.array([g.size for g in groups], dtype=np.int64)
        self.base = np.zeros(len(groups) + 1, dtype=np.int64)
        np.cumsum(sizes, out=self.base[1:])
        self.total = int(self.base[-1])
        self.by_name = {g.name: g.index for g in groups}
        self.children: list = [[] for _ in groups]   # per group: list of (child group, Dep)
        for g in groups:
            for d in g.deps:
                self.children[d.parent].append((g.index, d))

    def locate(self, gid: int) -> tuple:
        """``(group, instance index)`` of a global task id."""
        g = int(np.searchsorted(self.base, gid, side="right")) - 1
        return self.groups[g], gid - int(self.base[g])

    def task_id(self, gid: int) -> str:
        group, i = self.locate(gid)
        return group.instance_id(i)

    def roots(self) -> list:
        """Groups with no dependencies: all their instances are ready at start."""
        return [g for g in self.groups if not g.deps]

    def group_table(self) -> list:
        """What maps a task row's gid back to its id, one dict per group: ``name``, ``first``
        gid, ``size``, ``kind``, ``priority`` and the foreach ``vars`` as ``[name, {"range":
        [start, stop, step]}]`` or ``[name, {"values": [...]}]`` (JSON-ready); a listing
        also ``ids``, its tasks' ids."""
        return [{"name": g.name, "first": int(self.base[g.index]), "size": g.size,
                 "kind": g.kind, "priority": g.priority,
                 "vars": [[v.name, {"range": [v.values.start, v.values.stop, v.values.step]}
                           if isinstance(v.values, range) else {"values": list(v.values)}]
                          for v in g.vars],
                 **({"ids": g.listing.ids} if g.listing is not None else {})}
                for g in self.groups]

    def listed_tasks(self) -> int:
        """How many tasks are stored in listings."""
        return sum(g.size for g in self.groups if g.listing is not None)

    def task_edges(self):
        """Every dependency as ``(parent task id, child task id)``, for whole-group ones the
        group names (for tests and tools; one tuple per edge)."""
        for g in self.groups:
            for d in g.deps:
                parent = self.groups[d.parent]
                if isinstance(d.each, Edges):
                    kids = d.each.children().tolist()
                    for j, p in zip(kids, d.each.parents.tolist()):
                        yield parent.instance_id(p), g.instance_id(j)
                elif d.each is None and g.listing is None:
                    yield parent.name, g.name
