"""Wordcount map kernels on the splits of an ingested file, one process:
the hash kernel (the default), numpy (tokenize + hash + np.unique), keys, vs Counter(bytes.split()).

    python jobs/bench_kernel.py data/corpus-200MB-8MiB.h5 [--repeat 3]
Prints MB/s per kernel (median over repetitions, interleaved, of the whole pass over the
splits are read once into memory first, so no I/O is measured) and checks both are exact.
"""
import argparse
import json
import os
import statistics
import sys
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mapreduce as mr  # noqa: E402
from mpitiny.io.splits import open_splits  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("input")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--max-splits", type=int, default=0)
    a = ap.parse_args()
    s = open_splits(a.input)
    n = len(s) if not a.max_splits else min(a.max_splits, len(s))
    arrays = [s.read_array(i) for i in range(n)]
    blobs = [x.tobytes() for x in arrays]
    total = sum(map(len, blobs))
    kernels = {
        "counter: Counter(bytes.split())": lambda i: Counter(blobs[i].split()),
        "counter kernel of the job (+ keys of the distinct words)":
            lambda i: mr.count_split(blobs[i], "counter"),
        "hash kernel, the default (numpy hash table of exact 15-byte keys, bincount)":
            lambda i: mr.count_split(blobs[i], "hash"),
        "keys kernel (exact uint64 keys for <= 7 bytes, np.unique; Counter for longer)":
            lambda i: mr.count_words(arrays[i], "keys"),
        "numpy kernel (tokenize, 2x64-bit hashes, np.unique)":
            lambda i: mr.count_words(arrays[i], "numpy"),
    }
    for i in range(min(n, 2)):       # exactness on a few splits
        for k in ("numpy", "keys", "hash"):
            w, c = mr.count_words(arrays[i], k)
            assert dict(zip(w, c.tolist())) == Counter(blobs[i].split())
    out = {"input": a.input, "splits": n, "bytes": total, "repeat": a.repeat, "MB_per_s": {}}
    times = {name: [] for name in kernels}
    names = list(kernels)
    for rep in range(a.repeat):          # interleaved, rotating order: the machine is shared
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            t = time.perf_counter()
            for i in range(n):
                kernels[name](i)
            times[name].append(time.perf_counter() - t)
    for name in names:
        out["MB_per_s"][name] = round(total / statistics.median(times[name]) / 1e6, 1)
    base = statistics.median(times[names[0]])
    out["speed_vs_counter"] = {name: round(base / statistics.median(times[name]), 2)
                               for name in names}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
