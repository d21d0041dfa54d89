"""The files of jobs that share one served run (``mpitiny serve``; the engine side is
``mpitiny.engine.serving``): how a job is submitted, claimed, described, cancelled, and how
the server is asked to stop. Plain files on the run directory's file system, each complete
file written under a temporary name and renamed into place, so no reader ever sees half a
file and no two ranks ever claim the same job (``rename`` is atomic on a POSIX file system)::

    RUN_DIR/jobs/
      incoming/ID          a ticket: the job waits for a rank to pick it up
      claimed/ID           the ticket once a rank picked the job up (its ``rename``)
      stop                 ``mpitiny stop``: the server ends (exit 0), journals synced
      ID/job.json          the submission: source path, params, priority, cwd, time
      ID/dag.json          a copy of the submitted dag.json (later edits do not change it)
      ID/state.json        queued | running | interrupted (the server ended first: the next
                           one resumes it) | done | failed | cancelled; counts, times, error
      ID/cancel            ``mpitiny cancel RUN_DIR ID`` asked for it
      ID/error.txt         why a job failed to load (the same message as state.json's)
      ID/tasks/rank-R.jsonl     one line per task rank R finished: id, gid, status, times
      ID/results/rank-R.jsonl   {"id", "value"} of each fn task that returned non-None
      ID/failures/rank-R.jsonl  each failed task with its error
      ID/logs/rank-R.out|.err   what its command tasks printed on rank R (.fn.out|.fn.err:
                                its function tasks)
      ID/summary.json      the job's totals, written once it ended

Job ids are 1, 2, 3, ...: ``submit_job`` takes the first free number by creating its
directory (``mkdir`` fails if another submitter took it).
"""
from __future__ import annotations

import glob
import json
import os
import time

from mpitiny.io.commit import write_atomic

JOBS, INCOMING, CLAIMED, STOP = "jobs", "incoming", "claimed", "stop"
FINAL = ("done", "failed", "cancelled")
STATES = ("queued", "running", "interrupted", *FINAL)


def jobs_dir(run_dir: str, *parts: str) -> str:
    return os.path.join(run_dir, JOBS, *parts)


def write_json(path: str, value: dict) -> None:
    write_atomic(path, (json.dumps(value, indent=1) + "\n").encode())


def read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def new_job_dirs(run_dir: str) -> None:
    for sub in (INCOMING, CLAIMED):
        os.makedirs(jobs_dir(run_dir, sub), exist_ok=True)


def new_job_id(run_dir: str) -> str:
    """The first free job number, taken by creating its directory."""
    root = jobs_dir(run_dir)
    new_job_dirs(run_dir)
    n = 1 + max((int(d) for d in os.listdir(root) if d.isdigit()), default=0)
    while True:
        try:
            os.mkdir(os.path.join(root, str(n)))
            return str(n)
        except FileExistsError:
            n += 1


def submit_job(run_dir: str, dag_path: str, params: dict, priority: int) -> str:
    """Write a job (its submission, a copy of the DAG, state queued) and then its ticket
    into ``incoming/`` (temporary name, renamed): returns its id."""
    with open(dag_path, "rb") as f:
        text = f.read()
    jid = new_job_id(run_dir)
    now = time.time()
    write_atomic(jobs_dir(run_dir, jid, "dag.json"), text)
    write_json(jobs_dir(run_dir, jid, "job.json"),
               {"id": jid, "source": os.path.abspath(dag_path), "params": params,
                "priority": priority, "cwd": os.getcwd(), "submitted": now})
    write_json(jobs_dir(run_dir, jid, "state.json"),
               {"state": "queued", "priority": priority, "submitted": now})
    write_atomic(jobs_dir(run_dir, INCOMING, jid), f"{priority}\n".encode())
    return jid


def claim_next(run_dir: str) -> str | None:
    """Pick up one waiting job (highest priority, then oldest) by renaming its ticket into
    ``claimed/``: its id, or None if none waits (or other ranks took them all first)."""
    inbox = jobs_dir(run_dir, INCOMING)
    try:
        names = [n for n in os.listdir(inbox) if n.isdigit()]
    except FileNotFoundError:
        return None
    for name in sorted(names, key=lambda n: (-_ticket_priority(inbox, n), int(n))):
        try:
            os.rename(os.path.join(inbox, name), jobs_dir(run_dir, CLAIMED, name))
            return name
        except FileNotFoundError:
            continue
    return None


