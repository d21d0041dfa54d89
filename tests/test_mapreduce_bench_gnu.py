"""The GNU baselines of bench/mapreduce_bench.py (issue 18: each job against what a user would
run in one process) give the jobs' outputs on the hard cases: NUL and 0xff bytes, CRLF, empty
lines, a last line without a newline, leading whitespace; byte for byte against Python."""
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import mapreduce_bench as mb  # noqa: E402

DATA = (b"  lead\tword\n\nb\x00c error\r\nerror\xff\n0\n\n\xa0x errors y\n" * 50
        + b"zz \x0b\x0c last line error")

needs_gnu = pytest.mark.skipif(not all(shutil.which(t) for t in ("sort", "grep", "tr", "sed")),
                               reason="GNU coreutils/grep not found")


def _lines(data: bytes) -> list:
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


@needs_gnu
def test_gnu_sort_is_linesort_order(tmp_path):
    src, out = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_bytes(DATA)
    _, digest = mb.gnu_sort_lines(str(src), str(out))
    assert out.read_bytes() == b"".join(x + b"\n" for x in sorted(_lines(DATA)))
    assert digest == mb.digest([str(out)])


@needs_gnu
def test_gnu_distinct_is_distinct_output(tmp_path):
    src, out = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_bytes(DATA)
    mb.gnu_distinct_words(str(src), str(out))
    assert out.read_bytes() == b"".join(w + b"\n" for w in sorted(set(DATA.split())))


@needs_gnu
def test_gnu_grep_counts_the_lines_re_matches(tmp_path):
    src, out = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_bytes(DATA)
    pattern = r"\berror\b"
    _, matches = mb.gnu_grep_lines(str(src), pattern, str(out))
    want = [x for x in _lines(DATA) if re.search(pattern.encode(), x)]
    assert matches == len(want) > 50
    assert [row.split(b":", 1)[1] for row in out.read_bytes().split(b"\n")[:-1]] == want
