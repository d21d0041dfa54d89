"""Cycles among family instances, where families wait element-wise on themselves or each other.

Element-wise dependencies with expressions (``"u[{t}-1,{i}]"`` within ``u``, or ``f`` and
``g`` each on the other's earlier steps) make cycles among *entries* that need not be cycles
among *instances*. ``each_components`` finds the strongly connected components of the entry
graph restricted to element-wise edges (Tarjan's algorithm, iterative); every component with
more than one entry or with a self loop is checked instance by instance (``instance_cycle``),
cheapest proof first:

1. no instance waits for itself (``u[{i}]`` within ``u``, or ``u[{i}//2]`` at ``i = 0``);
2. one entry: every edge goes to a lower instance index, or every one to a higher (the
   instance order is a topological order: ``u[{i}-1]``, ``u[{t}-1,{i}+1]``);
3. a foreach variable that every entry of the component has, and that strictly decreases
   (or strictly increases) along every edge (``{t}`` of time-stepped families);
4. otherwise Kahn's algorithm on the component's instances (O(instances + edges), in Python
   lists): what it leaves over holds a cycle, walked and returned as ``(entry, instance)``.

Steps 1 to 3 cost a few numpy passes over each family. Everything else (cycles through a
dependency on a whole task or family, or through listed tasks) is found among the entries,
each component counted as one node (``mpitiny.dag.deps.find_cycle``).
"""
from __future__ import annotations

import numpy as np

from mpitiny.dag.model import ElementMap


def each_edges(groups: list) -> list:
    """Per group, the groups it waits for element-wise through an ``ElementMap``."""
    return [[d.parent for d in g.deps if isinstance(d.each, ElementMap)] for g in groups]


def each_components(groups: list) -> tuple:
    """``(rep, components)``: per group the lowest group index of its strongly connected
    component (element-wise edges only), and the components that need an instance check
    (several groups, or one with a self loop), as sorted lists of group indices."""
    adj = each_edges(groups)
    n = len(groups)
    index = [-1] * n
    low = [0] * n
    on_stack = [False] * n
    stack: list = []
    rep = list(range(n))
    components: list = []
    counter = 0
    for root in range(n):
        if index[root] >= 0 or not adj[root]:     # no element-wise parent: a lone node
            continue
        work = [(root, 0)]
        while work:
            v, k = work.pop()
            if k == 0:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on_stack[v] = True
            if k < len(adj[v]):
                work.append((v, k + 1))
                w = adj[v][k]
                if index[w] < 0:
                    work.append((w, 0))
                elif on_stack[w]:
                    low[v] = min(low[v], index[w])
                continue
            if work:                         # v is done: pass its low link to its caller
                caller = work[-1][0]
                low[caller] = min(low[caller], low[v])
            if low[v] == index[v]:
                members = []
                while True:
                    w = stack.pop()
                    on_stack[w] = False
                    members.append(w)
                    if w == v:
                        break
                members.sort()
                for w in members:
                    rep[w] = members[0]
                if len(members) > 1 or v in adj[v]:
                    components.append(members)
    return rep, components


def internal_edges(groups: list, members: list) -> list:
    """``(child group, Dep)`` of the element-wise edges inside a component."""
    inside = set(members)
    return [(g, d) for g in members for d in groups[g].deps
            if isinstance(d.each, ElementMap) and d.parent in inside]


class Parents:
    """``ElementMap.all_parents`` of each internal edge, computed once."""

    def __init__(self, groups: list) -> None:
        self.groups = groups
        self.done: dict = {}

    def of(self, g: int, d) -> np.ndarray:
        key = (g, id(d))
        if key not in self.done:
            self.done[key] = d.each.all_parents(self.groups[g], self.groups[d.parent])
        return self.done[key]


def waits_for_itself(groups: list, edges: list, parents: Parents) -> tuple | None:
    """``(group, instance, Dep)`` of the first instance that waits directly for itself."""
    for g, d in edges:
        if d.parent != g:
            continue
        group = groups[g]
        p = parents.of(g, d)
        hit = np.flatnonzero(p == np.arange(group.size, dtype=np.int64))
        if len(hit):
            return g, int(hit[0]), d
    return None


