"""Listed plain tasks as families: the groups of a file's entries, and the edges between them.

A file may list 10^5 plain tasks one by one (WfCommons, Pegasus, Task Bench graphs). One group
(and so one gate, one count word lookup, one per-group run of the engine) per task would cost
~50 family instances each. Instead the plain tasks of one *shape* are stored as one group with
a ``Listing`` (``mpitiny.dag.model``): ``fn`` tasks of the same function, number of ``args``
and ``kwargs`` keys, ``cmd`` tasks, each with the same priority and options; their ids,
arguments and command lines are columns. A listing runs through the family path of the engine;
instance ``i`` is the ``i``-th such task in file order, wherever it stands in the file.

A plain task is *listed* when its shape has at least ``LIST_MIN`` tasks (fewer cost nothing
worth saving, and stay groups of their own) and its dependencies are all on plain tasks by
their ids; a task that a family waits for, or that some ``deps`` names with ``[...]`` (an
error, reported as before), stays a group of its own. Everything else about a file (its
checks, messages and their order) is unchanged: only valid plain tasks are listed.

Edges: the dependencies of listed tasks, and of plain groups on listed tasks, are ``Edges``
(per child instance, its parent instances; CSR columns), one per (child group, parent group).
Cycles: with listings the graph of groups is not the graph of tasks (a listing may wait for
itself: a chain of tasks of one shape), so cycles are looked for among the tasks themselves
(a family or a task of its own is one node, each listed task one node).
"""
from __future__ import annotations

from collections import Counter
import numpy as np

from mpitiny.arrays import distinct
from mpitiny.dag.columns import PlainColumns
from mpitiny.dag.cycles import kahn_leftover
from mpitiny.dag.deps import DependencyResolver, find_cycle
from mpitiny.dag.entries import PlainEntry
from mpitiny.dag.messages import Reporter
from mpitiny.dag.model import Dep, Edges, ElementMap, Group, Listing, TaskOptions

_NO_OPTIONS = TaskOptions()

#: The fewest plain tasks of one shape that are stored as a listing.
LIST_MIN = 32
#: A cycle longer than this is shown as its first and last 10 tasks.
_CYCLE_SHOWN = 21


def shape_of(entry: PlainEntry) -> tuple:
    """What listed tasks of one group share: kind, function and argument layout, priority and
    options (the values of ``args``, ``kwargs`` and ``cmd`` are columns)."""
    if entry.kind == "cmd":      # options: shared objects (``EntryParser.options_seen``)
        return ("cmd", entry.priority, id(entry.options))
    return ("fn", entry.fn, len(entry.args), tuple(entry.kwargs), entry.priority,
            id(entry.options))


def blocked_ids(entries: list, raw_deps: list) -> set:
    """Ids of plain tasks that must stay groups of their own: those a family waits for, and
    those that some ``deps`` names with ``[...]`` (an error that the resolver reports)."""
    blocked: set = set()
    for entry, raw in zip(entries, raw_deps):
        if not raw:
            continue
        family = isinstance(entry, Group)
        for text in raw:
            if family or "[" in text:
                blocked.add(text.partition("[")[0])
    return blocked


