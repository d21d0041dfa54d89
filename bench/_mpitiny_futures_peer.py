"""The mpitiny.futures side of bench/futures_bench.py: the phases of ``_futures_peer.py``
(the same functions, the same null task) run on ``mpitiny.futures.Executor``::

    mpiexec -n N python -m mpitiny.futures bench/_mpitiny_futures_peer.py PHASES_JSON

Prints one JSON object ``{"workers": N, "phases": [...]}``.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _futures_peer import run  # noqa: E402
from mpitiny.futures import Executor  # noqa: E402


def main():
    run(Executor)


if __name__ == "__main__":
    main()
