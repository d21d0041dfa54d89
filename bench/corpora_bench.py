"""The corpus x job table of ``bench/mapreduce_bench.py --corpora DIR`` (docs/mapreduce.md).

For each corpus of ``bench/corpora.py`` (built into DIR if missing), in one run, repetitions
interleaved, medians:

* **wordcount**: ``jobs/wordcount.json`` on N ranks at ``--corpus-chunk`` (8 MiB), the whole
  ``mpiexec`` timed; its ``wordcount.tsv`` compared byte for byte with the one-process
  reference (``Counter`` over the whole file, sorted by count descending then bytes);
  against the one-process ``Counter.update(block.split())`` (8 MiB blocks cut at lines), ``wc
  -w`` on the file, and Dask bag (``read_text(...).str.split().flatten().frequencies()`` on N
  worker processes, from ``--dask-python``: Dask is no dependency of the project; Dask splits
  decoded text on Unicode whitespace, so its counts are not compared byte for byte).
  ``--small-chunk`` adds wordcount at 100 KiB on the corpora of ``--small-corpora``.
* **grep**: ``jobs/grep.json`` with the corpus's pattern (``PATTERNS``), against the one-process
  ``re.search`` per line (the job's definition of a match) and Dask bag's
  ``filter(rx.search).count()``; match counts compared, and ``grep.tsv``'s lines with the
  one-process ones.
* **linesort**: ``jobs/linesort.json`` (the lines sorted by bytes, one ``sorted.txt``) against
  one process reading the file, ``split(b"\\n")``, ``list.sort()`` and writing it; the outputs
  compared byte for byte.
* **distinct**: ``jobs/distinct.json`` (sorted runs, parallel merge) against one process
  ``set.update(block.split())``, ``sorted``, written; compared byte for byte.
* **GNU baselines** (``mapreduce_bench.gnu_*``, ``LC_ALL=C``, one thread): grep against ``grep
  -E -b PATTERN FILE > OUT`` (its match count checked: ``grep_gnu_same_matches``), linesort
  against ``sort --parallel=1 -S 4G`` and distinct against ``tr -s '[:space:]' '\\n' | sort -u
  | sed '/^$/d'``, their outputs compared byte for byte with the Python ones
  (``{job}_gnu_same``); ``{job}_vs_gnu`` beside ``{job}_vs_baseline``.
* The longest task of every mpitiny run as a fraction of its first-task-to-last-task span
  (``mapreduce_bench.longest_task``), and
  the load average before each corpus (the machine is shared: only ratios measured side by
  side mean anything). ``--corpus-jobs`` picks the jobs. A Dask run that times out has its
  whole process group killed (``mapreduce_bench.run_peer``): before, its forked workers were
  left running, and the 4-minute timeout of Dask's multilingual wordcount was taken for a
  hang of the grep after it (issue 18).
"""
from __future__ import annotations

import hashlib
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
import corpora  # noqa: E402

PATTERNS = {"generated": r"\bqu[a-z]*e\b", "prose": r"\b(error|warning)s?\b",
            "logs": r"\b(fail(ed|ure)?|error)\b", "code": r"\bdef [a-z_]+\(self",
            "multilingual": r"(файл|Datei|fichier)"}


def reference_tsv(counts: Counter) -> bytes:
    """wordcount.tsv of ``counts``: count descending, then word bytes."""
    rows = sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))
    return b"".join([b"%s\t%d\n" % wc for wc in rows])


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def wc_words(path: str) -> tuple:
    t0 = time.perf_counter()
    p = subprocess.run(["wc", "-w", path], capture_output=True, text=True, check=True,
                       env=dict(os.environ, LC_ALL="C"))
    return time.perf_counter() - t0, int(p.stdout.split()[0])


def grep_lines(path: str, block: int, pattern: str, line_blocks) -> tuple:
    """One process: ``re.search`` on every line; ``(seconds, matches, digest of the matching
    lines)``."""
    search = re.compile(pattern.encode()).search
    h = hashlib.blake2b(digest_size=16)
    n = 0
    t0 = time.perf_counter()
    for b in line_blocks(path, block):
        for line in b.split(b"\n"):
            if search(line):
                n += 1
                h.update(line + b"\n")
    return time.perf_counter() - t0, n, h.hexdigest()