class Lister(Reporter):
    """Turns the parsed entries of a file into groups (``build``): listings, families and
    plain tasks, with their ``deps`` resolved and no cycle among the tasks."""

    def __init__(self, source: str, params: dict, list_min: int = LIST_MIN) -> None:
        super().__init__(source)
        self.params = params
        self.list_min = list_min

    def build(self, entries: list, raw_deps: list) -> list:
        """The groups of ``entries`` (as ``EntryParser.parse_all`` gives them), in the order
        of their first entries, their ``deps`` filled."""
        listable = self.listable(entries, raw_deps)
        groups: list = []
        raws: list = []
        listed: dict = {}          # task id -> (group, instance)
        members: dict = {}         # shape -> (group index, its entries)
        self.entry_of: list = []   # per group, its (first) entry
        for k, entry in enumerate(entries):
            shape = listable[k]
            if shape is None:
                self.entry_of.append(k)
                if isinstance(entry, PlainEntry):
                    entry = entry.group(len(groups))
                else:
                    entry.index = len(groups)
                groups.append(entry)
                raws.append(raw_deps[k])
                continue
            found = members.get(shape)
            if found is None:
                found = members[shape] = (len(groups), [])
                self.entry_of.append(k)
                groups.append(None)
                raws.append(None)
            listed[entry.id] = (found[0], len(found[1]))
            found[1].append(entry)
        for g, chosen in members.values():
            groups[g] = self.listing_group(g, chosen)
        self._plain = {g.name: g.index for g in groups if g.listing is None and not g.vars}
        resolver = DependencyResolver(self.source, self.params)
        resolver.resolve(groups, raws, listed)
        for g, chosen in members.values():
            self.listed_edges(groups[g], [raw_deps[e.at] for e in chosen], listed)
        self.check_cycles(groups, resolver)
        return groups

    def build_columns(self, cols: PlainColumns, make_entries) -> list:
        """``build`` for a file of plain tasks only (``mpitiny.dag.columns``): each shape one
        listing, its edges computed on arrays; ``make_entries()`` gives the entries for
        ``build`` when some shape is too small to list or a ``deps`` needs a message."""
        n = len(cols)
        one = all(len(set(c)) == 1 for c in (cols.fns, map(len, cols.args), cols.priorities,
                                             cols.ranks))
        shapes = [] if one else list(zip(cols.fns, map(len, cols.args), cols.priorities,
                                         cols.ranks))
        sizes = Counter(shapes)
        if n < self.list_min or (sizes and min(sizes.values()) < self.list_min) or \
                not self.deps_are_listed(cols):
            entries = make_entries()
            return self.build(entries, [e and list(e) for e in cols.deps])
        order = {s: g for g, s in enumerate(dict.fromkeys(shapes))}
        members: list
        if one:
            group_of = np.zeros(n, dtype=np.int64)
            members = [range(n)]
        else:
            group_of = np.array([order[s] for s in shapes], dtype=np.int64)
            members = [np.flatnonzero(group_of == g).tolist() for g in range(len(order))]
        groups = [self.columns_group(g, cols, m) for g, m in enumerate(members)]
        self.entry_of = [m[0] for m in members]
        if any(cols.deps):
            self.columns_edges(groups, cols, group_of, members)
        return groups

    def deps_are_listed(self, cols: PlainColumns) -> bool:
        """Whether every ``deps`` names tasks of the file, none twice, none itself."""
        deps = cols.deps
        if not any(deps):
            return True
        ids = set(cols.ids)
        return (ids.issuperset(d for ds in deps for d in ds)
                and not any(t in ds for t, ds in zip(cols.ids, deps) if ds)
                and all(len(set(ds)) == len(ds) for ds in deps if len(ds) > 1))

    def columns_group(self, index: int, cols: PlainColumns, members: list) -> Group:
        """The listing of rows ``members`` (of one shape) of ``cols``."""
        k0 = members[0]
        ids = cols.ids if len(members) == len(cols) else [cols.ids[k] for k in members]
        fn, rank = cols.fns[k0], cols.ranks[k0]
        options = TaskOptions(rank=rank) if rank is not None else _NO_OPTIONS
        if fn is None:
            listing = Listing(ids, members, cmds=[cols.cmds[k] for k in members])
        else:
            rows = [cols.args[k] for k in members]
            listing = Listing(ids, members, args=[list(c) for c in zip(*rows)])
        return Group(index=index, name=f"{ids[0]} (+{len(ids) - 1} listed)",
                     kind="cmd" if fn is None else "fn", cmd=cols.cmds[k0], fn=fn,
                     args=list(cols.args[k0]), priority=cols.priorities[k0], deps=[],
                     options=options, where=f"tasks[{k0}] (id '{ids[0]}')", listing=listing)

    def columns_edges(self, groups: list, cols: PlainColumns, group_of: np.ndarray,
                      members: list) -> None:
        """The ``Edges`` deps of every listing of a columnar file; then the cycle check."""
        row = {t: k for k, t in enumerate(cols.ids)}
        lens = np.fromiter(map(len, cols.deps), dtype=np.int64, count=len(cols))
        child = np.repeat(np.arange(len(cols), dtype=np.int64), lens)
        parent = np.fromiter((row[d] for ds in cols.deps for d in ds), dtype=np.int64,
                             count=int(lens.sum()))
        index_of = np.zeros(len(cols), dtype=np.int64)
        for m in members:
            index_of[m] = np.arange(len(m))
        for c, g in enumerate(groups):
            sel = group_of[child] == c
            kids, pars = index_of[child[sel]], parent[sel]
            pgs = group_of[pars]
            for pg in distinct(pgs).tolist():
                at = pgs == pg
                offsets = np.zeros(g.size + 1, dtype=np.int64)
                np.cumsum(np.bincount(kids[at], minlength=g.size), out=offsets[1:])
                order = np.argsort(kids[at], kind="stable")
                g.deps.append(Dep(pg, Edges(offsets, index_of[pars[at]][order])))
        if (parent < child).all():       # parents before children in the file: no cycle
            return
        self.check_cycles(groups, DependencyResolver(self.source, self.params))

    def listable(self, entries: list, raw_deps: list) -> list:
        """Per entry, the shape of its listing, or None if it stays a group of its own."""
        plain = {e.id for e in entries if isinstance(e, PlainEntry)}
        if len(plain) < self.list_min:
            return [None] * len(entries)
        blocked = blocked_ids(entries, raw_deps)
        shapes: list = [None] * len(entries)
        for k, entry in enumerate(entries):
            if not isinstance(entry, PlainEntry) or entry.id in blocked:
                continue
            raw = raw_deps[k]
            if raw and (entry.id in raw or not plain.issuperset(raw)
                        or len(set(raw)) != len(raw)):
                continue                       # an error the resolver reports, or a family
            shapes[k] = shape_of(entry)
        sizes = Counter(s for s in shapes if s is not None)
        return [s if s is not None and sizes[s] >= self.list_min else None for s in shapes]

    def listing_group(self, index: int, chosen: list) -> Group:
        """The group of the listed tasks ``chosen`` (of one shape, in file order)."""
        first = chosen[0]
        ids = [e.id for e in chosen]
        at = [e.at for e in chosen]
        if first.kind == "cmd":
            listing = Listing(ids, at, cmds=[e.cmd for e in chosen])
        else:
            args = [list(column) for column in zip(*(e.args for e in chosen))] \
                if first.args else []
            kwargs = {key: [e.kwargs[key] for e in chosen] for key in first.kwargs}
            listing = Listing(ids, at, args=args, kwargs=kwargs)
        return Group(index=index, name=f"{first.id} (+{len(chosen) - 1} listed)",
                     kind=first.kind, cmd=first.cmd, fn=first.fn, args=first.args,
                     kwargs=first.kwargs, priority=first.priority, deps=[],
                     options=first.options, where=first.place, listing=listing)

    def listed_edges(self, group: Group, raws: list, listed: dict) -> None:
        """The ``Edges`` deps of a listing: its tasks' ``deps`` (ids of listed tasks or of
        plain groups, checked by ``listable``), one ``Dep`` per parent group."""
        child: list = []
        parent_group: list = []
        parent_index: list = []
        by_name: dict = {}
        for j, raw in enumerate(raws):
            for text in raw or ():
                where = listed.get(text)
                if where is None:
                    where = by_name.get(text)
                    if where is None:
                        where = by_name[text] = (self.plain_group(text), 0)
                child.append(j)
                parent_group.append(where[0])
                parent_index.append(where[1])
        if not child:
            return
        kids = np.array(child, dtype=np.int64)
        pgs = np.array(parent_group, dtype=np.int64)
        pis = np.array(parent_index, dtype=np.int64)
        for pg in distinct(pgs).tolist():
            sel = pgs == pg
            counts = np.bincount(kids[sel], minlength=group.size)
            offsets = np.zeros(group.size + 1, dtype=np.int64)
            np.cumsum(counts, out=offsets[1:])
            order = np.argsort(kids[sel], kind="stable")
            group.deps.append(Dep(pg, Edges(offsets, pis[sel][order])))

    def plain_group(self, name: str) -> int:
        """The group of the plain task ``name`` that is not listed (set by ``build``)."""
        return self._plain[name]

    def check_cycles(self, groups: list, resolver: DependencyResolver) -> None:
        """No dependency cycle: among groups when nothing is listed (as before), else among
        tasks (a group of its own or a family is one node, a listed task one node)."""
        if not any(isinstance(d.each, Edges) for g in groups for d in g.deps):
            resolver.check_cycles(groups)
            return
        cycle = find_task_cycle(groups, self.entry_of, resolver.check_instance_cycles(groups))
        if cycle is None:
            return
        names = [groups[g].instance_id(i) if i >= 0 else groups[g].name for g, i, _ in cycle]
        names.append(names[0])
        if len(names) > _CYCLE_SHOWN:
            names = names[:10] + [f"... ({len(names) - 20} more) ..."] + names[-10:]
        g, i, entry = cycle[0]
        where = groups[g].where if i < 0 else \
            f"tasks[{entry}] (id '{groups[g].instance_id(i)}')"
        raise self.error(f"deps: dependency cycle: {' -> '.join(names)} (each task waits for "
                         "the next)", where)


