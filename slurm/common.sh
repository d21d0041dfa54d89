# shellcheck shell=bash disable=SC2034  # JOB_INPUT, OUT, NTASKS are used by the scripts that source this
# Sourced by the slurm/*.sh batch scripts (not run on its own). Sets:
#   REPO     the mpitiny checkout (the submit directory, or $MPITINY_HOME)
#   PY       the Python with mpitiny: $REPO/.venv/bin/python if present, else python3 on PATH
#   LAUNCH   the command that starts the MPI ranks: (srun --mpi=pmi2) or (mpiexec -n N)
#   NTASKS   how many ranks
# and the functions need_dag FILE, run_mpitiny ARGS..., outdir NAME.
#
# Sites: load modules / activate your environment in the batch script before sourcing this, or
# set MPITINY_PYTHON=/path/to/python. MPITINY_LAUNCH=srun|mpiexec forces a launcher.

# Slurm's warning (USR1) is held from here on (see run_mpitiny); the batch scripts set the same
# trap in their first line, and a warning that came before this is kept.
held_warning() {
    echo "=== USR1: time limit near: mpitiny will stop (it saves its journals)"
    STOP_PENDING=USR1
}
trap held_warning USR1
# No command substitution ($(...)) runs before the launcher is waited for: bash 5.2 can fail
# to parse one when a trapped signal comes in the middle ("unexpected EOF while looking for
# matching `)'"), which Slurm's warning in the job's first second did (builtins instead).
STOP_PENDING=${STOP_PENDING:-}
[[ -z $STOP_PENDING ]] || held_warning
utc() { TZ=UTC printf -v "$1" "%($2)T" "${3:--1}"; }   # utc VAR FORMAT [SECONDS]: VAR = that time (now), UTC
JOB_NAME=${SLURM_JOB_NAME:-${0##*/}}
REPO=${MPITINY_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}
if [[ ! -d $REPO/mpitiny || ! -d $REPO/slurm ]]; then
    echo "$JOB_NAME: $REPO is not the mpitiny checkout: submit from it (cd mpitiny && sbatch slurm/...) or set MPITINY_HOME" >&2
    exit 2
fi
cd "$REPO" || exit 2
if [[ -n ${MPITINY_PYTHON:-} ]]; then PY=$MPITINY_PYTHON
elif [[ -x .venv/bin/python ]]; then PY=$REPO/.venv/bin/python
elif hash python3 2>/dev/null; then PY=${BASH_CMDS[python3]}
else PY=python3
fi
NTASKS=${SLURM_NTASKS:-${NTASKS:-2}}

# srun when Slurm's PMI-2 plugin is there: MPICH (the mpich wheel's libmpi too), Intel MPI and
# Cray MPICH speak PMI-2, so `srun --mpi=pmi2` starts them directly. Open MPI >= 5 wants
# `srun --mpi=pmix` instead (change it here). Fallback: the MPI's own mpiexec, which inside an
# allocation asks Slurm for the nodes itself (MPICH's hydra does, Open MPI's prterun does).
pick_launcher() {
    local want=${MPITINY_LAUNCH:-auto}
    if [[ $want == auto ]]; then
        if [[ -n ${SLURM_JOB_ID:-} ]] && srun --mpi=list 2>&1 | grep -qw pmi2; then want=srun; else want=mpiexec; fi
    fi
    if [[ $want == srun ]]; then
        LAUNCH=(srun --mpi=pmi2 -n "$NTASKS")
    else
        local mpiexec
        mpiexec=${PY%/*}/mpiexec
        if [[ $PY != */* || ! -x $mpiexec ]]; then
            mpiexec=
            if hash mpiexec 2>/dev/null; then mpiexec=${BASH_CMDS[mpiexec]}; fi
        fi
        [[ -n $mpiexec ]] || { echo "$JOB_NAME: no srun with PMI-2 and no mpiexec found" >&2; exit 2; }
        LAUNCH=("$mpiexec" -n "$NTASKS")
    fi
}
pick_launcher

need_dag() {   # need_dag jobs/x.json: fail clearly when the job is not there (yet)
    if [[ ! -f $1 ]]; then
        echo "$JOB_NAME: ERROR: $REPO/$1 does not exist: this batch script runs that job, which is not in this checkout (yet)." >&2
        exit 2
    fi
}

outdir() {     # outdir NAME: slurm-out/NAME-JOBID under the submit dir (or $OUT), created
    OUT=${OUT:-$REPO/slurm-out/$1-${SLURM_JOB_ID:-local$$}}
    mkdir -p "$OUT"
}

# JOB_END: the job's end (seconds since the epoch; empty outside Slurm or if Slurm does not
# say), found once.
# `mpitiny run` knows it too (SLURM_JOB_END_TIME, or squeue on rank 0): it ends its run 30 s
# before it on its own, starting no task that would not finish by then (exit 75, requeued
# below). Slurm's warning (USR1 120 s before the end, or up to a minute earlier) is then only
# the backstop, for a task that runs longer than expected: a warning that comes within HOLD_MAX
# seconds of the end is held until BACKSTOP seconds before it, and forwarded only if mpitiny
# is still running then. A USR1 earlier than that (scancel --signal=USR1 ...) stops it at once.
slurm_job_end() {
    JOB_END=
    [[ -n ${SLURM_JOB_ID:-} ]] || return 0
    if [[ ${SLURM_JOB_END_TIME:-} =~ ^[0-9]+$ ]]; then JOB_END=$SLURM_JOB_END_TIME; return 0; fi
    local end=${TMPDIR:-/tmp}/mpitiny-end.${SLURM_JOB_ID}.$$
    if squeue -h -j "$SLURM_JOB_ID" -o %e > "$end" 2>/dev/null &&
            date -f "$end" +%s > "$end.s" 2>/dev/null; then
        read -r JOB_END < "$end.s" || true
    fi
    rm -f "$end" "$end.s"
    [[ $JOB_END =~ ^[0-9]+$ ]] || JOB_END=
}
slurm_job_end
HOLD_MAX=${HOLD_MAX:-300}
BACKSTOP=${BACKSTOP:-15}

# Whether to hold a pending USR1 now: it is Slurm's warning before the job's end, and mpitiny
# ends its run on its own before the backstop time.
hold_for_backstop() {
    [[ -n $JOB_END ]] || return 1
    local now
    utc now '%s'
    (( JOB_END - now <= HOLD_MAX && now < JOB_END - BACKSTOP ))
}

# run_mpitiny ARGS...: "${LAUNCH[@]}" $PY -m mpitiny ARGS, echoed first; returns its status.
#
# Stopping before the time limit and coming back: the launcher runs in the background so that
# this batch shell can pass Slurm's warning (--signal=B:USR1@120 sends USR1 to this shell only)
# and SIGTERM (scancel, the time limit, a requeue) on to it; srun and mpiexec forward them to the
# ranks, which interrupt their tasks, save their journals and exit 75 ("resumable"). On 75 the
# job requeues itself (scontrol requeue: needs --requeue, which the scripts set; MPITINY_REQUEUE=0
# turns it off). The requeued job runs the script again with the same job id, hence the same
# $OUT and run directory, and `mpitiny run` resumes from the journals on its own: tasks that
# finished are not run again. A node failure requeues the job the same way (Slurm does it).
#
# Slurm checks its timers every 30 s or so and may send the warning up to a minute early, even
# in the job's first second. A rank still starting Python would die of it, so the warning is
# held (STOP_PENDING) until `mpitiny run` says that every rank catches it: rank 0 creates
# $MPITINY_READY_FILE once all ranks have installed their handlers. A warning that comes
# before the run starts (while generating or ingesting the input) is held too, and stops the
# run as soon as it is ready. After READY_WAIT seconds without that file it is sent anyway.
READY_WAIT=${READY_WAIT:-30}

run_mpitiny() {
    echo "+ ${LAUNCH[*]} $PY -m mpitiny $*"
    local ready=${TMPDIR:-/tmp}/mpitiny-ready.${SLURM_JOB_ID:-local}.$$
    rm -f "$ready"
    MPITINY_READY_FILE=$ready "${LAUNCH[@]}" "$PY" -m mpitiny "$@" &
    local pid=$! rc=0 again=0 held=0 backstop=0 ends now
    # shellcheck disable=SC2064  # $pid is meant to be expanded now
    trap "echo '=== SIGTERM: stopping mpitiny'; kill -TERM $pid 2>/dev/null || true" TERM
    while kill -0 "$pid" 2>/dev/null; do
        if [[ -n $STOP_PENDING && ($1 == run || $1 == serve) ]] && hold_for_backstop; then
            if (( ! backstop )); then
                utc ends '%T' "$JOB_END"
                echo "=== the job ends at $ends UTC: mpitiny ends its run before that on its own; the warning is held until $BACKSTOP s before the end"
                backstop=1
            fi
            sleep 1
            continue
        fi
        if [[ -n $STOP_PENDING && ($1 == run || $1 == serve) ]]; then
            if [[ -e $ready ]] || (( held >= READY_WAIT * 5 )); then
                echo "=== stopping mpitiny"
                kill -USR1 "$pid" 2>/dev/null || true
                STOP_PENDING=
            else
                (( held += 1 ))
                sleep 0.2
                continue
            fi
        fi
        rc=0
        wait "$pid" || rc=$?                         # returns early when a trapped signal comes
    done
    wait "$pid" 2>/dev/null || again=$?               # its own status, if the loop missed it
    (( again == 127 )) || rc=$again
    rm -f "$ready"
    trap - TERM
    if (( rc == 75 )); then
        if [[ -n ${SLURM_JOB_ID:-} && ${MPITINY_REQUEUE:-1} != 0 ]]; then
            utc now '%F %T'
            echo "=== $now UTC: mpitiny stopped resumably (exit 75): requeueing job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}); it goes on from the journals"
            scontrol requeue "$SLURM_JOB_ID" || echo "$JOB_NAME: scontrol requeue failed: submit the same script again (with OUT=$OUT) to resume" >&2
        else
            echo "=== mpitiny stopped resumably (exit 75): run the same command again to resume"
        fi
    fi
    return "$rc"
}

utc STARTED '%F %T'
utc ENDS '%T' "${JOB_END:-0}"
echo "=== $STARTED UTC job ${SLURM_JOB_ID:-none} (${SLURM_JOB_NAME:-}) on ${SLURM_JOB_NODELIST:-$HOSTNAME}: $NTASKS ranks, python $PY, launcher ${LAUNCH[*]}${SLURM_RESTART_COUNT:+, restart $SLURM_RESTART_COUNT}${JOB_END:+, the job ends at $ENDS UTC}"

# text_input INPUT DAG: sets JOB_INPUT, the input to pass to DAG as --param input=...
#   INPUT: a text file or directory of them; empty: generate $OUT/corpus.txt of $MB MB (default
#   100, Zipf-distributed words). Packed into $OUT/input.h5 at 8 MiB chunks with `mpitiny ingest`
#   on the job's ranks -- unless DAG has no "split" family (a job that still reads text files).
text_input() {
    local input=$1 dag=$2
    if [[ -z $input ]]; then
        input=$OUT/corpus.txt
    fi
    if [[ $input == "$OUT/corpus.txt" && -f $input ]]; then
        echo "=== corpus $input is there already (a requeued job)"
    elif [[ $input == "$OUT/corpus.txt" ]]; then
        echo "=== generating a ${MB:-100} MB corpus: $input"
        "$PY" - "$input" "${MB:-100}" <<'PYEND'
import os, sys
import numpy as np
path, mb = sys.argv[1], float(sys.argv[2])
rng = np.random.default_rng(1)
letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
words = [bytes(letters[rng.integers(0, 26, rng.integers(2, 10))]) for _ in range(50_000)]
written, target = 0, int(mb * 1e6)
with open(path + ".tmp", "wb") as f:
    while written < target:
        ids = np.minimum(rng.zipf(1.3, 100_000), len(words)) - 1
        cuts = np.cumsum(rng.integers(4, 17, len(ids) // 4))
        cuts = cuts[cuts < len(ids)]
        chunk = b"\n".join(b" ".join(words[i] for i in ids[a:b])
                           for a, b in zip(np.r_[0, cuts[:-1]], cuts)) + b"\n"
        f.write(chunk)
        written += len(chunk)
os.replace(path + ".tmp", path)
PYEND
    fi
    [[ -e $input ]] || { echo "$JOB_NAME: ERROR: input $input does not exist" >&2; exit 2; }
    if grep -q '"split"' "$dag"; then
        if [[ -f $OUT/input.h5.ingested ]]; then
            echo "=== $OUT/input.h5 is there already (a requeued job)"
        else
            echo "=== ingest $input -> $OUT/input.h5 (8 MiB chunks)"
            rm -rf "$OUT/input.h5" "$OUT/input.h5.shards"
            run_mpitiny ingest "$input" -o "$OUT/input.h5" --chunk 8MiB
            touch "$OUT/input.h5.ingested"
        fi
        JOB_INPUT=$OUT/input.h5
    else
        echo "=== NOTE: $dag has no \"split\" family (it reads text, not HDF5): no ingest"
        JOB_INPUT=$input
    fi
}
