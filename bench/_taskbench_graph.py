"""Task Bench's task graphs (Slaughter et al., SC'20): which points of timestep t-1 each point
of timestep t depends on, ported from StanfordLegion/task-bench ``core/core.cc``
(``TaskGraph::dependencies``, ``width_at_timestep``, ``dependence_set_at_timestep``) and the
Dask driver's ``task_graph_dependencies`` (dependencies clipped to the points that exist at
t-1). Defaults as in ``core.cc``: radix 3, period 3 (spread, random_nearest), fraction 0.25.
``random_nearest`` draws with SipHash-2-4 under the key 0x00..0x0f as ``core_random.c`` does.
Imported by ``taskbench.py`` and by its Dask driver (``_taskbench_dask.py``), so both run the
same graph. Pure Python, no dependency.

``family_tasks`` writes the same graphs as mpitiny families (``foreach`` over ``t`` and ``i``,
element-wise dependencies with offsets, docs/dag-format.md): a few entries however many
steps, where the listed form has one entry per task. tests/test_offsets.py checks that both
forms have the same dependency set.
"""
from __future__ import annotations

import math
import struct

PATTERNS = ("trivial", "no_comm", "stencil_1d", "stencil_1d_periodic", "nearest", "spread",
            "fft", "tree", "all_to_all", "random_nearest")
#: The patterns ``family_tasks`` writes as families (mpitiny's ``foreach`` with offsets).
FAMILY_PATTERNS = ("trivial", "no_comm", "stencil_1d", "stencil_1d_periodic", "nearest",
                   "tree", "fft")
RADIX, PERIOD, FRACTION = 3, 3, 0.25
_MASK = (1 << 64) - 1


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _MASK


def siphash24(key: bytes, data: bytes) -> int:
    """SipHash-2-4 of ``data`` (the 64-bit output, as the reference C code gives it)."""
    k0, k1 = struct.unpack("<QQ", key)
    v = [k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D,
         k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573]

    def rounds(n: int) -> None:
        for _ in range(n):
            v[0] = (v[0] + v[1]) & _MASK; v[1] = _rotl(v[1], 13); v[1] ^= v[0]   # noqa: E702
            v[0] = _rotl(v[0], 32)
            v[2] = (v[2] + v[3]) & _MASK; v[3] = _rotl(v[3], 16); v[3] ^= v[2]   # noqa: E702
            v[0] = (v[0] + v[3]) & _MASK; v[3] = _rotl(v[3], 21); v[3] ^= v[0]   # noqa: E702
            v[2] = (v[2] + v[1]) & _MASK; v[1] = _rotl(v[1], 17); v[1] ^= v[2]   # noqa: E702
            v[2] = _rotl(v[2], 32)

    n = len(data)
    end = n - n % 8
    for i in range(0, end, 8):
        m = struct.unpack_from("<Q", data, i)[0]
        v[3] ^= m
        rounds(2)
        v[0] ^= m
    last = (n << 56) & _MASK
    for j, byte in enumerate(data[end:]):
        last |= byte << (8 * j)
    v[3] ^= last
    rounds(2)
    v[0] ^= last
    v[2] ^= 0xFF
    rounds(4)
    return v[0] ^ v[1] ^ v[2] ^ v[3]


_KEY = bytes([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0])


def random_uniform(*values: int) -> float:
    """``core_random.c``'s ``random_uniform`` over int64 values."""
    return siphash24(_KEY, struct.pack(f"<{len(values)}q", *values)) * 2.0 ** -64


def width_at(pattern: str, t: int, width: int) -> int:
    if t < 0:
        return 0
    if pattern == "tree":
        return min(width, 1 << min(t, 62))
    return width


def dependence_set(pattern: str, t: int, width: int) -> int:
    if pattern == "fft":
        sets = dependence_sets(pattern, width)
        return (t + sets - 1) % sets
    if pattern in ("spread", "random_nearest"):
        return t % PERIOD
    return 0


