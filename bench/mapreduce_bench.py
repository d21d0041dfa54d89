#!/usr/bin/env python
"""MapReduce throughput (MB/s) of wordcount and grep at several partition (chunk) sizes
(Albatross Fig. 13/15/17): mpitiny (jobs/wordcount.json, jobs/grep.json over an HDF5 file made
by ``mpitiny ingest --chunk SIZE``, N ranks) beside Dask bag (N worker processes, the same
partition size) and the single-process Python baseline, on the same bytes in the same run.

* mpitiny: ``mpiexec -n N python -m mpitiny run jobs/JOB.json --param input=DATA.h5 ...``;
  time = wall of that whole command (ingest excluded; ingest is timed once per chunk size and
  reported apart), and first task start -> last task end from ``summary.json`` (both reported).
* Dask bag: ``dask.bag.read_text(corpus, blocksize=SIZE)``; wordcount =
  ``.str.split().flatten().frequencies()``, grep = ``.filter(rx.search).count()``; the
  processes scheduler on a ``ProcessPoolExecutor(N)`` that is started and warmed up before the
  clock starts; one fresh Python process per measurement (bounded by ``--dask-timeout``).
* Baseline: one process, the corpus read in ``--baseline-block`` blocks cut on line
  boundaries; wordcount = ``Counter.update(block.split())``, grep = ``rx.search`` per line.

Every wordcount output (mpitiny's ``OUT/wordcount.tsv``, Dask's frequencies) is compared with
the baseline's Counter; every grep match count with the baseline's. Repetitions are
interleaved (sizes and systems in rotated order); figures are medians. Prints one JSON object
on stdout, a summary on stderr; writes PNG plots to ``--plots DIR`` (default bench/results).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

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
        bag = db.read_text(args.corpus, blocksize=args.blocksize)
        if args.job == "wordcount":
            out = bag.str.split().flatten().frequencies().compute()
            elapsed = time.perf_counter() - t0
            counts = dict(out)
            result = {"distinct": len(counts), "total": sum(counts.values())}
            if args.dump:
                with open(args.dump, "w", encoding="utf-8") as f:
                    json.dump(counts, f)
        else:
            rx = re.compile(args.pattern)
            result = {"matches": bag.filter(rx.search).count().compute()}
            elapsed = time.perf_counter() - t0
        result["npartitions"] = bag.npartitions
    pool.shutdown()
    result.update(seconds=elapsed, setup_seconds=t0 - t_start, dask=dask.__version__)
    print(json.dumps(result), flush=True)


def run_dask(job, corpus, blocksize, workers, pattern, timeout, dump=None) -> dict:
    argv = [C.PYTHON, __file__, "--dask-peer", job, "--corpus", corpus, "--blocksize",
            str(blocksize), "--workers", str(workers), "--pattern", pattern]
    if dump:
        argv += ["--dump", dump]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           env=C.bench_env(), start_new_session=True)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s", "timed_out_after": timeout}
    whole = time.perf_counter() - t0
    if p.returncode != 0:
        return {"error": f"exit {p.returncode}: {p.stderr[-2000:]}"}
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["process_wall"] = whole
    return out


# ------------------------------------------------------------------ mpitiny
def ingest(corpus: str, h5: str, chunk: int) -> dict:
    t0 = time.perf_counter()
    p = subprocess.run([C.PYTHON, "-m", "mpitiny", "ingest", corpus, "-o", h5, "--chunk",
                        str(chunk), "-q"], capture_output=True, text=True, env=C.bench_env())
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise C.RunFailed(f"ingest failed: {p.stderr[-2000:]}")
    from mpitiny.io.h5data import open_splits
    s = open_splits(h5)
    return {"seconds": wall, "splits": len(s), "bytes": int(s.total_bytes),
            "stored_bytes": os.path.getsize(h5)}


def finish_value(run_dir: str):
    for name in sorted(glob.glob(os.path.join(run_dir, "results", "rank-*.jsonl"))):
        with open(name, encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                if rec.get("id") == "finish":
                    return rec.get("value")
    return None


def run_mpitiny(job, h5, out_dir, run_dir, ranks, pattern, timeout) -> dict:
    shutil.rmtree(out_dir, ignore_errors=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    argv = ["-m", "mpitiny", "run", str(JOBS_DIR / f"{job}.json"), "--param", f"input={h5}",
            "--param", f"output={out_dir}", "--out", run_dir, "-q"]
    if job == "grep":
        argv += ["--param", f"pattern={pattern}"]
    try:
        p = C.run_mpi(ranks, argv, timeout=timeout, check=False)
    except C.RunFailed as e:
        return {"error": str(e)[-2000:]}
    if p["rc"] != 0:
        return {"error": f"exit {p['rc']}: {p['stderr'][-2000:]}"}
    with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as f:
        s = json.load(f)
    return {"whole_seconds": p["wall"], "wall_seconds": s.get("wall_seconds"),
            "setup_seconds": s.get("setup_seconds"),
            "task_span_seconds": s["last_task_end"] - s["first_task_start"],
            "tasks": s.get("tasks"), "split_reads": s.get("split_reads"),
            "steals": sum(r.get("steals", 0) for r in s.get("per_rank", [])),
            "finish": finish_value(run_dir)}


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
                                 ("dask_MBps", f"Dask bag ({result['ranks']} procs)", "s-")):
            ys = [fig["per_size"][l][key] for l in labels]
            if any(y is not None for y in ys):
                ax.plot(sizes, [y if y is not None else float("nan") for y in ys], style, label=name)
        if fig.get("baseline_MBps"):
            ax.axhline(fig["baseline_MBps"], color="k", ls=":", label="1 process (Python)")
        ax.set_xscale("log")
        ax.set_xticks(sizes, labels)
        ax.set_xlabel("partition (chunk) size")
        ax.set_ylabel("MB/s")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{job}: {result['corpus_bytes'] / 1e6:,.0f} MB, {result['ranks']} ranks/workers, "
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
    ap.add_argument("--jobs", default="wordcount,grep", help="wordcount,grep[,sort]")
    ap.add_argument("--ranks", type=int, default=2, help="mpitiny ranks = Dask worker processes")
    ap.add_argument("--repeat", type=int, default=1, help="interleaved repetitions (median)")
    ap.add_argument("--pattern", default=GREP_PATTERN, help="grep regex (default %(default)s)")
    ap.add_argument("--baseline-block", type=parse_size, default="8MiB")
    ap.add_argument("--corpus", help="use (or generate into) this corpus file")
    ap.add_argument("--no-dask", action="store_true")
    ap.add_argument("--dask-sizes", help="run Dask only at these partition sizes (default: all)")
    ap.add_argument("--dask-timeout", type=float, default=240, help="per Dask measurement, s")
    ap.add_argument("--timeout", type=float, default=600, help="per mpitiny run, s")
    ap.add_argument("--verify", choices=("all", "one"), default="all",
                    help="compare every mpitiny/Dask wordcount with the baseline, or only at 8MiB")
    ap.add_argument("--plots", default=str(C.BENCH_DIR / "results"), help="PNG directory ('' = none)")
    ap.add_argument("--workdir", help="keep corpus, HDF5 files and run directories here")
    # internal: the Dask peer
    ap.add_argument("--dask-peer", choices=("wordcount", "grep"), help=argparse.SUPPRESS)
    ap.add_argument("--blocksize", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument("--dump", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.dask_peer:
        args.job = args.dask_peer
        return dask_peer(args)

    mach = C.machine()
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    labels = [size_label(s) for s in sizes]
    jobs = [j.strip() for j in args.jobs.split(",") if j.strip()]
    dask_labels = ({size_label(parse_size(x)) for x in args.dask_sizes.split(",") if x.strip()}
                   if args.dask_sizes else set(labels))
    notes = []
    if "sort" in jobs or (JOBS_DIR / "sort.json").exists():
        jobs = [j for j in jobs if j != "sort"]
        notes.append("sort: jobs/sort.json exists but is not measured by this script yet"
                     if (JOBS_DIR / "sort.json").exists() else
                     "sort: skipped, jobs/sort.json does not exist yet")
    for j in jobs:
        if j not in ("wordcount", "grep"):
            raise SystemExit(f"unknown job {j}")
    wd = C.workdir(args.workdir, "mapreduce-bench-")
    corpus = args.corpus or os.path.join(wd, f"corpus-{args.megabytes:g}MB.txt")
    gen = None
    if not os.path.exists(corpus):
        C.log(f"generating {args.megabytes:g} MB corpus {corpus}")
        gen = make_corpus(corpus, args.megabytes)
    nbytes = os.path.getsize(corpus)
    mb = nbytes / 1e6
    C.log(f"corpus {corpus}: {mb:,.1f} MB")

    ingests = {}
    for s, l in zip(sizes, labels):
        h5 = os.path.join(wd, f"data-{l}.h5")
        ingests[l] = ingest(corpus, h5, s)
        ingests[l]["file"] = h5
        C.log(f"ingest {l}: {ingests[l]['splits']} splits in {ingests[l]['seconds']:.2f} s "
              f"({mb / ingests[l]['seconds']:.0f} MB/s)")

    runs = {j: {"baseline": [], "mpitiny": {l: [] for l in labels}, "dask": {l: [] for l in labels}}
            for j in jobs}
    checks = {j: [] for j in jobs}
    verify_labels = set(labels) if args.verify == "all" else {"8MiB" if "8MiB" in labels else labels[0]}
    for rep in range(args.repeat):
        for j in jobs:
            # baseline, once per repetition and job, then the sizes in rotated order
            if j == "wordcount":
                secs, ref = baseline_wordcount(corpus, args.baseline_block)
                runs[j]["baseline"].append({"seconds": secs, "distinct": len(ref),
                                            "total": sum(ref.values())})
            else:
                secs, ref = baseline_grep(corpus, args.baseline_block, args.pattern)
                runs[j]["baseline"].append({"seconds": secs, "matches": ref})
            C.log(f"rep {rep} {j} baseline: {secs:.2f} s = {mb / secs:.1f} MB/s")
            k = rep % len(labels)
            for idx in list(range(k, len(labels))) + list(range(k)):
                l, s = labels[idx], sizes[idx]
                order = ("mpitiny", "dask") if (rep + idx) % 2 == 0 else ("dask", "mpitiny")
                for system in order:
                    if system == "dask" and (args.no_dask or l not in dask_labels):
                        continue
                    if system == "mpitiny":
                        out = os.path.join(wd, f"out-{j}-{l}")
                        r = run_mpitiny(j, ingests[l]["file"], out, os.path.join(wd, f"run-{j}-{l}"),
                                        args.ranks, args.pattern, args.timeout)
                        if "error" not in r:
                            if j == "wordcount" and l in verify_labels:
                                got = read_tsv_counts(os.path.join(out, "wordcount.tsv"))
                                chk = compare_counts(got, ref)
                                checks[j].append({"system": "mpitiny", "size": l, "rep": rep, **chk})
                                del got
                            elif j == "grep":
                                m = (r.get("finish") or {}).get("matches")
                                checks[j].append({"system": "mpitiny", "size": l, "rep": rep,
                                                  "equal": m == ref, "matches": m, "baseline": ref})
                            C.log(f"rep {rep} {j} {l} mpitiny: whole {r['whole_seconds']:.2f} s "
                                  f"({mb / r['whole_seconds']:.1f} MB/s), tasks "
                                  f"{r['task_span_seconds']:.2f} s ({mb / r['task_span_seconds']:.1f} MB/s)")
                        else:
                            C.log(f"rep {rep} {j} {l} mpitiny FAILED: {r['error'][:500]}")
                        runs[j]["mpitiny"][l].append(r)
                    else:
                        dump = (os.path.join(wd, f"dask-{l}.json")
                                if j == "wordcount" and l in verify_labels else None)
                        r = run_dask(j, corpus, s, args.ranks, args.pattern, args.dask_timeout, dump)
                        if "error" not in r:
                            if dump:
                                with open(dump, encoding="utf-8") as f:
                                    got = {w.encode(): n for w, n in json.load(f).items()}
                                os.unlink(dump)
                                checks[j].append({"system": "dask", "size": l, "rep": rep,
                                                  **compare_counts(got, ref)})
                                del got
                            elif j == "grep":
                                checks[j].append({"system": "dask", "size": l, "rep": rep,
                                                  "equal": r["matches"] == ref,
                                                  "matches": r["matches"], "baseline": ref})
                            C.log(f"rep {rep} {j} {l} dask: {r['seconds']:.2f} s "
                                  f"({mb / r['seconds']:.1f} MB/s, {r['npartitions']} partitions)")
                        else:
                            C.log(f"rep {rep} {j} {l} dask FAILED: {r['error'][:300]}")
                        runs[j]["dask"][l].append(r)
            del ref

    # ---------------------------------------------------------------- figures
    def mbps(sec):
        return mb / sec if sec else None

    figures = {}
    for j in jobs:
        base = median([r["seconds"] for r in runs[j]["baseline"]])
        per = {}
        for l in labels:
            mt = [r for r in runs[j]["mpitiny"][l] if "error" not in r]
            dk = [r for r in runs[j]["dask"][l] if "error" not in r]
            per[l] = {
                "mpitiny_whole_MBps": mbps(median([r["whole_seconds"] for r in mt])),
                "mpitiny_engine_MBps": mbps(median([r["wall_seconds"] for r in mt])),
                "mpitiny_tasks_MBps": mbps(median([r["task_span_seconds"] for r in mt])),
                "mpitiny_whole_seconds": median([r["whole_seconds"] for r in mt]),
                "mpitiny_tasks_seconds": median([r["task_span_seconds"] for r in mt]),
                "mpitiny_failures": len(runs[j]["mpitiny"][l]) - len(mt),
                "dask_MBps": mbps(median([r["seconds"] for r in dk])),
                "dask_seconds": median([r["seconds"] for r in dk]),
                "dask_failures": len(runs[j]["dask"][l]) - len(dk),
                # a timed-out Dask run bounds its throughput from above
                "dask_MBps_at_most": (mbps(min(r["timed_out_after"] for r in runs[j]["dask"][l]
                                               if "timed_out_after" in r))
                                      if any("timed_out_after" in r for r in runs[j]["dask"][l])
                                      else None),
                "dask_partitions": dk[0]["npartitions"] if dk else None,
                "splits": ingests[l]["splits"],
            }
            p = per[l]
            p["mpitiny_whole_vs_baseline"] = C.rnd(C.ratio(p["mpitiny_whole_MBps"], mbps(base)), 3)
            p["mpitiny_whole_vs_dask"] = C.rnd(C.ratio(p["mpitiny_whole_MBps"], p["dask_MBps"]), 3)
            p["mpitiny_tasks_vs_baseline"] = C.rnd(C.ratio(p["mpitiny_tasks_MBps"], mbps(base)), 3)
            p["mpitiny_tasks_vs_dask"] = C.rnd(C.ratio(p["mpitiny_tasks_MBps"], p["dask_MBps"]), 3)
            # ratios per repetition (same repetition = closest in time), then the median
            n = min(len(runs[j]["mpitiny"][l]), len(runs[j]["baseline"]))
            p["per_rep_whole_vs_baseline"] = [
                C.rnd(runs[j]["baseline"][i]["seconds"] / runs[j]["mpitiny"][l][i]["whole_seconds"], 3)
                for i in range(n) if "error" not in runs[j]["mpitiny"][l][i]]
            for key in list(p):
                p[key] = C.rnd(p[key], 3)
        figures[j] = {"baseline_seconds": C.rnd(base, 3), "baseline_MBps": C.rnd(mbps(base), 3),
                      "per_size": per}

    bars = {}
    if "wordcount" in figures and "8MiB" in labels:
        p8 = figures["wordcount"]["per_size"]["8MiB"]
        for t in ("whole", "tasks"):
            v = {"vs_baseline": p8[f"mpitiny_{t}_vs_baseline"], "vs_dask": p8[f"mpitiny_{t}_vs_dask"]}
            v["baseline_bar_met"] = None if v["vs_baseline"] is None else v["vs_baseline"] >= 1.8
            v["dask_bar_met"] = None if v["vs_dask"] is None else v["vs_dask"] >= 5
            if "100KiB" in labels:
                small = figures["wordcount"]["per_size"]["100KiB"][f"mpitiny_{t}_MBps"]
                v["100KiB_vs_8MiB"] = C.rnd(C.ratio(small, p8[f"mpitiny_{t}_MBps"]), 3)
                v["small_bar_met"] = None if v["100KiB_vs_8MiB"] is None else v["100KiB_vs_8MiB"] >= 0.8
            bars[t] = v

    result = {
        "benchmark": "mapreduce_bench", "machine": mach, "workdir": wd, "corpus": corpus,
        "corpus_bytes": nbytes, "corpus_generation": gen, "ranks": args.ranks,
        "repeat": args.repeat, "sizes": labels, "sizes_bytes": sizes, "jobs": jobs,
        "grep_pattern": args.pattern, "baseline_block": args.baseline_block,
        "ingest": {l: {k: C.rnd(v, 4) for k, v in d.items()} | {"MBps": C.rnd(mb / d["seconds"], 2)}
                   for l, d in ingests.items()},
        "figures": figures,
        "bars": bars,
        "bars_definition": "wordcount at 8MiB >= 1.8x the single-process Counter baseline and "
                           ">= 5x Dask bag; wordcount at 100KiB >= 0.8x its own 8MiB throughput; "
                           "'whole' = wall of the whole mpiexec ... mpitiny run, 'tasks' = first "
                           "task start -> last task end",
        "verification": checks,
        "all_outputs_equal_baseline": all(c.get("equal") for cs in checks.values() for c in cs)
        if any(checks.values()) else None,
        "notes": notes + ["MB = 10^6 bytes; corpus and HDF5 files are in the page cache (warm)"],
        "runs": runs,
    }
    if args.plots:
        result["plots"] = plot(result, args.plots)
    lines = []
    for j in jobs:
        f = figures[j]
        cells = ", ".join(f"{l} {f['per_size'][l]['mpitiny_whole_MBps']}/{f['per_size'][l]['mpitiny_tasks_MBps']}"
                          f"/{f['per_size'][l]['dask_MBps']}" for l in labels)
        lines.append(f"{j}: baseline {f['baseline_MBps']} MB/s; mpitiny whole/tasks/Dask MB/s: {cells}")
    for t, v in bars.items():
        lines.append(f"bars ({t}): 8MiB {v['vs_baseline']}x baseline (>=1.8: {v['baseline_bar_met']}), "
                     f"{v['vs_dask']}x Dask (>=5: {v['dask_bar_met']}), 100KiB/8MiB "
                     f"{v.get('100KiB_vs_8MiB')} (>=0.8: {v.get('small_bar_met')})")
    lines.append(f"outputs equal baseline: {result['all_outputs_equal_baseline']}")
    C.emit(result, "\n".join(lines))
    if not args.workdir:
        shutil.rmtree(wd, ignore_errors=True)


if __name__ == "__main__":
    main()