def monotone(groups: list, edges: list, parents: Parents) -> bool:
    """Step 2: one group whose edges all go to lower instances, or all to higher."""
    if any(d.parent != g for g, d in edges) or len({g for g, _ in edges}) != 1:
        return False
    lower = higher = True
    for g, d in edges:
        group = groups[g]
        p = parents.of(g, d)
        j = np.arange(group.size, dtype=np.int64)
        has = p >= 0
        lower = lower and bool((p[has] < j[has]).all())
        higher = higher and bool((p[has] > j[has]).all())
        if not (lower or higher):
            return False
    return True


def _int_var(group, name: str):
    for v in group.vars:
        if v.name == name and (isinstance(v.values, range) or all(
                type(x) is int for x in v.values)):
            return v
    return None


def ordered_by_variable(groups: list, members: list, edges: list, parents: Parents) -> bool:
    """Step 3: some integer variable of every member strictly decreases (or strictly
    increases) from each child instance to the parent instance it waits for."""
    shared = set(v.name for v in groups[members[0]].vars)
    for g in members[1:]:
        shared &= {v.name for v in groups[g].vars}
    for name in sorted(shared):
        if any(_int_var(groups[g], name) is None for g in members):
            continue
        signs: set = set()
        for g, d in edges:
            child, parent = groups[g], groups[d.parent]
            p = parents.of(g, d)
            has = np.flatnonzero(p >= 0)
            if not len(has):
                continue
            cvals = _values_of(child, name, has)
            pvals = _values_of(parent, name, p[has])
            diff = cvals - pvals
            if (diff > 0).all():
                signs.add(1)
            elif (diff < 0).all():
                signs.add(-1)
            else:
                signs.add(0)
            if 0 in signs or len(signs) > 1:
                break
        if len(signs) == 1 and 0 not in signs:
            return True
    return False


def _values_of(group, name: str, idx: np.ndarray) -> np.ndarray:
    k = group.var_index(name)
    return np.asarray(group.vars[k].values_at(group.var_positions(idx)[k]), dtype=np.int64)


def instance_cycle(groups: list, members: list) -> list | None:
    """A cycle among the instances of the component ``members`` as ``(group, instance)``
    pairs, each waiting for the next; None if there is none."""
    edges = internal_edges(groups, members)
    parents = Parents(groups)
    itself = waits_for_itself(groups, edges, parents)
    if itself is not None:
        g, i, _ = itself
        return [(g, i)]
    if monotone(groups, edges, parents) or ordered_by_variable(groups, members, edges, parents):
        return None
    return kahn_cycle(groups, members, edges, parents)


def kahn_cycle(groups: list, members: list, edges: list, parents: Parents) -> list | None:
    """Step 4: Kahn's algorithm on the component's instances, then a walk from what is left."""
    base = {}
    n = 0
    for g in members:
        base[g] = n
        n += groups[g].size
    src, dst = [], []
    for g, d in edges:
        p = parents.of(g, d)
        has = np.flatnonzero(p >= 0)
        src.append(base[d.parent] + p[has])
        dst.append(base[g] + has)
    up = np.concatenate(src)
    children = np.concatenate(dst)
    indegree = kahn_leftover(n, up, children)
    if indegree is None:
        return None
    by_child = np.argsort(children, kind="stable")
    pars = up[by_child].tolist()
    cstarts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(children, minlength=n), out=cstarts[1:])
    at = cstarts.tolist()
    node = next(v for v in range(n) if indegree[v] > 0)
    position: dict = {}
    path: list = []
    while node not in position:
        position[node] = len(path)
        path.append(node)
        node = next(p for p in pars[at[node]:at[node + 1]] if indegree[p] > 0)
    cycle = path[position[node]:]
    starts_of = sorted((b, g) for g, b in base.items())
    out = []
    for v in cycle:
        b, g = max(x for x in starts_of if x[0] <= v)
        out.append((g, v - b))
    low = min(range(len(out)), key=lambda k: out[k])
    return out[low:] + out[:low]


def kahn_leftover(n: int, parents: np.ndarray, children: np.ndarray):
    """The in-degrees left after Kahn's algorithm, or None if every node was removed."""
    indegree = np.bincount(children, minlength=n).tolist()
    order = np.argsort(parents, kind="stable")
    kids = children[order].tolist()
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(parents, minlength=n), out=starts[1:])
    starts_l = starts.tolist()
    ready = [i for i in range(n) if indegree[i] == 0]
    done = 0
    while ready:
        i = ready.pop()
        done += 1
        for c in kids[starts_l[i]:starts_l[i + 1]]:
            indegree[c] -= 1
            if indegree[c] == 0:
                ready.append(c)
    return None if done == n else indegree
