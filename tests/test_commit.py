"""Outputs appear whole or not at all."""
import os

import h5py
import pytest

from mpitiny.io.commit import atomic_h5, atomic_output, write_atomic


def test_output_appears_only_when_complete(tmp_path):
    path = tmp_path / "out" / "part.tsv"
    with atomic_output(str(path)) as f:
        f.write(b"half")
        assert not path.exists()
        f.write(b" and whole")
    assert path.read_bytes() == b"half and whole"
    assert os.listdir(path.parent) == ["part.tsv"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "part.tsv"
    write_atomic(str(path), b"old")
    with pytest.raises(RuntimeError):
        with atomic_output(str(path)) as f:
            f.write(b"new but broken")
            raise RuntimeError("crash")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["part.tsv"]


def test_atomic_h5(tmp_path):
    path = tmp_path / "t.h5"
    with atomic_h5(str(path)) as f:
        f["x"] = [1, 2, 3]
        assert not path.exists()
    with h5py.File(path) as f:
        assert list(f["x"][()]) == [1, 2, 3]
