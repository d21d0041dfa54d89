#!/usr/bin/env python
"""Wordcount's reducers alone: ``reduce_sorted`` of every partition over real map outputs.

    python bench/wordcount_reduce_bench.py --corpora /work/corpora --names prose,code \\
        [--reducers 16] [--repeat 3] [--maps-cache /tmp/wc-maps]

The map outputs of ``CORPUS-8MiB.h5`` (``map_split`` of every split, ``reducers`` parts
each) are made once, untimed, and kept in ``--maps-cache`` (the packed tables do not depend
on the reducer's code), then ``reduce_sorted(r)`` is run for every r over part r of every
map output, ``--repeat`` times; the best CPU and wall seconds of the whole set of reducers
are reported per corpus, with a digest of the run files (the same words, counts and order
for two trees give the same digest). Run under ``bench/ab.py`` to compare two trees.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "jobs"))
import _common as C  # noqa: E402
import mapreduce as mr  # noqa: E402
import wordcount  # noqa: E402


def map_outputs(h5: str, reducers: int, cache: str) -> list:
    """``map_split`` of every split of ``h5`` (lists of ``reducers`` packed tables)."""
    from mpitiny.io.splits import open_splits
    path = os.path.join(cache, f"{Path(h5).stem}-{reducers}.pkl")
    if os.path.exists(path):
        with open(path, "rb") as f:
            return pickle.load(f)
    maps = [[mr.part_bytes(p) for p in wordcount.map_split(h5, i, reducers)]
            for i in range(len(open_splits(h5)))]
    os.makedirs(cache, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        pickle.dump(maps, f)
    os.replace(tmp, path)
    return maps


def reduce_all(maps: list, reducers: int, work: str) -> tuple:
    """CPU and wall seconds of ``reduce_sorted`` for every r, and a digest of the run files."""
    os.environ["MPITINY_RUN_DIR"] = work
    digest = hashlib.blake2b(digest_size=16)
    cpu = wall = 0.0
    for r in range(reducers):
        parts = {f"map[{i}]": m[r] for i, m in enumerate(maps)}
        c0, w0 = time.process_time(), time.perf_counter()
        info = wordcount.reduce_sorted(work, parts, r, 8)
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        with open(info["file"], "rb") as f:
            digest.update(f.read())
    return cpu, wall, digest.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpora", required=True)
    ap.add_argument("--names", default="prose,code")
    ap.add_argument("--reducers", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--maps-cache", default=os.path.join(tempfile.gettempdir(), "wc-maps"))
    a = ap.parse_args()
    result: dict = {"benchmark": "wordcount_reduce", "machine": C.machine(),
                    "reducers": a.reducers, "corpora": {}}
    lines = []
    work = tempfile.mkdtemp(prefix="wc-reduce-")
    try:
        for name in [n for n in a.names.split(",") if n]:
            maps = map_outputs(os.path.join(a.corpora, f"{name}-8MiB.h5"), a.reducers,
                               a.maps_cache)
            got = [reduce_all(maps, a.reducers, work) for _ in range(a.repeat)]
            cpu, wall = min(g[0] for g in got), min(g[1] for g in got)
            result["corpora"][name] = {"reduce_cpu_s": C.rnd(cpu, 4),
                                       "reduce_wall_s": C.rnd(wall, 4), "digest": got[0][2],
                                       "load_average": os.getloadavg()[0]}
            lines.append(f"{name}: reducers cpu {cpu:.3f} s wall {wall:.3f} s "
                         f"digest {got[0][2]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    C.emit(result, "\n".join(lines))


if __name__ == "__main__":
    main()
