"""Wordcount as MapReduce over an ingested HDF5 file (jobs/wordcount.json, docs/mapreduce.md).

A word is a maximal run of non-whitespace bytes (exactly ``bytes.split()``: whitespace is
b" \\t\\n\\r\\x0b\\x0c"), case-sensitive, raw bytes (no decoding).

* ``map_split(input, split, reducers)``: one split -> counts of its distinct words (the
  combiner: ``mapreduce.count_split``, the C kernel where it was built), hash-partitioned
  into ``reducers`` tables, each packed into one ``bytes``, returned as ``mpitiny.Parts``
  (reducer r, with ``"part": "{r}"``, reads only its own).
* ``reduce_sorted(output, inputs, r)``: sums table ``r`` of every input, ranks its words and
  writes them as a sorted run (``sortedruns``; the C kernel's ``reduce_run`` where it was
  built: one call from the packed tables to the run file).
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
import sortedruns
from mpitiny import Parts, with_batch
from mpitiny.io.commit import atomic_h5, atomic_output
from mpitiny.io.splits import open_splits


def _map_args(input: str, split: int, reducers: int = 1, kernel: str = "hash") -> tuple:
    return input, split, reducers, kernel


def map_splits(calls: list) -> list:
    """``map_split`` of a chunk's splits in one kernel call (its batch form): the splits are
    read end to end into one reused buffer, a newline after each (a split need not end in
    whitespace: the last split of a file without a final newline), and counted together. The
    chunk's counts are the first split's value, the others' are empty tables: a combiner over
    the chunk, so a word reaches the reducers once per chunk instead of once per split (in
    the benchmark corpus a 100 KiB split has 1,809 distinct words, 10 of them 7,919, 40 of
    them 17,420). Calls that differ in anything but the split run one by one."""
    wanted = [_map_args(*args, **kwargs) for args, kwargs in calls]
    input, _, reducers, kernel = wanted[0]
    if any(w[0] != input or w[2:] != (reducers, kernel) for w in wanted):
        return [map_split(*w) for w in wanted]
    splits = open_splits(input)
    need = sum(splits.span_bytes(w[1]) + 1 for w in wanted)
    global _batch_buffer
    if len(_batch_buffer) < need:
        _batch_buffer = np.empty(need, dtype=np.uint8)
    at = nbytes = 0
    for w in wanted:
        n = splits.read_into(w[1], _batch_buffer[at:])
        _batch_buffer[at + n] = 10
        at += n + 1
        nbytes += n
    tables = mr.count_tables(_batch_buffer[:at], kernel, reducers)
    first = Parts(mr.table_pieces(t, nbytes if k == 0 else 0, reducers)
                  for k, t in enumerate(tables))
    return [first] + [_empty_parts(reducers)] * (len(wanted) - 1)


_batch_buffer = np.empty(0, dtype=np.uint8)    # map_splits' input, reused (no fresh pages)


def _empty_parts(reducers: int) -> Parts:
    """The value of a split whose words another split of its chunk reports."""
    empty = _empty_tables.get(reducers)
    if empty is None:
        empty = _empty_tables[reducers] = mr.pack_table(mr.merge_tables([]), 0, reducers)
    return Parts([empty] * reducers)


_empty_tables: dict = {}


@with_batch(map_splits)
def map_split(input: str, split: int, reducers: int = 1, kernel: str = "hash") -> Parts:
    """Counts of the distinct words of split ``split`` of ``input``, in ``reducers`` parts
    (reducer r reads only part r: ``"part": "{r}"`` in wordcount.json)."""
    data = open_splits(input).read_array(split)    # takes the runtime's prefetch, no copy
    tables = mr.count_tables(data, kernel, reducers)
    return Parts(mr.table_pieces(t, len(data) if k == 0 else 0, reducers)
                 for k, t in enumerate(tables))


MERGE_ENTRIES = 1 << 16     # table entries added to the running sums at a time


def reduce_part(inputs: dict, r: int = 0) -> bytes:
    """``_reduce_table`` packed (``pack_table``): a reducer of the aggregation tree."""
    return mr.pack_table(*_reduce_table(inputs, r))


def _reduce_table(inputs: dict, r: int) -> tuple:
    """Sum of table ``r`` of every input (part ``r`` of the map outputs, or whole map outputs,
    or tree nodes' tables), added to one ``KeyCounter`` (views of the tables, summed by
    sorting) in batches of about ``MERGE_ENTRIES`` entries."""
    sums, batch, pending, nbytes, nparts = mr.KeyCounter(), [], 0, 0, set()
    for blob in inputs.values():
        part = mr.unpack_table(_part(blob, r))
        batch.append(part)
        pending += len(part["counts"])
        nbytes += part["nbytes"]
        nparts.add(part["nparts"])             # how many partitions the maps made
        if pending >= MERGE_ENTRIES:
            sums.add_tables(batch)
            batch, pending = [], 0
    return sums.add_tables(batch).table(), nbytes, max(nparts, default=1)


def reduce_sorted(output: str, inputs: dict, r: int = 0, mergers: int = 2, top: int = 10) -> dict:
    """Reducer ``r`` of wordcount.json: sums part ``r`` of every map output, ranks its words
    (count descending, then bytes: ``mapreduce.ranked_tsv``) and writes them as a sorted run
    (``sortedruns``); returns the run's description, top rows and samples. With the C kernel
    all of it but the run's value is one call (``_compiled_run``), else ``_numpy_run``: the
    same file, byte for byte (tests/test_wordcount_reduce_kernel.py)."""
    path = os.path.join(sortedruns.work_dir(output, "wordcount-runs"), f"run-{r:05d}.bin")
    if REDUCE_RUN is None:
        info, nbytes, nparts = _numpy_run(inputs, r, path)
    else:
        info, nbytes, nparts = _compiled_run(inputs, r, path)
    return {**sortedruns.run_value(info, 16 * max(1, mergers), top),
            "reducer": r, "nbytes": nbytes, "nparts": nparts}


def _numpy_run(inputs: dict, r: int, path: str) -> tuple:
    """``(write_run's info, input bytes, partitions)``: ``_reduce_table``, ``ranked_tsv``."""
    table, nbytes, nparts = _reduce_table(inputs, r)
    lines, line_lens, word_lens, counts, lo, hi = mr.ranked_tsv(table)
    return sortedruns.write_run(path, lines, line_lens, word_lens, counts, lo, hi), nbytes, nparts


REDUCE_RUN = getattr(mr.COMPILED, "reduce_run", None)     # the C reducer, or None: numpy's


def _part(blob, r: int) -> bytes:
    """Part ``r`` of a map output, as bytes: of the whole output (a list: no ``"part"``, an
    aggregation tree), or the part the runtime read."""
    return mr.part_bytes(blob[r] if isinstance(blob, list) else blob)


def _compiled_run(inputs: dict, r: int, path: str) -> tuple:
    """``_numpy_run`` by the kernel's ``reduce_run``: the tables summed in a hash table, the
    words ranked by radix sorts and the run file's content written from one reused buffer
    (the numpy form's sorts, ``longwords.merge`` and ``ranked_tsv`` took 60 % of a reducer
    on the code corpus)."""
    blobs = [_part(blob, r) for blob in inputs.values()]
    rows, line_bytes, word_bytes, nbytes, nparts, _ = sortedruns.write_file(
        path, lambda fd: REDUCE_RUN(blobs, fd))
    return ({"file": path, "rows": rows, "line_bytes": line_bytes, "word_bytes": word_bytes},
            nbytes, nparts)


def _runs(inputs: dict) -> list:
    runs = sorted((v for k, v in inputs.items() if k.startswith("reduce[")), key=lambda v: v["reducer"])
    for v in runs:
        if v["nparts"] != len(runs):
            raise ValueError(f"the maps made {v['nparts']} partitions but there are {len(runs)} "
                             "reducers")
    return runs


_H5_DESCRIPTION = "wordcount: word i is words[word_ends[i-1]:word_ends[i]]"


def plan(output: str, inputs: dict, mergers: int = 2, top: int = 10) -> dict:
    """The merge's splitters, the output files created at their size under temporary names,
    and the top words (from the reducers' top rows)."""
    runs = _runs(inputs)
    files = sortedruns.create_outputs(
        os.path.join(output, "wordcount.tsv"), os.path.join(output, "wordcount.h5"),
        sum(v["rows"] for v in runs), sum(v["line_bytes"] for v in runs),
        sum(v["word_bytes"] for v in runs), _H5_DESCRIPTION)
    return {**files, "splitters": [[c, w.hex()] for c, w in sortedruns.splitters(runs, mergers)],
            "top": [[w.hex(), c] for w, c in sortedruns.top_rows(runs, top)],
            "words": sum(v["rows"] for v in runs), "total": sum(v["total"] for v in runs),
            "bytes": sum(v["nbytes"] for v in runs)}


def merge(inputs: dict, m: int = 0) -> dict:
    """Merge ``m``: its range of every run into the output files, at their offsets."""
    return sortedruns.merge_range(inputs["plan"], _runs(inputs), m)


def commit(output: str, inputs: dict) -> dict:
    """Rename the merged outputs into place; the run's summary (top words, totals)."""
    p = inputs["plan"]
    tsv = os.path.join(output, "wordcount.tsv")
    sortedruns.commit(p, tsv, os.path.join(output, "wordcount.h5"), _runs(inputs))
    return {"words": p["words"], "total": p["total"], "bytes": p["bytes"],
            "top": [[bytes.fromhex(w).decode("utf-8", "backslashreplace"), c] for w, c in p["top"]],
            "output": tsv, "finished": time.time()}


def finish(output: str, inputs: dict, top: int = 10) -> dict:
    """Rank the reducers' (disjoint) tables (``ranked_rows``) and write the outputs."""
    tables = [mr.unpack_table(blob) for blob in inputs.values()]
    for t in tables:
        if t["nparts"] != len(inputs):
            raise ValueError(f"the maps made {t['nparts']} partitions but finish has "
                             f"{len(inputs)} inputs: an aggregation tree needs -p reducers=1")
    words, counts = mr.ranked_rows(tables)
    tsv = os.path.join(output, "wordcount.tsv")
    with atomic_output(tsv) as f:
        f.write(b"".join([b"%s\t%d\n" % wc for wc in zip(words, counts.tolist())]))
    h5 = os.path.join(output, "wordcount.h5")
    with atomic_h5(h5) as f:
        f["words"] = np.frombuffer(b"".join(words), np.uint8)    # word bytes end to end
        f["word_ends"] = np.cumsum(np.fromiter(map(len, words), np.int64, len(words)))
        f["counts"] = counts                                    # word i = words[ends[i-1]:ends[i]]
        f.attrs["description"] = _H5_DESCRIPTION
    return {"words": len(words), "total": int(counts.sum()), "bytes": sum(t["nbytes"] for t in tables),
            "top": [[w.decode("utf-8", "backslashreplace"), int(n)]
                    for w, n in zip(words[:top], counts[:top].tolist())],
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
