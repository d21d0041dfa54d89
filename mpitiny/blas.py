"""numpy's OpenBLAS threads in mpitiny's own ranks: one per rank, ``cores: c`` for a task
that holds c cores.

OpenBLAS starts a pool of threads, one per core of the machine, when numpy is imported, and
they spin for a while before they sleep: on a node that runs one rank per core, every rank's
pool competes with the other ranks for the cores (with 2 ranks on 2 cores, ``import numpy``
costs 0.15 s of CPU instead of 0.08 s, taken from the ranks' own start-up). Dask's workers set
``OPENBLAS_NUM_THREADS=1`` for the same reason. mpitiny does the same, but keeps two promises:

* it is done only in the processes of ``mpitiny run`` / ``mpitiny serve`` (``python -m
  mpitiny`` or the ``mpitiny`` script; ``ranked_command``), before numpy is first imported,
  and only when the user set none of ``OPENBLAS_NUM_THREADS``, ``GOTO_NUM_THREADS`` and
  ``OMP_NUM_THREADS`` (which OpenBLAS would read): what the user set always wins, and a
  Python program that imports ``mpitiny`` is never changed (``default_one_thread``);
* the variable leaves ``os.environ`` again once numpy is loaded (OpenBLAS read it then), so
  that the commands of tasks inherit the environment the rank was started with
  (``numpy_loaded``);
* a function task of an entry with ``cores: c`` may run c threads, numpy's BLAS threads
  among them: while it holds its cores, OpenBLAS's own ``openblas_set_num_threads`` (found
  in the library numpy loaded, as threadpoolctl does, under its plain or its
  ``scipy_openblas``/``64_`` name) gives it c threads, and 1 again after (``threads``, used
  by ``engine.resources``).

If numpy's OpenBLAS has no such function (or numpy uses another BLAS, which does not read
``OPENBLAS_NUM_THREADS``), nothing else changes: ``threads`` does nothing. Linux only (the
loaded library is found in ``/proc/self/maps``); elsewhere nothing is set.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable, Iterator, Optional

VARIABLE = "OPENBLAS_NUM_THREADS"
USER_VARIABLES = (VARIABLE, "GOTO_NUM_THREADS", "OMP_NUM_THREADS")
RANKED_COMMANDS = ("run", "serve")
SETTERS = ("openblas_set_num_threads", "openblas_set_num_threads64_",
           "scipy_openblas_set_num_threads", "scipy_openblas_set_num_threads64_")
GETTERS = tuple(name.replace("set_", "get_") for name in SETTERS)
MAPS = "/proc/self/maps"

_state: dict = {"set": False, "setter": None}


def ranked_command(argv: list) -> bool:
    """Whether ``argv`` (``sys.orig_argv``) starts ``mpitiny run`` or ``mpitiny serve``:
    ``python [options] -m mpitiny CMD ...`` or ``.../mpitiny CMD ...``."""
    rest: list = []
    if len(argv) > 1 and os.path.basename(argv[1]) == "mpitiny":
        rest = argv[2:]
    elif "-m" in argv and argv[argv.index("-m") + 1:argv.index("-m") + 2] == ["mpitiny"]:
        rest = argv[argv.index("-m") + 2:]
    elif "-mmpitiny" in argv:
        rest = argv[argv.index("-mmpitiny") + 1:]
    return bool(rest) and rest[0] in RANKED_COMMANDS


def default_one_thread(argv: Optional[list] = None) -> bool:
    """Before numpy is imported: set ``OPENBLAS_NUM_THREADS=1`` if this process is a rank of
    ``mpitiny run``/``serve`` and the user chose no thread count. Returns whether it set it."""
    argv = list(getattr(sys, "orig_argv", [])) if argv is None else argv
    if not sys.platform.startswith("linux") or "numpy" in sys.modules or \
            any(k in os.environ for k in USER_VARIABLES) or not ranked_command(argv):
        return False
    os.environ[VARIABLE] = "1"
    _state["set"] = True
    return True


def numpy_loaded() -> None:
    """Once numpy is imported: take the default back out of ``os.environ`` and find
    OpenBLAS's setter (for ``threads``)."""
    if not _state["set"] or os.environ.get(VARIABLE) != "1":
        return
    del os.environ[VARIABLE]
    _state["setter"] = find_setter()


def find_setter(maps: str = MAPS) -> Optional[Callable[[int], None]]:
    """``openblas_set_num_threads`` of the OpenBLAS this process has loaded, or None."""
    import ctypes
    fn = _function(SETTERS, maps)
    if fn is not None:
        fn.argtypes, fn.restype = [ctypes.c_int], None
    return fn


def current_threads(maps: str = MAPS) -> Optional[int]:
    """``openblas_get_num_threads()`` of the loaded OpenBLAS, or None (no OpenBLAS)."""
    fn = _function(GETTERS, maps)
    return None if fn is None else int(fn())


def _function(names: tuple, maps: str):
    import ctypes
    for path in _loaded_openblas(maps):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        fn = next((getattr(lib, name) for name in names if hasattr(lib, name)), None)
        if fn is not None:
            return fn
    return None


def _loaded_openblas(maps: str) -> list:
    try:
        with open(maps, encoding="utf-8", errors="replace") as f:
            fields = [line.split(None, 5) for line in f]
    except OSError:
        return []
    paths = {f[5].strip() for f in fields if len(f) == 6}
    return sorted(p for p in paths if "openblas" in os.path.basename(p).lower())


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """``n`` OpenBLAS threads meanwhile, if mpitiny set this rank's default of 1 (else, or
    for n <= 1, nothing changes)."""
    setter = _state["setter"]
    if setter is None or n <= 1:
        yield
        return
    setter(n)
    try:
        yield
    finally:
        setter(1)
