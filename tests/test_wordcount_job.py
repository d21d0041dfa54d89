"""jobs/wordcount.json: exact counts against plain Python, from 1, 2 and 4 ranks."""
import sys
from collections import Counter
from pathlib import Path

import pytest

JOBS = Path(__file__).resolve().parents[1] / "jobs"
sys.path.insert(0, str(JOBS))
import wordcount  # noqa: E402


def reference(data: bytes) -> bytes:
    rows = sorted(Counter(data.split()).items(), key=lambda kv: (-kv[1], kv[0]))
    return b"".join(w + b"\t" + str(n).encode() + b"\n" for w, n in rows)


EDGE_CASES = {
    "no_final_newline": b"a b\nc a\nlast line a",
    "one_huge_line": b"x " * 5000 + b"y",
    "crlf_tabs_unicode": "caf\u00e9 na\u00efve\tcaf\u00e9\r\n\u65e5\u672c \u65e5\u672c\r\n".encode() * 50,
    "empty_lines": b"\n\n\na\n\n b \n\n",
    "empty": b"",
}


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
@pytest.mark.parametrize("nsplits", [1, 3, 7, 64])
def test_splits_count_every_line_once(tmp_path, case, nsplits):
    path = tmp_path / "in.txt"
    path.write_bytes(EDGE_CASES[case])
    parts = {k: wordcount.count(str(path), k, nsplits) for k in range(nsplits)}
    wordcount.merge(str(tmp_path / "out"), parts)
    assert (tmp_path / "out" / "wordcount.tsv").read_bytes() == reference(EDGE_CASES[case])


@pytest.mark.mpi
@pytest.mark.parametrize("n", [1, 2, 4])
def test_wordcount_job_matches_reference(python_module, tmp_path, n):
    corpus = tmp_path / "corpus.txt"
    wordcount.generate(str(corpus), megabytes=2, vocabulary=3000, seed=n)
    out = tmp_path / "out"
    proc = python_module(n, "mpitiny", "run", str(JOBS / "wordcount.json"),
                         "--param", f"input={corpus}", "--param", f"output={out}",
                         "--param", "splits=13", "--out", str(tmp_path / "run"),
                         env={"PYTHONPATH": str(JOBS)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (out / "wordcount.tsv").read_bytes() == reference(corpus.read_bytes())
