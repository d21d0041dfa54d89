"""``mpitiny ingest`` throughput on 1 and 2 ranks against ``cp`` of the same input, same run.

The input is generated text (``--size-mb``, default 1024 MiB), in the page cache (read once
before). Each repetition runs, interleaved: ``cp IN OUT``; a Python read+write copy in 8 MiB
blocks (the user-space floor: ``cp`` may copy inside the kernel with ``copy_file_range``);
``python -m mpitiny ingest IN -o OUT.h5 --chunk C`` (one process, no MPI); ``mpiexec -n 2
python -m mpitiny ingest ...``.
Times are the wall clock of the whole command (interpreter and MPI start included), and for
ingest also the time it reports itself (``seconds`` in its summary line: planning, packing,
CRC32s, writing, linking). Neither ``cp`` nor ingest fsyncs; ``+fsync`` columns add the time
to ``fsync`` the output file(s) afterwards (their dirty pages reach the disk).
MB/s = input bytes / seconds (10^6 bytes per MB). Outputs are deleted after each run.

    python bench/ingest_bench.py > ingest_bench.json
    python bench/ingest_bench.py --size-mb 256 --repeat 1
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PYTHON, bench_env, emit, log, machine, run_mpi, workdir  # noqa: E402
from io_read import generate_text, read_sequential  # noqa: E402

_SECONDS = re.compile(r" in ([0-9.]+) s \(")


def fsync_paths(paths: list) -> float:
    t0 = time.perf_counter()
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return time.perf_counter() - t0


def outputs(path: str) -> list:
    out = [path]
    shards = path + ".shards"
    if os.path.isdir(shards):
        out += [os.path.join(shards, n) for n in sorted(os.listdir(shards))]
    return out


def remove(path: str) -> None:
    shards = path + ".shards"
    if os.path.isdir(shards):
        shutil.rmtree(shards)
    if os.path.exists(path):
        os.unlink(path)


def run_cp(src: str, dst: str) -> dict:
    t0 = time.perf_counter()
    subprocess.run(["cp", src, dst], check=True)
    wall = time.perf_counter() - t0
    sync = fsync_paths([dst])
    remove(dst)
    return {"wall": wall, "fsync": sync}


def run_pycopy(src: str, dst: str) -> dict:
    """The user-space floor: read and write 8 MiB blocks in Python (what ingest does at least,
    before CRC32s and HDF5)."""
    buf = bytearray(8 << 20)
    mv = memoryview(buf)
    t0 = time.perf_counter()
    with open(src, "rb", buffering=0) as fin, open(dst, "wb", buffering=0) as fout:
        while True:
            n = fin.readinto(buf)
            if not n:
                break
            fout.write(mv[:n])
    wall = time.perf_counter() - t0
    sync = fsync_paths([dst])
    remove(dst)
    return {"wall": wall, "fsync": sync}


def run_ingest(n: int, src: str, dst: str, chunk: str) -> dict:
    argv = ["-m", "mpitiny", "ingest", src, "-o", dst, "--chunk", chunk]
    if n == 1:
        t0 = time.perf_counter()
        proc = subprocess.run([PYTHON, *argv], env=bench_env({"PMI_RANK": None,
                                                              "PMI_SIZE": None}),
                              capture_output=True, text=True, timeout=1800)
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise RuntimeError(proc.stderr)
        out = proc.stdout
    else:
        proc = run_mpi(n, argv, timeout=1800)
        wall, out = proc["wall"], proc["stdout"]
    m = _SECONDS.search(out)
    sync = fsync_paths(outputs(dst))
    remove(dst)
    return {"wall": wall, "reported": float(m.group(1)) if m else None, "fsync": sync,
            "line": out.strip()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=float, default=1024)
    ap.add_argument("--chunk", default="8MiB")
    ap.add_argument("--ranks", default="1,2")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir")
    args = ap.parse_args()
    wd = workdir(args.workdir, "mpitiny-ingest-bench-")
    size = int(args.size_mb * (1 << 20))
    src = os.path.join(wd, "in.txt")
    if not os.path.exists(src) or os.path.getsize(src) != size:
        log(f"generating {size / 2**20:.0f} MiB of text")
        generate_text(src, size)
    read_sequential(src)                      # into the page cache
    ranks = [int(r) for r in args.ranks.split(",")]
    reps: dict = {"cp": [], "python_copy": [], **{f"ingest_{n}": [] for n in ranks}}
    lines = []
    for r in range(args.repeat):
        log(f"repetition {r + 1}/{args.repeat}")
        reps["cp"].append(run_cp(src, os.path.join(wd, "copy.txt")))
        reps["python_copy"].append(run_pycopy(src, os.path.join(wd, "copy.txt")))
        for n in ranks:
            res = run_ingest(n, src, os.path.join(wd, "out.h5"), args.chunk)
            lines.append(res.pop("line"))
            reps[f"ingest_{n}"].append(res)

    def mbps(seconds):
        return round(size / seconds / 1e6, 1) if seconds else None

    def med(key, field):
        vals = [x[field] for x in reps[key] if x.get(field) is not None]
        return statistics.median(vals) if vals else None

    cp_wall = med("cp", "wall")
    cp_sync = statistics.median(x["wall"] + x["fsync"] for x in reps["cp"])
    summary = {"cp": {"MBps": mbps(cp_wall), "MBps_with_fsync": mbps(cp_sync),
                      "seconds": round(cp_wall, 3)}}
    py_wall = med("python_copy", "wall")
    summary["python_copy"] = {"MBps": mbps(py_wall), "MBps_with_fsync": mbps(
        statistics.median(x["wall"] + x["fsync"] for x in reps["python_copy"]))}
    for n in ranks:
        key = f"ingest_{n}"
        wall = med(key, "wall")
        with_sync = statistics.median(x["wall"] + x["fsync"] for x in reps[key])
        summary[key] = {"MBps_wall": mbps(wall), "MBps_reported": mbps(med(key, "reported")),
                        "MBps_with_fsync": mbps(with_sync), "seconds_wall": round(wall, 3),
                        "ratio_vs_cp_wall": round(cp_wall / wall, 3),
                        "ratio_vs_python_copy": round(py_wall / wall, 3),
                        "ratio_vs_cp_with_fsync": round(cp_sync / with_sync, 3)}
    result = {"bench": "ingest", "machine": machine(), "workdir": wd, "size_bytes": size,
              "chunk": args.chunk, "repeat": args.repeat, "summary": summary,
              "repetitions": {k: [{f: (round(v, 4) if isinstance(v, float) else v)
                                   for f, v in x.items()} for x in vals]
                              for k, vals in reps.items()},
              "ingest_lines": lines[:len(ranks)]}
    human = [f"ingest_bench: {size / 2**20:.0f} MiB, chunk {args.chunk}; cp {summary['cp']['MBps']} "
             f"MB/s ({summary['cp']['MBps_with_fsync']} with fsync); python read+write "
             f"{summary['python_copy']['MBps']} MB/s"]
    for n in ranks:
        s = summary[f"ingest_{n}"]
        human.append(f"  ingest {n} rank(s): {s['MBps_wall']} MB/s whole command "
                     f"({s['MBps_reported']} reported; {s['MBps_with_fsync']} with fsync) = "
                     f"{s['ratio_vs_cp_wall']:.2f} x cp")
    if not args.workdir:
        shutil.rmtree(wd, ignore_errors=True)
    emit(result, "\n".join(human))


if __name__ == "__main__":
    main()
