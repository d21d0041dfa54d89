"""``keep_freed_memory``: glibc keeps freed memory for the next task instead of page-faulting it
back in (measured by the page faults of a loop of numpy allocations, in a fresh process)."""
import os
import subprocess
import sys

import pytest

PROBE = """
import resource
import numpy as np
from mpitiny.engine import keep_freed_memory
tuned = keep_freed_memory()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    arrays = [np.ones(1 << 20, np.uint8) for _ in range(4)]   # 4 MiB, then freed
    del arrays
print(int(tuned), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def probe(**env) -> tuple:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60,
                         env={**os.environ, **env}, check=True).stdout.split()
    return bool(int(out[0])), int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_freed_memory_is_reused_without_page_faults():
    tuned, faults = probe()
    untouched, default_faults = probe(MPITINY_MALLOC="default")
    assert tuned and not untouched
    # default glibc: up to ~1,000 faults per iteration (4 MiB given back and touched again);
    # fewer when the kernel backs the arrays with huge pages (a loaded CI machine counted 37,759)
    assert default_faults > 10_000, default_faults
    assert faults < default_faults / 20, (faults, default_faults)


def test_a_users_malloc_settings_are_left_alone():
    tuned, _ = probe(MALLOC_TRIM_THRESHOLD_="131072")
    assert not tuned
