#!/bin/bash
# A bag of independent tiny tasks on a Slurm allocation: N shell commands and N Python calls
# (two families of a generated dag.json), then one task that checks and sums what they did.
#
#   sbatch slurm/bag_of_tasks.sh [N]          # N: default 10000 (also env N)
#
# Writes slurm-out/bag_of_tasks-$SLURM_JOB_ID/ (or $OUT): dag.json, bag.py (the Python tasks),
# out/ (one file per shell task), run/ (the mpitiny run directory) and bag.json (the check's
# result: {"n": N, "sum_squares": ..., "shell_files": N}). Exit 0 only when every task is done
# and the check found all N shell outputs and all N results.
#
# For your own bag: replace the "sh" cmd and bag.py's work(). What a site changes is as in
# slurm/wordcount.sh (partition/account, nodes x tasks per node, Python, launcher).
#SBATCH --job-name=mpitiny-bag
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=2
#SBATCH --time=00:15:00
#SBATCH --output=slurm-%x-%j.out
# Requeue: after a node failure, or by itself when the time limit nears: mpitiny knows the
# job's end, starts no task that would not finish 30 s before it, saves its journals and exits
# 75; common.sh requeues; the requeued job resumes. USR1 (120 s before the end) is held until
# 15 s before it: the backstop for a task that overruns. A requeued job appends to its output.
#SBATCH --requeue
#SBATCH --signal=B:USR1@120
#SBATCH --open-mode=append
##SBATCH --partition=compute
##SBATCH --account=myproject
trap 'STOP_PENDING=USR1' USR1   # Slurm's warning can come in the job's first second: held (common.sh)
set -euo pipefail
source "${MPITINY_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}/slurm/common.sh"
N=${1:-${N:-10000}}
[[ $N =~ ^[0-9]+$ && $N -ge 1 ]] || { echo "bag_of_tasks.sh: N must be a positive integer, not '$N'" >&2; exit 2; }
outdir bag_of_tasks
rm -rf "$OUT/out" "$OUT/bag.json"
mkdir -p "$OUT/out"

cat >"$OUT/bag.py" <<'PYEND'
"""The Python tasks of slurm/bag_of_tasks.sh."""
import json
import os


def work(i: int) -> int:
    return i * i


def check(out: str, n: int, inputs: dict) -> dict:
    squares = {k: v for k, v in inputs.items() if k.startswith("py[")}
    assert len(squares) == n, f"{len(squares)} Python results, expected {n}"
    files = os.listdir(os.path.join(out, "out"))
    assert len(files) == n, f"{len(files)} shell outputs, expected {n}"
    total = sum(squares.values())
    assert total == sum(i * i for i in range(n)), total
    result = {"n": n, "sum_squares": total, "shell_files": len(files)}
    with open(os.path.join(out, "bag.json.tmp"), "w") as f:
        json.dump(result, f)
    os.replace(os.path.join(out, "bag.json.tmp"), os.path.join(out, "bag.json"))
    return result
PYEND

"$PY" - "$OUT" "$N" <<'PYEND'
import json, sys
out, n = sys.argv[1], int(sys.argv[2])
dag = {"name": "bag_of_tasks",
       "params": {"n": n, "out": out},
       "tasks": [
           {"id": "sh", "cmd": "echo task {i} on $(hostname) > {out}/out/{i}.txt",
            "foreach": {"i": {"range": [0, "{n}"]}}},
           {"id": "py", "fn": "bag:work", "args": ["{i}"], "foreach": {"i": {"range": [0, "{n}"]}}},
           {"id": "check", "fn": "bag:check", "args": ["{out}", "{n}"], "deps": ["sh", "py"]}]}
with open(f"{out}/dag.json", "w") as f:
    json.dump(dag, f, indent=1)
PYEND
"$PY" -m mpitiny validate "$OUT/dag.json"
run_mpitiny run "$OUT/dag.json" --out "$OUT/run"
echo "=== $(cat "$OUT/bag.json")"
