"""``mpiexec -n N python _rss_wrap.py OUTDIR -- PROGRAM ARGS...``: run PROGRAM as a child (it
inherits every file descriptor and the environment, so MPI's PMI connection works) and write
its peak RSS (``getrusage(RUSAGE_CHILDREN).ru_maxrss``, KiB on Linux) to
``OUTDIR/rss-<rank>.json``. Exits with the child's status."""
import json
import os
import resource
import subprocess
import sys

out_dir = sys.argv[1]
assert sys.argv[2] == "--"
rank = next((os.environ[v] for v in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")
             if v in os.environ), str(os.getpid()))
code = subprocess.call(sys.argv[3:], close_fds=False)
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(os.path.join(out_dir, f"rss-{rank}.json"), "w") as f:
    json.dump({"rank": int(rank) if rank.isdigit() else rank, "maxrss_kib": ru.ru_maxrss,
               "user_seconds": ru.ru_utime, "system_seconds": ru.ru_stime, "status": code}, f)
sys.exit(code if code >= 0 else 128 - code)
