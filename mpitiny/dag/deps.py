"""Passes 2 and 3 of loading a dag.json: what each entry's ``deps`` name, and no cycles.

A dependency is a task or family id (wait for all of it) or ``id[item,...]``, one item per
variable of the parent family: ``{var}`` (a foreach variable of the child, or a run
parameter), a literal value, or an integer expression of the child's variables and the run
parameters (``{t}-1``, ``{i}//2``, ``({i}+1)%{n}``; ``mpitiny.dag.expr``, never ``eval``).

Where the parent instance must exist: a dependency whose items are variables and literals
must point at an existing parent instance for every child instance; that is checked per
variable (``first_missing``), so a family of 10^6 instances costs what its variables cost,
not one Python object per instance. An expression item may fall outside the parent's values
(the edge of a stencil: ``u[{t}-1,{i}-1]`` at ``t = 0`` or ``i = 0``): that child instance
then does not wait through that dependency (it is *dropped*). An entry with
``"strict_deps": true`` makes that an error naming the first such instance instead.
Expressions are evaluated in chunks of instances with numpy (``check_expressions``); a
``//`` or ``%`` by zero is an error either way.

A family may wait element-wise on its own instances (``"u[{t}-1,{i}]"`` within ``u``), and
families on each other's; no instance may wait on itself through any chain. Cycles are found
on the graph of entries, iteratively (``find_cycle``, no recursion), each set of entries
tied by element-wise dependencies counted as one node and checked instance by instance
(``mpitiny.dag.cycles``).
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from mpitiny.dag import expr
from mpitiny.dag.cycles import each_components, instance_cycle
from mpitiny.dag.limits import MAX_ID_LENGTH
from mpitiny.dag.messages import Reporter, kind, show
from mpitiny.dag.model import PLACEHOLDER, Dep, Edges, ElementMap, Group, Var, format_value

_DEP = re.compile(r"([^\[\]{},\s]+)(?:\[([^\[\]]*)\])?")
_INT_LITERAL = re.compile(r"[+-]?[0-9]+")
_CHUNK = 1 << 16
#: A cycle longer than this is shown as its first and last 10 entries.
_CYCLE_SHOWN = 21


def match_literal(pvar: Var, value: Any) -> Any:
    """The parent's own value that a literal item means (``1.5``, ``true``, ``"7"``)."""
    if pvar.index_of(value) >= 0 or isinstance(pvar.values, range):
        return value
    spelled = format_value(value)
    for v in pvar.values:
        if format_value(v) == spelled:
            return v
    return value


def describe_var(var: Var) -> str:
    """A variable and its values for a message: ``i in range(0, 10)``, ``s in ['a', 'b']``."""
    values = var.values
    if isinstance(values, range):
        if values.step == 1:
            return f"{var.name} in range({values.start}, {values.stop})"
        return f"{var.name} in range({values.start}, {values.stop}, {values.step})"
    shown = ", ".join(show(v, 30) for v in values[:5])
    more = f", ... ({len(values)} values)" if len(values) > 5 else ""
    return f"{var.name} in [{shown}{more}]"


def first_missing(cvar: Var, pvar: Var) -> int:
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


def group_edges(groups: list, rep: list | None = None) -> list:
    """Per node, the nodes it waits for: a node is a group, or with ``rep`` (``cycles
    .each_components``) a set of groups tied by element-wise edges, named by its lowest
    group; the element-wise edges inside such a set are left out (checked per instance)."""
    n = len(groups)
    rep = list(range(n)) if rep is None else rep
    parents: list = [[] for _ in range(n)]
    for g in groups:
        for d in g.deps:
            a, b = rep[d.parent], rep[g.index]
            if a == b and isinstance(d.each, ElementMap):
                continue
            parents[b].append(a)
    return parents


