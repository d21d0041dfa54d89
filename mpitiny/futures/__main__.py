"""``mpiexec -n N python -m mpitiny.futures script.py [args]`` (or ``-m module [args]``):
the script's ``__main__`` on rank 0, every rank running its futures (``mpitiny.futures``)."""
from __future__ import annotations

import sys

from mpitiny.futures._core import serve

USAGE = "usage: python -m mpitiny.futures script.py [args] | -m module [args]"


def main(argv: list) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr)
        return 0 if argv else 2
    if argv[0] == "-m":
        if len(argv) < 2:
            print(f"mpitiny.futures: -m needs a module name\n{USAGE}", file=sys.stderr)
            return 2
        return serve(["module", *argv[1:]])
    if argv[0].startswith("-"):
        print(f"mpitiny.futures: unknown option {argv[0]!r}\n{USAGE}", file=sys.stderr)
        return 2
    return serve(["path", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
