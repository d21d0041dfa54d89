#!/bin/bash
# Wordcount (MapReduce over HDF5) on a Slurm allocation. From the mpitiny checkout:
#
#   sbatch slurm/wordcount.sh [INPUT]        # INPUT: a text file or a directory of them
#   INPUT=big.txt MB=... sbatch slurm/wordcount.sh
#
# Without INPUT it generates a corpus of $MB MB (default 100) first. Then it packs the input into
# HDF5 at 8 MiB chunks (`mpitiny ingest`, in parallel on the job's ranks), runs
# jobs/wordcount.json with --param input=<the .h5> --param output=<dir>, and prints the top words.
# Everything goes to slurm-out/wordcount-$SLURM_JOB_ID/ (or $OUT): corpus.txt (if generated),
# input.h5, run/ (the mpitiny run directory) and wordcount.tsv (word<TAB>count, count descending).
#
# What a site changes:
#   * --partition / --account (uncomment), --time;
#   * --nodes and --ntasks-per-node: one rank per core is the usual choice (nodes x tasks/node
#     ranks in all); the input should have a few splits (8 MiB each) per rank at least;
#   * how Python is found: `module load python` / a conda env / a venv, then either put mpitiny's
#     python first on PATH or export MPITINY_PYTHON=... (default: the checkout's .venv);
#   * the launcher: `srun --mpi=pmi2` when srun has PMI-2 (MPICH, Intel MPI, Cray MPICH),
#     `srun --mpi=pmix` for Open MPI 5, or MPITINY_LAUNCH=mpiexec (the MPI's own mpiexec -n
#     $SLURM_NTASKS, which takes the nodes from the allocation). See slurm/common.sh.
#   * put OUT on the parallel file system (scratch), not $HOME, for big inputs.
#SBATCH --job-name=mpitiny-wordcount
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=2
#SBATCH --time=00:30:00
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
##SBATCH --mem-per-cpu=2G
trap 'STOP_PENDING=USR1' USR1   # Slurm's warning can come in the job's first second: held (common.sh)
set -euo pipefail
source "${MPITINY_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}/slurm/common.sh"
need_dag jobs/wordcount.json
outdir wordcount

text_input "${1:-${INPUT:-}}" jobs/wordcount.json   # sets JOB_INPUT

echo "=== wordcount"
PYTHONPATH=$REPO/jobs${PYTHONPATH:+:$PYTHONPATH} \
    run_mpitiny run jobs/wordcount.json --param input="$JOB_INPUT" --param output="$OUT" --out "$OUT/run"

echo "=== top words ($OUT/wordcount.tsv)"
"$PY" - "$OUT/wordcount.tsv" <<'PYEND'
import sys
path = sys.argv[1]
total = distinct = 0
top = []
with open(path, "rb") as f:
    for line in f:
        word, n = line.rstrip(b"\n").rsplit(b"\t", 1)
        total += int(n); distinct += 1
        if len(top) < 10:
            top.append((word.decode("utf-8", "replace"), int(n)))
for word, n in top:
    print(f"  {word:<16} {n:>12,}")
print(f"{total:,} words, {distinct:,} distinct")
PYEND
