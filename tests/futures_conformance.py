"""The peers' executor test suites, parametrised over ``mpitiny.futures.Executor`` (issue 21
point 3). A session's script::

    mpiexec -n N python -m mpitiny.futures tests/futures_conformance.py cpython|mpi4py DIR

DIR holds the suites as published (not kept in this repository):

- ``cpython311_test_concurrent_futures.py``: CPython 3.11's
  ``Lib/test/test_concurrent_futures.py`` (one file in 3.11; e.g. from Debian's
  ``libpython3.11-testsuite``: ``/usr/lib/python3.11/test/test_concurrent_futures.py``);
- ``mpi4py_test_futures.py`` and ``mpitestutil.py``: mpi4py's ``demo/futures/test_futures.py``
  and ``test/mpitestutil.py``.

The suites' own executor-independent tests run as they are; their executor tests run with
the executor class replaced by ours, which is the only change (``SKIPS`` lists each test not
run and why). For mpi4py's suite, its ``futures`` module is seen through ``Mpi4pyNames``:
mpi4py's names, with ``MPIPoolExecutor`` and ``_core.RemoteTraceback`` ours, and its
``SHARED_POOL`` flag set (our session is the mode of ``python -m mpi4py.futures``).
Prints one JSON line (``{"suite", "ran", "failures", "errors", "skipped"}``), exits 1 if a
test failed.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
import types
import unittest

from mpitiny.futures import Executor, RemoteTraceback

SUITE, DIR = sys.argv[1], os.path.abspath(sys.argv[2])
sys.path.insert(0, DIR)

PROCESS_POOL = "names ProcessPoolExecutor's internals (_processes, _call_queue, manager thread)"
NEW_INTERPRETER = ("starts a plain `python -c` with a concurrent.futures executor named in "
                   "its text, not an MPI session")
CPYTHON_SKIPS = {
    "MpitinyShutdownTest.test_interpreter_shutdown": NEW_INTERPRETER,
    "MpitinyShutdownTest.test_submit_after_interpreter_shutdown": NEW_INTERPRETER,
    "MpitinyShutdownTest.test_hang_gh83386": NEW_INTERPRETER,
    "MpitinyShutdownTest.test_processes_terminate": PROCESS_POOL,
    "MpitinyShutdownTest.test_context_manager_shutdown": PROCESS_POOL,
    "MpitinyShutdownTest.test_del_shutdown": PROCESS_POOL,
    "MpitinyShutdownTest.test_shutdown_no_wait": PROCESS_POOL,
    "MpitinyExecutorTest.test_killed_child": PROCESS_POOL + "; a rank that dies ends the "
                                             "MPI job (a resumable run), no broken pool",
    "MpitinyExecutorTest.test_ressources_gced_in_workers": (
        "a multiprocessing Manager proxy sent to another rank: its auth key is the "
        "client process's, other MPI ranks cannot connect"),
    "MpitinyExecutorTest.test_saturation": PROCESS_POOL,
    "MpitinyExecutorTest.test_idle_process_reuse_one": PROCESS_POOL,
    "MpitinyExecutorTest.test_idle_process_reuse_multiple": PROCESS_POOL,
    "MpitinyExecutorTest.test_max_tasks_per_child": "ProcessPoolExecutor's max_tasks_per_child",
    "MpitinyExecutorTest.test_max_tasks_per_child_defaults_to_spawn_context":
        "ProcessPoolExecutor's max_tasks_per_child",
    "MpitinyExecutorTest.test_max_tasks_early_shutdown":
        "ProcessPoolExecutor's max_tasks_per_child",
}
NO_INITIALIZER = "Executor takes no initializer/initargs (not in this version)"
MPI4PY_SKIPS = {
    "MpitinyShutdownTest.test_shutdown": "asserts MPIPoolExecutor's internals (_pool, its thread)",
    "MpitinyShutdownTest.test_shutdown_cancel": "calls MPIPoolExecutor's internal _pool.cancel()",
    "MpitinyShutdownTest.test_init_bootup_shutdown": "asserts MPIPoolExecutor's _pool and its event",
    "MpitinyShutdownTest.test_context_manager_shutdown": "asserts MPIPoolExecutor's _pool thread/queue/event",
    "MpitinyShutdownTest.test_del_shutdown": "asserts MPIPoolExecutor's _pool thread/queue/event",
    "MpitinyExecutorTest.test_map_buffersize": "map(buffersize=) not in this version",
    "MpitinySubmitTest.test_mpi_serialized_support": "mpi4py.futures._core's MPI thread-lock switch",
    "MpitinySubmitTest.test_shared_executors": (
        "asserts mpi4py's worker count (world size - 1: its rank 0 only submits); every rank "
        "of ours works"),
}


def skip(cls: type, name: str, reason: str) -> None:
    setattr(cls, name, unittest.skip(reason)(getattr(cls, name)))


def make(name: str, bases: tuple, attrs: dict | None = None) -> type:
    """A test class defined at the top level of this script (so ``self._test_traceback`` and
    the like pickle by reference on every rank)."""
    cls = type(name, bases, {"__module__": __name__, **(attrs or {})})
    globals()[name] = cls
    return cls


def cpython_suite() -> tuple:
    cf = importlib.import_module("cpython311_test_concurrent_futures")

    class Mixin(cf.ExecutorMixin):
        executor_type = Executor

    classes = [
        make("MpitinyShutdownTest", (Mixin, cf.ProcessPoolShutdownTest, cf.BaseTestCase)),
        make("MpitinyWaitTest", (Mixin, cf.WaitTests, cf.BaseTestCase)),
        make("MpitinyAsCompletedTest", (Mixin, cf.AsCompletedTests, cf.BaseTestCase)),
        make("MpitinyExecutorTest", (Mixin, cf.ProcessPoolExecutorTest, cf.BaseTestCase)),
        cf.FutureTests,
    ]
    skips = dict(CPYTHON_SKIPS)
    for init in ("InitializerMixin", "FailingInitializerMixin"):
        cls = make(f"Mpitiny{init}Test", (getattr(cf, init), Mixin, cf.BaseTestCase))
        classes.append(cls)
        skips[f"{cls.__name__}.test_initializer"] = NO_INITIALIZER
    deadlock = make("MpitinyDeadlockTest", (Mixin, cf.ExecutorDeadlockTest, cf.BaseTestCase))
    for attr in dir(deadlock):
        if attr.startswith("test_"):
            skips[f"MpitinyDeadlockTest.{attr}"] = (
                "builds a ProcessPoolExecutor-style executor (mp_context=, a start method) "
                "and mostly expects BrokenProcessPool when a worker crashes or exits; a rank "
                "that dies ends the MPI job (a resumable run)")
    classes.append(deadlock)
    return classes, skips, cf.setUpModule


class Mpi4pyNames(types.ModuleType):
    """mpi4py.futures as the suite sees it: our executor under mpi4py's name."""

    def __init__(self, real) -> None:
        super().__init__("mpi4py.futures")
        self.__dict__.update({k: v for k, v in vars(real).items() if not k.startswith("__")})
        self.MPIPoolExecutor = Executor
        self._core = types.SimpleNamespace(**vars(real._core))
        self._core.RemoteTraceback = RemoteTraceback


