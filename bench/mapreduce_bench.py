#!/usr/bin/env python
"""MapReduce throughput (MB/s) of wordcount, grep and sort at several partition (chunk) sizes
(Albatross Fig. 13/15/17): mpitiny (jobs/wordcount.json, jobs/grep.json, jobs/sort.json over an
HDF5 file made by ``mpitiny ingest --chunk SIZE``, N ranks) beside Dask bag (N worker
processes, the same partition size) and the single-process Python baseline, on the same bytes
in the same run.

* mpitiny: ``mpiexec -n N python -m mpitiny run jobs/JOB.json --param input=DATA.h5 ...``;
  time = wall of that whole command (ingest excluded; ingest is timed once per chunk size and
  reported apart), and first task start -> last task end from ``summary.json`` (both reported);
  each run's ``time_split`` says where its time went (busy seconds per family, the time
  between a rank's consecutive tasks: the figures of ``mpitiny report``).
  Wordcount is also run as its aggregation-tree variant (``--tree-fanin F``, 0 = off): the
  dag.json that ``jobs/mapreduce.py tree`` writes for the ingested file (R = 1, reduce tasks
  replaced by tree nodes of fan-in F that start as soon as their F maps are done), reported
  as a separate mpitiny row ("mpitiny tree"), never in place of the plain job.
  ``--unbatched-sizes`` adds the row "mpitiny --no-batch": the same job with its map function
  called once per split instead of once per claimed chunk (``mpitiny.with_batch``; wordcount
  and sort have batch forms, grep has none).
* Dask bag: ``dask.bag.read_text(corpus, blocksize=SIZE)``; wordcount =
  ``.str.split().flatten().frequencies()`` (the idiomatic form), grep =
  ``.filter(rx.search).count()``; the processes scheduler on a ``ProcessPoolExecutor(N)`` that
  is started and warmed up before the clock starts; one fresh Python process per measurement
  (bounded by ``--dask-timeout``).
* Baseline: one process, the corpus read in ``--baseline-block`` blocks cut on line
  boundaries; wordcount = ``Counter.update(block.split())``, grep = ``rx.search`` per line.

Sort (TeraSort, 100-byte records with 10-byte keys): the input is ``jobs/teragen.py``'s
records (``--megabytes`` MB, seed 0) in one raw file, ingested with ``--format records:100``.

* mpitiny: ``jobs/sort.json`` (sample -> maps -> R reduces -> teravalidate), ``--sort-partitions``
  R (default 24, the job's); time = the whole command, which includes its own validation;
  each rank's peak RSS and the longest task (``longest_task``) are measured
  (``bench/_rss_wrap.py``).
* Baselines: one process, numpy: read the whole file, order the records stably by key (bytes
  0-8 as big-endian u64, bytes 8-10 as u16), write them in that order. The strongest uses the
  job's own ordering (``sort.sort_order``, ``longwords.prefix_order``: 3-4x faster than
  ``np.lexsort``; ``*_vs_baseline``); the one a user writes with numpy alone is ``np.lexsort``
  (``*_vs_lexsort_baseline``). GNU sort has no fixed-length records without newlines
  (the keys are random bytes, newlines included), so no GNU baseline here; for the line sort
  of the real corpora see ``--corpora`` (``bench/corpora_bench.py``).
* Dask bag has no sort. The peer reads the raw file into partitions of SIZE bytes (lists of
  100-byte ``bytes`` records, ``db.from_delayed``), takes the splitters as mpitiny's sample
  task does (100,000 keys from at most 16 partitions spread over the file, the R-1 quantiles),
  then range-partitions with ``bag.groupby(partition of the key, npartitions=R)`` and, per
  group, ``sorted(records, key=first 10 bytes)`` written to ``part-P.bin``. This is TeraSort
  in Dask's own vocabulary: ``groupby`` is Dask bag's shuffle and keeps both workers busy; the
  shorter ``repartition(1).map_partitions(sorted)`` was not chosen because it sorts everything
  in one task on one worker (a single-process sort with extra serialization).
* Check: the concatenated part files of mpitiny and of Dask must be byte-identical to the
  baseline's output (a BLAKE2b digest of each, computed outside the timed region; teragen keys
  are random 10-byte strings, so all three orders agree), and mpitiny's ``validate.json`` must
  say ok.

Every wordcount output (mpitiny's ``OUT/wordcount.tsv``, Dask's frequencies) is compared with
the baseline's Counter; every grep match count with the baseline's. Repetitions are
interleaved (sizes and systems in rotated order); figures are medians. Prints one JSON object
on stdout, a summary on stderr; writes PNG plots to ``--plots DIR`` (default bench/results).
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

JOBS_DIR = C.REPO_ROOT / "jobs"
DEFAULT_SIZES = "100KiB,1MiB,8MiB,32MiB,100MiB"
GREP_PATTERN = r"\bqu[a-z]*e\b"          # a word starting with "qu" and ending with "e"
_UNITS = {"": 1, "B": 1, "K": 1024, "KIB": 1024, "M": 1 << 20, "MIB": 1 << 20,
          "G": 1 << 30, "GIB": 1 << 30, "KB": 1000, "MB": 10**6, "GB": 10**9}


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in _UNITS:
        raise argparse.ArgumentTypeError(f"bad size {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def size_label(n: int) -> str:
    for unit, k in (("MiB", 1 << 20), ("KiB", 1024)):
        if n >= k and n % k == 0:
            return f"{n // k}{unit}"
    return f"{n}B"


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# ------------------------------------------------------------------ corpus
def make_corpus(path: str, megabytes: float) -> dict:
    """jobs/wordcount.py's ``generate`` if it exists, else an equivalent generator here."""
    t0 = time.perf_counter()
    sys.path.insert(0, str(JOBS_DIR))
    try:
        import wordcount  # noqa: F401
        gen, how = wordcount.generate, "jobs/wordcount.py:generate(seed=1, vocabulary=50000)"
    except (ImportError, AttributeError):
        gen, how = _generate, "bench/mapreduce_bench.py:_generate(seed=1)"
    gen(path, megabytes)
    return {"generator": how, "seconds": time.perf_counter() - t0}


