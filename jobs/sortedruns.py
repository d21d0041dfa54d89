"""One sorted output file from R sorted runs, written by M tasks at once (no serial tail).

Before, wordcount's ``finish`` ranked every word of the corpus on one rank: 3.8 s, 43 % of a
run on 220 MB of package documentation (1.26 M distinct words), with the other rank idle. Now:

1. **Runs.** Each reducer sorts the rows it owns (its partition of the keys) and writes them
   to one run file (``write_run``) in ``$MPITINY_RUN_DIR/WORK`` (``OUTPUT/_work`` outside a
   run): the output lines end to end, and per row its line end, its word end and its count.
   It returns a small value (``run_value``): the file, its row and byte totals, its first
   ``top`` rows and ``samples`` rows at even quantiles. Wordcount's C reducer writes the
   same bytes itself (``write_file`` gives it the file: ``wordcount._compiled_run``).
2. **Plan** (one task, O(R x samples)): the M - 1 splitters at the quantiles of all the
   samples; the output files created at their final size under temporary names (``TSV``
   truncated to size, the HDF5 file with contiguous, early-allocated datasets whose byte
   offsets it returns); the top rows of the whole output, from the R runs' top rows (a
   reduction).
3. **Merge** (M tasks): merge ``m`` takes from every run the rows between splitters m - 1 and
   m (two binary searches per run on the run file, memory-mapped), merges them (the C
   kernel's ``merge_rows``: a heap of the runs' first rows, the lines and words copied in
   that order from the mapped runs in the same pass; else gathered, ordered by
   ``longwords.order_rows`` and copied by ``gather``), and writes its lines with
   ``os.pwrite`` at their offset in the output (the sum, over the runs, of the bytes of the
   rows before its first splitter), and its slices of the HDF5 datasets at their byte
   offsets, and starts their write-back to the disk (``posix_fadvise(DONTNEED)``, which does
   not wait).
4. **Commit** (one task, O(1)): ``fsync``s the temporary files (what the merges started is
   mostly written by then; one ``fsync`` per merge and file took 15 % of the merges on the
   real corpora), then renames them to their names: an output name only ever names a
   complete file on the disk.

A row's key is ``(-count, word bytes)``; the runs hold disjoint words, so the order is total
and the output is the same bytes for any R and M.
"""
from __future__ import annotations

import bisect
import os
import uuid

import numpy as np

import longwords as lw
from longwords import gather, order_rows

_HEAD = np.dtype("<i8")


def work_dir(output: str, name: str) -> str:
    run = os.environ.get("MPITINY_RUN_DIR")
    return os.path.join(run, name) if run else os.path.join(output, "_work", name)


def write_run(path: str, lines: np.ndarray, line_lens: np.ndarray, word_lens: np.ndarray,
              counts: np.ndarray, lo=None, hi=None) -> dict:
    """Write sorted rows as a run file: the row count, per row its line end, word end and
    count (int64), then the rows' lines end to end (``lines``, each beginning with its word);
    ``{"file", "rows", "line_bytes", "word_bytes"}``. The rows' sort keys (``lo``, ``hi``)
    are not stored: the merges make them from the words (``_prefix_keys``; two more columns
    were 40 % of the bytes a reducer wrote)."""
    n = len(counts)
    line_ends, word_ends = np.cumsum(line_lens), np.cumsum(word_lens)

    def write(fd: int) -> None:
        with open(fd, "wb", closefd=False) as f:
            f.write(np.array([n], _HEAD).tobytes())
            for a in (line_ends, word_ends, counts):
                f.write(memoryview(np.ascontiguousarray(a, _HEAD)).cast("B"))
            f.write(memoryview(np.ascontiguousarray(lines)))
    write_file(path, write)
    return {"file": path, "rows": n, "line_bytes": int(line_ends[-1]) if n else 0,
            "word_bytes": int(word_ends[-1]) if n else 0}


