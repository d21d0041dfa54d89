"""The ``mpitiny`` command line (click). Errors are turned into exit statuses in one place.

Every ``MpitinyError`` raised below a command reaches ``MpitinyGroup.invoke``, which prints
``mpitiny: error: <where>: <what>`` once (only on rank 0 when running under MPI) and exits with
the error's ``exit_code``.
"""
from __future__ import annotations

import functools
import json
import os
import sys
import time

import click

from mpitiny.errors import BadInput, MpitinyError


def world_rank() -> int:
    """This process's MPI rank if mpi4py has initialised MPI, else what the launcher exported."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        return mpi.COMM_WORLD.Get_rank()
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"):
        if var in os.environ:
            try:
                return int(os.environ[var])
            except ValueError:
                pass
    return 0


class MpitinyGroup(click.Group):
    """A click group that reports ``MpitinyError`` once and exits with its code; click's own
    usage errors (an unknown option or command, a bad value) too: only rank 0 shows them."""

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.ClickException as err:
            raise _shown_before_any_exit(err) from None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MpitinyError as err:
            if world_rank() == 0:
                click.echo(f"mpitiny: error: {err.format()}", err=True)
            ctx.exit(err.exit_code)
        except click.ClickException as err:
            raise _shown_before_any_exit(err) from None


MEET_SECONDS = 30.0    # how long a rank with a usage error waits for the others


def _shown_before_any_exit(err: click.ClickException) -> click.exceptions.Exit:
    """A usage error (click's: an unknown option or command, a missing argument, a bad
    value; the same on every rank, which all parse the same command line): rank 0 shows it,
    then, under a launcher of several ranks, every rank waits for the others before it exits
    with the error's code (``meet_every_rank``). Open MPI's launcher ends the job at the first
    rank that exits with an error; a rank that did not wait cut rank 0's message off in about
    one run in ten."""
    if world_rank() == 0:
        err.show()
        sys.stderr.flush()
    meet_every_rank(err.exit_code)
    return click.exceptions.Exit(err.exit_code)


def meet_every_rank(code: int) -> None:
    """Under an MPI launcher of several ranks (``mpi_comm_if_launched``), a barrier of every
    rank (``sleep_until_done``) bounded by ``MEET_SECONDS``: a rank that is still alone then
    ends the job with ``code`` (``Abort``; a usage error found on some ranks only, a file that
    one node lacks, would otherwise leave them waiting)."""
    from mpitiny.engine.world import sleep_until_done
    from mpitiny.mpienv import mpi_comm_if_launched
    comm = mpi_comm_if_launched()
    if comm is None or comm.Get_size() == 1:
        return
    if not sleep_until_done(comm.Ibarrier(), time.monotonic() + MEET_SECONDS):
        comm.Abort(code)


def _check_node_mem(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is not None:
        from mpitiny.dag.limits import parse_size
        if parse_size(value) is None:
            raise click.BadParameter(f"{value!r}: expected bytes or a size like 64GB, 500GiB")
    return value


def node_options(command):
    """``--node-mem`` and ``--gpus-per-node``, what tasks' ``mem`` and ``gpus`` are counted
    against: the command runs with them in ``MPITINY_NODE_MEM`` and ``MPITINY_GPUS_PER_NODE``
    (which the loader and the engine read), set back afterwards."""
    @functools.wraps(command)
    def with_node(*args, node_mem: str | None, gpus_per_node: int | None, **kwargs):
        given = {"MPITINY_NODE_MEM": node_mem,
                 "MPITINY_GPUS_PER_NODE": None if gpus_per_node is None else str(gpus_per_node)}
        before = {k: os.environ.get(k) for k, v in given.items() if v is not None}
        os.environ.update({k: v for k, v in given.items() if v is not None})
        try:
            return command(*args, **kwargs)
        finally:
            for key, was in before.items():
                if was is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = was
    with_node = click.option(
        "--gpus-per-node", type=click.IntRange(0, 63), default=None, metavar="N",
        help="GPUs of each node, given to tasks that declare \"gpus\" (default: "
             "MPITINY_GPUS_PER_NODE, else 0).")(with_node)
    return click.option(
        "--node-mem", default=None, callback=_check_node_mem, metavar="SIZE",
        help="Memory of each node that tasks' \"mem\" is counted against, e.g. 64GB "
             "(default: MPITINY_NODE_MEM, else this machine's memory).")(with_node)

def parse_params(items: tuple) -> dict:
    """``("input=x.h5", "n=3")`` -> ``{"input": "x.h5", "n": 3}`` (JSON values where they parse)."""
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BadInput(f"--param {item!r}: expected NAME=VALUE")
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return params


def process_started() -> float:
    """When this process started, as ``time.time()`` (Linux: its start in ``/proc/self/stat``
    against ``/proc/uptime``; elsewhere: now): ``--time-limit`` counts from there, so the
    interpreter's start and the imports count too."""
    try:
        with open("/proc/self/stat", "rb") as f:
            ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        return time.time() - max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.time()


