#!/bin/bash
# Distributed grep over HDF5 on a Slurm allocation (jobs/grep.json). From the mpitiny checkout:
#
#   sbatch slurm/grep.sh PATTERN [INPUT] [mpitiny run options...]
#   PATTERN=... INPUT=big.txt sbatch slurm/grep.sh
#
# Like slurm/wordcount.sh: without INPUT it generates a $MB MB corpus (default 100), packs the
# input into HDF5 at 8 MiB chunks (`mpitiny ingest`), then runs jobs/grep.json with
# --param input=<the .h5> --param pattern=PATTERN --param output=<dir>. Output in
# slurm-out/grep-$SLURM_JOB_ID/ (or $OUT). Fails with a clear message (exit 2) when this
# checkout has no jobs/grep.json yet.
#
# What a site changes: see slurm/wordcount.sh (partition/account, nodes x tasks per node, how
# Python is found, srun --mpi=pmi2 vs mpiexec, OUT on scratch).
#SBATCH --job-name=mpitiny-grep
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
trap 'STOP_PENDING=USR1' USR1   # Slurm's warning can come in the job's first second: held (common.sh)
set -euo pipefail
source "${MPITINY_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}/slurm/common.sh"
need_dag jobs/grep.json
PATTERN=${1:-${PATTERN:-}}
[[ -n $PATTERN ]] || { echo "grep.sh: usage: sbatch slurm/grep.sh PATTERN [INPUT] (or PATTERN=... in the environment)" >&2; exit 2; }
shift || true
INPUT_ARG=${INPUT:-}
if [[ $# -gt 0 && $1 != -* ]]; then INPUT_ARG=$1; shift; fi
outdir grep
text_input "$INPUT_ARG" jobs/grep.json   # sets JOB_INPUT

echo "=== grep '$PATTERN'"
run_mpitiny run jobs/grep.json --param input="$JOB_INPUT" --param pattern="$PATTERN" \
    --param output="$OUT" --out "$OUT/run" "$@"
echo "=== output in $OUT:"
ls -l "$OUT"