def _ranges(pattern: str, dset: int, p: int, width: int) -> list:
    """``TaskGraph::dependencies(dset, point)``: inclusive ranges of points at t-1."""
    if pattern == "trivial":
        return []
    if pattern == "no_comm":
        return [(p, p)]
    if pattern == "stencil_1d":
        return [(max(0, p - 1), min(p + 1, width - 1))]
    if pattern == "stencil_1d_periodic":
        return [(max(0, p - 1), min(p + 1, width - 1))] + \
            ([(width - 1, width - 1)] if p - 1 < 0 else []) + ([(0, 0)] if p + 1 >= width else [])
    if pattern == "tree":
        return [(p // 2, p // 2)]
    if pattern == "fft":
        d1, d2 = p - (1 << dset), p + (1 << dset)
        return [(d, d) for d in (d1, p, d2) if 0 <= d < width]
    if pattern == "all_to_all":
        return [(0, width - 1)]
    if pattern == "nearest":
        return [(max(0, p - RADIX // 2), min(p + (RADIX - 1) // 2, width - 1))]
    if pattern == "spread":
        return [((p + i * width // RADIX + (dset if i > 0 else 0)) % width,) * 2
                for i in range(RADIX)]
    if pattern == "random_nearest":
        lo, hi = max(0, p - RADIX // 2), min(p + (RADIX - 1) // 2, width - 1)
        return [(i, i) for i in range(lo, hi + 1)
                if random_uniform(0, RADIX, dset, i, p) < FRACTION or i == p]
    raise ValueError(f"unknown pattern {pattern!r}")


def dependencies(pattern: str, t: int, p: int, width: int) -> list:
    """The points of timestep ``t - 1`` that point ``p`` of timestep ``t`` waits for, in
    Task Bench's order, clipped to the points that exist at ``t - 1`` (repeats kept, as the
    Dask driver passes them: a runtime that takes a set drops them)."""
    if t == 0:
        return []
    last = width_at(pattern, t - 1, width)
    dset = dependence_set(pattern, t, width)
    return [d for lo, hi in _ranges(pattern, dset, p, width) for d in range(lo, hi + 1)
            if 0 <= d < last]


def graph(pattern: str, steps: int, width: int) -> list:
    """Every task as ``(t, p, [parent points at t - 1])``, timestep by timestep."""
    return [(t, p, dependencies(pattern, t, p, width))
            for t in range(steps) for p in range(width_at(pattern, t, width))]


def family_tasks(pattern: str, steps: int, width: int) -> list:
    """The graph as mpitiny family entries (``id``, ``foreach``, ``deps``; the caller adds the
    kernel): instance ``[t, i]`` of a family is point ``i`` of timestep ``t``."""
    grid = {"t": {"range": [steps]}, "i": {"range": [width]}}
    if pattern == "trivial":
        return [{"id": "u", "foreach": grid}]
    if pattern == "no_comm":
        return [{"id": "u", "foreach": grid, "deps": ["u[{t}-1,{i}]"]}]
    if pattern in ("stencil_1d", "nearest"):
        radius = range(-1, 2) if pattern == "stencil_1d" else \
            range(-(RADIX // 2), (RADIX - 1) // 2 + 1)
        return [{"id": "u", "foreach": grid,
                 "deps": [f"u[{{t}}-1,{{i}}{k:+d}]" if k else "u[{t}-1,{i}]" for k in radius]}]
    if pattern == "stencil_1d_periodic":
        return [{"id": "u", "foreach": grid,
                 "deps": [f"u[{{t}}-1,({{i}}-1)%{width}]", "u[{t}-1,{i}]",
                          f"u[{{t}}-1,({{i}}+1)%{width}]"]}]
    if pattern == "tree":
        return tree_families(steps, width)
    if pattern == "fft":
        return fft_families(steps, width)
    raise ValueError(f"no family form for {pattern!r}")


def tree_families(steps: int, width: int) -> list:
    """``tree``: one family per timestep while the tree grows (``u0`` holds ``t = 0``, ``u1``
    ``t = 1``...: ``t`` is a one-value variable, so ``{t}-1`` names the step before), then
    ``u`` for the full-width steps; point ``i`` waits for point ``i // 2``."""
    tasks: list = []
    grow = [t for t in range(steps) if width_at("tree", t, width) < width]
    for t in grow:
        entry = {"id": f"u{t}", "foreach": {"t": [t], "i": {"range": [1 << t]}}}
        if t:
            entry["deps"] = [f"u{t - 1}[{{t}}-1,{{i}}//2]"]
        tasks.append(entry)
    if len(grow) < steps:
        deps = ["u[{t}-1,{i}//2]"] + ([f"u{grow[-1]}[{{t}}-1,{{i}}//2]"] if grow else [])
        tasks.append({"id": "u", "foreach": {"t": {"range": [len(grow), steps]},
                                             "i": {"range": [width]}}, "deps": deps})
    return tasks


def fft_families(steps: int, width: int) -> list:
    """``fft``: one family per dependence set ``s`` (the timesteps ``t`` with ``t % sets ==
    s``): point ``i`` waits for ``i - d``, ``i``, ``i + d`` of the step before, ``d = 2 **
    dependence_set(t)``; the families wait on each other in a ring."""
    sets = dependence_sets("fft", width)
    families = min(sets, steps)
    tasks = []
    for s in range(families):
        d = 1 << dependence_set("fft", s, width)
        entry = {"id": f"u{s}", "foreach": {"t": {"range": [s, steps, sets]},
                                            "i": {"range": [width]}}}
        if (s - 1) % sets < families:
            before = f"u{(s - 1) % sets}"
            entry["deps"] = [f"{before}[{{t}}-1,{{i}}-{d}]", f"{before}[{{t}}-1,{{i}}]",
                             f"{before}[{{t}}-1,{{i}}+{d}]"]
        tasks.append(entry)
    return tasks


def dependence_sets(pattern: str, width: int) -> int:
    """How many dependence sets ``pattern`` cycles through (``fft``: log2 of the width)."""
    if pattern == "fft":
        return max(1, math.ceil(math.log2(width))) if width > 1 else 1
    return PERIOD if pattern in ("spread", "random_nearest") else 1