def find_cycle(groups: list, rep: list | None = None) -> list | None:
    """A dependency cycle among ``groups`` as group indices, starting at the lowest; None if
    there is none. Kahn's algorithm, then a walk along parents among what it left over.
    ``rep``: see ``group_edges``."""
    n = len(groups)
    parents = group_edges(groups, rep)
    nodes = sorted(set(range(n) if rep is None else rep))
    indegree = [len(p) for p in parents]
    children: list = [[] for _ in range(n)]
    for b in nodes:
        for a in parents[b]:
            children[a].append(b)
    ready = [i for i in nodes if indegree[i] == 0]
    done = 0
    while ready:
        i = ready.pop()
        done += 1
        for c in children[i]:
            indegree[c] -= 1
            if indegree[c] == 0:
                ready.append(c)
    if done == len(nodes):
        return None
    # Every node left over waits for at least one other left-over node: walk parents
    # from the first one until a node repeats.
    start = next(i for i in nodes if indegree[i] > 0)
    position: dict = {}
    path: list = []
    node = start
    while node not in position:
        position[node] = len(path)
        path.append(node)
        node = next(p for p in parents[node] if indegree[p] > 0)
    cycle = path[position[node]:]
    first = cycle.index(min(cycle))
    return cycle[first:] + cycle[:first]


