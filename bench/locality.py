"""Local vs remote split reads for a locality-sensitive job (issue: data plane).

A family over the splits of an ingested text file; each task reads its split and then works
(sleeps) for a fixed time, so 4 ranks behave like 4 nodes. Every split has a home rank (the
rank that holds its metadata, contiguous blocks); the scheduler runs it there unless that rank
is overloaded and an idle rank takes it (late binding). Printed (JSON): for a balanced run and
for a run where one rank is 4x slower, the local/remote read counts from summary.json and the
makespan against the ideal (total work / ranks, or / total speed).

    python bench/locality.py [--ranks 4] [--megabytes 64] [--chunk 256KiB] [--seconds 0.005]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TASK = '''import os, time
from mpitiny.io.splits import open_splits

def work(path, split, seconds, slow_rank):
    data = open_splits(path).read(split)
    slow = int(os.environ["MPITINY_RANK"]) == slow_rank
    time.sleep(seconds * (4 if slow else 1))
    return data.count(b"\\n")
'''


def run(workdir: Path, ranks: int, seconds: float, slow_rank: int) -> dict:
    out = workdir / f"run-slow{slow_rank}"
    cmd = ["mpiexec", "-n", str(ranks), sys.executable, "-m", "mpitiny", "run",
           str(workdir / "loc.json"), "-o", str(out), "-q",
           "--param", f"seconds={seconds}", "--param", f"slow={slow_rank}"]
    subprocess.run(cmd, check=True, cwd=workdir)
    s = json.loads((out / "summary.json").read_text())
    reads = s["split_reads"]
    span = s["last_task_end"] - s["first_task_start"]
    speed = ranks if slow_rank < 0 else ranks - 1 + 0.25
    ideal = s["tasks"] * seconds / speed
    return {"splits": s["tasks"], "local_reads": reads["local"], "remote_reads": reads["remote"],
            "local_fraction": reads["local"] / max(1, reads["local"] + reads["remote"]),
            "makespan": span, "ideal": ideal, "ratio": span / ideal,
            "per_rank_done": [r["done"] for r in s["per_rank"]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--megabytes", type=float, default=64)
    ap.add_argument("--chunk", default="256KiB")
    ap.add_argument("--seconds", type=float, default=0.005)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "jobs"))
    import wordcount
    with tempfile.TemporaryDirectory(prefix="bench-locality-") as tmp:
        work = Path(tmp)
        wordcount.generate(str(work / "corpus.txt"), args.megabytes)
        subprocess.run([sys.executable, "-m", "mpitiny", "ingest", "corpus.txt", "-o", "data.h5",
                        "--chunk", args.chunk], check=True, cwd=work, stdout=subprocess.DEVNULL)
        (work / "loctask.py").write_text(TASK)
        (work / "loc.json").write_text(json.dumps({
            "name": "locality", "params": {"input": "data.h5", "seconds": 0.005, "slow": -1},
            "tasks": [{"id": "w", "fn": "loctask:work",
                       "args": ["{input}", "{split}", "{seconds}", "{slow}"],
                       "foreach": {"split": "{input}"}}]}))
        result = {"benchmark": "locality", "ranks": args.ranks, "chunk": args.chunk,
                  "seconds_per_task": args.seconds, "balanced": [], "one_rank_4x_slower": []}
        for _ in range(args.repeat):
            result["balanced"].append(run(work, args.ranks, args.seconds, -1))
            result["one_rank_4x_slower"].append(run(work, args.ranks, args.seconds, 0))
    print(json.dumps(result, indent=1))
    b = [r["local_fraction"] for r in result["balanced"]]
    s = result["one_rank_4x_slower"]
    print(f"locality, {args.ranks} ranks: balanced local reads {min(b):.1%}-{max(b):.1%}; one rank "
          f"4x slower: local {min(r['local_fraction'] for r in s):.1%}-"
          f"{max(r['local_fraction'] for r in s):.1%}, makespan/ideal "
          f"{min(r['ratio'] for r in s):.2f}-{max(r['ratio'] for r in s):.2f}", file=sys.stderr)


if __name__ == "__main__":
    main()
