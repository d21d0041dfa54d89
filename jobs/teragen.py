"""teragen: N TeraSort records of 100 bytes, deterministically (docs/sort.md).

    python jobs/teragen.py N OUT.bin [--seed S] [--distinct K]

Record layout (as Hadoop's GenSort / TeraGen):

    bytes  0-10  key: 10 random bytes
    bytes 10-12  0x00 0x11
    bytes 12-44  row id, 32 uppercase hex digits (ASCII)
    bytes 44-48  0x88 0x99 0xAA 0xBB
    bytes 48-96  filler: 8 runs of 6 copies of a letter, 'A' + (hex digit) of the row id's
                 last 8 hex digits
    bytes 96-100 0xCC 0xDD 0xEE 0xFF

Records are made in blocks of ``BLOCK`` rows; block b draws its keys from
``np.random.default_rng([seed, b])``, so the output depends only on N and the seed (and
``--distinct``: with K > 0 every key is one of K random keys, to test duplicate keys; K = 1
makes all keys equal).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

RECORD = 100
KEY = 10
BLOCK = 1 << 20


_TABLES = None


def _tables():
    """For every 16-bit value: its 4 uppercase hex digits, and 4 runs of 6 letters 'A' + digit."""
    global _TABLES
    if _TABLES is None:
        v = np.arange(1 << 16)
        digits = np.stack([(v >> s) & 15 for s in (12, 8, 4, 0)], axis=1)
        hex4 = np.frombuffer(b"0123456789ABCDEF", np.uint8)[digits]
        fill4 = np.repeat((ord("A") + digits).astype(np.uint8), 6, axis=1)
        _TABLES = (np.ascontiguousarray(hex4), np.ascontiguousarray(fill4))
    return _TABLES


def make_block(first: int, n: int, seed: int = 0, distinct: int = 0) -> np.ndarray:
    """Records ``first .. first + n - 1`` as an (n, 100) uint8 array (``first`` % BLOCK == 0
    unless n is the whole request: keys come from the block's own generator)."""
    rec = np.empty((n, RECORD), np.uint8)
    rng = np.random.default_rng([seed, first // BLOCK])
    if distinct > 0:
        pool = np.random.default_rng([seed, 1 << 40]).integers(0, 256, (distinct, KEY), np.uint8)
        rec[:, :KEY] = pool[rng.integers(0, distinct, n)]
    else:
        rec[:, :KEY] = rng.integers(0, 256, (n, KEY), np.uint8)
    rec[:, 10:12] = (0x00, 0x11)
    rows = np.arange(first, first + n, dtype=np.uint64)
    hex4, fill4 = _tables()
    rec[:, 12:28] = ord("0")                                 # the high 64 bits: always zero
    rec[:, 44:48] = (0x88, 0x99, 0xAA, 0xBB)
    for q in range(4):                                       # 16 bits (4 hex digits) at a time
        v = ((rows >> np.uint64(48 - 16 * q)) & np.uint64(0xFFFF)).astype(np.intp)
        rec[:, 28 + 4 * q:32 + 4 * q] = hex4[v]
        if q >= 2:
            rec[:, 48 + 24 * (q - 2):72 + 24 * (q - 2)] = fill4[v]
    rec[:, 96:100] = (0xCC, 0xDD, 0xEE, 0xFF)
    return rec


def teragen(n: int, out: str, seed: int = 0, distinct: int = 0) -> None:
    """Write ``n`` records to ``out`` (under a temporary name, then renamed)."""
    tmp = f"{out}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            for first in range(0, n, BLOCK):
                f.write(make_block(first, min(BLOCK, n - first), seed, distinct).data)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Write N 100-byte TeraSort records (10-byte keys).")
    p.add_argument("n", type=int, help="number of records")
    p.add_argument("out", help="output file (N * 100 bytes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--distinct", type=int, default=0,
                   help="draw keys from this many random keys (duplicates); 0 = all random")
    a = p.parse_args(argv)
    if a.n < 0 or a.distinct < 0:
        p.error("N and --distinct must be >= 0")
    t = time.perf_counter()
    teragen(a.n, a.out, a.seed, a.distinct)
    dt = time.perf_counter() - t
    print(f"teragen: {a.n:,} records ({a.n * RECORD:,} bytes) to {a.out} in {dt:.2f} s "
          f"({a.n * RECORD / max(dt, 1e-9) / 1e6:.0f} MB/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
