"""A run from start to end: ``run_file`` is ``mpitiny run`` (and ``mpitiny.run``).

Rank 0 loads and checks dag.json and sends the loaded DAG to the other ranks, which read no
input file (an error on any rank is raised on every rank, ``load_everywhere``). Rank 0 looks
at the run directory (``plan_run_dir``): journals of the same DAG are resumed (done tasks are
kept, failed and skipped ones run again; rank 0 reads the journals and sends what they say,
``read_resumed``) unless the run is complete, when there is nothing to run; journals of
another DAG are refused; ``--fresh`` moves an earlier run aside. Rank 0 then prepares the
directory (``prepare_run_dir``); every rank builds its ``Engine``, opens its journal, queues
its roots and runs its loop; then each writes its task table, rank 0 writes ``summary.json``,
prints the summary and tells every rank the exit status (``conclude``).

Anything that goes wrong inside the engine aborts the whole MPI job (``MPI_Abort``) after
printing the traceback once, so a run never hangs; a full disk says so and how to resume.
"""
from __future__ import annotations

import errno
import gc
import json
import os
import pickle
import socket
import sys
import time
import traceback
from dataclasses import dataclass

from mpitiny.dag.model import DAG
from mpitiny.engine.gang import check_ranks
from mpitiny.engine.guard import announce_ready, install_early, restore
from mpitiny.engine.loop import Engine
from mpitiny.engine.progress import Progress
from mpitiny.engine.resources import check_cores
from mpitiny.engine.summary import make_summary, print_summary
from mpitiny.engine.types import RunOptions
from mpitiny.engine.world import MpiWorld, sleep_until_barrier
from mpitiny.errors import EXIT_INTERNAL, EXIT_OK, BadInput, InternalError, MpitinyError
from mpitiny.io import journal as jnl
from mpitiny.io import rundir
from mpitiny.io.commit import write_atomic
from mpitiny.mpienv import mpi_environment

MALLOC_TRIM_BYTES = 1 << 30       # glibc M_TRIM_THRESHOLD: keep up to 1 GiB of freed heap
MALLOC_MMAP_BYTES = 256 << 20     # glibc M_MMAP_THRESHOLD: smaller blocks come from the heap
ABORT_GRACE = 0.5                 # seconds between the error message and MPI_Abort
SHARED_DAG_BYTES = 1 << 30        # a bigger pickled DAG is loaded by every rank instead
SHARED_DAG_GROUPS = 5000          # and so is one of more entries (Python objects) than this
TABLE_GROUP = 16        # ranks whose task tables one rank writes (``write_tables``)
TABLE_TAG = 0x7461      # their rows' tag on COMM_WORLD
COLLECT_TASKS = 100_000     # DAGs this big: what loading left is collected before gc.freeze
KEEP_STREAMS = False    # mpitiny.futures: what tasks print goes to the rank's own streams


def run_file(path: str | None, params: dict, out_dir: str | None = None,
             dag_text: str | None = None, scratch: bool = False, restore_signals: bool = True,
             **options) -> int:
    """``mpitiny run``: returns the exit status (0 all done, 1 some failed, 75 stopped) on
    every rank; 0 also when the run directory holds a complete run (nothing is run).

    ``options`` are ``RunOptions`` fields (``quiet``, ``retries``, ``resume``, ...);
    ``scratch``: the run directory is the caller's (``mpitiny.map``): an earlier map run
    there is replaced, never resumed (``plan_run_dir``). ``restore_signals=False`` (the
    command line, which exits next) keeps catching stop signals after the run: one that comes
    while MPI shuts down changes nothing of a run that has ended (it would kill the rank)."""
    handlers = install_early()
    keep_freed_memory()
    try:
        return _run_file(path, params, out_dir, dag_text, RunOptions(**options), scratch)
    finally:
        if restore_signals:     # else the noting handlers of install_early stay
            restore(handlers)


