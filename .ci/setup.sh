#!/usr/bin/env bash
# Make .venv: mpitiny (editable) with the MPICH wheel (libmpi + mpiexec) and the test tools.
# Safe to run again: returns at once when .venv is already set up for this pyproject.toml.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source .ci/venv.sh
ensure_venv .venv "-e .[mpich,test,plots]"
# An editable install leaves mpitiny's bytecode to its first import, and where
# PYTHONDONTWRITEBYTECODE is set (as on the dev machine) every rank of every run compiles it
# again (~60 ms a start): compile it here, as pip does for an installed package.
.venv/bin/python -m compileall -q mpitiny jobs > /dev/null
