"""Split-read throughput of ingested HDF5 inputs against a plain sequential read, same run.

The issue's bars: reading every split of 8 MiB chunks reaches >= 80 % of a sequential read of
the same bytes, 100 KiB chunks >= 50 %.

What is measured (all on the same generated text, ``--size-mb``, default 1024 MiB):

* ``sequential``: one process, ``open(raw.txt).readinto`` in 8 MiB blocks, the whole file;
* ``raw_2proc``: the same on ``--ranks`` MPI ranks, each reading its half (a reference);
* ``api[chunk]``: for each chunk size, ``mpitiny ingest --chunk C`` (one rank), then
  ``--ranks`` MPI ranks each read their contiguous half of the splits through
  ``mpitiny.io.splits`` (``open_splits(...).read_into(i, buf)`` with a reused buffer, like
  ``readinto``); warm, also ``read()`` (a new ``bytes`` per split: ``api_bytes``); cold, also
  each rank's splits in a shuffled order (``api_random``).

Each repetition reads sequentially before and after the others; a ratio is an API figure
divided by the mean of its own repetition's two sequential figures, and the JSON gives the
median over repetitions (plus every repetition). MB/s = valid (logical) bytes / (last rank's
end - first rank's start), 10^6 bytes per MB.
Files are opened before the clock starts. "warm": every file was read once just before, so it
is in the page cache. "cold": the page cache is dropped before each measurement with
``echo 3 > /proc/sys/vm/drop_caches`` when that works (root, writable /proc/sys), else with
``posix_fadvise(POSIX_FADV_DONTNEED)`` on the files read (evicts this machine's cached pages of
those files; a hypervisor's cache below a virtual disk is not affected). The JSON says which.

    python bench/io_read.py > io_read.json                   # ~1 GiB, 4 chunk sizes, warm+cold
    python bench/io_read.py --size-mb 256 --repeat 1 --no-cold
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, log, machine, run_mpi, workdir  # noqa: E402

BLOCK = 8 << 20
CHUNKS = ["100KiB", "1MiB", "8MiB", "64MiB"]


# ----------------------------------------------------------------------------- helpers

def generate_text(path: str, size: int, seed: int = 7) -> None:
    """``size`` bytes of lowercase words, lines of ~60 bytes on average (deterministic)."""
    rng = np.random.default_rng(seed)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 16 << 20)
            block = rng.integers(97, 123, n, dtype=np.uint8)
            u = rng.random(n, dtype=np.float32)
            block[u < 1 / 6] = 32
            block[u < 1 / 60] = 10
            if left == n:
                block[-1] = 10
            f.write(block.tobytes())
            left -= n
    os.replace(tmp, path)


def read_sequential(path: str) -> dict:
    buf = bytearray(BLOCK)
    total = 0
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            total += n
    dt = time.perf_counter() - t0
    return {"bytes": total, "seconds": dt, "MBps": total / dt / 1e6}


def warm(paths: list) -> None:
    for p in paths:
        read_sequential(p)


def drop_caches() -> tuple:
    """Try the system-wide drop; returns (worked, message)."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True, "echo 3 > /proc/sys/vm/drop_caches: ok"
    except OSError as err:
        return False, f"echo 3 > /proc/sys/vm/drop_caches: {err.strerror or err}"


def evict(paths: list, method: str) -> None:
    if method == "drop_caches":
        drop_caches()
        return
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def h5_files(path: str) -> list:
    out = [path]
    shards = path + ".shards"
    if os.path.isdir(shards):
        out += [os.path.join(shards, n) for n in sorted(os.listdir(shards))]
    return out


def mpi_json(n: int, argv: list, timeout: float = 900) -> dict:
    proc = run_mpi(n, [__file__, *argv], timeout=timeout)
    lines = [l for l in proc["stdout"].splitlines() if l.startswith("{")]
    if not lines:
        raise RuntimeError(f"worker printed no JSON: {proc['stderr'][-2000:]}")
    return json.loads(lines[-1])


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# ------------------------------------------------------------------------ MPI workers