def _run_file(path: str | None, params: dict, out_dir: str | None, dag_text: str | None,
              opts: RunOptions, scratch: bool = False) -> int:
    mpi_environment()           # what MPI must read at MPI_Init (Open MPI: quiet osc)
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    t_launch = time.time()
    dag = load_everywhere(comm, path, params, dag_text)
    check_cores(comm, dag)      # "cores" more than a node has ranks: one error
    check_ranks(comm.Get_size(), dag)       # "ranks" more than the run has: one error
    run_dir = out_dir or default_run_dir(dag)
    rank = comm.Get_rank()
    setup = None
    if rank == 0:
        announce_ready()
        try:
            plan = plan_run_dir(run_dir, dag, dag_bytes(path, dag_text), params, opts, scratch)
            if plan.action == "complete":
                setup = (0, False)
                if not opts.quiet:
                    print(complete_line(dag, run_dir, plan.info or {}), flush=True)
            else:
                setup = prepare_run_dir(run_dir, dag, path, params, dag_text, opts,
                                        comm.Get_size(), plan)
        except BadInput as exc:
            setup = exc.format()
        except OSError as exc:
            setup = f"cannot prepare run directory {run_dir}: {exc.strerror or exc}"
    sleep_until_barrier(comm)               # while rank 0 prepares the run directory
    setup = comm.bcast(setup, root=0)
    if isinstance(setup, str):
        raise BadInput(setup)
    incarnation, resuming = setup
    if incarnation == 0:                    # a complete run: nothing to run
        return EXIT_OK
    try:
        resumed = read_resumed(comm, run_dir, dag.total) if resuming else None
        return run_rank(MpiWorld(comm), dag, run_dir, opts, t_launch, incarnation, resumed)
    except BadInput:
        raise
    except BaseException as exc:
        if isinstance(exc, OSError) and _is_disk_full(exc):
            sys.stderr.write(f"mpitiny: error: run directory {os.path.abspath(run_dir)}: "
                             f"{exc.strerror} (rank {rank} of {comm.Get_size()} on "
                             f"{socket.gethostname()}, writing {exc.filename or 'a file'}); "
                             "free space and run the same command again to resume\n")
        else:
            sys.stderr.write(f"mpitiny: internal error on rank {rank} of {comm.Get_size()} "
                             f"({socket.gethostname()}); aborting the job\n{traceback.format_exc()}")
        sys.stderr.flush()
        time.sleep(ABORT_GRACE)     # MPI_Abort can end the launcher before it forwards that
        comm.Abort(EXIT_INTERNAL)
        os._exit(EXIT_INTERNAL)


def run_rank(world: MpiWorld, dag: DAG, run_dir: str, opts: RunOptions, t_launch: float,
             incarnation: int = 1, resumed: jnl.Resumed | None = None) -> int:
    """One rank's run, from building its engine to writing its task table; rank 0 also
    concludes the run. Returns the run's exit status, on every rank (rank 0 tells them)."""
    world.barrier()             # together, so that the windows' collectives find all ranks
    engine = Engine(world, dag, run_dir, opts, os.environ.get("MPITINY_FAULT"), incarnation,
                    resumed)
    _short_timer_slack()
    engine.open_journal()
    if world.rank == 0:
        engine.progress = Progress(engine.watch(), dag.name, dag.total, world.nranks, run_dir,
                                   sys.stderr, opts.progress_interval, opts.quiet)
    engine.guard.install(engine.files.fault_log())
    engine.bind()
    try:
        if dag.total + len(dag.groups) >= COLLECT_TASKS:
            gc.collect()    # a full collection costs 12 ms of a small run's rank here
        gc.freeze()     # the task table lives for the whole run: keep the collector off it
        engine.start()
        progress = world.progress_thread(_moving(engine)) if world.needs_progress() else None
        t_start, cpu_start = time.time(), time.process_time()
        saved = sys.stdout, sys.stderr      # what fn tasks print goes to the rank's logs
        if not KEEP_STREAMS:
            sys.stdout, sys.stderr = engine.files.python_streams()
        try:
            engine.work()
        finally:
            sys.stdout, sys.stderr = saved
            if progress is not None:
                progress.stop()
        t_end = time.time()
        work_cpu = time.process_time() - cpu_start
        looked = (progress.looks, progress.polls) if progress is not None else (0, 0)
        if engine.progress is not None:
            engine.progress.tick(final=True)
        all_stats = finish_rank(engine, work_cpu, looked)
        engine.free()       # collective: the ranks meet asleep first
    finally:
        engine.guard.uninstall()
    status = None
    if all_stats is not None:               # rank 0
        status = conclude(dag, run_dir, opts, all_stats, (t_launch, t_start, t_end),
                          incarnation, resumed)
    return world.bcast(status)


def finish_rank(engine: Engine, work_cpu: float, looked: tuple) -> list | None:
    """Stop the engine, have its task table written; every rank's figures on rank 0, else
    None. ``work_cpu``: the CPU seconds the rank's process (all its threads) spent in the run;
    ``looked``: the progress thread's looks and polls."""
    engine.stop()
    engine.sample()
    write_tables(engine.world, engine.run_dir, engine.rank, engine.records, engine.samples)
    stats = engine.stats()
    stats["work_cpu_seconds"] = round(work_cpu, 6)
    stats["progress_looks"], stats["progress_polls"] = looked
    return engine.world.gather(stats)


