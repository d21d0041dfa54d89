#!/bin/bash
# Run any dag.json on a Slurm allocation:  sbatch slurm/run_dag.sh path/to/dag.json [mpitiny run options]
#
# What a site usually changes: the partition/account lines, --nodes / --ntasks-per-node (one MPI
# rank per core is the usual choice for tiny tasks), --time, and how Python is provided (module
# load, a conda env or the project's .venv). Slurm's srun starts the ranks (`srun --mpi=pmi2`: MPICH,
# the mpich wheel, Intel MPI, Cray MPICH; Open MPI 5 wants `--mpi=pmix`); where srun has no PMI-2,
# the MPI's own "mpiexec -n $SLURM_NTASKS" is used (MPITINY_LAUNCH=srun|mpiexec forces one).
# Run directory: mpitiny-runs/$SLURM_JOB_ID under the submit directory (or $OUT); a requeued
# job has the same id, so it resumes there.
#SBATCH --job-name=mpitiny
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=2
#SBATCH --time=00:30:00
#SBATCH --output=mpitiny-%j.out
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
DAG=${1:?usage: sbatch slurm/run_dag.sh DAG_FILE [mpitiny run options]}
shift
SUBMIT_DIR=${SLURM_SUBMIT_DIR:-$PWD}
[[ $DAG == /* ]] || DAG=$SUBMIT_DIR/$DAG
RUN_DIR=${OUT:-$SUBMIT_DIR/mpitiny-runs/${SLURM_JOB_ID:-local}}
source "${MPITINY_HOME:-$SUBMIT_DIR}/slurm/common.sh"
cd "$SUBMIT_DIR"
run_mpitiny run "$DAG" --out "$RUN_DIR" "$@"
