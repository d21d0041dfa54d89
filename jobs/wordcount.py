"""Wordcount as MapReduce over an ingested HDF5 file (jobs/wordcount.json, docs/mapreduce.md).

A word is a maximal run of non-whitespace bytes (exactly ``bytes.split()``: whitespace is
b" \\t\\n\\r\\x0b\\x0c"), case-sensitive, raw bytes (no decoding).

* ``map_split(input, split, reducers)``: one split -> counts of its distinct words (the
  combiner), hash-partitioned into ``reducers`` tables, each packed into one ``bytes``,
  returned as ``mpitiny.Parts`` (reducer r, with ``"part": "{r}"``, reads only its own).
* ``reduce_part(inputs, r)``: sums table ``r`` of every input; returns one packed table. With
  ``r = 0`` and inputs that each hold one table it is also a node of an aggregation tree.
* ``finish(output, inputs)``: the reducers' tables are disjoint: concatenate, sort by count
  descending then word bytes, write ``OUTPUT/wordcount.tsv`` and ``OUTPUT/wordcount.h5``.

``generate`` writes a deterministic Zipf-distributed corpus for the demo.
"""
from __future__ import annotations

import os
import time

import numpy as np

import mapreduce as mr
from mpitiny import Parts
from mpitiny.io.commit import atomic_h5, atomic_output
from mpitiny.io.h5data import open_splits


def map_split(input: str, split: int, reducers: int = 1, kernel: str = "hash") -> Parts:
    """Counts of the distinct words of split ``split`` of ``input``, in ``reducers`` parts
    (reducer r reads only part r: ``"part": "{r}"`` in wordcount.json)."""
    data = open_splits(input).read_array(split).tobytes()    # takes the runtime's prefetch
    tables = mr.split_table(*mr.count_split(data, kernel), reducers)
    return Parts(mr.pack_table(t, len(data) if k == 0 else 0, reducers)
                 for k, t in enumerate(tables))


MERGE_BATCH = 256          # tables added to the running sums at a time (arrays stay in cache)


def reduce_part(inputs: dict, r: int = 0) -> bytes:
    """Sum of table ``r`` of every input (part ``r`` of the map outputs, or whole map outputs,
    or tree nodes' tables), added ``MERGE_BATCH``
    tables at a time to one ``KeyCounter`` (a 100 KiB split's table has ~900 words per
    partition; 10,000 of them at once made arrays of tens of millions of entries)."""
    sums, batch, nbytes, nparts = mr.KeyCounter(), [], 0, set()
    for blob in inputs.values():
        if isinstance(blob, list):        # a whole map output (no "part": an aggregation tree)
            blob = blob[r]
        part = mr.unpack_table(blob)
        batch.append(part)
        nbytes += part["nbytes"]
        nparts.add(part["nparts"])             # how many partitions the maps made
        if len(batch) == MERGE_BATCH:
            sums.add_tables(batch)
            batch = []
    return mr.pack_table(sums.add_tables(batch).table(), nbytes, max(nparts, default=1))


def sorted_rows(words: list, counts) -> list:
    """``(word, count)`` by count descending, then word bytes."""
    return sorted(zip(words, np.asarray(counts).tolist()), key=lambda wc: (-wc[1], wc[0]))


def finish(output: str, inputs: dict, top: int = 10) -> dict:
    """Concatenate the reducers' (disjoint) tables and write the outputs."""
    words, counts, nbytes = [], [], 0
    for blob in inputs.values():
        t = mr.unpack_table(blob)
        w, c = mr.table_rows(t)
        words += w
        counts.append(c)
        nbytes += t["nbytes"]
        if t["nparts"] != len(inputs):
            raise ValueError(f"the maps made {t['nparts']} partitions but finish has "
                             f"{len(inputs)} inputs: an aggregation tree needs -p reducers=1")
    counts = np.concatenate(counts) if counts else np.empty(0, np.int64)
    rows = sorted_rows(words, counts)
    tsv = os.path.join(output, "wordcount.tsv")
    with atomic_output(tsv) as f:
        f.write(b"".join(b"%s\t%d\n" % (w, n) for w, n in rows))
    h5 = os.path.join(output, "wordcount.h5")
    with atomic_h5(h5) as f:
        blob = b"".join(w for w, _ in rows)
        ends = np.cumsum([len(w) for w, _ in rows], dtype=np.int64)
        f["words"] = np.frombuffer(blob, np.uint8)              # word bytes end to end
        f["word_ends"] = ends                                    # word i = words[ends[i-1]:ends[i]]
        f["counts"] = np.array([n for _, n in rows], np.int64)
        f.attrs["description"] = "wordcount: word i is words[word_ends[i-1]:word_ends[i]]"
    return {"words": len(rows), "total": int(counts.sum()), "bytes": nbytes,
            "top": [[w.decode("utf-8", "backslashreplace"), n] for w, n in rows[:top]],
            "output": tsv, "finished": time.time()}


def read_h5(path: str) -> list:
    """``[(word bytes, count), ...]`` of a wordcount.h5, in its order."""
    import h5py
    with h5py.File(path, "r") as f:
        blob, ends, counts = f["words"][()].tobytes(), f["word_ends"][()], f["counts"][()]
    starts = np.r_[0, ends[:-1]] if len(ends) else ends
    return [(blob[a:b], int(n)) for a, b, n in zip(starts.tolist(), ends.tolist(), counts)]


def generate(path: str, megabytes: float = 100, vocabulary: int = 50_000, seed: int = 1) -> None:
    """A corpus of ``megabytes`` MB: Zipf-distributed words, 4 to 16 words per line."""
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    words = [bytes(letters[rng.integers(0, 26, rng.integers(2, 10))]) for _ in range(vocabulary)]
    target = int(megabytes * 1e6)
    tmp = f"{path}.tmp{os.getpid()}"
    written = 0
    with open(tmp, "wb") as f:
        while written < target:
            ids = np.minimum(rng.zipf(1.3, 200_000), vocabulary) - 1
            per_line = rng.integers(4, 17, len(ids) // 4)
            bounds = np.cumsum(per_line)
            bounds = bounds[bounds < len(ids)]
            lines = [b" ".join(words[i] for i in ids[a:b]) for a, b in zip(np.r_[0, bounds[:-1]], bounds)]
            chunk = b"\n".join(lines) + b"\n"
            f.write(chunk)
            written += len(chunk)
    os.replace(tmp, path)
