"""Distinct words, sorted by bytes, with no serial tail (jobs/distinct.json, docs/mapreduce.md).

Same tokenizer as wordcount (``bytes.split()``). Before, every map called
``state.put_if_absent(word)`` for each distinct word of its split (one one-sided MPI
operation per word) and one ``finish`` sorted all the words on one rank: fine for 43,000
words, not for millions. Now it is wordcount's pipeline (``sortedruns``) with the counts
dropped:

* ``map``: ``map_piece``, ``wordcount.map_split``'s kernel over piece ``piece`` of
  ``pieces`` (2) of a split (``splitpieces``: whole lines, the split read once per thread):
  the piece's distinct words, hash-partitioned into ``reducers`` (16) tables. With one map
  per 8 MiB split, a map of the generated corpus was 0.12 of the run; with 8 reducers, a
  reducer of the code and multilingual corpora (1.8 M distinct words) 0.09-0.10.
* ``reduce_sorted(output, inputs, r)``: the union of part ``r`` of every map output
  (``wordcount``'s ``KeyCounter``), its words ordered by bytes (``mapreduce.ranked_order``
  with every count 0: the order is then the words' bytes) and written as a sorted run of
  ``word\\n`` lines.
* ``plan``: splitters from the runs' samples, ``distinct.txt`` created at its final size under
  a temporary name.
* ``merge`` (M tasks): its key range of every run, merged, written in place with ``pwrite``.
* ``commit``: renames; its value counts the words.

The reducers hold disjoint words (the partition is a function of the word), so the runs'
rows are all different and the merged order is total: the same bytes for any R, M and
number of ranks.
"""
from __future__ import annotations

import os
import time

import numpy as np

import mapreduce as mr
import sortedruns
import splitpieces
import wordcount
from mpitiny import Parts

map_split = wordcount.map_split      # the counts it makes are not used; the words are


def map_piece(input: str, split: int, reducers: int = 1, piece: int = 0,
              pieces: int = 1) -> Parts:
    """``map_split`` of piece ``piece`` of ``pieces`` of split ``split`` (whole lines, so
    whole words: ``splitpieces``; the split read once per thread for all its pieces)."""
    buf, n = splitpieces.read_split(input, split)
    lo, hi = splitpieces.piece_bounds(buf[:n], piece, pieces)
    data = buf[lo:hi]
    tables = mr.count_tables(data, "hash", reducers)
    return Parts(mr.table_pieces(t, len(data) if k == 0 else 0, reducers)
                 for k, t in enumerate(tables))


def _without_counts(table: dict) -> dict:
    return {**table, "short_counts": np.zeros(len(table["short_counts"]), np.uint16),
            "counts": np.zeros(len(table["counts"]), np.uint16),
            "long_counts": np.zeros(len(table["long_counts"]), np.int64)}


def word_lines(words: np.ndarray, word_lens: np.ndarray, word_starts=None) -> tuple:
    """``word\\n`` per word (word i: ``words[word_starts[i]:][:word_lens[i]]``, uint8; None:
    end to end): ``(lines uint8, line_lens)``."""
    line_lens = word_lens + 1
    out = np.empty(int(line_lens.sum()), np.uint8)
    starts = np.cumsum(line_lens) - line_lens
    if word_starts is None:
        word_starts = np.cumsum(word_lens) - word_lens
    mr.copy_segments(out, starts, words, word_starts, word_lens)
    out[starts + word_lens] = 10
    return out, line_lens


def reduce_sorted(output: str, inputs: dict, r: int = 0, mergers: int = 2) -> dict:
    """Reducer ``r``: the words of part ``r`` of every map output, by bytes, as a sorted run."""
    table, nbytes, nparts = wordcount._reduce_table(inputs, r)
    blob, word_starts, word_lens, counts, lo, hi = mr.ranked_order(_without_counts(table))
    lines, line_lens = word_lines(blob, word_lens, word_starts)
    path = os.path.join(sortedruns.work_dir(output, "distinct-runs"), f"run-{r:05d}.bin")
    info = sortedruns.write_run(path, lines, line_lens, word_lens, counts, lo, hi)
    return {**sortedruns.run_value(info, 16 * max(1, mergers), 0),
            "reducer": r, "nbytes": nbytes, "nparts": nparts}


def plan(output: str, inputs: dict, mergers: int = 2) -> dict:
    """Splitters and ``distinct.txt`` at its final size under a temporary name."""
    runs = wordcount._runs(inputs)
    files = sortedruns.create_outputs(os.path.join(output, "distinct.txt"), None,
                                      sum(v["rows"] for v in runs),
                                      sum(v["line_bytes"] for v in runs), 0, "")
    return {**files, "splitters": [[c, w.hex()] for c, w in sortedruns.splitters(runs, mergers)],
            "words": sum(v["rows"] for v in runs), "bytes": sum(v["nbytes"] for v in runs)}


def merge(inputs: dict, m: int = 0) -> dict:
    """Merge ``m``: its range of every run into ``distinct.txt``, at its offset."""
    return sortedruns.merge_range(inputs["plan"], wordcount._runs(inputs), m)


def commit(output: str, inputs: dict) -> dict:
    """Rename ``distinct.txt`` into place; the number of words."""
    p = inputs["plan"]
    path = os.path.join(output, "distinct.txt")
    sortedruns.commit(p, path, None, wordcount._runs(inputs))
    return {"distinct": p["words"], "bytes": p["bytes"], "output": path, "finished": time.time()}