def write_file(path: str, write):
    """``write(fd)`` on a new temporary file next to ``path``, then renamed to ``path`` (its
    directory made if need be); returns what ``write`` returns."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        value = write(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return value


class Run:
    """A run file, memory-mapped: ``line_ends``, ``word_ends``, ``counts``, ``lines``."""

    def __init__(self, path: str) -> None:
        n = int(np.fromfile(path, _HEAD, 1)[0])
        mm = np.memmap(path, np.uint8, "r")
        self.rows = n
        cols = [mm[8 + 8 * n * k:8 + 8 * n * (k + 1)].view(_HEAD) for k in range(3)]
        self.line_ends, self.word_ends, self.counts = cols
        self.lines = mm[8 + 24 * n:]

    def line_start(self, i: int) -> int:
        return int(self.line_ends[i - 1]) if i > 0 else 0

    def word_start(self, i: int) -> int:
        return int(self.word_ends[i - 1]) if i > 0 else 0

    def word(self, i: int) -> bytes:
        a = self.line_start(i)
        return self.lines[a:a + int(self.word_ends[i]) - self.word_start(i)].tobytes()

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, i: int) -> tuple:      # for bisect: the sorted keys
        return (-int(self.counts[i]), self.word(i))

    def position(self, key) -> int:
        """The first row whose key is not below ``key`` (None: the end)."""
        return self.rows if key is None else bisect.bisect_left(self, key)


def run_value(info: dict, samples: int, top: int) -> dict:
    """The reducer's value: ``info`` (``write_run``), its first ``top`` rows and ``samples``
    keys at even quantiles (words as hex: the value is JSON)."""
    run = Run(info["file"])
    n = len(run)
    at = sorted({(k * n) // samples for k in range(1, samples)} - {0}) if n else []
    return {**info, "top": [[int(run.counts[i]), run.word(i).hex()] for i in range(min(top, n))],
            "samples": [[int(run.counts[i]), run.word(i).hex()] for i in at],
            "total": int(run.counts.sum())}


def splitters(runs: list, m: int) -> list:
    """``m - 1`` keys ``[-count, word bytes]`` cutting the runs' samples into m even parts."""
    keys = sorted((-c, bytes.fromhex(w)) for r in runs for c, w in r["samples"])
    if not keys or m <= 1:
        return []
    return [keys[(k * len(keys)) // m] for k in range(1, m)]


def top_rows(runs: list, top: int) -> list:
    """The first ``top`` rows of the whole output, ``[(word, count)]``, from each run's."""
    rows = sorted((-c, bytes.fromhex(w)) for r in runs for c, w in r["top"])[:top]
    return [(w, -c) for c, w in rows]


def create_outputs(tsv: str, h5: str | None, rows: int, line_bytes: int, word_bytes: int,
                   description: str) -> dict:
    """The output files at their final size under temporary names: ``{"tsv", "h5",
    "offsets"}`` (byte offsets of the HDF5 datasets ``words``, ``word_ends``, ``counts``);
    ``h5`` None: the text file only."""
    import h5py
    tmp_tsv = temporary_name(tsv)
    os.makedirs(os.path.dirname(os.path.abspath(tsv)), exist_ok=True)
    with open(tmp_tsv, "wb") as f:
        f.truncate(line_bytes)
    if h5 is None:
        return {"tsv": tmp_tsv, "h5": None, "offsets": {}}
    tmp_h5 = temporary_name(h5)
    with h5py.File(tmp_h5, "w") as f:
        offsets = contiguous_datasets(f, [("words", np.uint8, word_bytes),
                                          ("word_ends", np.int64, rows), ("counts", np.int64, rows)])
        f.attrs["description"] = description
    return {"tsv": tmp_tsv, "h5": tmp_h5, "offsets": offsets}


def temporary_name(path: str) -> str:
    """A hidden name next to ``path``, unique to this process and call."""
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{tag}")


def contiguous_datasets(f, specs: list) -> dict:
    """Create 1-d datasets ``(name, dtype, length)`` in the open h5py file ``f``, contiguous
    and allocated now (no fill), so that other processes can ``pwrite`` them at the byte
    offsets returned (``{name: offset}``; None for an empty dataset, which has no storage)."""
    from h5py import h5d, h5p, h5s, h5t
    offsets = {}
    for name, dtype, n in specs:
        dcpl = h5p.create(h5p.DATASET_CREATE)
        dcpl.set_layout(h5d.CONTIGUOUS)
        dcpl.set_alloc_time(h5d.ALLOC_TIME_EARLY)
        dcpl.set_fill_time(h5d.FILL_TIME_NEVER)
        dcpl.set_obj_track_times(False)        # the same bytes as a resumed run's output
        ds = h5d.create(f.id, name.encode(), h5t.py_create(np.dtype(dtype)),
                        h5s.create_simple((n,)), dcpl=dcpl)
        offsets[name] = ds.get_offset()
    return offsets


def merge_range(plan: dict, runs: list, m: int) -> dict:
    """Merge ``m``'s rows of every run into the output files (see the module docstring)."""
    cuts = [None] + [(k[0], bytes.fromhex(k[1])) for k in plan["splitters"]] + [None]
    if m + 1 >= len(cuts):                      # no splitters (no rows): merge 0 has all
        return {"merge": m, "rows": 0, "first_row": 0}
    lower, upper = cuts[m], cuts[m + 1]
    at = {"rows": 0, "lines": 0, "words": 0}
    parts = []
    for info in runs:
        run = Run(info["file"])
        a = 0 if lower is None else run.position(lower)
        b = run.position(upper)
        at["rows"] += a
        at["lines"] += run.line_start(a)
        at["words"] += run.word_start(a)
        if b > a:
            parts.append((run, a, b))
    if not parts:
        return {"merge": m, "rows": 0, "first_row": at["rows"]}
    rows = _numpy_rows(parts) if MERGE_ROWS is None else _compiled_rows(parts)
    _write_rows(plan, at, *rows)
    return {"merge": m, "rows": len(rows[3]), "first_row": at["rows"]}


MERGE_ROWS = getattr(lw._C, "merge_rows", None)     # the C merge, or None: numpy's


def _compiled_rows(parts: list) -> tuple:
    """``_numpy_rows`` by the kernel's ``merge_rows``: the runs' rows merged through a heap
    of their first rows, and copied in that order, in one pass over the memory-mapped runs
    (the concatenations, the merge order and the two gathers took most of a merge)."""
    lines, words, word_ends, counts = MERGE_ROWS([
        (run.counts[a:b], run.line_ends[a:b], run.word_ends[a:b],
         run.lines[run.line_start(a):run.line_start(b)], run.line_start(a), run.word_start(a))
        for run, a, b in parts])
    return (np.frombuffer(lines, np.uint8), np.frombuffer(words, np.uint8),
            np.frombuffer(word_ends, np.int64), np.frombuffer(counts, np.int64))


def _numpy_rows(parts: list) -> tuple:
    """Rows ``a:b`` of each ``(run, a, b)`` in merged order: ``(lines, words end to end,
    word ends from 0, counts)``."""
    cols: dict = {k: [] for k in ("counts", "line_lens", "word_lens", "text")}
    for run, a, b in parts:
        cols["counts"].append(run.counts[a:b])
        cols["line_lens"].append(np.diff(run.line_ends[a:b], prepend=run.line_start(a)))
        cols["word_lens"].append(np.diff(run.word_ends[a:b], prepend=run.word_start(a)))
        cols["text"].append(run.lines[run.line_start(a):run.line_start(b)])
    c = {k: np.concatenate(v) for k, v in cols.items()}
    starts = np.cumsum(c["line_lens"]) - c["line_lens"]
    c["lo"], c["hi"] = _prefix_keys(c["text"], starts, c["word_lens"])
    order = _merged_order(c, starts)
    return (gather(c["text"], starts.take(order), c["line_lens"].take(order)),
            gather(c["text"], starts.take(order), c["word_lens"].take(order)),
            np.cumsum(c["word_lens"].take(order)), c["counts"].take(order))


_FIRST = np.array([(1 << (8 * k)) - 1 for k in range(9)], np.uint64)    # the first k bytes


def _prefix_keys(text: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> tuple:
    """The sort keys ``(lo, hi)`` of the words ``text[starts[i]:][:lens[i]]``: their first 15
    bytes, zero-padded, then ``min(len, 15)``, as two big-endian uint64 (``mapreduce``'s keys
    byte-swapped: unsigned order is byte order, ties only between words sharing 15 bytes)."""
    _, at8 = lw.padded(text)
    lo = at8[starts] & _FIRST.take(np.minimum(lens, 8))
    hi = at8[starts + 8] & _FIRST.take(np.clip(lens - 8, 0, 7))
    hi |= np.minimum(lens, 15).astype(np.uint64) << np.uint64(56)
    return lo.byteswap(), hi.byteswap()


def _merged_order(c: dict, starts: np.ndarray) -> np.ndarray:
    """The order of the gathered rows by ``(-count, word bytes)`` (``longwords.order_rows``:
    one ``np.lexsort`` on ``(-count, lo, hi)``, then the rows whose three keys tie, long words
    sharing their first 15 bytes from different runs, by their bytes)."""
    return order_rows(c["counts"], c["lo"], c["hi"], lambda rows: (
        gather(c["text"], starts.take(rows), c["word_lens"].take(rows)), c["word_lens"].take(rows)),
        (c["text"], starts, c["word_lens"]))


def _write_rows(plan: dict, at: dict, lines: np.ndarray, words: np.ndarray,
                word_ends: np.ndarray, counts: np.ndarray) -> None:
    """Write merged rows at their offsets (``at``: the rows, line and word bytes before them;
    ``word_ends`` counted from the merge's first word)."""
    off = plan["offsets"]
    _write_at(plan["tsv"], [(lines, at["lines"])])
    if plan["h5"] is None:
        return
    _write_at(plan["h5"], [(words, off["words"] + at["words"]),
                           ((at["words"] + word_ends).astype("<i8", copy=False),
                            off["word_ends"] + 8 * at["rows"]),
                           (counts.astype("<i8", copy=False), off["counts"] + 8 * at["rows"])])


def _write_at(path: str, pieces: list) -> None:
    """``pwrite`` each ``(array, offset)`` into ``path`` and start writing them to the disk
    (``posix_fadvise(DONTNEED)`` starts the write-back of the dirty pages without waiting for
    it), so that the ``fsync`` of ``commit`` finds little left to write."""
    fd = os.open(path, os.O_WRONLY)
    try:
        for data, offset in pieces:
            data = memoryview(np.ascontiguousarray(data)).cast("B")
            os.pwrite(fd, data, offset)
            if hasattr(os, "posix_fadvise") and len(data):
                os.posix_fadvise(fd, offset, len(data), os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(plan: dict, tsv: str, h5: str | None, runs: list) -> None:
    """``fsync`` the merged temporary files (the merges' writes and the HDF5 file's header:
    the contents are on the disk before the names appear), rename them to ``tsv`` and
    ``h5``; remove the run files."""
    _fsync(plan["tsv"])
    if plan["h5"] is not None:
        _fsync(plan["h5"])
    os.replace(plan["tsv"], tsv)
    if plan["h5"] is not None:
        os.replace(plan["h5"], h5)
    for info in runs:
        try:
            os.remove(info["file"])
        except FileNotFoundError:
            pass