def _generate(path: str, megabytes: float, vocabulary: int = 50_000, seed: int = 1) -> None:
    import numpy as np
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    words = [bytes(letters[rng.integers(0, 26, rng.integers(2, 10))]) for _ in range(vocabulary)]
    target, written, tmp = int(megabytes * 1e6), 0, f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        while written < target:
            ids = np.minimum(rng.zipf(1.3, 200_000), vocabulary) - 1
            bounds = np.cumsum(rng.integers(4, 17, len(ids) // 4))
            bounds = bounds[bounds < len(ids)]
            chunk = b"\n".join(b" ".join(words[i] for i in ids[a:b])
                               for a, b in zip([0, *bounds[:-1]], bounds)) + b"\n"
            f.write(chunk)
            written += len(chunk)
    os.replace(tmp, path)


# ------------------------------------------------------------------ baseline (this process)
def line_blocks(path: str, block: int):
    with open(path, "rb") as f:
        rest = b""
        while True:
            buf = f.read(block)
            if not buf:
                if rest:
                    yield rest
                return
            buf = rest + buf
            cut = buf.rfind(b"\n") + 1
            if cut == 0:
                rest = buf
                continue
            rest = buf[cut:]
            yield buf[:cut]


def baseline_wordcount(path: str, block: int):
    t0 = time.perf_counter()
    c = Counter()
    for b in line_blocks(path, block):
        c.update(b.split())
    return time.perf_counter() - t0, c


def baseline_grep(path: str, block: int, pattern: str):
    search = re.compile(pattern.encode()).search
    t0 = time.perf_counter()
    n = 0
    for b in line_blocks(path, block):
        for line in b.split(b"\n"):
            if search(line):
                n += 1
    return time.perf_counter() - t0, n


RECORD, KEY = 100, 10


def make_records(path: str, megabytes: float) -> dict:
    """jobs/teragen.py: ``megabytes`` MB of 100-byte records (seed 0) in one raw file."""
    n = int(megabytes * 1e6) // RECORD
    t0 = time.perf_counter()
    p = subprocess.run([C.PYTHON, str(JOBS_DIR / "teragen.py"), str(n), path, "--seed", "0"],
                       capture_output=True, text=True, env=C.bench_env())
    if p.returncode != 0:
        raise C.RunFailed(f"teragen failed: {p.stderr[-2000:]}")
    return {"generator": f"jobs/teragen.py {n} OUT --seed 0", "records": n,
            "seconds": time.perf_counter() - t0}


def digest(paths, block: int = 16 << 20) -> str:
    """BLAKE2b of the files end to end."""
    h = hashlib.blake2b(digest_size=16)
    for name in paths:
        with open(name, "rb") as f:
            while True:
                b = f.read(block)
                if not b:
                    break
                h.update(b)
    return h.hexdigest()


def part_files(out_dir: str) -> list:
    return sorted(glob.glob(os.path.join(out_dir, "part-*.bin")))


def baseline_sort(path: str, out: str):
    """One process, numpy: read all, stable sort by the 10-byte key (the job's own
    ``sort.sort_order``, 3-4x faster than ``np.lexsort``), write."""
    import numpy as np
    sys.path.insert(0, str(JOBS_DIR))
    import sort
    t0 = time.perf_counter()
    recs = np.fromfile(path, np.uint8).reshape(-1, RECORD)
    order = sort.sort_order(recs)
    with open(out, "wb") as f:
        for a in range(0, len(order), 1 << 18):
            f.write(recs[order[a:a + (1 << 18)]].data)
    return time.perf_counter() - t0, len(recs)


def baseline_sort_lexsort(path: str, out: str):
    """One process, numpy as a user would write it without the project's code: ``np.lexsort``
    on the keys (bytes 0-8 as big-endian u64, bytes 8-10 as u16; stable), write."""
    import numpy as np
    t0 = time.perf_counter()
    recs = np.fromfile(path, np.uint8).reshape(-1, RECORD)
    first = np.ascontiguousarray(recs[:, 0:8]).view(">u8").ravel()
    rest = np.ascontiguousarray(recs[:, 8:10]).view(">u2").ravel()
    order = np.lexsort((rest, first))
    with open(out, "wb") as f:
        for a in range(0, len(order), 1 << 18):
            f.write(recs[order[a:a + (1 << 18)]].data)
    return time.perf_counter() - t0, len(recs)


# ------------------------------------------------------------------ GNU tools (one process)
GNU_SORT_MEMORY = "4G"        # sort -S: the whole input in memory, no temporary files


def gnu_sort_lines(path: str, out: str) -> tuple:
    """``LC_ALL=C sort --parallel=1 -S 4G PATH -o OUT``: one thread, all in memory; the line
    order of jobs/linesort.json (bytes, as memcmp). ``(seconds, digest of OUT)``; the digest is
    taken after the clock stops."""
    t0 = time.perf_counter()
    subprocess.run(["sort", "--parallel=1", "-S", GNU_SORT_MEMORY, path, "-o", out],
                   check=True, env=dict(C.bench_env(), LC_ALL="C"))
    return time.perf_counter() - t0, digest([out])


def gnu_distinct_words(path: str, out: str) -> tuple:
    """``tr -s '[:space:]' '\\n' < PATH | sort -u --parallel=1 | sed '/^$/d' > OUT`` with
    ``LC_ALL=C`` (``[:space:]`` is then ``bytes.split()``'s whitespace): jobs/distinct.json's
    output. A pipeline of three processes, one busy at a time for most of it.
    ``(seconds, digest of OUT)``."""
    t0 = time.perf_counter()
    with open(path, "rb") as src, open(out, "wb") as dst:
        subprocess.run(f"tr -s '[:space:]' '\\n' | sort -u --parallel=1 -S {GNU_SORT_MEMORY} "
                       "| sed '/^$/d'", shell=True, stdin=src, stdout=dst, check=True,
                       env=dict(C.bench_env(), LC_ALL="C"))
    return time.perf_counter() - t0, digest([out])


def gnu_grep_lines(path: str, pattern: str, out: str) -> tuple:
    """``LC_ALL=C grep -a -E -b PATTERN PATH > OUT``: the matching lines with their byte offsets
    (what grep.tsv holds, for a corpus of one file). The pattern is a Python regex given to
    GNU grep as an ERE: the same language for the bench's patterns (``\\b``, groups,
    alternation, classes; ``LC_ALL=C``: bytes, ASCII word characters, as Python's ``re`` on
    bytes), not for every pattern, so the match count is returned for checking.
    ``(seconds, matches)``."""
    t0 = time.perf_counter()
    with open(out, "wb") as dst:
        p = subprocess.run(["grep", "-a", "-E", "-b", "--", pattern, path], stdout=dst,
                           env=dict(C.bench_env(), LC_ALL="C"))
    secs = time.perf_counter() - t0
    if p.returncode not in (0, 1):
        raise C.RunFailed(f"grep -E failed ({p.returncode}) on {pattern!r}")
    with open(out, "rb") as f:
        matches = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 24), b""))
    return secs, matches


