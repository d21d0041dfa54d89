"""Compiled kernels for the MapReduce jobs' inner loops, each optional.

A kernel is one C file here, built into ``mpitiny.kernels.NAME`` when mpitiny is installed
(``setup.py``; a C compiler and the Python headers are needed, as for mpi4py from source).
Where the build was not possible the install still succeeds: ``load(NAME)`` returns ``None``
and the caller uses its numpy form, which gives the same output. ``MPITINY_KERNELS=0`` turns
every kernel off (to compare the two forms, or to rule a kernel out).
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType


def load(name: str) -> ModuleType | None:
    """The compiled kernel ``name``, or ``None`` when it was not built or kernels are off."""
    if os.environ.get("MPITINY_KERNELS", "1") == "0":
        return None
    try:
        return importlib.import_module(f"mpitiny.kernels.{name}")
    except ImportError:
        return None
