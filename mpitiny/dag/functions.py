"""Pass 4 of loading a dag.json: import the function of every ``fn`` entry.

Each module is imported once (the current directory, then the dag file's directory, first on
``sys.path``), each ``module:function`` resolved once, and its signature checked against the
entry's ``args``/``kwargs``. The loader sets on each ``fn`` group what the runtime calls:
``function``, its batch form ``batch_function`` (``mpitiny.with_batch``, or None) and
``wants_inputs`` (a parameter named ``inputs`` receives the parents' results); an entry with
``ranks`` needs a parameter named ``comm`` (the communicator of its ranks). A module that
is missing or raises while importing is a ``DagError``, not a traceback.
"""
from __future__ import annotations

import importlib
import inspect
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

from mpitiny.dag.messages import Reporter, kind, oneline, show
from mpitiny.dag.model import BATCH_ATTR, Group


@dataclass(frozen=True)
class ResolvedFunction:
    """What a ``"module:function"`` string names, found once per loading."""

    function: Callable
    signature: inspect.Signature | None     # None when inspect cannot tell (some builtins)
    wants_inputs: bool
    batch_function: Callable | None
    wants_comm: bool = False      # a parameter named ``comm`` (entries with ``ranks``)


def batch_form(function: Callable) -> Callable | None:
    """The batch form that ``mpitiny.with_batch`` gave ``function``, or None."""
    try:
        return getattr(function, BATCH_ATTR, None)
    except Exception:          # an object whose __getattr__ raises: it has no batch form
        return None


class FunctionImporter(Reporter):
    """Imports and checks the functions of the ``fn`` groups of a file (``import_all``)."""

    def __init__(self, source: str, base_dir: str | None) -> None:
        super().__init__(source)
        self.base_dir = base_dir
        self.modules: dict = {}        # module name -> module, or the error message
        self.functions: dict = {}      # "mod:attr" -> ResolvedFunction
        self.bound: set = set()        # (fn, nargs, kwargs keys) known to bind

    def import_all(self, groups: list) -> None:
        """Sets ``function``, ``batch_function`` and ``wants_inputs`` on every ``fn`` group."""
        if not any(g.kind == "fn" for g in groups):
            return
        self.extend_path()
        for g in groups:
            if g.kind != "fn":
                continue
            found = self.functions.get(g.fn)
            if found is None:
                found = self.functions[g.fn] = self.resolve(g.fn, g.where)
            g.function = found.function
            g.batch_function = found.batch_function
            g.wants_inputs = found.wants_inputs
            if found.wants_inputs and "inputs" in g.kwargs:
                raise self.error("kwargs: 'inputs' is set by mpitiny (the results of the "
                                 f"parents) because {oneline(g.fn)} has a parameter named "
                                 "'inputs'; "
                                 "do not set it in kwargs", g.where)
            if g.options.ranks is not None:
                self.check_comm(g, found)
            self.check_call(g, found)

    def check_comm(self, group: Group, found: ResolvedFunction) -> None:
        """An entry with ``ranks`` passes the communicator of its ranks in ``comm``."""
        if not found.wants_comm:
            raise self.error(f"ranks: {oneline(group.fn)} has no parameter named 'comm' (it "
                             "receives the communicator of the task's ranks)", group.where)
        if "comm" in group.kwargs:
            raise self.error("kwargs: 'comm' is set by mpitiny (the communicator of the "
                             "task's ranks); do not set it in kwargs", group.where)

    def check_call(self, group: Group, found: ResolvedFunction) -> None:
        """The group's ``args``/``kwargs`` (and ``inputs``) must bind to the signature."""
        key = (group.fn, len(group.args), tuple(group.kwargs), group.options.ranks is None)
        if key in self.bound or found.signature is None:
            return
        extra: dict = {"inputs": {}} if found.wants_inputs else {}
        if group.options.ranks is not None:
            extra["comm"] = None
        try:
            found.signature.bind(*group.args, **group.kwargs, **extra)
        except TypeError as err:
            raise self.error(f"fn: {oneline(group.fn)} cannot be called with these "
                             f"args/kwargs: {oneline(err)}", group.where) from None
        self.bound.add(key)

    def extend_path(self) -> None:
        """Put the current directory, then the dag file's directory, first on sys.path."""
        paths = []
        try:
            paths.append(os.getcwd())
        except OSError:
            pass
        if self.base_dir:
            paths.append(os.path.abspath(self.base_dir))
        for p in reversed(paths):
            if p not in sys.path:
                sys.path.insert(0, p)
        importlib.invalidate_caches()

    def import_module(self, name: str, where: str) -> Any:
        """The module ``name``, imported once; a failure is remembered and reported."""
        found = self.modules.get(name)
        if found is None:
            try:
                found = importlib.import_module(name)
            except ModuleNotFoundError as err:
                missing = err.name or ""
                if missing and (name == missing or name.startswith(missing + ".")):
                    found = (f"no module named {show(missing)} (looked in the current "
                             "directory, the dag file's directory and sys.path)")
                else:
                    found = (f"importing {oneline(name)} failed: ModuleNotFoundError: "
                             f"{oneline(err)}")
            except (Exception, SystemExit) as err:   # the module raised while importing
                found = (f"importing {oneline(name)} failed: {type(err).__name__}: "
                         f"{oneline(err)}")
            self.modules[name] = found
        if isinstance(found, str):
            raise self.error(f"fn: {found}", where)
        return found

    def resolve(self, fn: str, where: str) -> ResolvedFunction:
        """The callable that ``fn`` (``"module:qualified.name"``) names, and its signature."""
        module_name, _, attr = fn.partition(":")
        obj = self.import_module(module_name, where)
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise self.error(f"fn: module {oneline(module_name)} has no attribute "
                                 f"{show(attr)}", where) from None
            except Exception as err:       # a module __getattr__ that raises
                raise self.error(f"fn: looking up {show(attr)} in {oneline(module_name)} "
                                 f"failed: {type(err).__name__}: {oneline(err)}",
                                 where) from None
        if not callable(obj):
            raise self.error(f"fn: {oneline(fn)} is not callable (it is {kind(obj)})", where)
        batch = batch_form(obj)
        try:
            signature = inspect.signature(obj)
        except (TypeError, ValueError):
            return ResolvedFunction(obj, None, False, batch)
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        param = signature.parameters.get("inputs")
        wants = param is not None and param.kind in named
        comm = signature.parameters.get("comm")
        return ResolvedFunction(obj, signature, wants, batch,
                                comm is not None and comm.kind in named)
