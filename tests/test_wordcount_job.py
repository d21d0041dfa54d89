"""jobs/wordcount.json on single edge-case inputs, and the demo (jobs/demo.sh) end to end.

The full matrix (grep, distinct, 1/2/4/8 ranks, a multi-file corpus) is in test_jobs.py.
"""
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JOBS = ROOT / "jobs"
sys.path.insert(0, str(JOBS))
import wordcount  # noqa: E402


def reference(data: bytes) -> bytes:
    rows = sorted(Counter(data.split()).items(), key=lambda kv: (-kv[1], kv[0]))
    return b"".join(w + b"\t" + str(n).encode() + b"\n" for w, n in rows)


EDGE_CASES = {
    "no_final_newline": b"a b\nc a\nlast line a",
    "one_huge_line": b"x " * 200000 + b"y",                    # 400 KB: one split, 7 chunks
    "crlf_tabs_unicode": "caf\u00e9 na\u00efve\tcaf\u00e9\r\n\u65e5\u672c \u65e5\u672c\r\n".encode() * 5000,
    "empty_lines": b"\n\n\na\n\n b \n\n" * 10000,
    "only_whitespace": b" \t\r\n\x0b\x0c" * 30000,
    "many_short_lines": b"".join(b"w%d w%d\n" % (i, i % 7) for i in range(50000)),
}


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
@pytest.mark.parametrize("reducers", [1, 4])
def test_edge_cases_split_by_split(tmp_path, case, reducers):
    from mpitiny.io.ingestion import ingest
    from mpitiny.io.splits import open_splits
    (tmp_path / "in.txt").write_bytes(EDGE_CASES[case])
    h5 = str(tmp_path / "in.h5")
    ingest([str(tmp_path / "in.txt")], h5, chunk="64KiB")
    maps = {f"map[{i}]": wordcount.map_split(h5, i, reducers) for i in range(len(open_splits(h5)))}
    reds = {f"reduce[{r}]": wordcount.reduce_part(maps, r) for r in range(reducers)}
    wordcount.finish(str(tmp_path / "out"), reds)
    assert (tmp_path / "out" / "wordcount.tsv").read_bytes() == reference(EDGE_CASES[case])


@pytest.mark.mpi
def test_demo_script_small(tmp_path):
    """bash jobs/demo.sh 2 2 64KiB: generate, ingest, wordcount on 2 ranks, print top words."""
    env = dict(os.environ, DEMO_DIR=str(tmp_path), HYDRA_LAUNCHER="fork", HYDRA_RMK="user")
    proc = subprocess.run(["bash", str(JOBS / "demo.sh"), "2", "2", "64KiB"], env=env,
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "MB/s" in proc.stdout and "top words" in proc.stdout
    corpus = (tmp_path / "corpus-2MB.txt").read_bytes()
    assert (tmp_path / "wordcount-out" / "wordcount.tsv").read_bytes() == reference(corpus)