def task_nodes(groups: list) -> tuple:
    """Node numbering for ``find_task_cycle``: a group of its own is node ``g``; listed task
    ``i`` of listing ``g`` is ``first[g] + i``. Returns ``(first, node count)``."""
    first = np.zeros(len(groups), dtype=np.int64)
    n = len(groups)
    for g in groups:
        if g.listing is not None:
            first[g.index] = n
            n += g.size
    return first, n


def find_task_cycle(groups: list, entry_of: list, rep: list | None = None) -> list | None:
    """A cycle among the tasks as ``(group, instance or -1, entry)`` triples, starting at the
    lowest entry; None if there is none (Kahn's algorithm on the task nodes). ``entry_of``:
    the file entry of each group (of a listing: of its first task). ``rep``: families tied
    by element-wise edges (checked per instance) count as one node, their lowest group
    (``mpitiny.dag.cycles.each_components``)."""
    first, n = task_nodes(groups)
    rep = list(range(len(groups))) if rep is None else rep
    src: list = []
    dst: list = []
    for g in groups:
        own = g.listing is None
        for d in g.deps:
            parent = groups[d.parent]
            if isinstance(d.each, ElementMap) and rep[d.parent] == rep[g.index]:
                continue
            if isinstance(d.each, Edges):
                kids = d.each.children()
                par = d.each.parents
                c = np.full(len(kids), rep[g.index]) if own else first[g.index] + kids
                p = np.full(len(par), rep[d.parent]) if parent.listing is None else \
                    first[d.parent] + par
                src.append(p)
                dst.append(c)
            else:                         # between groups of their own (and families)
                src.append(np.array([rep[d.parent]]))
                dst.append(np.array([rep[g.index]]))
    parents = np.concatenate(src) if src else np.zeros(0, dtype=np.int64)
    children = np.concatenate(dst) if dst else np.zeros(0, dtype=np.int64)
    entry = np.zeros(n, dtype=np.int64)          # each node's entry in the file
    entry[:len(groups)] = entry_of
    for g in groups:
        if g.listing is not None:
            entry[first[g.index]:first[g.index] + g.size] = g.listing.entries
    if (entry[parents] < entry[children]).all():  # file order is a topological order
        return None
    leftover = kahn_leftover(n, parents, children)
    if leftover is None:
        return None
    return _walk_cycle(groups, first, entry_of, leftover, parents, children)