def write_tables(world, run_dir: str, rank: int, records: rundir.Records,
                 samples: list) -> None:
    """Every rank's ``tasks/rank-R.h5``, written by the first rank of each group of
    ``TABLE_GROUP``: a rank whose rows are all in memory sends them there, so that most ranks
    never import h5py (25 ms of CPU each, a tenth of a rank's start and end here); a rank
    whose rows went to its raw rows file writes its own table."""
    writer = rank - rank % TABLE_GROUP
    if rank != writer:
        rows = records.in_memory()
        world.send(None if rows is None else (rows, samples), writer, TABLE_TAG)
        if rows is None:
            rundir.write_rank_table(run_dir, rank, records, samples)
        else:
            records.remove_file()
        return
    rundir.write_rank_table(run_dir, rank, records, samples)
    for member in range(rank + 1, min(rank + TABLE_GROUP, world.nranks)):
        sent = world.recv(member, TABLE_TAG)
        if sent is not None:
            rundir.write_rank_table(run_dir, member, *sent)


def conclude(dag: DAG, run_dir: str, opts: RunOptions, all_stats: list, times: tuple,
             incarnation: int, resumed) -> int:
    """On rank 0 after every rank finished: the run's task table, trace, ``summary.json``
    and run info; prints the summary; returns the exit status."""
    t_launch, t_start, t_end = times
    summary = make_summary(dag, run_dir, all_stats, t_launch, t_start, t_end, incarnation,
                           resumed)
    rundir.write_virtual_table(run_dir, [s["rows"] for s in all_stats], dag)
    if opts.trace:
        from mpitiny.report import write_run_trace
        write_run_trace(run_dir, len(all_stats))
    write_atomic(os.path.join(run_dir, "summary.json"), json.dumps(summary, indent=1).encode())
    if opts.journal:
        info = jnl.read_run_info(run_dir) or {}
        info.update(complete=not summary["stopped"], ended=time.time())
        jnl.write_run_info(run_dir, info)
    if not opts.quiet:
        print_summary(summary)
    return summary["exit_status"]


def load_everywhere(comm, path: str | None, params: dict, text: str | None = None) -> DAG:
    """Rank 0 loads and checks the DAG (from ``path``, or from ``text`` built by the Python
    API) and sends it to the other ranks as one pickle, with the directories loading put on
    ``sys.path``: they open no input file (thousands of ranks reading dag.json and the HDF5
    split tables at once load a shared file system) and only import the task modules, which
    unpickling the functions does. A DAG that cannot be pickled (a task function that is not
    importable by its name) is loaded by every rank instead. Any rank's error is raised on
    every rank."""
    rank = comm.Get_rank()
    dag = error = None
    shared: tuple = (None, [])
    if rank == 0:
        before = list(sys.path)
        dag, error = _load(path, params, text)
        if dag is not None and comm.Get_size() > 1:
            shared = (_pickled(dag), [p for p in sys.path if p not in before])
    sleep_until_barrier(comm)           # not spinning in MPI while rank 0 loads
    shared = comm.bcast(None if error is not None else shared, root=0)
    if rank != 0 and shared is not None:
        blob, added = shared
        if blob is None:
            dag, error = _load(path, params, text)
        else:
            sys.path[:0] = [p for p in added if p not in sys.path]
            dag, error = _unpickled(blob, path, rank)
    sleep_until_barrier(comm)
    errors = comm.allgather(None if error is None else (error.exit_code, error.format()))
    for r, e in enumerate(errors):
        if e is not None:
            if error is not None:
                raise error
            code, message = e
            err = BadInput(message if r == 0 else f"{message} (on rank {r})")
            err.exit_code = code
            raise err
    assert dag is not None
    if rank != 0 and any(g.options.splits is not None for g in dag.groups):
        import h5py  # noqa: F401  (what loading imported on rank 0: not in the first split task)
    return dag


def read_resumed(comm, run_dir: str, total: int) -> jnl.Resumed:
    """What the earlier incarnations' journals say, read by rank 0 and sent to every rank
    (P ranks reading P journals each would be P² reads of one directory)."""
    resumed = jnl.read_journals(run_dir, total) if comm.Get_rank() == 0 else None
    return comm.bcast(resumed, root=0)


