"""Task Bench's task graphs (Slaughter et al., SC'20): which points of timestep t-1 each point
of timestep t depends on, ported from StanfordLegion/task-bench ``core/core.cc``
(``TaskGraph::dependencies``, ``width_at_timestep``, ``dependence_set_at_timestep``) and the
Dask driver's ``task_graph_dependencies`` (dependencies clipped to the points that exist at
t-1). Defaults as in ``core.cc``: radix 3, period 3 (spread, random_nearest), fraction 0.25.
``random_nearest`` draws with SipHash-2-4 under the key 0x00..0x0f as ``core_random.c`` does.
Imported by ``taskbench.py`` and by its Dask driver (``_taskbench_dask.py``), so both run the
same graph. Pure Python, no dependency.
"""
from __future__ import annotations

import math
import struct

PATTERNS = ("trivial", "no_comm", "stencil_1d", "nearest", "spread", "fft", "tree",
            "all_to_all", "random_nearest")
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
        sets = max(1, math.ceil(math.log2(width))) if width > 1 else 1
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
