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
* The longest task of every mpitiny run as a fraction of its first-task-to-last-task span.
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


def longest_task(run_dir: str) -> dict:
    """The longest task of a run: seconds, fraction of the first-start-to-last-end span, family."""
    import numpy as np
    from mpitiny.io.rundir import groups_of, read_tasks
    rows, groups = read_tasks(run_dir), groups_of(run_dir)
    d = rows["end"] - rows["start"]
    span = float(rows["end"].max() - rows["start"].min())
    i = int(d.argmax())
    k = int(np.searchsorted([g["first"] for g in groups], rows["gid"][i], side="right")) - 1
    return {"seconds": C.rnd(float(d[i]), 4), "fraction_of_span": C.rnd(float(d[i]) / span, 4),
            "family": groups[k]["name"]}


def run(args, mb) -> None:
    """``mapreduce_bench.py --corpora DIR``: the corpus x job table."""
    names = [n for n in args.corpus_names.split(",") if n]
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
    big = mb.size_label(args.corpus_chunk)
    for rep in range(args.repeat):
        for n in names if rep % 2 == 0 else list(reversed(names)):
            r = runs.setdefault(n, {})
            path, nbytes = files[n], os.path.getsize(files[n])
            secs, counts = mb.baseline_wordcount(path, args.baseline_block)
            r.setdefault("counter", []).append(secs)
            if n not in refs:
                refs[n] = {"tsv": _digest(reference_tsv(counts)), "distinct": len(counts),
                           "words": sum(counts.values()),
                           "long": sum(c for w, c in counts.items() if len(w) > 15)}
            del counts
            secs, words = wc_words(path)
            r.setdefault("wc", []).append(secs)
            refs[n]["wc_words"] = words
            for label in [big] + ([mb.size_label(args.small_chunk)] if n in small else []):
                out, rd = os.path.join(wd, f"out-{n}"), os.path.join(wd, f"run-{n}")
                got = mb.run_mpitiny("wordcount", h5s[(n, label)], out, rd, args.ranks, "",
                                     args.timeout)
                if "error" not in got:
                    with open(os.path.join(out, "wordcount.tsv"), "rb") as f:
                        got["exact"] = _digest(f.read()) == refs[n]["tsv"]
                    got["longest_task"] = longest_task(rd)
                r.setdefault(f"wordcount-{label}", []).append(got)
                C.log(f"rep {rep} {n} wordcount {label}: {_brief(got, nbytes)}")
                shutil.rmtree(out, ignore_errors=True)
            if args.dask_python:
                d = mb.run_dask("wordcount", path, args.corpus_chunk, args.ranks, "",
                                args.dask_timeout, python=args.dask_python)
                r.setdefault("dask-wordcount", []).append(d)
                C.log(f"rep {rep} {n} dask wordcount: {d.get('seconds', d.get('error'))}")
            pattern = PATTERNS.get(n, mb.GREP_PATTERN)
            secs, matches, lines_digest = grep_lines(path, args.baseline_block, pattern, mb.line_blocks)
            r.setdefault("grep-baseline", []).append(secs)
            refs[n].update(grep_matches=matches, grep_pattern=pattern)
            out, rd = os.path.join(wd, f"out-grep-{n}"), os.path.join(wd, f"run-grep-{n}")
            got = mb.run_mpitiny("grep", h5s[(n, big)], out, rd, args.ranks, pattern, args.timeout)
            if "error" not in got:
                got["exact"] = ((got.get("finish") or {}).get("matches") == matches
                                and grep_output_digest(out) == lines_digest)
                got["longest_task"] = longest_task(rd)
            r.setdefault("grep", []).append(got)
            C.log(f"rep {rep} {n} grep: {_brief(got, nbytes)}")
            shutil.rmtree(out, ignore_errors=True)
            if args.dask_python:
                d = mb.run_dask("grep", path, args.corpus_chunk, args.ranks, pattern,
                                args.dask_timeout, python=args.dask_python)
                r.setdefault("dask-grep", []).append(d)
    table = _table(names, runs, refs, files, big, mb.size_label(args.small_chunk), small)
    result = {"benchmark": "mapreduce_bench --corpora", "machine": C.machine(), "ranks": args.ranks,
              "repeat": args.repeat, "chunk": big, "corpora": {n: _manifest(files[n]) for n in names},
              "references": refs, "table": table, "runs": runs}
    C.emit(result, "\n".join(_human(table)))


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
        r, mbytes = runs[n], os.path.getsize(files[n]) / 1e6
        ok = [g for g in r.get(f"wordcount-{big}", []) if "error" not in g]
        wc_s = _med([g["whole_seconds"] for g in ok])
        row = {"MB": round(mbytes, 1), "distinct_words": refs[n]["distinct"],
               "words": refs[n]["words"], "wc_w_words": refs[n].get("wc_words"),
               "wordcount_MBps": C.rnd(mbytes / wc_s, 4) if wc_s else None,
               "wordcount_exact": all(g.get("exact") for g in ok) if ok else None,
               "counter_MBps": C.rnd(mbytes / _med(r["counter"]), 4),
               "wc_MBps": C.rnd(mbytes / _med(r["wc"]), 4),
               "wordcount_longest_task_fraction": max((g["longest_task"]["fraction_of_span"]
                                                      for g in ok), default=None)}
        row["wordcount_vs_counter"] = C.rnd(C.ratio(row["wordcount_MBps"], row["counter_MBps"]), 3)
        row["wordcount_vs_wc"] = C.rnd(C.ratio(row["wordcount_MBps"], row["wc_MBps"]), 3)
        dk = [d["seconds"] for d in r.get("dask-wordcount", []) if "seconds" in d]
        row["dask_wordcount_MBps"] = C.rnd(mbytes / _med(dk), 4) if dk else None
        row["wordcount_vs_dask"] = C.rnd(C.ratio(row["wordcount_MBps"], row["dask_wordcount_MBps"]), 3)
        if n in small:
            sm = [g for g in r.get(f"wordcount-{small_label}", []) if "error" not in g]
            s_s = _med([g["whole_seconds"] for g in sm])
            row[f"wordcount_{small_label}_MBps"] = C.rnd(mbytes / s_s, 4) if s_s else None
            row[f"wordcount_{small_label}_vs_{big}"] = C.rnd(C.ratio(
                row[f"wordcount_{small_label}_MBps"], row["wordcount_MBps"]), 3)
            row[f"wordcount_{small_label}_exact"] = all(g.get("exact") for g in sm) if sm else None
        gr = [g for g in r.get("grep", []) if "error" not in g]
        g_s = _med([g["whole_seconds"] for g in gr])
        row.update(grep_pattern=refs[n]["grep_pattern"], grep_matches=refs[n]["grep_matches"],
                   grep_MBps=C.rnd(mbytes / g_s, 4) if g_s else None,
                   grep_exact=all(g.get("exact") for g in gr) if gr else None,
                   grep_baseline_MBps=C.rnd(mbytes / _med(r["grep-baseline"]), 4),
                   grep_longest_task_fraction=max((g["longest_task"]["fraction_of_span"]
                                                   for g in gr), default=None))
        row["grep_vs_baseline"] = C.rnd(C.ratio(row["grep_MBps"], row["grep_baseline_MBps"]), 3)
        row["grep_vs_wc"] = C.rnd(C.ratio(row["grep_MBps"], row["wc_MBps"]), 3)
        dg = [d["seconds"] for d in r.get("dask-grep", []) if "seconds" in d]
        row["dask_grep_MBps"] = C.rnd(mbytes / _med(dg), 4) if dg else None
        row["grep_vs_dask"] = C.rnd(C.ratio(row["grep_MBps"], row["dask_grep_MBps"]), 3)
        table[n] = row
    return table


def _human(table: dict) -> list:
    lines = ["corpus | MB | distinct | wordcount MB/s | x Counter | x wc -w | x Dask | exact | "
             "longest task | grep MB/s | x baseline | x wc -w | x Dask | exact"]
    for n, r in table.items():
        lines.append(" | ".join(str(x) for x in (
            n, r["MB"], r["distinct_words"], r["wordcount_MBps"], r["wordcount_vs_counter"],
            r["wordcount_vs_wc"], r["wordcount_vs_dask"], r["wordcount_exact"],
            r["wordcount_longest_task_fraction"], r["grep_MBps"], r["grep_vs_baseline"],
            r["grep_vs_wc"], r["grep_vs_dask"], r["grep_exact"])))
        for k, v in r.items():
            if k.startswith("wordcount_") and "KiB" in k:
                lines.append(f"  {n}: {k} = {v}")
    return lines
