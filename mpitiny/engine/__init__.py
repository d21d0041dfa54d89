"""The SPMD engine behind ``mpitiny run``: every rank is a worker, a queue and a metadata server.

Start-up (every rank, no master; ``start``): load and check the same dag.json, compute the same
``Layout`` (who holds which gate, count and location words), allocate the same windows, write
its own initial words, open one passive ``Lock_all`` epoch per window for the whole run, and
queue its share of the root tasks (rank r takes the r-th of P equal blocks of every long run of
roots, and every P-th of the short ones).

The loop (``loop.Engine.work``)::

    while (chunk := self.next_chunk()) is not None:    # claim -> steal -> report -> back off
        self.execute(chunk)                            # run -> record -> release

``next_chunk`` claims a chunk of this rank's own highest-priority ready tasks; if there are
none it asks a rank for its next released task (``ask_first``: the rank that answered last,
else a random one) and steals about half of another rank's (random victims, one-sided); if nothing is found it
reports its finished tasks to the run-wide counter (``control``) and waits (``Backoff``: with a
core per rank it only yields the core for its first 2 ms of idleness, as the next task of a
DAG is usually µs away; then it sleeps, up to 100 µs, or 1 ms with more ranks than cores). It
returns None when the run has finished everywhere or was stopped.

A DAG's hand-off (a task's end on one rank to its child's start on another) is kept to a few
atomics: a finished task counts its few children down one atomic add each (two on one rank
share one flush; none for a child that waits for it alone), through a plan built once per
group (``Release.finish_one``, plain integers, no array work); the first task it released runs
next on its rank unqueued (``keep_first``, even when older tasks wait in its queue: depth
first), in the same ``execute`` call unless the loop has something to do first (``kept_next``:
a stop, the end, a report due), and each other one goes, the moment its count-down released
it, to the ``MAIL`` word of an idle rank that asked this one for work (``stealq.give``), else
onto the ring of this rank's queue, where a thief takes half of those waiting with one
compare-and-swap; a placed child goes to its home's ``MAIL`` word
(one compare-and-swap) as soon as it is released, counted down before its siblings placed here
(``Release.hand_off``); a lone task taken from this rank's inbox or stolen runs at once
(``keep_lone``) instead of being queued and claimed back; a chunk of one task takes the
per-task path through ``execute`` and ``Records.add_one`` (plain integers, one row); an idle
rank looks at its ``MAIL`` word once more after a failed steal, before it waits.

A chunk's life (``Engine.execute``), group by group:

1. **claim**: ``CHUNK_SECONDS`` (5 ms) of work at the running average task time of its group
   (``BATCH_SECONDS``, 20 ms, for a batched family), at most a 1/P share of what is queued,
   1 while the group is new to the rank; START records go to the journal (``journaling``;
   none for a chunk of one task, which the ``.now`` file names as it runs);
2. **run** (``running.TaskRunner``): functions one by one or through a batch form, commands,
   retries, timeouts, failures; a resumed run's cached, suspect and doomed tasks their own way
   (``resume``); kept values go to the window (``dataplane``);
3. **record**: task rows (``Records``), results, failures; DONE/FAILED journal records once
   the chunk's results reached the OS;
4. **release** (``Engine.finish``): publish the locations of kept values, count the children
   down (``mpitiny.queue.release``) and queue those that became ready (at their home rank's
   inbox when placed; the first released task runs next, unqueued, and a chain of such tasks
   runs in one ``execute``, journaled every ``CHUNK_SECONDS`` and when the rank finds no work
   at once); then journal and count the finished tasks: the child's start waits for nothing
   of this rank's own bookkeeping. A lone task that released nothing reserves a child it
   counted down, to run it the moment its last parent ends elsewhere (``reserve``: a mark on
   the child's count word that its releaser leaves alone; for a child that waits for two
   tasks, the count-down itself sets the mark, ``took_reserved``), else asks another rank for
   work at once (``ask_first``).

What stays constant once the run started: the DAG, the layout, the windows, each group's
priority and chunk length, the rank's place (``rank``, ``nranks``, ``max_sleep``).

What the loop changes (``loop.Engine``), and where:

- the queue's slots and ring (``StealQueue``; through claims, steals, pushes) and the count
  words of other ranks (``Release``);
- ``direct``: a released task to run next (``release_children`` / ``take_direct``);
- ``reserved``: a child this rank will run once its count reaches zero (``reserve``,
  ``took_reserved``, ``take_reserved``, ``cancel_reserved``);
- ``avg_task``, ``avg_all``: seconds per task, by group and overall (``run_group``);
- ``unreported``, ``unreported_failed``: finished, not yet counted run-wide (``finish``,
  ``skip`` / ``report_finished``);
- ``stopped``: why this rank left early (``leave``, ``request_stop``);
- figures for the summary: ``busy``, ``steals``, ``stolen_tasks``, ``split_reads``,
  ``samples``, ``counts`` (``RunCounts``).

Termination without a coordinator, stop requests, ``--max-fails`` and the run's end
(``--time-limit`` or the Slurm job's end: a task that would not finish in time is not started,
and the run stops resumably, ``walltime``): ``control``. Between nodes, a progress thread
serves a busy rank's windows while it runs a task (``world.ProgressThread``; docs/offnode.md).
Priorities across ranks: ``ready`` (a run-wide board of ready tasks per priority level). Tasks
that add tasks while the run goes on (``mpitiny.submit``): ``adding``, run by ``find_work``
when none of the rank's own DAG tasks is left to claim. Errors: a task that raises (or exits
non-zero) is retried up to its ``retries``, then recorded as failed; its descendants are
upstream-failed; the run goes on. Anything that goes wrong inside the
engine aborts the MPI job (``start``). Signals, timeouts, isolation, fault injection:
``guard``. The same engine runs P simulated ranks in one process for tests (``local``,
``world.LocalWorld``).
"""
from mpitiny.engine.start import keep_freed_memory, run_file
from mpitiny.engine.types import RunOptions

__all__ = ["RunOptions", "keep_freed_memory", "run_file"]