def mpi4py_suite() -> tuple:
    import mpi4py.futures
    import mpi4py.futures._core as core
    core.SharedPool = core.SharedPool or object()        # SHARED_POOL: see the docstring
    mt = importlib.import_module("mpi4py_test_futures")
    mt.futures = Mpi4pyNames(mpi4py.futures)
    mt.ProcessPoolMixin.executor_type = Executor

    base = (mt.ProcessPoolMixin,)
    classes = [
        make("MpitinyShutdownTest", (mt.ProcessPoolShutdownTest,)),
        make("MpitinyWaitTest", base + (mt.WaitTestMixin, unittest.TestCase)),
        make("MpitinyAsCompletedTest", base + (mt.AsCompletedTestMixin, unittest.TestCase)),
        make("MpitinyExecutorTest", (mt.ProcessPoolExecutorTest,)),
        make("MpitinySubmitTest", (mt.ProcessPoolSubmitTest,)),
    ]
    if mt.WORLD_SIZE > 1:
        classes.append(make("MpitinyPickleTest", (mt.ProcessPoolPickleTest,)))
    skips = dict(MPI4PY_SKIPS)
    for cls in ("ProcessPoolInitTest", "ProcessPoolBootupTest", "SharedPoolInitTest"):
        skips[cls] = "initializer/bootup/max_workers of mpi4py's own worker spawning"
    for cls in ("MPICommExecutorTest", "ThreadPoolTest"):
        skips[cls] = "another executor class (mpi4py's MPICommExecutor; ThreadPoolExecutor)"
    for cls in ("ThenTest", "CollectTest", "ComposeTest"):
        skips[cls] = "mpi4py.futures' own future utilities (aplus then / collect / compose)"
    if mt.WORLD_SIZE == 1:
        skips["ProcessPoolPickleTest"] = "the suite itself drops it on one rank (shared pool)"
    return classes, skips, None


def run() -> int:
    classes, skips, setup = cpython_suite() if SUITE == "cpython" else mpi4py_suite()
    for key, reason in skips.items():
        if "." in key:
            cls_name, method = key.split(".")
            skip(globals()[cls_name], method, reason)
    if setup is not None:
        setup()
    loader = unittest.TestLoader()
    suite = unittest.TestSuite(loader.loadTestsFromTestCase(c) for c in classes)
    result = unittest.TextTestRunner(stream=sys.stderr, verbosity=2).run(suite)
    skipped = [(t.id(), r) for t, r in result.skipped]
    skipped += [(k, r) for k, r in skips.items() if "." not in k]
    print("\n" + json.dumps({"suite": SUITE, "ran": result.testsRun,
                      "failures": [t.id() for t, _ in result.failures],
                      "errors": [t.id() for t, _ in result.errors],
                      "skipped": skipped}))
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(run())
elif __name__ == "__worker__":                  # other ranks: the same classes, by name
    (cpython_suite if SUITE == "cpython" else mpi4py_suite)()
