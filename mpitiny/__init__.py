"""mpitiny: run huge numbers of tiny tasks and DAGs on every rank of an MPI job.

Command line: ``mpiexec -n N python -m mpitiny run dag.json``. From Python (every rank runs the
same script): ``mpitiny.DAG``, ``mpitiny.run``, ``mpitiny.map`` (see ``mpitiny.api``); inside
tasks: ``mpitiny.submit`` / ``mpitiny.submit_family`` (add tasks to the run), ``mpitiny.state``
(shared key-value store), ``mpitiny.io.open_splits`` (input splits), ``mpitiny.Parts`` (a
return value of which each child reads one part, ``"part"`` in dag.json).

The ranks of ``mpitiny run``/``serve`` start numpy with one OpenBLAS thread (``mpitiny.blas``):
that is decided here, before the imports below load numpy.
"""
__version__ = "0.1.0"

from mpitiny import blas as _blas  # noqa: E402

_blas.default_one_thread()

from mpitiny.api import DAG, map, run, submit, submit_family, with_batch  # noqa: E402  (no MPI is initialised by importing these)
from mpitiny.io.values import Parts  # noqa: E402

_blas.numpy_loaded()

__all__ = ["DAG", "Parts", "map", "run", "submit", "submit_family", "with_batch",
           "__version__"]
