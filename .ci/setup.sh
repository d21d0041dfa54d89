#!/usr/bin/env bash
# Make .venv: mpitiny (editable) with the MPICH wheel (libmpi + mpiexec) and the test tools.
# Safe to run again: returns at once when .venv is already set up for this pyproject.toml.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source .ci/venv.sh
ensure_venv .venv "-e .[mpich,test,plots]"
