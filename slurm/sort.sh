#!/bin/bash
# TeraSort on a Slurm allocation: teragen -> mpitiny ingest -> jobs/sort.json (sample, map,
# reduce, teravalidate). From the mpitiny checkout:
#
#   sbatch slurm/sort.sh [INPUT] [mpitiny run options...]   # e.g. --param partitions=16
#   ROWS=10000000 sbatch slurm/sort.sh                       # 1 GB of records
#
# Without INPUT it generates $ROWS records of 100 bytes (default 1,000,000 = 100 MB) with
# jobs/teragen.py; INPUT may be such a file of records, or an .h5 already made by
# `mpitiny ingest --format records:100`. The records are packed into HDF5 at 8 MiB chunks
# (`mpitiny ingest --format records:100`, on the job's ranks), then jobs/sort.json runs with
# --param input=<the .h5> --param output=<dir>/sorted: part-R.bin files in key order and
# validate.json; the job fails (exit 1) if the output is not sorted and complete.
# Everything goes to slurm-out/sort-$SLURM_JOB_ID/ (or $OUT). Fails with a clear message (exit
# 2) when this checkout has no jobs/sort.json.
#
# What a site changes: see slurm/wordcount.sh (partition/account, nodes x tasks per node, how
# Python is found, srun --mpi=pmi2 vs mpiexec). OUT must be on a file system every node sees
# (the maps' files are read by the reduces), and on scratch: the data is written three times.
#SBATCH --job-name=mpitiny-sort
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
need_dag jobs/sort.json
INPUT_ARG=${INPUT:-}
if [[ $# -gt 0 && $1 != -* ]]; then INPUT_ARG=$1; shift; fi
outdir sort

if [[ $INPUT_ARG == *.h5 ]]; then
    JOB_INPUT=$INPUT_ARG
else
    if [[ -z $INPUT_ARG ]]; then
        [[ -f jobs/teragen.py ]] || { echo "sort.sh: ERROR: no jobs/teragen.py to generate the records (give INPUT)" >&2; exit 2; }
        INPUT_ARG=$OUT/records.bin
        echo "=== teragen ${ROWS:=1000000} records -> $INPUT_ARG"
        "$PY" jobs/teragen.py "$ROWS" "$INPUT_ARG"
    fi
    [[ -e $INPUT_ARG ]] || { echo "sort.sh: ERROR: input $INPUT_ARG does not exist" >&2; exit 2; }
    echo "=== ingest $INPUT_ARG -> $OUT/input.h5 (100-byte records, 8 MiB chunks)"
    rm -rf "$OUT/input.h5" "$OUT/input.h5.shards"
    run_mpitiny ingest "$INPUT_ARG" -o "$OUT/input.h5" --format records:100 --chunk 8MiB
    JOB_INPUT=$OUT/input.h5
fi

echo "=== sort"
rm -rf "$OUT/sorted"
run_mpitiny run jobs/sort.json --param input="$JOB_INPUT" --param output="$OUT/sorted" \
    --out "$OUT/run" "$@"
echo "=== $OUT/sorted:"
ls -l "$OUT/sorted"
[[ -f $OUT/sorted/validate.json ]] && echo "validate.json: $(cat "$OUT/sorted/validate.json")"
