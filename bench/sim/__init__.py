"""A discrete-event simulator of mpitiny at 1,000-10,000 ranks (docs/scale.md).

It runs the engine's real scheduling code, not a model of it: ``rank.SimRank`` is an
``Engine`` whose queue (``StealQueue``), ready queue and priority board (``ReadyQueue``),
dependency release (``Release``) and termination (``Control``) are the real classes on
``memory.SimMemory`` (the test memory ``LocalView`` plus a virtual clock), and whose
``find_work``, ``chunk_size``, ``steal``, ``take_direct`` and ``release_children`` are
inherited unchanged. What it models instead of running: a task's time, the engine's CPU per
round / chunk / task, the cost of each word operation on one node or between nodes, the
serialisation of atomics at their target (``costs``, with the sources of every figure), and,
where a node has fewer cores than ranks, the ranks' waits for a core (a pool of cores that
CPU work holds and sleeping tasks do not).

- ``simulate.Simulation``: P ranks on one ``LocalMemory``, stepped in virtual-time order;
  checks that every task ran exactly once; ``Result`` with efficiency and hot spots.
- ``workloads``: the benchmark DAGs (independent tasks, a two-stage DAG, with priorities).
- ``central``: the central-queue baseline (one master, as mpi4py.futures).
- ``metg``: efficiency against task length, METG(50 %) against ranks.
- ``fixes``: the engine with its scale fixes taken out again (``direct``, ``before``,
  ``oneboard``: the priority board on rank 0 only), as ``SimRank`` subclasses, to measure what
  each buys.
- ``validate``: real ``mpiexec`` runs against their simulation; ``wake``: the CPU of a wake
  from a sleep as a model fitted once; ``heldout``: that model fitted on some stored real
  runs and tested on the others; ``probe`` and ``calibrate``:
  the per-operation and CPU costs measured here; ``tables``: the tables of docs/scale.md.
- ``run``: the command line (``python bench/sim/run.py --help``; ``board``: the priority
  board's hot spot, atomics per target rank).
"""