# ------------------------------------------------------------------ Dask peer (own process)
def dask_peer(args) -> None:
    import concurrent.futures
    import multiprocessing
    import dask
    import dask.bag as db
    t_start = time.perf_counter()
    pool = concurrent.futures.ProcessPoolExecutor(args.workers,
                                                  mp_context=multiprocessing.get_context("fork"))
    with dask.config.set(scheduler="processes", pool=pool, num_workers=args.workers):
        db.from_sequence(range(4 * args.workers), npartitions=2 * args.workers).map(
            lambda x: x + 1).sum().compute()                      # warm up the workers
        t0 = time.perf_counter()
        if args.job == "sort":
            result = dask_sort(args, db, dask)
            elapsed = time.perf_counter() - t0
            bag = result.pop("bag")
        else:
            bag = db.read_text(args.corpus, blocksize=args.blocksize, errors="surrogateescape")
        if args.job == "sort":
            pass
        elif args.job == "wordcount":
            out = bag.str.split().flatten().frequencies().compute()
            elapsed = time.perf_counter() - t0
            counts = dict(out)
            result = {"distinct": len(counts), "total": sum(counts.values())}
            if args.dump:
                with open(args.dump, "w", encoding="utf-8") as f:
                    json.dump(counts, f)
        else:
            rx = re.compile(args.pattern)          # on the lines as str (surrogateescape)
            result = {"matches": bag.filter(rx.search).count().compute()}
            elapsed = time.perf_counter() - t0
        result["npartitions"] = bag.npartitions
    pool.shutdown()
    result.update(seconds=elapsed, setup_seconds=t0 - t_start, dask=dask.__version__)
    print(json.dumps(result), flush=True)


def _read_records(path: str, off: int, size: int) -> list:
    with open(path, "rb") as f:
        f.seek(off)
        b = f.read(size)
    return [b[i:i + RECORD] for i in range(0, len(b), RECORD)]


def _write_group(kv, out_dir: str) -> tuple:
    p, recs = kv
    recs = sorted(recs, key=lambda r: r[:KEY])              # stable, by the 10-byte key
    with open(os.path.join(out_dir, f"part-{p:05d}.bin"), "wb") as f:
        f.write(b"".join(recs))
    return p, len(recs)