@click.group(cls=MpitinyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mpitiny")
def cli() -> None:
    """mpitiny: millions of tiny tasks over MPI ranks, with no central scheduler.

    Start it like any MPI program: ``mpirun -n 64 python -m mpitiny run dag.json``.
    """


@cli.command()
@click.argument("dag_file")
@click.option("--param", "-p", "params", multiple=True, metavar="NAME=VALUE",
              help="Set a dag.json parameter (repeatable).")
@click.option("--out", "-o", "out_dir", type=click.Path(file_okay=False),
              help="Run directory (default: mpitiny-runs/<dag name>).")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors (no progress, no summary).")
@click.option("--result-mem", default=256, show_default=True, metavar="MiB",
              help="Per-rank memory for task results that other ranks read one-sidedly.")
@click.option("--state-mem", default=16, show_default=True, metavar="MiB",
              help="Per-rank memory of the shared key-value store (mpitiny.state).")
@click.option("--mem-limit", default=None, type=int, metavar="MiB",
              help="Keep at most this much task output per rank in memory; more goes to "
                   "RUN_DIR/spill/ (default: --result-mem).")
@click.option("--progress-interval", type=float, default=None, metavar="SECONDS",
              help="How often rank 0 shows progress (default 0.5 on a terminal, 10 otherwise).")
@click.option("--trace", is_flag=True,
              help="Also write RUN_DIR/trace.json (Chrome trace events: Perfetto, chrome://tracing).")
@click.option("--retries", default=0, show_default=True, type=click.IntRange(0, 1000),
              help="Run a failed task again up to this many times (a task's own \"retries\" "
                   "wins).")
@click.option("--timeout", default=None, type=click.FloatRange(min=0, min_open=True),
              metavar="SECONDS", help="Time limit of every task (a task's own \"timeout\" wins).")
@click.option("--max-fails", default=None, type=click.IntRange(1), metavar="N",
              help="End the run after N failed tasks (default: never; the rest still runs).")
@click.option("--max-crashes", default=3, show_default=True, type=click.IntRange(1),
              help="A task that was running when its rank died this many times fails instead "
                   "of being run again on resume.")
@click.option("--resume/--fresh", "resume", default=None,
              help="Default (and --resume): a run directory holding a run of the same DAG "
                   "and parameters is resumed: tasks its journals mark done are kept, failed "
                   "and skipped ones run again; a complete run (every task done) runs nothing. "
                   "A run of another DAG is refused. --fresh: move the earlier run aside to "
                   "RUN_DIR.old-N and start over.")
@click.option("--no-journal", is_flag=True,
              help="Do not journal finished tasks (the run cannot be resumed).")
@click.option("--no-batch", is_flag=True,
              help="Call task functions once per task even where they have a batch form "
                   "(mpitiny.with_batch).")
@click.option("--time-limit", default=None, type=click.FloatRange(min=0, min_open=True),
              metavar="SECONDS",
              help="End the run within SECONDS of its start: start no task that would not "
                   "finish by then (by its \"walltime\" or the average time of its family), "
                   "let the running ones finish, save the journals and exit 75 (run the same "
                   "command again to resume). Under Slurm the job's end time (less 30 s) is "
                   "a limit too.")
@click.option("--no-job-end", is_flag=True,
              help="Under Slurm, do not end the run before the job's end time (a "
                   "--time-limit still applies).")
@node_options
def run(dag_file: str, params: tuple, out_dir: str | None, quiet: bool, result_mem: int,
        state_mem: int, mem_limit: int | None, progress_interval: float | None,
        trace: bool, retries: int, timeout: float | None, max_fails: int | None,
        max_crashes: int, resume: bool | None, no_journal: bool, no_batch: bool,
        time_limit: float | None, no_job_end: bool) -> None:
    """Run DAG_FILE on every rank of the MPI job (``mpiexec -n N mpitiny run DAG_FILE``).

    Run again on the same run directory, it resumes: done tasks are kept, failed and skipped
    ones run again; a complete run (every task done) runs nothing.

    Exit status: 0 all done, 1 some task failed, 2 bad input, 3 internal error, 75 stopped
    by SIGTERM/SIGINT/SIGUSR1 or by the time limit (run the same command again to resume)."""
    started = process_started()
    from mpitiny.engine import run_file
    status = run_file(dag_file, parse_params(params), out_dir=out_dir, quiet=quiet,
                      result_mem=result_mem << 20, state_mem=state_mem << 20,
                      mem_limit=None if mem_limit is None else mem_limit << 20,
                      progress_interval=progress_interval, trace=trace, retries=retries,
                      timeout=timeout, max_fails=max_fails, max_crashes=max_crashes,
                      journal=not no_journal, batch=not no_batch,
                      resume="auto" if resume is None else "yes" if resume else "no",
                      time_limit=time_limit, job_end=not no_job_end, started=started,
                      restore_signals=False)
    sys.exit(status)


@cli.command()
@click.argument("dag_file")
@click.option("--param", "-p", "params", multiple=True, metavar="NAME=VALUE",
              help="Set a dag.json parameter (repeatable).")
@node_options
def validate(dag_file: str, params: tuple) -> None:
    """Check DAG_FILE (syntax, types, ids, dependencies, cycles) without running it or MPI."""
    from mpitiny.dag.load import load_dag
    dag = load_dag(dag_file, parse_params(params))
    families = sum(1 for g in dag.groups if g.vars)
    click.echo(f"{dag_file}: ok: {dag.total} tasks in {dag.entries} entries "
               f"({families} families), {dag.dep_entries} dependency entries")


@cli.command("import-wfcommons")
@click.argument("instance")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the dag.json.")
@click.option("--scale", default=0.001, show_default=True, type=float,
              help="Each task sleeps (with --work: burns its cores) for its recorded runtime "
                   "times this factor.")
@click.option("--work", is_flag=True,
              help="Tasks burn their cores for their runtime and read and write their files, "
                   "with the instance's sizes, in RUN_DIR/data (children read their parents' "
                   "outputs), instead of sleeping.")
@click.option("--size-scale", default=1.0, show_default=True, type=float,
              help="With --work: each file has its recorded size times this factor.")
@click.option("--max-cores", type=click.IntRange(min=1), default=None,
              help="A task that declares more cores (coreCount) uses this many: the ranks of "
                   "a node of the run, at most (a task of more cores than that cannot run).")
def import_wfcommons(instance: str, output: str, scale: float, work: bool,
                     size_scale: float, max_cores: int | None) -> None:
    """Turn a WfCommons workflow instance into a dag.json (every task and edge kept): tasks
    that sleep for their runtime, or with --work do their work (docs/dag-format.md)."""
    from mpitiny.dag.wfcommons import convert_file
    if size_scale != 1.0 and not work:
        raise BadInput("--size-scale applies to the files of --work only: add --work")
    summary = convert_file(instance, output, scale, work=work, size_scale=size_scale,
                           max_cores=max_cores)
    click.echo(summary)


@cli.command()
@click.argument("inputs", nargs=-1)
@click.option("-o", "--output", metavar="OUT.h5", help="The HDF5 file to write (required).")
@click.option("--dataset", default="/text", show_default=True,
              help="Group of the output file that holds the data, splits and checksums.")
@click.option("--chunk", default="8MiB", show_default=True,
              help="Chunk size = split size: 64KiB .. 256MiB (e.g. 8MiB, 100KiB, 1048576).")
@click.option("--format", "fmt", default="text", show_default=True,
              help="text (whole lines per split), binary (cut at chunk boundaries) or "
                   "records:N (whole N-byte records per split).")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors (no progress, no summary).")
def ingest(inputs: tuple, output: str | None, dataset: str, chunk: str, fmt: str,
           quiet: bool) -> None:
    """Pack INPUT files (a directory: its files by name) into OUT.h5, one split per chunk.

    Under ``mpiexec -n N`` each rank packs one part into OUT.h5.shards/ and OUT.h5 links
    them (a virtual dataset). See docs/data.md.
    """
    from mpitiny.io.ingestion import describe, ingest_command
    summary, rank = ingest_command(inputs, output, dataset, chunk, fmt)
    if rank == 0 and not quiet:
        click.echo(describe(summary))


@cli.command()
@click.argument("run_dir")
@click.option("--no-plots", is_flag=True, help="Only the text summary and the Chrome trace.")
def report(run_dir: str, no_plots: bool) -> None:
    """Write RUN_DIR/report/: a text summary, a Chrome trace and PNG plots of a finished run."""
    from mpitiny.report import make_report
    try:
        result = make_report(run_dir, plots=not no_plots)
    except (OSError, ValueError, KeyError) as exc:
        raise BadInput(f"not a finished mpitiny run directory ({exc})", where=run_dir) from None
    click.echo(result["text"], nl=False)
    click.echo("written: " + ", ".join(sorted(result["files"].values())))


@cli.command()
@click.argument("run_dir")
def status(run_dir: str) -> None:
    """One line on RUN_DIR: running (with its progress), interrupted, complete with failures
    or complete, and what running the same command again would do. For a served run
    (``mpitiny serve``), also its jobs: state, priority, tasks, done, failed."""
    from mpitiny.engine.progress import status as run_status
    from mpitiny.io import jobs as jf
    served = os.path.isdir(jf.jobs_dir(run_dir))
    try:
        click.echo(run_status(run_dir))
    except (OSError, ValueError, KeyError) as exc:
        if not served:
            raise BadInput(f"no progress or summary to read ({exc})", where=run_dir) from None
        click.echo(f"{run_dir}: no server has run here yet")
    if served:
        click.echo(jf.describe_jobs(run_dir))


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
@click.option("--retries", default=0, show_default=True, type=click.IntRange(0, 1000),
              help="Run a failed task again up to this many times (a task's own \"retries\" "
                   "wins).")
@click.option("--timeout", default=None, type=click.FloatRange(min=0, min_open=True),
              metavar="SECONDS", help="Time limit of every task (a task's own \"timeout\" wins).")
@click.option("--time-limit", default=None, type=click.FloatRange(min=0, min_open=True),
              metavar="SECONDS", help="End within SECONDS of the start (exit 75, resumable); "
                                      "under Slurm the job's end (less 30 s) is a limit too.")
@click.option("--no-job-end", is_flag=True,
              help="Under Slurm, do not end before the job's end time.")
def serve(run_dir: str, quiet: bool, retries: int, timeout: float | None,
          time_limit: float | None, no_job_end: bool) -> None:
    """Serve jobs from RUN_DIR on every rank until stopped (``mpiexec -n N mpitiny serve
    RUN_DIR``): ``mpitiny submit RUN_DIR dag.json`` adds one, any idle rank picks it up.

    Exit status: 0 after ``mpitiny stop``, 75 after SIGTERM or the time limit (the same
    command resumes the unfinished jobs), 2 bad input, 3 internal error. See docs/serve.md."""
    started = process_started()
    from mpitiny.serve import serve as serve_run
    sys.exit(serve_run(run_dir, quiet=quiet, retries=retries, timeout=timeout,
                       time_limit=time_limit, job_end=not no_job_end, started=started))


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("dag_file", type=click.Path(dir_okay=False))
@click.option("--param", "-p", "params", multiple=True, metavar="NAME=VALUE",
              help="Set a dag.json parameter (repeatable).")
@click.option("--priority", default=0, show_default=True, type=click.IntRange(-2**31 + 1, 2**31 - 1),
              help="Jobs of higher priority get ranks first.")
def submit(run_dir: str, dag_file: str, params: tuple, priority: int) -> None:
    """Add DAG_FILE as a job to the server of RUN_DIR (it may start later): prints its id.
    The server checks the DAG as ``mpitiny run`` does; a bad one fails that job alone
    (``mpitiny status RUN_DIR`` says why)."""
    from mpitiny.io.jobs import submit_job
    parsed = parse_params(params)
    try:
        jid = submit_job(run_dir, dag_file, parsed, priority)
    except OSError as exc:
        raise BadInput(f"cannot submit: {exc.strerror or exc}",
                       where=exc.filename or dag_file) from None
    click.echo(jid)


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.argument("job", required=False)
@click.option("--server", is_flag=True, help="Stop the server instead (as `mpitiny stop`).")
def cancel(run_dir: str, job: str | None, server: bool) -> None:
    """Cancel JOB of the server of RUN_DIR: a waiting job never starts, a running one hands
    out no more tasks (those running finish). ``--server``: stop the server."""
    from mpitiny.io import jobs as jf
    if server:
        jf.request_stop(run_dir)
        click.echo(f"{run_dir}: stop requested")
        return
    if job is None:
        raise BadInput("name a JOB to cancel (mpitiny status lists them), or --server")
    try:
        click.echo(jf.request_cancel(run_dir, job))
    except KeyError:
        raise BadInput(f"no job {job!r}", where=run_dir) from None


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
def stop(run_dir: str) -> None:
    """Stop the server of RUN_DIR: running tasks finish, journals are synced, it exits 0;
    ``mpitiny serve RUN_DIR`` again resumes the jobs that had not ended."""
    from mpitiny.io.jobs import request_stop
    request_stop(run_dir)
    click.echo(f"{run_dir}: stop requested")


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.argument("task")
def show(run_dir: str, task: str) -> None:
    """Show what RUN_DIR kept about TASK: status, rank, start, end, error, result, output.

    A task done in an earlier run (cached in the last one) is shown as it ran then."""
    from mpitiny.io.rundir import describe_task
    try:
        info = describe_task(run_dir, task)
    except KeyError:
        raise BadInput(f"no task {task!r} in this run", where=run_dir) from None
    except OSError as exc:
        raise BadInput(f"not a finished mpitiny run directory ({exc})", where=run_dir) from None
    for key in ("id", "status", "rank", "attempt", "start", "end", "seconds", "run"):
        if key in info:
            value = info[key]
            if key in ("start", "end"):
                value = local_time(value)
            elif key == "seconds":
                value = f"{value:.6f}"
            elif key == "run":
                value = f"{value} (an earlier run: {info['dir']})"
            click.echo(f"{key}: {value}")
    if "result" in info:
        click.echo(f"result: {json.dumps(info['result'])}")
    for key in ("error", "stdout", "stderr"):
        if info.get(key):
            click.echo(f"--- {key}\n{info[key].rstrip()}")


def local_time(t: float) -> str:
    """``2025-03-07 14:03:12.345``: Unix time ``t`` in local time, to the millisecond."""
    from datetime import datetime
    return datetime.fromtimestamp(t).isoformat(sep=" ", timespec="milliseconds")


def main(argv: list | None = None) -> None:
    """Entry point of the console script and of ``python -m mpitiny``."""
    cli.main(args=argv, prog_name="mpitiny")