class DependencyResolver(Reporter):
    """Turns the ``deps`` strings of every entry into ``Dep`` edges (``resolve``) and rejects
    dependency cycles (``check_cycles``)."""

    def __init__(self, source: str, params: dict) -> None:
        super().__init__(source)
        self.params = params

    def resolve(self, groups: list, raw_deps: list, listed: dict | None = None) -> None:
        """Fills each group's ``deps`` from its ``deps`` strings as written (``raw_deps[k]``
        of ``groups[k]``; None for a listing, whose edges ``mpitiny.dag.listing`` makes).
        ``listed``: task id -> ``(group, instance)`` of the listed tasks; a dependency on one
        of them becomes (with the others on its listing) an ``Edges`` dep."""
        by_name = {g.name: g.index for g in groups if g.listing is None}
        listed = listed or {}
        whole: list = [None] * len(groups)     # one shared (frozen) Dep per parent
        for group, raw in zip(groups, raw_deps):
            if not raw:
                continue
            seen: dict = {}
            deps = group.deps
            on_listed: dict = {}               # listing -> its instances this group waits for
            for text in raw:
                parent = by_name.get(text)
                if parent is None and text in listed:
                    lg, li = listed[text]
                    if (lg, li) in seen:
                        raise self.error(f"deps: {show(text)} is listed twice", group.where)
                    seen[(lg, li)] = text
                    on_listed.setdefault(lg, []).append(li)
                    continue
                if parent is not None:
                    dep = whole[parent]
                    if dep is None:
                        dep = whole[parent] = Dep(parent)
                else:
                    dep = self.parse_dep(group, text, groups, by_name)
                    parent = dep.parent
                if parent == group.index and dep.each is None:
                    raise self.error(f"deps: {show(text)}: a task cannot depend on itself",
                                     group.where)
                key = (parent, dep.each.items if dep.each is not None else None)
                if key in seen:
                    same = ("is listed twice" if seen[key] == text else
                            f"and {show(seen[key])} are the same dependency")
                    raise self.error(f"deps: {show(text)} {same}", group.where)
                seen[key] = text
                deps.append(dep)
            for lg, instances in on_listed.items():      # a plain group (size 1) waits
                parents = np.array(instances, dtype=np.int64)
                offsets = np.array([0, len(parents)], dtype=np.int64)
                deps.append(Dep(lg, Edges(offsets, parents)))

    def parse_dep(self, child: Group, text: str, groups: list, by_name: dict) -> Dep:
        """The edge that ``text`` (``id`` or ``id[item,...]``) gives ``child``."""
        m = _DEP.fullmatch(text)
        if m is None:
            raise self.error(f"deps: {show(text)} is not a task id or 'id[item,...]' "
                             "(ids contain no whitespace or [ ] { } ,)", child.where)
        name, items_text = m.group(1), m.group(2)
        parent_index = by_name.get(name)
        if parent_index is None:
            hint = ""
            if len(by_name) <= 20000 and len(name) <= 2 * MAX_ID_LENGTH:   # difflib: O(len)
                import difflib
                close = difflib.get_close_matches(name, by_name, n=1)
                if close:
                    hint = f" (did you mean {show(close[0])}?)"
            raise self.error(f"deps: unknown task {show(name)}{hint}", child.where)
        if items_text is None:
            return Dep(parent_index)
        parent = groups[parent_index]
        if not parent.vars:
            raise self.error(f"deps: {show(text)}: {show(name)} is a plain task, not a "
                             f"family (no foreach); write {show(name)} to wait for it",
                             child.where)
        texts = [t.strip() for t in items_text.split(",")]
        if len(texts) != len(parent.vars):
            names = ", ".join(v.name for v in parent.vars)
            raise self.error(f"deps: {show(text)} gives {len(texts)} item(s) but family "
                             f"{show(name)} has {len(parent.vars)} variable(s) ({names})",
                             child.where)
        items = tuple(self.parse_item(child, parent, pvar, item_text, text)
                      for item_text, pvar in zip(texts, parent.vars))
        each = ElementMap(items)
        if parent_index == child.index and each.is_identity(child, parent):
            raise self.error(f"deps: {show(text)}: a task cannot depend on itself",
                             child.where)
        self.check_elementwise(child, parent, each, text)
        if each.may_drop:
            self.check_expressions(child, parent, each, text)
        return Dep(parent_index, each)

    def parse_item(self, child: Group, parent: Group, pvar: Var, item_text: str,
                   text: str) -> tuple:
        """One item of ``parent[item,...]`` for variable ``pvar``: ``("var", name)`` for a
        foreach variable of ``child``, else ``("lit", value)``."""
        if not item_text:
            raise self.error(f"deps: {show(text)} has an empty item", child.where)
        m = PLACEHOLDER.fullmatch(item_text)
        if m:
            var = m.group(1)
            if any(v.name == var for v in child.vars):
                return ("var", var)
            if var not in self.params:
                mine = ", ".join(v.name for v in child.vars) if child.vars else "none"
                raise self.error(f"deps: {show(text)}: {item_text} is not a foreach "
                                 f"variable of this task (its variables: {mine}) nor a "
                                 "parameter", child.where)
            value = self.params[var]
            if isinstance(value, (list, dict)) or value is None:
                raise self.error(f"deps: {show(text)}: parameter {var} is "
                                 f"{kind(value)}, not a value of {show(parent.name)}",
                                 child.where)
        elif "{" in item_text or "}" in item_text:
            return self.parse_expression(child, parent, pvar, item_text, text)
        elif _INT_LITERAL.fullmatch(item_text) and len(item_text) < 40:
            value = int(item_text)
        else:
            value = item_text
        return ("lit", match_literal(pvar, value))

    def parse_expression(self, child: Group, parent: Group, pvar: Var, item_text: str,
                         text: str) -> tuple:
        """An expression item: ``("expr", tree)``, or ``("lit", value)`` when it holds no
        foreach variable and its value is one of ``pvar``'s."""
        bounds = {v.name: (min(v.values), max(v.values)) for v in child.vars
                  if isinstance(v.values, range) or all(type(x) is int for x in v.values)}
        try:
            tree = expr.parse(item_text, bounds, self.params)
        except expr.ExprError as err:
            raise self.error(f"deps: {show(text)}: item {show(item_text)} must be {{variable}} "
                             "or a literal value, or an integer expression of variables, "
                             f"parameters and integers with + - * // % and parentheses: {err}",
                             child.where) from None
        if tree[0] == "n" and pvar.index_of(tree[1]) >= 0:
            return ("lit", tree[1])
        if not (isinstance(pvar.values, range) or any(type(x) is int for x in pvar.values)):
            raise self.error(f"deps: {show(text)}: item {show(item_text)} is an integer but "
                             f"variable {pvar.name} of {show(parent.name)} has no integer "
                             "values", child.where)
        return ("expr", tree)

    def check_expressions(self, child: Group, parent: Group, each: ElementMap,
                          text: str) -> None:
        """No expression of ``each`` divides by zero; under ``strict_deps`` every child
        instance has its parent instance. In chunks of instances (numpy, no objects)."""
        trees = [item for kind_, item in each.items if kind_ == "expr"]
        for lo in range(0, child.size, _CHUNK):
            idx = np.arange(lo, min(child.size, lo + _CHUNK), dtype=np.int64)
            pos = child.var_positions(idx)
            for tree in trees:
                bad = np.flatnonzero(expr.zero_divisor(tree, child.int_values(pos, tree),
                                                       len(idx)))
                if len(bad):
                    raise self.error(f"deps: {show(text)}: {child.instance_id(lo + int(bad[0]))}"
                                     f" divides by zero in {expr.spell(tree)}", child.where)
            if child.strict_deps:
                missing = np.flatnonzero(each.parent_indices(child, parent, idx) < 0)
                if len(missing):
                    self.raise_missing(child, parent, each, text, lo + int(missing[0]),
                                       " (strict_deps)")

    def raise_missing(self, child: Group, parent: Group, each: ElementMap, text: str,
                      j: int, why: str = "") -> None:
        """The error for child instance ``j``, whose parent instance does not exist."""
        values = child.values(j)
        pos = child.var_positions(np.array([j], dtype=np.int64))
        wanted = [values[item] if item_kind == "var" else
                  int(expr.evaluate(item, child.int_values(pos, item), 1)[0])
                  if item_kind == "expr" else item
                  for item_kind, item in each.items]
        missing = "%s[%s]" % (parent.name, ",".join(format_value(v) for v in wanted))
        domain = "; ".join(describe_var(v) for v in parent.vars)
        raise self.error(f"deps: {show(text)}: {child.instance_id(j)} would wait for "
                         f"{missing}, which does not exist ({domain}){why}", child.where)

    def check_elementwise(self, child: Group, parent: Group, each: ElementMap,
                          text: str) -> None:
        """Every child instance must map to an existing parent instance through the items
        that are variables or literals (expressions: ``check_expressions``)."""
        if each.is_identity(child, parent):
            return
        strides = [1] * len(child.vars)
        for k in range(len(child.vars) - 2, -1, -1):
            strides[k] = strides[k + 1] * len(child.vars[k + 1])
        first_bad = None
        for (item_kind, item), pvar in zip(each.items, parent.vars):
            if item_kind == "expr":
                continue
            if item_kind == "lit":
                if pvar.index_of(item) < 0:
                    first_bad = 0
                    break
                continue
            k = child.var_index(item)
            pos = first_missing(child.vars[k], pvar)
            if pos >= 0:
                j = pos * strides[k]
                first_bad = j if first_bad is None else min(first_bad, j)
        if first_bad is None:
            return
        self.raise_missing(child, parent, each, text, first_bad)

    def check_instance_cycles(self, groups: list) -> list:
        """Raise a ``DagError`` for a cycle among instances of families tied by element-wise
        dependencies; returns ``rep`` for ``find_cycle`` (``cycles.each_components``)."""
        rep, components = each_components(groups)
        for members in components:
            cycle = instance_cycle(groups, members)
            if cycle is None:
                continue
            g, i = cycle[0]
            if len(cycle) == 1:
                dep = next(d for d in groups[g].deps if d.parent == g and
                           isinstance(d.each, ElementMap) and
                           d.each.parent_indices(groups[g], groups[g],
                                                 np.array([i], dtype=np.int64))[0] == i)
                text = "%s[%s]" % (groups[g].name, dep.each.spelling())
                raise self.error(f"deps: {show(text)}: {groups[g].instance_id(i)} would wait "
                                 "for itself (a task cannot depend on itself)", groups[g].where)
            names = [groups[c].instance_id(k) for c, k in cycle + [cycle[0]]]
            raise self.error(f"deps: dependency cycle: {shorten(names)} (each task waits "
                             "for the next)", groups[g].where)
        return rep

    def check_cycles(self, groups: list) -> None:
        """A dependency cycle is a ``DagError`` naming it, from its lowest entry."""
        cycle = find_cycle(groups, self.check_instance_cycles(groups))
        if cycle is None:
            return
        names = [groups[i].name for i in cycle + [cycle[0]]]
        raise self.error(f"deps: dependency cycle: {shorten(names)} (each task waits for the "
                         "next)", groups[cycle[0]].where)


def shorten(names: list) -> str:
    """A cycle's names joined by arrows, its middle left out past ``_CYCLE_SHOWN`` names
    (keeps the one-line message readable)."""
    if len(names) > _CYCLE_SHOWN:
        names = names[:10] + [f"... ({len(names) - 20} more) ..."] + names[-10:]
    return " -> ".join(names)