def dask_sort(args, db, dask) -> dict:
    """TeraSort in Dask bag: partitions of records, sampled splitters, groupby, sorted()."""
    import bisect
    import random
    size = os.path.getsize(args.corpus)
    per = max(1, args.blocksize // RECORD) * RECORD
    offs = list(range(0, size, per))
    bag = db.from_delayed([dask.delayed(_read_records)(args.corpus, o, per) for o in offs])
    picks = sorted({(i * len(offs)) // min(len(offs), 16) for i in range(min(len(offs), 16))})
    each = -(-100_000 // len(picks))
    rng = random.Random(0)
    keys = []
    for o in picks:                                          # the sample, in the driver
        recs = _read_records(args.corpus, offs[o], per)
        keys += [r[:KEY] for r in rng.sample(recs, min(each, len(recs)))]
    keys.sort()
    R = args.partitions
    splitters = [keys[(i * len(keys)) // R] for i in range(1, R)]
    os.makedirs(args.dump, exist_ok=True)
    out = (bag.groupby(lambda r: bisect.bisect_right(splitters, r[:KEY]), npartitions=R)
           .map(_write_group, args.dump).compute())
    return {"records": sum(n for _, n in out), "groups": len(out), "bag": bag}


def run_dask(job, corpus, blocksize, workers, pattern, timeout, dump=None,
             partitions: int = 8, python: str | None = None) -> dict:
    argv = [python or C.PYTHON, __file__, "--dask-peer", job, "--corpus", corpus, "--blocksize",
            str(blocksize), "--workers", str(workers), "--pattern", pattern,
            "--partitions", str(partitions)]
    if dump:
        argv += ["--dump", dump]
    return run_peer(argv, timeout)


def run_peer(argv: list, timeout: float) -> dict:
    """Run a peer process (its own session) and read the JSON of its last stdout line. On
    timeout, the peer's whole process group is killed: ``subprocess.run(timeout=...)`` kills
    only the peer itself, and a Dask peer's forked workers were left running (orphans, still
    holding the CPU the next measurement needs)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=C.bench_env(), start_new_session=True, stdin=subprocess.DEVNULL)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException as exc:
        _kill_group(proc)
        if isinstance(exc, subprocess.TimeoutExpired):
            return {"error": f"timed out after {timeout} s", "timed_out_after": timeout}
        raise
    _kill_group(proc)               # workers that outlive a peer that exited are stray too
    whole = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {err[-2000:]}"}
    result = json.loads(out.strip().splitlines()[-1])
    result["process_wall"] = whole
    return result


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        pass


# ------------------------------------------------------------------ mpitiny
def ingest(corpus: str, h5: str, chunk: int, fmt: str | None = None) -> dict:
    t0 = time.perf_counter()
    p = subprocess.run([C.PYTHON, "-m", "mpitiny", "ingest", corpus, "-o", h5, "--chunk",
                        str(chunk), "-q", *(["--format", fmt] if fmt else [])],
                       capture_output=True, text=True, env=C.bench_env())
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise C.RunFailed(f"ingest failed: {p.stderr[-2000:]}")
    from mpitiny.io.splits import open_splits
    s = open_splits(h5)
    return {"seconds": wall, "splits": len(s), "bytes": int(s.total_bytes),
            "stored_bytes": os.path.getsize(h5)}


def finish_value(run_dir: str):
    for name in sorted(glob.glob(os.path.join(run_dir, "results", "rank-*.jsonl"))):
        with open(name, encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                if rec.get("id") in ("finish", "commit"):
                    return rec.get("value")
    return None


def tree_dag_file(h5: str, fanin: int, path: str) -> str:
    """jobs/mapreduce.py's aggregation-tree variant of jobs/wordcount.json for ``h5``."""
    sys.path.insert(0, str(JOBS_DIR))
    import mapreduce
    from mpitiny.io.splits import open_splits
    with open(JOBS_DIR / "wordcount.json", encoding="utf-8") as f:
        dag = json.load(f)
    new = mapreduce.tree_dag(dag, len(open_splits(h5)), fanin, "wordcount:reduce_part",
                             params={"input": h5, "reducers": 1}, finish_fn="wordcount:finish")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(new, f)
    return path


def run_mpitiny(job, h5, out_dir, run_dir, ranks, pattern, timeout, dag=None,
                extra=(), rss=False) -> dict:
    shutil.rmtree(out_dir, ignore_errors=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    argv = ["-m", "mpitiny", "run", dag or str(JOBS_DIR / f"{job}.json"), "--param", f"input={h5}",
            "--param", f"output={out_dir}", "--out", run_dir, "-q", *extra]
    if job == "grep":
        argv += ["--param", f"pattern={pattern}"]
    rss_dir = run_dir + "-rss"
    wrap = None
    if rss:
        shutil.rmtree(rss_dir, ignore_errors=True)
        os.makedirs(rss_dir)
        wrap = [C.PYTHON, str(C.BENCH_DIR / "_rss_wrap.py"), rss_dir, "--"]
    try:
        p = C.run_mpi(ranks, argv, timeout=timeout, check=False, env={"PYTHONPATH": os.pathsep.join(
            x for x in (str(JOBS_DIR), os.environ.get("PYTHONPATH")) if x)}, wrap=wrap)
    except C.RunFailed as e:
        return {"error": str(e)[-2000:]}
    if p["rc"] != 0:
        return {"error": f"exit {p['rc']}: {p['stderr'][-2000:]}"}
    with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as f:
        s = json.load(f)
    peak = None
    if rss:
        peak = [json.load(open(x))["maxrss_kib"] * 1024 / 1e6
                for x in sorted(glob.glob(os.path.join(rss_dir, "rss-*.json")))]
    return {"peak_rss_MB_per_rank": peak, "whole_seconds": p["wall"],
            "longest_task": longest_task(run_dir),
            "wall_seconds": s.get("wall_seconds"),
            "setup_seconds": s.get("setup_seconds"),
            "task_span_seconds": s["last_task_end"] - s["first_task_start"],
            "tasks": s.get("tasks"), "split_reads": s.get("split_reads"),
            "steals": sum(r.get("steals", 0) for r in s.get("per_rank", [])),
            "time_split": time_split(run_dir),
            "finish": finish_value(run_dir)}


def longest_task(run_dir: str) -> dict:
    """The longest task of a run: seconds, fraction of the first-start-to-last-end span, family."""
    from mpitiny.io.rundir import groups_of, read_tasks
    rows, groups = read_tasks(run_dir), groups_of(run_dir)
    d = rows["end"] - rows["start"]
    span = float(rows["end"].max() - rows["start"].min())
    i = int(d.argmax())
    k = int(np.searchsorted([g["first"] for g in groups], rows["gid"][i], side="right")) - 1
    return {"seconds": C.rnd(float(d[i]), 4), "fraction_of_span": C.rnd(float(d[i]) / span, 4),
            "family": groups[k]["name"]}


def time_split(run_dir: str) -> dict:
    """Where a run's time went (``mpitiny report``'s figures): busy seconds per family, summed
    over ranks, with the mean task; the time between a rank's consecutive tasks (the engine's
    share per task, and waits); the busy seconds of each rank."""
    from mpitiny.io.rundir import groups_of, read_tasks
    from mpitiny.report import between_tasks, family_times
    rows = read_tasks(run_dir)
    gaps = between_tasks(rows)
    pct = (lambda q: C.rnd(float(np.percentile(gaps, q)) * 1e3, 4)) if len(gaps) else (lambda q: None)
    return {"families": {name: {"tasks": n, "mean_ms": C.rnd(mean, 4), "busy_s": C.rnd(total, 4)}
                         for name, n, mean, total in family_times(groups_of(run_dir), rows)},
            "between_tasks_ms": {"p50": pct(50), "p90": pct(90), "sum_s": C.rnd(float(gaps.sum()), 4)},
            "busy_s_per_rank": [C.rnd(float((rows["end"] - rows["start"])[rows["rank"] == r].sum()), 4)
                                for r in sorted(set(rows["rank"].tolist()))]}


def read_tsv_counts(path: str) -> dict:
    out = {}
    with open(path, "rb") as f:
        for line in f:
            w, _, n = line.rstrip(b"\n").rpartition(b"\t")
            out[w] = int(n)
    return out


def compare_counts(got: dict, ref: Counter) -> dict:
    if got == ref:
        return {"equal": True, "distinct": len(ref), "total": sum(ref.values())}
    diff = [w for w in set(got) | set(ref) if got.get(w) != ref.get(w)]
    return {"equal": False, "distinct_got": len(got), "distinct_ref": len(ref),
            "total_got": sum(got.values()), "total_ref": sum(ref.values()),
            "differing_words": len(diff),
            "examples": [[w.decode("utf-8", "replace") if isinstance(w, bytes) else w,
                          got.get(w), ref.get(w)] for w in diff[:5]]}


# ------------------------------------------------------------------ plots
def plot(result: dict, out_dir: str) -> list:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(out_dir, exist_ok=True)
    files = []
    sizes = result["sizes_bytes"]
    labels = [size_label(s) for s in sizes]
    for job, fig in result["figures"].items():
        f, ax = plt.subplots(figsize=(6.4, 4.2))
        for key, name, style in (("mpitiny_whole_MBps", "mpitiny (whole mpiexec)", "o-"),
                                 ("mpitiny_tasks_MBps", "mpitiny (first task start → last end)", "o--"),
                                 ("mpitiny_tree_whole_MBps",
                                  f"mpitiny, aggregation tree F={result.get('tree_fanin')} (whole)", "^-"),
                                 ("mpitiny_unbatched_whole_MBps", "mpitiny --no-batch (whole)", "v-"),
                                 ("dask_MBps", f"Dask bag ({result['ranks']} procs)", "s-")):
            ys = [fig["per_size"][label].get(key) for label in labels]
            if any(y is not None for y in ys):
                ax.plot(sizes, [y if y is not None else float("nan") for y in ys], style, label=name)
        if fig.get("baseline_MBps"):
            ax.axhline(fig["baseline_MBps"], color="k", ls=":",
                       label="1 process (numpy sort)" if job == "sort" else "1 process (Python)")
        ax.set_xscale("log")
        ax.set_xticks(sizes, labels)
        ax.set_xlabel("partition (chunk) size")
        ax.set_ylabel("MB/s")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{job}: {fig['input_bytes'] / 1e6:,.0f} MB, {result['ranks']} ranks/workers, "
                     f"median of {result['repeat']}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        path = os.path.join(out_dir, f"mapreduce_{job}.png")
        f.tight_layout()
        f.savefig(path, dpi=110)
        plt.close(f)
        files.append(path)
    return files


# ------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--megabytes", type=float, default=1000, help="corpus size, MB (default 1000)")
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help=f"partition sizes (default {DEFAULT_SIZES})")
    ap.add_argument("--jobs", default="wordcount,grep,sort", help="wordcount,grep,sort")
    ap.add_argument("--ranks", type=int, default=2, help="mpitiny ranks = Dask worker processes")
    ap.add_argument("--repeat", type=int, default=1, help="interleaved repetitions (median)")
    ap.add_argument("--pattern", default=GREP_PATTERN, help="grep regex (default %(default)s)")
    ap.add_argument("--baseline-block", type=parse_size, default="8MiB")
    ap.add_argument("--corpus", help="use (or generate into) this corpus file")
    ap.add_argument("--records", help="sort: use (or generate into) this teragen file")
    ap.add_argument("--sort-megabytes", type=float, help="sort input, MB (default --megabytes)")
    ap.add_argument("--sort-partitions", type=int, default=24,
                    help="sort: R (default 24, jobs/sort.json's)")
    ap.add_argument("--tree-fanin", type=int, default=0,
                    help="also run wordcount's aggregation-tree variant, fan-in F (0 = off)")
    ap.add_argument("--tree-sizes", help="run the tree variant only at these sizes (default: all)")
    ap.add_argument("--unbatched-sizes",
                    help="also run each job with --no-batch (its map function called once per "
                         "split instead of once per chunk) at these sizes (default: none)")
    ap.add_argument("--no-dask", action="store_true")
    ap.add_argument("--dask-sizes", help="run Dask only at these partition sizes (default: all)")
    ap.add_argument("--dask-sort-sizes", help="run Dask's sort only at these sizes (default: "
                                              "--dask-sizes)")
    ap.add_argument("--dask-timeout", type=float, default=240, help="per Dask measurement, s")
    ap.add_argument("--timeout", type=float, default=600, help="per mpitiny run, s")
    ap.add_argument("--verify", choices=("all", "one"), default="all",
                    help="compare every mpitiny/Dask wordcount with the baseline, or only at 8MiB")
    ap.add_argument("--plots", default=str(C.BENCH_DIR / "results"), help="PNG directory ('' = none)")
    ap.add_argument("--workdir", help="keep corpus, HDF5 files and run directories here")
    ap.add_argument("--corpora", help="the corpus x job table instead (bench/corpora_bench.py): "
                                      "the corpora of bench/corpora.py in this directory "
                                      "(built if missing; not in the repository)")
    ap.add_argument("--corpus-names", default="generated,prose,logs,code,multilingual")
    ap.add_argument("--corpus-megabytes", type=float, default=210)
    ap.add_argument("--corpus-chunk", type=parse_size, default="8MiB")
    ap.add_argument("--small-chunk", type=parse_size, default="100KiB")
    ap.add_argument("--small-corpora", default="prose", help="wordcount at --small-chunk too")
    ap.add_argument("--corpus-jobs", default="wordcount,grep,linesort,distinct",
                    help="the jobs of the corpus table (wordcount,grep,linesort,distinct)")
    ap.add_argument("--dask-python", help="a Python with dask[bag] (a separate venv; Dask is no "
                                          "dependency of mpitiny); none: no Dask column")
    # internal: the Dask peer
    ap.add_argument("--dask-peer", choices=("wordcount", "grep", "sort"), help=argparse.SUPPRESS)
    ap.add_argument("--blocksize", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument("--partitions", type=int, default=8, help=argparse.SUPPRESS)
    ap.add_argument("--dump", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.dask_peer:
        args.job = args.dask_peer
        return dask_peer(args)
    if args.corpora:
        import corpora_bench
        return corpora_bench.run(args, sys.modules[__name__])

    mach = C.machine()
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    labels = [size_label(s) for s in sizes]
    jobs = [j.strip() for j in args.jobs.split(",") if j.strip()]

    def label_set(text):
        return {size_label(parse_size(x)) for x in text.split(",") if x.strip()} if text else None

    dask_labels = label_set(args.dask_sizes) or set(labels)
    dask_sort_labels = label_set(args.dask_sort_sizes) or dask_labels
    tree_labels = label_set(args.tree_sizes) or set(labels)
    unbatched_labels = label_set(args.unbatched_sizes) or set()
    notes = []
    for j in jobs:
        if j not in ("wordcount", "grep", "sort"):
            raise SystemExit(f"unknown job {j}")
    wd = C.workdir(args.workdir, "mapreduce-bench-")
    gen, nbytes, mb = None, 0, 0.0
    if set(jobs) & {"wordcount", "grep"}:
        corpus = args.corpus or os.path.join(wd, f"corpus-{args.megabytes:g}MB.txt")
        if not os.path.exists(corpus):
            C.log(f"generating {args.megabytes:g} MB corpus {corpus}")
            gen = make_corpus(corpus, args.megabytes)
        nbytes = os.path.getsize(corpus)
        mb = nbytes / 1e6
        C.log(f"corpus {corpus}: {mb:,.1f} MB")
    else:
        corpus = None
    sort_gen, sort_bytes, records = None, 0, None
    if "sort" in jobs:
        smb = args.sort_megabytes or args.megabytes
        records = args.records or os.path.join(wd, f"tera-{smb:g}MB.bin")
        if not os.path.exists(records):
            C.log(f"teragen {smb:g} MB into {records}")
            sort_gen = make_records(records, smb)
        sort_bytes = os.path.getsize(records)
        C.log(f"records {records}: {sort_bytes / 1e6:,.1f} MB")
    job_mb = {j: (sort_bytes if j == "sort" else nbytes) / 1e6 for j in jobs}

    ingests = {}
    for kind, src, fmt in (("text", corpus, None), ("records", records, "records:100")):
        if src is None:
            continue
        for s, label in zip(sizes, labels):
            h5 = os.path.join(wd, f"data-{kind}-{label}.h5")
            ingests[(kind, label)] = ingest(src, h5, s, fmt)
            ingests[(kind, label)]["file"] = h5
            C.log(f"ingest {kind} {label}: {ingests[(kind, label)]['splits']} splits in "
                  f"{ingests[(kind, label)]['seconds']:.2f} s")

    systems = {j: ["mpitiny", "dask"] + (["mpitiny_tree"] if j == "wordcount" and args.tree_fanin
                                         else [])
                  + (["mpitiny_unbatched"] if unbatched_labels else [])
               for j in jobs}
    runs = {j: {"baseline": [], **{sy: {label: [] for label in labels} for sy in systems[j]}} for j in jobs}
    checks = {j: [] for j in jobs}
    verify_labels = set(labels) if args.verify == "all" else {"8MiB" if "8MiB" in labels else labels[0]}
    for rep in range(args.repeat):
        for j in jobs:
            mb = job_mb[j]
            kind = "records" if j == "sort" else "text"
            # baseline, once per repetition and job, then the sizes in rotated order
            if j == "wordcount":
                secs, ref = baseline_wordcount(corpus, args.baseline_block)
                runs[j]["baseline"].append({"seconds": secs, "distinct": len(ref),
                                            "total": sum(ref.values())})
            elif j == "grep":
                secs, ref = baseline_grep(corpus, args.baseline_block, args.pattern)
                runs[j]["baseline"].append({"seconds": secs, "matches": ref})
            else:
                out = os.path.join(wd, "sorted-baseline.bin")
                secs, nrec = baseline_sort(records, out)
                ref = digest([out])
                os.unlink(out)
                plain, _ = baseline_sort_lexsort(records, out)
                plain_same = digest([out]) == ref
                os.unlink(out)
                runs[j]["baseline"].append({"seconds": secs, "records": nrec, "digest": ref,
                                            "lexsort_seconds": plain, "lexsort_same": plain_same})
                C.log(f"rep {rep} sort baseline with np.lexsort: {plain:.2f} s")
            C.log(f"rep {rep} {j} baseline: {secs:.2f} s = {mb / secs:.1f} MB/s")
            k = rep % len(labels)
            for idx in list(range(k, len(labels))) + list(range(k)):
                label, s = labels[idx], sizes[idx]
                order = list(systems[j]) if (rep + idx) % 2 == 0 else list(reversed(systems[j]))
                for system in order:
                    if system == "dask" and (args.no_dask or label not in
                                             (dask_sort_labels if j == "sort" else dask_labels)):
                        continue
                    if system == "mpitiny_tree" and label not in tree_labels:
                        continue
                    if system == "mpitiny_unbatched" and label not in unbatched_labels:
                        continue
                    h5 = ingests[(kind, label)]["file"]
                    if system.startswith("mpitiny"):
                        out = os.path.join(wd, f"out-{j}-{label}")
                        dag = extra = None
                        if system == "mpitiny_tree":
                            dag = tree_dag_file(h5, args.tree_fanin, os.path.join(wd, f"tree-{label}.json"))
                        extra = (["--param", f"partitions={args.sort_partitions}"] if j == "sort" else [])
                        if system == "mpitiny_unbatched":
                            extra.append("--no-batch")
                        r = run_mpitiny(j, h5, out, os.path.join(wd, f"run-{j}-{label}"), args.ranks,
                                        args.pattern, args.timeout, dag=dag, extra=extra,
                                        rss=(j == "sort"))
                        if "error" not in r:
                            if j == "wordcount" and label in verify_labels:
                                got = read_tsv_counts(os.path.join(out, "wordcount.tsv"))
                                chk = compare_counts(got, ref)
                                checks[j].append({"system": system, "size": label, "rep": rep, **chk})
                                del got
                            elif j == "grep":
                                m = (r.get("finish") or {}).get("matches")
                                checks[j].append({"system": system, "size": label, "rep": rep,
                                                  "equal": m == ref, "matches": m, "baseline": ref})
                            elif j == "sort":
                                with open(os.path.join(out, "validate.json"), encoding="utf-8") as f:
                                    ok = json.load(f)["ok"]
                                d = digest(part_files(out))
                                checks[j].append({"system": system, "size": label, "rep": rep,
                                                  "equal": d == ref and ok, "validate_ok": ok,
                                                  "digest": d, "baseline": ref})
                            extra_txt = (f", peak RSS per rank {r['peak_rss_MB_per_rank']} MB"
                                         if r.get("peak_rss_MB_per_rank") else "")
                            C.log(f"rep {rep} {j} {label} {system}: whole {r['whole_seconds']:.2f} s "
                                  f"({mb / r['whole_seconds']:.1f} MB/s), tasks "
                                  f"{r['task_span_seconds']:.2f} s ({mb / r['task_span_seconds']:.1f} MB/s), "
                                  f"longest task {r['longest_task']}" + extra_txt)
                        else:
                            C.log(f"rep {rep} {j} {label} {system} FAILED: {r['error'][:500]}")
                        shutil.rmtree(out, ignore_errors=True)
                        runs[j][system][label].append(r)
                    else:
                        if j == "sort":
                            dump = os.path.join(wd, f"dask-sort-{label}")
                            shutil.rmtree(dump, ignore_errors=True)
                        else:
                            dump = (os.path.join(wd, f"dask-{label}.json")
                                    if j == "wordcount" and label in verify_labels else None)
                        src = records if j == "sort" else corpus
                        r = run_dask(j, src, s, args.ranks, args.pattern, args.dask_timeout, dump,
                                     args.sort_partitions)
                        if "error" not in r:
                            if j == "sort":
                                d = digest(part_files(dump))
                                checks[j].append({"system": "dask", "size": label, "rep": rep,
                                                  "equal": d == ref, "digest": d, "baseline": ref})
                            elif dump:
                                with open(dump, encoding="utf-8") as f:
                                    got = {w.encode(): n for w, n in json.load(f).items()}
                                os.unlink(dump)
                                checks[j].append({"system": "dask", "size": label, "rep": rep,
                                                  **compare_counts(got, ref)})
                                del got
                            elif j == "grep":
                                checks[j].append({"system": "dask", "size": label, "rep": rep,
                                                  "equal": r["matches"] == ref,
                                                  "matches": r["matches"], "baseline": ref})
                            C.log(f"rep {rep} {j} {label} dask: {r['seconds']:.2f} s "
                                  f"({mb / r['seconds']:.1f} MB/s, {r['npartitions']} partitions)")
                        else:
                            C.log(f"rep {rep} {j} {label} dask FAILED: {r['error'][:300]}")
                        if j == "sort":
                            shutil.rmtree(dump, ignore_errors=True)
                        runs[j]["dask"][label].append(r)
            del ref

    # ---------------------------------------------------------------- figures
    figures = {}
    for j in jobs:
        mb = job_mb[j]

        def mbps(sec, mb=mb):
            return mb / sec if sec else None

        kind = "records" if j == "sort" else "text"
        base = median([r["seconds"] for r in runs[j]["baseline"]])
        plain = median([r.get("lexsort_seconds") for r in runs[j]["baseline"]])
        per = {}
        for label in labels:
            p = {"splits": ingests[(kind, label)]["splits"]}
            for sy in systems[j]:
                if sy == "dask":
                    continue
                mt = [r for r in runs[j][sy][label] if "error" not in r]
                p.update({
                    f"{sy}_whole_MBps": mbps(median([r["whole_seconds"] for r in mt])),
                    f"{sy}_engine_MBps": mbps(median([r["wall_seconds"] for r in mt])),
                    f"{sy}_tasks_MBps": mbps(median([r["task_span_seconds"] for r in mt])),
                    f"{sy}_whole_seconds": median([r["whole_seconds"] for r in mt]),
                    f"{sy}_tasks_seconds": median([r["task_span_seconds"] for r in mt]),
                    f"{sy}_failures": len(runs[j][sy][label]) - len(mt),
                })
                if j == "sort":
                    p[f"{sy}_peak_rss_MB_max"] = max((max(r["peak_rss_MB_per_rank"]) for r in mt
                                                      if r.get("peak_rss_MB_per_rank")), default=None)
            dk = [r for r in runs[j]["dask"][label] if "error" not in r]
            p.update({
                "dask_MBps": mbps(median([r["seconds"] for r in dk])),
                "dask_seconds": median([r["seconds"] for r in dk]),
                "dask_failures": len(runs[j]["dask"][label]) - len(dk),
                # a timed-out Dask run bounds its throughput from above
                "dask_MBps_at_most": (mbps(min(r["timed_out_after"] for r in runs[j]["dask"][label]
                                               if "timed_out_after" in r))
                                      if any("timed_out_after" in r for r in runs[j]["dask"][label])
                                      else None),
                "dask_partitions": dk[0]["npartitions"] if dk else None,
            })
            for sy in systems[j]:
                if sy == "dask":
                    continue
                for t in ("whole", "tasks"):
                    p[f"{sy}_{t}_vs_baseline"] = C.ratio(p[f"{sy}_{t}_MBps"], mbps(base))
                    if plain:
                        p[f"{sy}_{t}_vs_lexsort_baseline"] = C.ratio(p[f"{sy}_{t}_MBps"],
                                                                     mbps(plain))
                    p[f"{sy}_{t}_vs_dask"] = C.ratio(p[f"{sy}_{t}_MBps"], p["dask_MBps"])
                # ratios per repetition (same repetition = closest in time)
                n = min(len(runs[j][sy][label]), len(runs[j]["baseline"]))
                p[f"{sy}_per_rep_whole_vs_baseline"] = [
                    C.rnd(runs[j]["baseline"][i]["seconds"] / runs[j][sy][label][i]["whole_seconds"], 3)
                    for i in range(n) if "error" not in runs[j][sy][label][i]]
            for key in list(p):
                if not isinstance(p[key], list):
                    p[key] = C.rnd(p[key], 3)
            per[label] = p
        figures[j] = {"baseline_seconds": C.rnd(base, 3), "baseline_MBps": C.rnd(mbps(base), 3),
                      "lexsort_baseline_seconds": C.rnd(plain, 3),
                      "input_bytes": int(mb * 1e6), "per_size": per}

    bars = {}
    if "wordcount" in figures and "8MiB" in labels:
        ps = figures["wordcount"]["per_size"]
        for sy in [x for x in systems["wordcount"] if x != "dask"]:
            for t in ("whole", "tasks"):
                p8 = ps["8MiB"]
                v = {"vs_baseline": p8.get(f"{sy}_{t}_vs_baseline"), "vs_dask": p8.get(f"{sy}_{t}_vs_dask")}
                v["baseline_bar_met"] = None if v["vs_baseline"] is None else v["vs_baseline"] >= 1.8
                v["dask_bar_met"] = None if v["vs_dask"] is None else v["vs_dask"] >= 5
                if "100KiB" in labels:
                    small = ps["100KiB"].get(f"{sy}_{t}_MBps")
                    v["100KiB_vs_8MiB"] = C.rnd(C.ratio(small, p8.get(f"{sy}_{t}_MBps")), 3)
                    v["small_bar_met"] = None if v["100KiB_vs_8MiB"] is None else v["100KiB_vs_8MiB"] >= 0.8
                bars[f"{sy}_{t}"] = v
    if "sort" in figures:
        peaks = [v.get("mpitiny_peak_rss_MB_max") for v in figures["sort"]["per_size"].values()]
        peaks = [x for x in peaks if x is not None]
        bars["sort_peak_rss_MB_max"] = max(peaks) if peaks else None
        bars["sort_rss_bar_met"] = None if not peaks else max(peaks) < 2000

    result = {
        "benchmark": "mapreduce_bench", "machine": mach, "workdir": wd, "corpus": corpus,
        "corpus_bytes": nbytes, "corpus_generation": gen, "records": records,
        "records_bytes": sort_bytes, "records_generation": sort_gen, "ranks": args.ranks,
        "repeat": args.repeat, "sizes": labels, "sizes_bytes": sizes, "jobs": jobs,
        "systems": systems, "tree_fanin": args.tree_fanin, "sort_partitions": args.sort_partitions,
        "grep_pattern": args.pattern, "baseline_block": args.baseline_block,
        "ingest": {f"{k}-{label}": {x: C.rnd(v, 4) for x, v in d.items()}
                   for (k, label), d in ingests.items()},
        "figures": figures,
        "bars": bars,
        "bars_definition": "wordcount at 8MiB >= 1.8x the single-process Counter baseline and "
                           ">= 5x Dask bag (idiomatic); wordcount at 100KiB >= 0.8x its own 8MiB "
                           "throughput; sort peak RSS per rank < 2 GB; 'whole' = wall of the "
                           "whole mpiexec ... mpitiny run, 'tasks' = first task start -> last "
                           "task end; 'mpitiny' = jobs/wordcount.json, 'mpitiny_tree' = its "
                           "aggregation-tree variant (jobs/mapreduce.py tree, R = 1), "
                           "'mpitiny_unbatched' = the same job with --no-batch",
        "verification": checks,
        "all_outputs_equal_baseline": all(c.get("equal") for cs in checks.values() for c in cs)
        if any(checks.values()) else None,
        "notes": notes + ["MB = 10^6 bytes; inputs and HDF5 files are in the page cache (warm)"],
        "runs": runs,
    }
    if args.plots:
        result["plots"] = plot(result, args.plots)
    lines = []
    for j in jobs:
        f = figures[j]
        for sy in [x for x in systems[j] if x != "dask"]:
            cells = ", ".join(f"{label} {f['per_size'][label].get(sy + '_whole_MBps')}/"
                              f"{f['per_size'][label].get(sy + '_tasks_MBps')}/"
                              f"{f['per_size'][label]['dask_MBps']}"
                              for label in labels)
            lines.append(f"{j}: baseline {f['baseline_MBps']} MB/s; {sy} whole/tasks/Dask MB/s: {cells}")
    for t, v in bars.items():
        if isinstance(v, dict):
            lines.append(f"bars ({t}): 8MiB {v['vs_baseline']}x baseline (>=1.8: {v['baseline_bar_met']}), "
                         f"{v['vs_dask']}x Dask (>=5: {v['dask_bar_met']}), 100KiB/8MiB "
                         f"{v.get('100KiB_vs_8MiB')} (>=0.8: {v.get('small_bar_met')})")
    if "sort_peak_rss_MB_max" in bars:
        lines.append(f"sort: peak RSS per rank max {bars['sort_peak_rss_MB_max']} MB (<2000: "
                     f"{bars['sort_rss_bar_met']})")
    lines.append(f"outputs equal baseline: {result['all_outputs_equal_baseline']}")
    C.emit(result, "\n".join(lines))
    if not args.workdir:
        shutil.rmtree(wd, ignore_errors=True)


if __name__ == "__main__":
    main()