def _walk_cycle(groups: list, first: np.ndarray, entry_of: list, indegree: list,
                parents: np.ndarray, children: np.ndarray) -> list:
    """Walk parents from a left-over node until one repeats: the cycle, as triples."""
    order = np.argsort(children, kind="stable")
    pars = parents[order].tolist()
    starts = np.zeros(len(indegree) + 1, dtype=np.int64)
    np.cumsum(np.bincount(children, minlength=len(indegree)), out=starts[1:])
    node = next(i for i, d in enumerate(indegree) if d > 0)
    position: dict = {}
    path: list = []
    while node not in position:
        position[node] = len(path)
        path.append(node)
        node = next(p for p in pars[int(starts[node]):int(starts[node + 1])] if indegree[p] > 0)
    cycle = path[position[node]:]         # each waits for the next
    triples = [_node_triple(groups, first, entry_of, v) for v in cycle]
    low = min(range(len(triples)), key=lambda k: triples[k][2])
    return triples[low:] + triples[:low]


def _node_triple(groups: list, first: np.ndarray, entry_of: list, node: int) -> tuple:
    """``(group, instance or -1, entry)`` of a task node."""
    if node < len(groups):
        return node, -1, entry_of[node]
    g = max((g.index for g in groups if g.listing is not None and first[g.index] <= node),
            key=lambda k: first[k])
    i = node - int(first[g])
    return g, i, groups[g].listing.entries[i]


__all__ = ["LIST_MIN", "Lister", "find_cycle", "find_task_cycle"]