def _ticket_priority(inbox: str, name: str) -> int:
    try:
        with open(os.path.join(inbox, name), encoding="utf-8") as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def read_job(run_dir: str, jid: str) -> dict | None:
    return read_json(jobs_dir(run_dir, jid, "job.json"))


def read_state(run_dir: str, jid: str) -> dict:
    return read_json(jobs_dir(run_dir, jid, "state.json")) or {"state": "queued"}


def write_state(run_dir: str, jid: str, state: dict) -> None:
    write_json(jobs_dir(run_dir, jid, "state.json"), state)


def job_ids(run_dir: str) -> list:
    """Every job's id, in submission order."""
    try:
        return sorted((d for d in os.listdir(jobs_dir(run_dir)) if d.isdigit()), key=int)
    except FileNotFoundError:
        return []


def request_cancel(run_dir: str, jid: str) -> str:
    """``mpitiny cancel``: a job still waiting is cancelled here (its ticket taken back); a
    running one is asked to stop (its owner sees ``cancel``). Returns what happened."""
    if not os.path.isdir(jobs_dir(run_dir, jid)) or not jid.isdigit():
        raise KeyError(jid)
    state = read_state(run_dir, jid)
    if state.get("state") in FINAL:
        return f"job {jid} already {state['state']}"
    write_atomic(jobs_dir(run_dir, jid, "cancel"), f"{time.time()}\n".encode())
    try:
        os.rename(jobs_dir(run_dir, INCOMING, jid), jobs_dir(run_dir, jid, "ticket.cancelled"))
    except FileNotFoundError:
        return f"job {jid}: cancel requested (the rank running it stops handing out its tasks)"
    write_state(run_dir, jid, {**state, "state": "cancelled", "ended": time.time()})
    return f"job {jid} cancelled (it had not started)"


def cancel_requested(run_dir: str, jid: str) -> bool:
    return os.path.exists(jobs_dir(run_dir, jid, "cancel"))


def request_stop(run_dir: str) -> None:
    os.makedirs(jobs_dir(run_dir), exist_ok=True)
    write_atomic(jobs_dir(run_dir, STOP), f"{time.time()}\n".encode())


def stop_requested(run_dir: str) -> bool:
    return os.path.exists(jobs_dir(run_dir, STOP))


def clear_stop(run_dir: str) -> None:
    try:
        os.remove(jobs_dir(run_dir, STOP))
    except FileNotFoundError:
        pass


def requeue_unfinished(run_dir: str) -> list:
    """Before a server starts: the tickets of jobs that were picked up and did not end go
    back to ``incoming/`` (their done tasks are kept: see ``mpitiny.engine.serving``)."""
    back = []
    for path in sorted(glob.glob(jobs_dir(run_dir, CLAIMED, "*"))):
        jid = os.path.basename(path)
        state = read_state(run_dir, jid)
        if state.get("state") not in FINAL:
            for where in ("owner", "slot", "host"):
                state.pop(where, None)
            write_state(run_dir, jid, {**state, "state": "queued"})
            os.replace(path, jobs_dir(run_dir, INCOMING, jid))
            back.append(jid)
    return back


def read_lines(run_dir: str, jid: str, sub: str) -> list:
    """Every JSON line of a job's per-rank files ``sub/rank-*.jsonl``."""
    out: list = []
    for path in sorted(glob.glob(jobs_dir(run_dir, jid, sub, "rank-*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            out.extend(json.loads(line) for line in f if line.endswith("\n"))
    return out


def job_table(run_dir: str) -> list:
    """``[(id, state dict)]`` of every job, for ``mpitiny status``."""
    return [(jid, read_state(run_dir, jid)) for jid in job_ids(run_dir)]


def describe_jobs(run_dir: str) -> str:
    """The job lines of ``mpitiny status`` and one line of counts by state."""
    rows = job_table(run_dir)
    lines = [f"{'JOB':>5} {'STATE':<9} {'PRIO':>5} {'TASKS':>8} {'DONE':>8} {'FAILED':>7}  NAME"]
    counts = dict.fromkeys(STATES, 0)
    for jid, st in rows:
        state = st.get("state", "queued")
        counts[state] = counts.get(state, 0) + 1
        failed = int(st.get("failed", 0)) + int(st.get("upstream_failed", 0))
        tasks = st.get("tasks", "")
        line = (f"{jid:>5} {state:<9} {st.get('priority', 0):>5} {tasks!s:>8} "
                f"{st.get('done', 0):>8} {failed:>7}  {st.get('name', '')}")
        if st.get("error"):
            line += f"  error: {st['error'].splitlines()[0][:200]}"
        lines.append(line)
    lines.append("jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)
