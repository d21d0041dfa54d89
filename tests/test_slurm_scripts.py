"""The batch scripts' shell code without a Slurm cluster (the sbatch runs are in test_slurm.py).

Slurm may send its warning (USR1) in a job's first second, while the batch shell is still
sourcing ``slurm/common.sh``. bash 5.2 can fail to parse a command substitution (``$(...)``)
that a trapped signal interrupts ("unexpected EOF while looking for matching `)'"; the shell
may even abort), which failed a CI run of ``test_warning_while_ranks_start_is_held_until_they_
catch_it``. ``common.sh`` runs none before the launcher is waited for.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SIGNALS = 100          # warnings sent while the script sources common.sh again and again
DEADLINE = 60.0        # seconds: bounds the test, not a duration it asserts


def test_common_sh_survives_the_warning_at_any_moment_of_its_start(tmp_path):
    """A shell that traps USR1 as the batch scripts do sources common.sh over and over while
    ``SIGNALS`` USR1 come 2 ms apart, then stops at the next turn: every source completes,
    with no parse error."""
    script = tmp_path / "start.sh"
    stop = tmp_path / "stop"
    script.write_text(f"""#!/bin/bash
trap 'STOP_PENDING=USR1' USR1
echo ready
while [[ ! -e {stop} ]]; do
    STOP_PENDING=
    source {REPO}/slurm/common.sh > /dev/null
done
echo done
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(MPITINY_HOME=str(REPO), MPITINY_PYTHON=sys.executable, MPITINY_LAUNCH="mpiexec")
    proc = subprocess.Popen(["bash", str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        for _ in range(SIGNALS):
            if proc.poll() is not None:
                break
            proc.send_signal(signal.SIGUSR1)
            time.sleep(0.002)
        stop.touch()
        out, err = proc.communicate(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and out.endswith("done\n"), (proc.returncode, out[-2000:],
                                                              err[-2000:])
    assert "unexpected EOF" not in err, err[-2000:]