def grep_output_digest(out: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(os.path.join(out, "grep.tsv"), "rb") as f:
        for row in f:
            h.update(row.split(b"\t", 2)[2])
    return h.hexdigest()


def run(args, mb) -> None:
    """``mapreduce_bench.py --corpora DIR``: the corpus x job table."""
    names = [n for n in args.corpus_names.split(",") if n]
    jobs = [j for j in args.corpus_jobs.split(",") if j]
    wd = C.workdir(args.workdir, "corpora-bench-")
    small = {n for n in args.small_corpora.split(",") if n}
    runs: dict = {}
    refs: dict = {}
    files = {n: corpora.ensure(args.corpora, n, args.corpus_megabytes) for n in names}
    h5s = {}
    for n in names:
        for chunk in [args.corpus_chunk] + ([args.small_chunk] if n in small else []):
            label = mb.size_label(chunk)
            h5 = os.path.join(args.corpora, f"{n}-{label}.h5")
            if not os.path.exists(h5) or os.path.getmtime(h5) < os.path.getmtime(files[n]):
                mb.ingest(files[n], h5, chunk)
            h5s[(n, label)] = h5
    step = {"wordcount": _wordcount_step, "grep": _grep_step, "linesort": _linesort_step,
            "distinct": _distinct_step}
    ctx = {"args": args, "mb": mb, "wd": wd, "h5s": h5s, "small": small,
           "big": mb.size_label(args.corpus_chunk)}
    load = [os.getloadavg()]
    for rep in range(args.repeat):
        for n in names if rep % 2 == 0 else list(reversed(names)):
            r, ref = runs.setdefault(n, {}), refs.setdefault(n, {})
            for j in jobs:
                C.log(f"rep {rep} {n} {j}: start (load average {os.getloadavg()[0]:.1f})")
                step[j](ctx, n, files[n], r, ref)
            load.append(os.getloadavg())
    table = _table(names, runs, refs, files, ctx["big"], mb.size_label(args.small_chunk), small)
    result = {"benchmark": "mapreduce_bench --corpora", "machine": C.machine(), "ranks": args.ranks,
              "repeat": args.repeat, "chunk": ctx["big"], "jobs": jobs,
              "load_average_1_5_15": [[round(x, 2) for x in la] for la in load],
              "corpora": {n: _manifest(files[n]) for n in names},
              "references": refs, "table": table, "runs": runs}
    C.emit(result, "\n".join(_human(table, jobs)))
    if not args.workdir:                  # the run directories (~300 MB): not left in /tmp
        shutil.rmtree(wd, ignore_errors=True)


def _mpitiny(ctx: dict, job: str, n: str, label: str, extra=()) -> tuple:
    """Run ``job`` on corpus ``n`` (the HDF5 file at ``label``): ``(result, out dir, run dir)``."""
    wd = ctx["wd"]
    out, rd = os.path.join(wd, f"out-{job}-{n}"), os.path.join(wd, f"run-{job}-{n}")
    pattern = PATTERNS.get(n, ctx["mb"].GREP_PATTERN) if job == "grep" else ""
    got = ctx["mb"].run_mpitiny(job, ctx["h5s"][(n, label)], out, rd, ctx["args"].ranks, pattern,
                                ctx["args"].timeout, extra=list(extra))
    return got, out


def _wordcount_step(ctx: dict, n: str, path: str, r: dict, ref: dict) -> None:
    args, mb = ctx["args"], ctx["mb"]
    nbytes = os.path.getsize(path)
    secs, counts = mb.baseline_wordcount(path, args.baseline_block)
    r.setdefault("counter", []).append(secs)
    if "tsv" not in ref:
        ref.update(tsv=_digest(reference_tsv(counts)), distinct=len(counts),
                   words=sum(counts.values()), long=sum(c for w, c in counts.items() if len(w) > 15))
    del counts
    secs, words = wc_words(path)
    r.setdefault("wc", []).append(secs)
    ref["wc_words"] = words
    for label in [ctx["big"]] + ([mb.size_label(args.small_chunk)] if n in ctx["small"] else []):
        got, out = _mpitiny(ctx, "wordcount", n, label)
        if "error" not in got:
            with open(os.path.join(out, "wordcount.tsv"), "rb") as f:
                got["exact"] = _digest(f.read()) == ref["tsv"]
        r.setdefault(f"wordcount-{label}", []).append(got)
        C.log(f"{n} wordcount {label}: {_brief(got, nbytes)}")
        shutil.rmtree(out, ignore_errors=True)
    if args.dask_python:
        d = mb.run_dask("wordcount", path, args.corpus_chunk, args.ranks, "", args.dask_timeout,
                        python=args.dask_python)
        r.setdefault("dask-wordcount", []).append(d)
        C.log(f"{n} dask wordcount: {d.get('seconds', d.get('error'))}")


def _grep_step(ctx: dict, n: str, path: str, r: dict, ref: dict) -> None:
    args, mb = ctx["args"], ctx["mb"]
    pattern = PATTERNS.get(n, mb.GREP_PATTERN)
    secs, matches, lines_digest = grep_lines(path, args.baseline_block, pattern, mb.line_blocks)
    r.setdefault("grep-baseline", []).append(secs)
    ref.update(grep_matches=matches, grep_pattern=pattern)
    scratch = os.path.join(ctx["wd"], "baseline-grep-gnu.txt")
    secs, ref["grep_gnu_matches"] = mb.gnu_grep_lines(path, pattern, scratch)
    os.remove(scratch)
    r.setdefault("grep-gnu", []).append(secs)
    got, out = _mpitiny(ctx, "grep", n, ctx["big"])
    if "error" not in got:
        got["exact"] = ((got.get("finish") or {}).get("matches") == matches
                        and grep_output_digest(out) == lines_digest)
    r.setdefault("grep", []).append(got)
    C.log(f"{n} grep: {_brief(got, os.path.getsize(path))}")
    shutil.rmtree(out, ignore_errors=True)
    if args.dask_python:
        d = mb.run_dask("grep", path, args.corpus_chunk, args.ranks, pattern, args.dask_timeout,
                        python=args.dask_python)
        r.setdefault("dask-grep", []).append(d)
        C.log(f"{n} dask grep: {d.get('seconds', d.get('error'))}")


def sort_lines_baseline(path: str, out_path: str) -> tuple:
    """One process: read, ``split(b"\\n")``, ``list.sort``, write (jobs/linesort.py's lines);
    ``(seconds, lines, digest of the output)``."""
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    lines.sort()
    data = b"\n".join(lines) + b"\n" if lines else b""
    with open(out_path, "wb") as f:
        f.write(data)
    secs = time.perf_counter() - t0
    return secs, len(lines), _digest(data)


def distinct_baseline(path: str, block: int, out_path: str, line_blocks) -> tuple:
    """One process: ``set.update(block.split())``, ``sorted``, write; ``(seconds, words,
    digest)``."""
    t0 = time.perf_counter()
    words: set = set()
    for b in line_blocks(path, block):
        words.update(b.split())
    data = b"".join(w + b"\n" for w in sorted(words))
    with open(out_path, "wb") as f:
        f.write(data)
    return time.perf_counter() - t0, len(words), _digest(data)


def _file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return _digest(f.read())


def _linesort_step(ctx: dict, n: str, path: str, r: dict, ref: dict) -> None:
    _checked_step(ctx, n, path, r, ref, "linesort", "sorted.txt", "lines",
                  lambda scratch: sort_lines_baseline(path, scratch),
                  lambda scratch: ctx["mb"].gnu_sort_lines(path, scratch))


def _distinct_step(ctx: dict, n: str, path: str, r: dict, ref: dict) -> None:
    _checked_step(ctx, n, path, r, ref, "distinct", "distinct.txt", "distinct",
                  lambda scratch: distinct_baseline(path, ctx["args"].baseline_block, scratch,
                                                    ctx["mb"].line_blocks),
                  lambda scratch: ctx["mb"].gnu_distinct_words(path, scratch))


def _checked_step(ctx: dict, n: str, path: str, r: dict, ref: dict, job: str, output: str,
                  count_key: str, baseline, gnu=None) -> None:
    """``job`` on corpus ``n`` beside its one-process ``baseline(scratch) -> (seconds, count,
    digest)`` and the GNU tools' ``gnu(scratch) -> (seconds, digest)``; the job's ``output``
    must have the baseline's digest (and so must GNU's: ``{job}_gnu_same``)."""
    scratch = os.path.join(ctx["wd"], f"baseline-{output}")
    secs, count, digest = baseline(scratch)
    os.remove(scratch)
    r.setdefault(f"{job}-baseline", []).append(secs)
    if gnu is not None:
        gsecs, gdigest = gnu(scratch)
        os.remove(scratch)
        r.setdefault(f"{job}-gnu", []).append(gsecs)
        ref[f"{job}_gnu_same"] = gdigest == digest
    ref[count_key] = count
    got, out = _mpitiny(ctx, job, n, ctx["big"])
    if "error" not in got:
        got["exact"] = _file_digest(os.path.join(out, output)) == digest
    r.setdefault(job, []).append(got)
    C.log(f"{n} {job}: {_brief(got, os.path.getsize(path))} (baseline {secs:.2f} s)")
    shutil.rmtree(out, ignore_errors=True)


def _manifest(path: str) -> dict:
    try:
        with open(path[:-4] + ".json", encoding="utf-8") as f:
            return json.load(f)
    except OSError:
        return {"file": path}


def _brief(got: dict, nbytes: int) -> str:
    if "error" in got:
        return "FAILED " + got["error"][:300]
    return (f"whole {got['whole_seconds']:.2f} s ({nbytes / got['whole_seconds'] / 1e6:.1f} MB/s), "
            f"exact {got.get('exact')}, longest task {got.get('longest_task')}")


def _med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _table(names, runs, refs, files, big, small_label, small) -> dict:
    table = {}
    for n in names:
        r, ref, mbytes = runs[n], refs[n], os.path.getsize(files[n]) / 1e6
        row = {"MB": round(mbytes, 1), "distinct_words": ref.get("distinct"),
               "words": ref.get("words"), "wc_w_words": ref.get("wc_words")}
        if "wc" in r:
            row["wc_MBps"] = C.rnd(mbytes / _med(r["wc"]), 4)
        if f"wordcount-{big}" in r:
            row.update(_job_cells(r, f"wordcount-{big}", "counter", mbytes, "wordcount"))
            row["wordcount_vs_counter"] = row.pop("wordcount_vs_baseline")
            row["counter_MBps"] = row.pop("wordcount_baseline_MBps")
            row["wordcount_vs_wc"] = C.rnd(C.ratio(row["wordcount_MBps"], row.get("wc_MBps")), 3)
            row.update(_dask_cells(r, "wordcount", mbytes, row["wordcount_MBps"]))
        if n in small and f"wordcount-{small_label}" in r:
            cells = _job_cells(r, f"wordcount-{small_label}", "counter", mbytes, "w")
            row[f"wordcount_{small_label}_MBps"] = cells["w_MBps"]
            row[f"wordcount_{small_label}_vs_{big}"] = C.rnd(C.ratio(
                cells["w_MBps"], row.get("wordcount_MBps")), 3)
            row[f"wordcount_{small_label}_exact"] = cells["w_exact"]
            row[f"wordcount_{small_label}_longest_task_fraction"] = cells["w_longest_task_fraction"]
        if "grep" in r:
            row.update(grep_pattern=ref["grep_pattern"], grep_matches=ref["grep_matches"],
                       **_job_cells(r, "grep", "grep-baseline", mbytes, "grep"))
            row.update(_dask_cells(r, "grep", mbytes, row["grep_MBps"]))
            row["grep_gnu_same_matches"] = ref.get("grep_gnu_matches") == ref["grep_matches"]
        for job in ("linesort", "distinct"):
            if job in r:
                row.update(_job_cells(r, job, f"{job}-baseline", mbytes, job))
                row[f"{job}_gnu_same"] = ref.get(f"{job}_gnu_same")
        for job in ("grep", "linesort", "distinct"):
            if r.get(f"{job}-gnu") and row.get(f"{job}_MBps"):
                gnu = C.rnd(mbytes / _med(r[f"{job}-gnu"]), 4)
                row[f"{job}_gnu_MBps"] = gnu
                row[f"{job}_vs_gnu"] = C.rnd(C.ratio(row[f"{job}_MBps"], gnu), 3)
                row[f"{job}_per_rep_vs_gnu"] = [C.rnd(b / g["whole_seconds"], 3) for b, g in
                                                zip(r[f"{job}-gnu"], r.get(job, []))
                                                if "error" not in g]
        table[n] = row
    return table


def _job_cells(r: dict, key: str, baseline: str, mbytes: float, name: str) -> dict:
    ok = [g for g in r.get(key, []) if "error" not in g]
    secs = _med([g["whole_seconds"] for g in ok])
    mbps = C.rnd(mbytes / secs, 4) if secs else None
    base = C.rnd(mbytes / _med(r[baseline]), 4) if r.get(baseline) else None
    return {f"{name}_MBps": mbps, f"{name}_seconds": C.rnd(secs, 4) if secs else None,
            f"{name}_baseline_MBps": base, f"{name}_vs_baseline": C.rnd(C.ratio(mbps, base), 3),
            f"{name}_per_rep_vs_baseline": [C.rnd(b / g["whole_seconds"], 3) for b, g in
                                            zip(r.get(baseline, []), r.get(key, []))
                                            if "error" not in g],
            f"{name}_exact": all(g.get("exact") for g in ok) if ok else None,
            f"{name}_failures": len(r.get(key, [])) - len(ok),
            f"{name}_longest_task_fraction": max((g["longest_task"]["fraction_of_span"]
                                                  for g in ok), default=None),
            f"{name}_longest_task_family": max(((g["longest_task"]["fraction_of_span"],
                                                 g["longest_task"]["family"]) for g in ok),
                                               default=(None, None))[1]}


def _dask_cells(r: dict, job: str, mbytes: float, mbps) -> dict:
    runs = r.get(f"dask-{job}", [])
    done = [d["seconds"] for d in runs if "seconds" in d]
    timed_out = [d["timed_out_after"] for d in runs if "timed_out_after" in d]
    dask = C.rnd(mbytes / _med(done), 4) if done else None
    cells = {f"dask_{job}_MBps": dask, f"{job}_vs_dask": C.rnd(C.ratio(mbps, dask), 3)}
    if timed_out and not done:      # a timed-out run bounds Dask's throughput from above
        cells[f"dask_{job}_MBps_at_most"] = C.rnd(mbytes / min(timed_out), 4)
        cells[f"{job}_vs_dask_at_least"] = C.rnd(C.ratio(mbps, cells[f"dask_{job}_MBps_at_most"]), 3)
    return cells


def _human(table: dict, jobs: list) -> list:
    lines = []
    for n, r in table.items():
        cells = [f"{n} ({r['MB']} MB, {r.get('distinct_words')} distinct words)"]
        for job in jobs:
            if r.get(f"{job}_MBps") is None:
                cells.append(f"{job} -")
                continue
            vs = r.get(f"{job}_vs_counter", r.get(f"{job}_vs_baseline"))
            dask = r.get(f"{job}_vs_dask") or (f">={r[f'{job}_vs_dask_at_least']}"
                                              if r.get(f"{job}_vs_dask_at_least") else None)
            cells.append(f"{job} {r[f'{job}_MBps']} MB/s x{vs} baseline"
                         + (f" x{r[f'{job}_vs_gnu']} GNU" if r.get(f"{job}_vs_gnu") else "")
                         + (f" x{dask} Dask" if dask else "")
                         + f" exact={r[f'{job}_exact']} longest={r[f'{job}_longest_task_fraction']}")
        lines.append(" | ".join(cells))
        for k, v in r.items():
            if k.startswith("wordcount_") and "KiB" in k:
                lines.append(f"  {n}: {k} = {v}")
    return lines
