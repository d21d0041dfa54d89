"""The children of finished tasks: each dependency's inverse, built once (graph code, no
state of the run).

``ChildMaps.children_of`` answers which instances of a child group wait, element-wise, on
given instances of a parent: the inverse of the dependency's map (child instance -> parent
instances), found with one ``argsort`` and kept as CSR (``order``, ``offsets``). With
expression items (``"u[{t}-1,{i}+1]"``) a parent instance has any number of children and a
child instance that falls outside the parent has none; listed dependencies (``Edges``) any
number per child. A child's several element-wise maps on one parent (a stencil's three) are
merged into one (``MergedMaps``: one inverse, one pass of ``Release``). ``split_children``
sets apart the children that wait for one literal parent instance (``"pre[3]"``), so that
finishing an instance touches its own such children only.
"""
from __future__ import annotations

import numpy as np

from mpitiny.dag.model import Edges, ElementMap


class ChildMaps:
    """The inverses of one DAG's element-wise dependencies, built as they are first asked for:
    ``inverse[(child, parent, map)]`` is ``(order, offsets)``, or None for an identity."""

    def __init__(self, dag) -> None:
        self.dag = dag
        self.inverse: dict = {}
        self.split: dict = {}

    def split_children(self, parent: int) -> tuple:
        """The children of ``parent`` as ``(general, literal)``: ``literal`` maps a parent
        instance to the children that wait for that one instance only (``"pre[3]"``), so that
        finishing an instance touches its own such children, not all of them (a reduction tree
        over a family has one per parent instance)."""
        found = self.split.get(parent)
        if found is None:
            general: list = []
            literal: dict = {}
            pg = self.dag.groups[parent]
            for child, dep in self.dag.children[parent]:
                if dep.each is not None and dep.each.items is not None and \
                        all(kind == "lit" for kind, _ in dep.each.items):
                    cg = self.dag.groups[child]
                    p = int(dep.each.parent_indices(cg, pg, np.zeros(1, dtype=np.int64))[0])
                    literal.setdefault(p, []).append((child, dep))
                else:
                    general.append((child, dep))
            found = self.split[parent] = (merge_maps(general, self.dag.groups, parent),
                                           literal)
        return found

    def children_of(self, child: int, dep, parent: int, pidx: np.ndarray) -> np.ndarray:
        """Instances of ``child`` that wait (element-wise through ``dep``) on ``pidx``.

        Repeated where a child waits for several of the given parents.
        """
        cg, pg = self.dag.groups[child], self.dag.groups[parent]
        key = (child, parent, dep.each)
        if key not in self.inverse:
            if dep.each.is_identity(cg, pg):
                self.inverse[key] = None
            else:
                if isinstance(dep.each, Edges):         # listed: any number per child
                    m, kids = dep.each.parents, dep.each.children()
                elif isinstance(dep.each, MergedMaps):
                    m, kids = dep.each.edges(cg, pg)
                else:
                    m = dep.each.all_parents(cg, pg)
                    kids = None
                    if dep.each.may_drop:                # children with no parent here
                        kids = np.flatnonzero(m >= 0)
                        m = m[kids]
                order = np.argsort(m, kind="stable")
                offsets = np.zeros(pg.size + 1, dtype=np.int64)
                np.cumsum(np.bincount(m, minlength=pg.size), out=offsets[1:])
                self.inverse[key] = (order if kids is None else kids[order], offsets)
        cmap = self.inverse[key]
        if cmap is None:
            return pidx
        order, offsets = cmap
        if len(pidx) == 1:                       # one parent (a task of a DAG): a slice
            p = int(pidx[0])
            return order[int(offsets[p]):int(offsets[p + 1])]
        starts, ends = offsets[pidx], offsets[pidx + 1]
        lens = ends - starts
        if lens.sum() == 0:
            return np.zeros(0, dtype=np.int64)
        pos = np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())
        return order[pos]

    def fanout(self, child: int, dep, parent: int, pidx: np.ndarray) -> np.ndarray:
        order, offsets = self.inverse[(child, parent, dep.each)]
        return offsets[pidx + 1] - offsets[pidx]


class MergedMaps:
    """Several element-wise maps from one parent group to one child group (a stencil's
    ``u[{t}-1,{i}-1]``, ``u[{t}-1,{i}]``, ``u[{t}-1,{i}+1]``), released as one: one inverse
    map, one count update per block of child instances for all of them."""

    items = None          # not one element-wise map: never the literal or identity path

    def __init__(self, maps: list) -> None:
        self.maps = maps

    def is_identity(self, child, parent) -> bool:
        return False

    def edges(self, child, parent) -> tuple:
        """``(parent instance, child instance)`` arrays of every edge of the maps."""
        ps, ks = [], []
        for each in self.maps:
            m = each.all_parents(child, parent)
            kids = np.flatnonzero(m >= 0)
            ps.append(m[kids])
            ks.append(kids)
        return np.concatenate(ps), np.concatenate(ks)


class MergedDep:
    """Stands for the ``Dep`` of a ``MergedMaps`` in ``ChildMaps.split_children``."""

    def __init__(self, parent: int, each: MergedMaps) -> None:
        self.parent = parent
        self.each = each


def merge_maps(general: list, groups: list, parent: int) -> list:
    """``general`` with a child's several element-wise maps on ``parent`` (not identities,
    not listed edges) replaced by one ``MergedDep``."""
    by_child: dict = {}
    for child, dep in general:
        if isinstance(dep.each, ElementMap) and \
                not dep.each.is_identity(groups[child], groups[parent]):
            by_child.setdefault(child, []).append(dep)
    out = []
    for child, dep in general:
        deps = by_child.get(child, ())
        if len(deps) < 2 or dep not in deps:
            out.append((child, dep))
        elif dep is deps[0]:
            out.append((child, MergedDep(parent, MergedMaps([d.each for d in deps]))))
    return out