def _load(path: str | None, params: dict, text: str | None) -> tuple:
    """``(dag, None)``, or ``(None, error)`` for an error to raise on every rank."""
    from mpitiny.dag.load import load_dag, load_dag_text
    try:
        return (load_dag(path, params) if text is None else
                load_dag_text(text, source=path or "<python DAG>", params=params)), None
    except MpitinyError as exc:
        return None, exc
    except Exception as exc:                     # a bug: still tell every rank, then abort
        return None, InternalError(f"loading {path} failed: {type(exc).__name__}: {exc}\n"
                                   f"{traceback.format_exc()}")


def _pickled(dag: DAG) -> bytes | None:
    """The DAG as one pickle, or None if it cannot be pickled, would be too big to send at
    once, or has so many entries that unpickling them would cost the other ranks more than
    loading (pickling costs per Python object; loading, per task): the ranks then load it
    themselves."""
    if len(dag.groups) > SHARED_DAG_GROUPS:
        return None
    try:
        blob = pickle.dumps(dag, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return None
    return blob if len(blob) < SHARED_DAG_BYTES else None


def _unpickled(blob: bytes, path: str | None, rank: int) -> tuple:
    try:
        return pickle.loads(blob), None
    except Exception as exc:
        return None, BadInput(f"{path or '<python DAG>'}: rank {rank} on "
                              f"{socket.gethostname()} could not import the task functions "
                              f"that rank 0 loaded: {type(exc).__name__}: {exc}")


def default_run_dir(dag: DAG) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in dag.name) or "run"
    return os.path.join("mpitiny-runs", safe)


@dataclass
class RunDirPlan:
    """What rank 0 found in a run directory and will do with it (``plan_run_dir``).

    ``action``: "new" (no journal there: start, clearing what a run without journal left),
    "fresh" (``--fresh``: move the earlier run aside to ``RUN_DIR.old-N``, then start),
    "replace" (``mpitiny.map``'s own directory: clear the earlier map run, then start),
    "resume" (journals of this DAG: done tasks are kept, the rest runs) or "complete" (this
    DAG's run, complete with every task done: nothing to run). ``info``: the journals'
    ``run.json``; ``digest``: this DAG's ``dag_hash``."""

    action: str
    digest: str
    info: dict | None = None


def dag_bytes(path: str | None, dag_text: str | bytes | None) -> bytes:
    """The bytes that identify the DAG (with its parameters: ``journal.dag_hash``)."""
    if dag_text is not None:
        return dag_text.encode() if isinstance(dag_text, str) else dag_text
    assert path is not None
    with open(path, "rb") as f:
        return f.read()


def plan_run_dir(run_dir: str, dag: DAG, text: bytes, params: dict, opts: RunOptions,
                 scratch: bool = False) -> RunDirPlan:
    """On rank 0, before anything is changed: what to do with ``run_dir``. Reruns never throw
    finished work away: journals of the same DAG (hash of the dag.json bytes and the
    parameters) are resumed, or left as they are when that run is complete with every task
    done; journals of another DAG raise ``BadInput`` (nothing is changed); only ``--fresh``
    (``opts.resume == "no"``) starts over, moving the earlier run aside. ``"yes"`` (``--resume``)
    is the default ``"auto"`` with its own error message."""
    digest = jnl.dag_hash(text, params)
    info = jnl.read_run_info(run_dir)
    if scratch:
        if info is None or str(info.get("name", "")).startswith("map-"):
            return RunDirPlan("replace", digest, info)
        raise BadInput(f"mpitiny.map: {run_dir} holds the journals of a run that is not a map "
                       f"({_describe(info)}); nothing was changed: pass another out")
    if opts.resume == "no":
        return RunDirPlan("fresh", digest, info)
    if info is None:
        return RunDirPlan("new", digest)
    if info.get("dag_hash") != digest:
        raise BadInput(_other_run(run_dir, info, opts))
    if info.get("complete") and _all_done(run_dir, dag, info):
        return RunDirPlan("complete", digest, info)
    if not opts.journal:
        raise BadInput(f"{run_dir} holds the journals of a run of this DAG with tasks left to "
                       f"do ({_describe(info)}) and --no-journal would not add to them; nothing "
                       "was changed: run without --no-journal to resume it, or use --fresh to "
                       "move it aside and start over, or another --out")
    return RunDirPlan("resume", digest, info)


def _all_done(run_dir: str, dag: DAG, info: dict) -> bool:
    """Whether the complete run in ``run_dir`` left every task done (its summary.json; the
    journals if that is unreadable)."""
    try:
        with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as f:
            summary = json.load(f)
        if summary.get("incarnation") == info.get("incarnation") and \
                summary.get("tasks") == dag.total:
            return summary.get("done") == dag.total and not summary.get("stopped")
    except (OSError, ValueError, AttributeError):
        pass
    journals = jnl.read_journals(run_dir, dag.total)
    return journals.ndone == dag.total and not journals.added_pending()