def worker(args) -> None:
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    if args.worker == "raw":
        total = os.path.getsize(args.file)
        lo = total * rank // size // BLOCK * BLOCK
        hi = total if rank == size - 1 else total * (rank + 1) // size // BLOCK * BLOCK
        buf = bytearray(BLOCK)
        mv = memoryview(buf)
        fd = os.open(args.file, os.O_RDONLY)
        comm.Barrier()
        t0 = time.time()
        pos, got = lo, 0
        while pos < hi:
            n = os.preadv(fd, [mv[:min(BLOCK, hi - pos)]], pos)
            if not n:
                break
            pos += n
            got += n
        t1 = time.time()
        os.close(fd)
        opened = 0.0
    else:
        from mpitiny.io.splits import open_splits
        t = time.time()
        s = open_splits(args.file)
        opened = time.time() - t
        n = len(s)
        mine = list(range(n * rank // size, n * (rank + 1) // size))
        if args.order == "random":
            np.random.default_rng(rank).shuffle(mine)
        buf = np.empty(max((s.span_bytes(i) for i in mine), default=0), dtype=np.uint8)
        comm.Barrier()
        t0 = time.time()
        got = 0
        if args.mode == "into":
            for i in mine:
                got += s.read_into(i, buf)
        elif args.mode == "bytes":
            for i in mine:
                got += len(s.read(i))
        else:
            for i in mine:
                got += s.read_array(i).nbytes
        t1 = time.time()
    rows = comm.gather((t0, t1, got, opened), root=0)
    if rank == 0:
        start = min(r[0] for r in rows)
        end = max(r[1] for r in rows)
        total = sum(r[2] for r in rows)
        print(json.dumps({"bytes": total, "seconds": end - start,
                          "MBps": total / (end - start) / 1e6,
                          "per_rank_seconds": [r[1] - r[0] for r in rows],
                          "open_seconds": max(r[3] for r in rows)}))


# ------------------------------------------------------------------------------ driver

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=float, default=1024, help="text size in MiB")
    ap.add_argument("--chunks", default=",".join(CHUNKS))
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="warm repetitions (interleaved)")
    ap.add_argument("--cold-repeat", type=int, default=3)
    ap.add_argument("--no-cold", action="store_true")
    ap.add_argument("--workdir", help="keep the files here (default: a temporary directory)")
    ap.add_argument("--worker", choices=["raw", "api"], help=argparse.SUPPRESS)
    ap.add_argument("--file", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="into", choices=["into", "bytes", "array"],
                    help=argparse.SUPPRESS)
    ap.add_argument("--order", default="block", choices=["block", "random"],
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return

    from mpitiny.io.ingestion import ingest
    wd = workdir(args.workdir, "mpitiny-io-read-")
    size = int(args.size_mb * (1 << 20))
    chunks = [c.strip() for c in args.chunks.split(",") if c.strip()]
    result = {"bench": "io_read", "machine": machine(), "workdir": wd, "size_bytes": size,
              "ranks": args.ranks, "block_bytes": BLOCK, "chunks": chunks}
    raw = os.path.join(wd, "raw.txt")
    if not os.path.exists(raw) or os.path.getsize(raw) != size:
        log(f"generating {size / 2**20:.0f} MiB of text in {raw}")
        generate_text(raw, size)
    h5 = {}
    result["ingest"] = {}
    for c in chunks:
        path = os.path.join(wd, f"data-{c}.h5")
        log(f"ingest --chunk {c}")
        s = ingest([raw], path, chunk=c)
        h5[c] = path
        result["ingest"][c] = {"splits": s["splits"], "seconds": round(s["seconds"], 3),
                               "file_bytes": os.path.getsize(path),
                               "stored_bytes": s["stored_bytes"]}

    def api_run(c: str, mode: str = "into", order: str = "block") -> dict:
        return mpi_json(args.ranks, ["--worker", "api", "--file", h5[c], "--mode", mode,
                                     "--order", order])

    def run_phase(phase: str, rounds: int, method: str | None, extra: str) -> dict:
        """``rounds`` repetitions of: sequential, raw_2proc, api[c] and api_<extra>[c] for each
        chunk size, sequential again. Each API figure is also divided by the mean of the two
        sequential reads of its own repetition (the machine's state drifts between
        repetitions); ratios are medians over the repetitions."""
        keys = ["raw_2proc"] + [f"{k}_{c}" for c in chunks for k in ("api", f"api_{extra}")]
        reps = {"sequential_before": [], "sequential_after": [], **{k: [] for k in keys}}
        ratios = {k: [] for k in keys}

        def cold(paths):
            if method:
                evict(paths, method)

        for r in range(rounds):
            log(f"{phase} repetition {r + 1}/{rounds}")
            cold([raw])
            before = read_sequential(raw)["MBps"]
            got = {}
            cold([raw])
            got["raw_2proc"] = mpi_json(args.ranks, ["--worker", "raw", "--file", raw])["MBps"]
            for c in chunks:
                cold(h5_files(h5[c]))
                got[f"api_{c}"] = api_run(c)["MBps"]
                cold(h5_files(h5[c]))
                got[f"api_{extra}_{c}"] = (api_run(c, mode="bytes") if extra == "bytes" else
                                           api_run(c, order="random"))["MBps"]
            cold([raw])
            after = read_sequential(raw)["MBps"]
            reps["sequential_before"].append(before)
            reps["sequential_after"].append(after)
            for k, v in got.items():
                reps[k].append(v)
                ratios[k].append(v / ((before + after) / 2))
        seq = med(reps["sequential_before"] + reps["sequential_after"])
        out = {"sequential_MBps": round(seq, 1),
               "raw_2proc_MBps": round(med(reps["raw_2proc"]), 1),
               "raw_2proc_ratio_vs_sequential": round(med(ratios["raw_2proc"]), 3),
               "per_chunk": {}}
        for c in chunks:
            out["per_chunk"][c] = {
                "api_MBps": round(med(reps[f"api_{c}"]), 1),
                "ratio_vs_sequential": round(med(ratios[f"api_{c}"]), 3),
                "ratio_vs_sequential_per_rep": [round(x, 3) for x in ratios[f"api_{c}"]],
                f"api_{extra}_MBps": round(med(reps[f"api_{extra}_{c}"]), 1),
                f"api_{extra}_ratio_vs_sequential": round(med(ratios[f"api_{extra}_{c}"]), 3)}
        out["repetitions_MBps"] = {k: [round(v, 1) for v in vals] for k, vals in reps.items()}
        return out

    # ---- warm
    log("warm-up: reading every file once")
    warm([raw] + [p for c in chunks for p in h5_files(h5[c])])
    result["warm"] = run_phase("warm", args.repeat, None, "bytes")
    seq = result["warm"]["sequential_MBps"]

    # ---- cold
    if not args.no_cold:
        ok, msg = drop_caches()
        method = "drop_caches" if ok else "fadvise_dontneed"
        log(f"cold: {msg}; using {method}")
        result["cold"] = {"drop_caches": msg, "method": method,
                          **run_phase("cold", args.cold_repeat, method, "random")}

    bars = {}
    for phase in ("warm", "cold"):
        if phase not in result:
            continue
        pc = result[phase]["per_chunk"]
        if "8MiB" in pc:
            bars[f"{phase}_8MiB_ge_80pct"] = pc["8MiB"]["ratio_vs_sequential"] >= 0.8
        if "100KiB" in pc:
            bars[f"{phase}_100KiB_ge_50pct"] = pc["100KiB"]["ratio_vs_sequential"] >= 0.5
    result["bars"] = bars
    lines = [f"io_read: {size / 2**20:.0f} MiB, {args.ranks} ranks; sequential warm "
             f"{seq:.0f} MB/s"]
    for phase in ("warm", "cold"):
        if phase in result:
            for c, v in result[phase]["per_chunk"].items():
                lines.append(f"  {phase:4} {c:>6}: {v['api_MBps']:8.0f} MB/s  "
                             f"{v['ratio_vs_sequential']:.2f} x sequential "
                             f"({result[phase]['sequential_MBps']:.0f} MB/s)")
    if not args.workdir:
        shutil.rmtree(wd, ignore_errors=True)
    emit(result, "\n".join(lines))


if __name__ == "__main__":
    main()
