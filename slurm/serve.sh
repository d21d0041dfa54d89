#!/bin/bash
# A long-lived mpitiny server that holds an allocation and runs the jobs submitted to it:
#   sbatch slurm/serve.sh [RUN_DIR] [mpitiny serve options]
# then, from a login shell or another job step (any machine that sees RUN_DIR's file system):
#   mpitiny submit RUN_DIR dag.json [--priority P] [--param NAME=VALUE]   # prints the job id
#   mpitiny status RUN_DIR          # the jobs: queued / running / done / failed / cancelled
#   mpitiny cancel RUN_DIR JOB      # a job; `mpitiny stop RUN_DIR` ends the server (exit 0)
# RUN_DIR defaults to mpitiny-serve/ under the submit directory (or $OUT). Jobs may be
# submitted before the server starts: it picks them up when it does (docs/serve.md).
#
# What a site usually changes: as in run_dag.sh (partition, nodes, ranks per node, --time, how
# Python is provided). The server ends on its own 30 s before the job's end (exit 75, its
# journals saved); common.sh then requeues the job and the requeued server resumes the jobs
# that had not ended, in the same RUN_DIR: tasks that finished are not run again.
#SBATCH --job-name=mpitiny-serve
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=2
#SBATCH --time=01:00:00
#SBATCH --output=mpitiny-serve-%j.out
#SBATCH --requeue
#SBATCH --signal=B:USR1@120
#SBATCH --open-mode=append
##SBATCH --partition=compute
##SBATCH --account=myproject
trap 'STOP_PENDING=USR1' USR1   # Slurm's warning: held (common.sh); the server ends before it
set -euo pipefail
SUBMIT_DIR=${SLURM_SUBMIT_DIR:-$PWD}
RUN_DIR=${OUT:-$SUBMIT_DIR/mpitiny-serve}
if [[ $# -gt 0 && $1 != -* ]]; then
    RUN_DIR=$1
    shift
fi
[[ $RUN_DIR == /* ]] || RUN_DIR=$SUBMIT_DIR/$RUN_DIR
source "${MPITINY_HOME:-$SUBMIT_DIR}/slurm/common.sh"
cd "$SUBMIT_DIR"
echo "=== serving $RUN_DIR: mpitiny submit $RUN_DIR dag.json; mpitiny stop $RUN_DIR ends it"
run_mpitiny serve "$RUN_DIR" "$@"