def _describe(info: dict) -> str:
    params = json.dumps(info["params"]) if info.get("params") else ""
    if len(params) > 200:
        params = params[:200] + "..."
    return (f"DAG {info.get('name')!r} from {info.get('dag')}"
            + (f" with parameters {params}" if params else "")
            + f", {info.get('tasks')} tasks, run {info.get('incarnation')}, "
            + ("complete" if info.get("complete") else "unfinished"))


def _other_run(run_dir: str, info: dict, opts: RunOptions) -> str:
    return (f"{'--resume: ' if opts.resume == 'yes' else ''}the journals in {run_dir} belong "
            f"to another DAG or other parameters ({_describe(info)}); nothing was changed: use "
            "--fresh to move them aside and start over, or another --out")


def complete_line(dag: DAG, run_dir: str, info: dict) -> str:
    """What rank 0 prints when the run directory holds this DAG's complete run."""
    return (f"mpitiny: {dag.name}: complete: all {dag.total} tasks are done in "
            f"{os.path.abspath(run_dir)} (run {info.get('incarnation', 1)}); nothing to run "
            "(--fresh starts over)")


def prepare_run_dir(run_dir: str, dag: DAG, path: str | None, params: dict,
                    dag_text: str | bytes | None, opts: RunOptions, nranks: int,
                    plan: RunDirPlan | None = None) -> tuple:
    """On rank 0: start the run directory afresh, or resume it, as ``plan`` (default:
    ``plan_run_dir``'s) says. Returns (incarnation, resuming). A "complete" plan is resumed
    with every task cached (``run_file`` runs nothing instead; ``engine.local`` does this).
    ``--fresh`` prints where it moved the earlier run (unless ``opts.quiet``)."""
    if plan is None:
        plan = plan_run_dir(run_dir, dag, dag_bytes(path, dag_text), params, opts)
    if plan.action in ("resume", "complete"):
        assert plan.info is not None
        incarnation = int(plan.info["incarnation"]) + 1
        rundir.prepare_resume(run_dir, incarnation - 1)
    else:
        incarnation = 1
        aside = rundir.move_aside(run_dir) if plan.action == "fresh" else None
        if aside is not None and not opts.quiet:
            print(f"mpitiny: --fresh: moved the earlier run in {run_dir} to {aside}", flush=True)
        rundir.prepare(run_dir)
    if opts.journal:
        jnl.write_run_info(run_dir, {"dag_hash": plan.digest, "dag": dag.source,
                                     "name": dag.name, "params": _json_ready(params),
                                     "tasks": dag.total, "incarnation": incarnation,
                                     "ranks": nranks,
                                     "started": time.time(), "complete": False})
    return incarnation, plan.action in ("resume", "complete")


def _json_ready(value):
    return json.loads(json.dumps(value, default=str))


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for the next task instead of giving it back to the OS.

    By default glibc returns freed heap to the OS as soon as 128 KiB-32 MiB lies free at its
    top, and serves large blocks with fresh ``mmap``s, so a rank that runs thousands of numpy
    tasks page-faults on nearly every allocation (figures: docs/data.md). The price: a rank's
    RSS stays near its peak until it exits. Not done if the user set
    ``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_MMAP_THRESHOLD_`` or ``MPITINY_MALLOC=default``, nor
    where libc is not glibc. Returns whether it changed anything."""
    if os.environ.get("MPITINY_MALLOC") == "default" or \
            "MALLOC_TRIM_THRESHOLD_" in os.environ or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    import ctypes
    try:        # the process's own symbols, libc's among them (find_library runs ldconfig)
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_trim_threshold, MALLOC_TRIM_BYTES)) and \
        bool(mallopt(m_mmap_threshold, MALLOC_MMAP_BYTES))


def _moving(engine: Engine):
    """What the progress thread watches: the loop's round count and the task running now (a
    chunk of tiny tasks moves the second while the first stands still)."""
    state = engine.data.state
    return lambda: (engine.rounds, state.task)


def _short_timer_slack() -> None:
    """Let the idle loop's sleeps of a few microseconds last microseconds, not 50 µs (Linux)."""
    try:
        import ctypes
        ctypes.CDLL(None).prctl(29, 1000, 0, 0, 0)    # PR_SET_TIMERSLACK, 1 µs
    except (OSError, AttributeError):
        pass


def _is_disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS,
                                                      errno.EACCES)
