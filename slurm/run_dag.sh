#!/bin/bash
# Run any dag.json on a Slurm allocation:  sbatch slurm/run_dag.sh path/to/dag.json [mpitiny run options]
#
# What a site usually changes: the partition/account lines, --nodes / --ntasks-per-node (one MPI
# rank per core is the usual choice for tiny tasks), --time, and how Python is provided (module
# load, a conda env or the project's .venv). Slurm's srun starts the ranks (`srun --mpi=pmi2`: MPICH,
# the mpich wheel, Intel MPI, Cray MPICH; Open MPI 5 wants `--mpi=pmix`); where srun has no PMI-2,
# the MPI's own "mpiexec -n $SLURM_NTASKS" is used (MPITINY_LAUNCH=srun|mpiexec forces one).
# Run directory: mpitiny-runs/$SLURM_JOB_ID under the submit directory.
#SBATCH --job-name=mpitiny
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=2
#SBATCH --time=00:30:00
#SBATCH --output=mpitiny-%j.out
##SBATCH --partition=compute
##SBATCH --account=myproject
set -euo pipefail
DAG=${1:?usage: sbatch slurm/run_dag.sh DAG_FILE [mpitiny run options]}
shift
cd "${SLURM_SUBMIT_DIR:-.}"
PY=python3; [ -x .venv/bin/python ] && PY=.venv/bin/python
LAUNCH_KIND=${MPITINY_LAUNCH:-auto}
if [[ $LAUNCH_KIND == auto ]]; then
  if srun --mpi=list 2>&1 | grep -qw pmi2; then LAUNCH_KIND=srun; else LAUNCH_KIND=mpiexec; fi
fi
if [[ $LAUNCH_KIND == srun ]]; then
  LAUNCH=(srun --mpi=pmi2)
else
  MPIEXEC=mpiexec; [ -x "$(dirname "$PY")/mpiexec" ] && MPIEXEC="$(dirname "$PY")/mpiexec"
  LAUNCH=("$MPIEXEC" -n "${SLURM_NTASKS:-2}")
fi
echo "+ ${LAUNCH[*]} $PY -m mpitiny run $DAG --out mpitiny-runs/${SLURM_JOB_ID:-local} $*"
exec "${LAUNCH[@]}" "$PY" -m mpitiny run "$DAG" --out "mpitiny-runs/${SLURM_JOB_ID:-local}" "$@"
