"""``mpitiny serve``: one long-lived run inside an allocation that jobs are submitted to
(``mpitiny submit``), listed (``mpitiny status``), cancelled (``mpitiny cancel``) and that is
stopped with ``mpitiny stop``. The files are ``mpitiny.io.jobs``; how ranks pick jobs up and
share their tasks, ``mpitiny.engine.serving``.

``serve`` runs, on every rank, ``run_file`` on ``RUN_DIR`` with a DAG of one null task that
rank 0 holds open (``adding.held_open``) and the job side built into each rank's engine
(``adding.serving``), with journals: the same command on the same directory resumes it. Before
it starts, rank 0 puts the tickets of jobs that had not ended back in ``incoming/`` and removes
a stop request left from before. Exit status: 0 after ``mpitiny stop`` (the run ended as on a
stop signal: journals synced, resumable), 75 after SIGTERM or the time limit (the sbatch
script requeues), 2 bad input, 3 internal error.
"""
from __future__ import annotations

import json

from mpitiny.errors import EXIT_RESUMABLE
from mpitiny.io import jobs as jf

SERVE_DAG = {"name": "serve", "tasks": [{"id": "serve", "fn": "mpitiny.tasks:null"}]}


def serve(run_dir: str, **options) -> int:
    """Serve jobs from ``run_dir`` until stopped; the exit status, on every rank.
    ``options``: ``RunOptions`` fields (``quiet``, ``retries``, ``timeout``, ``time_limit``,
    ``job_end``, ``started``, ...)."""
    from mpitiny.mpienv import mpi_environment
    mpi_environment()
    from mpi4py import MPI

    from mpitiny.engine import adding
    from mpitiny.engine import run_file
    from mpitiny.engine.serving import Jobs
    comm = MPI.COMM_WORLD
    if comm.Get_rank() == 0:
        jf.new_job_dirs(run_dir)
        jf.clear_stop(run_dir)
        back = jf.requeue_unfinished(run_dir)
        if back and not options.get("quiet"):
            print(f"mpitiny serve: resuming jobs {', '.join(back)}", flush=True)
    adding.held_open, adding.serving = 1, Jobs
    try:
        status = run_file(None, {}, out_dir=run_dir, dag_text=json.dumps(SERVE_DAG),
                          restore_signals=False, **options)
    finally:
        adding.held_open, adding.serving = 0, None
    asked = comm.bcast(jf.stop_requested(run_dir) if comm.Get_rank() == 0 else None)
    if asked and comm.Get_rank() == 0:
        jf.clear_stop(run_dir)
        if not options.get("quiet"):
            print(f"mpitiny serve: stopped on request (mpitiny stop): exit status 0; "
                  f"`mpitiny serve {run_dir}` again resumes the jobs that had not ended",
                  flush=True)
    return 0 if asked and status == EXIT_RESUMABLE else status
