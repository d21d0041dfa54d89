"""The bad-input corpus (tests/bad_inputs/, see its README.md): one error line, exit 2, nothing written.

Every file of the corpus goes through ``mpitiny validate`` (in-process with click's CliRunner;
one file of each kind also as a subprocess) and through ``mpiexec -n 2 python -m mpitiny run
FILE --out RUNDIR``. Each must exit with status 2 (the subprocess timeouts only bound a hang: no duration is
asserted), print nothing on stdout and
exactly one line on stderr, ``mpitiny: error: FILE: ...``, containing the fragments the README
lists for it (no traceback, printed once however many ranks), and write nothing: the run
directory is not created, and the current directory (which holds the HDF5 inputs) is unchanged.

The corpus is copied to a temporary directory first (importing the ``fn`` modules next to the
files must not leave ``__pycache__`` in the source tree); the ``gen-*`` files, too big to check
in, are written there, and ``make_h5.py`` writes the HDF5 inputs into the working directory.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from mpirun import mpirun, strip_mpi_banners
from mpitiny.cli import cli

CORPUS = Path(__file__).resolve().parent / "bad_inputs"
BIG = 10 * 1024 * 1024  # the size of the gen-*-10mb strings


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    fragments: tuple
    args: tuple

    @property
    def kind(self) -> str:
        return self.name.split("-", 1)[0]


_ROW = re.compile(r"^\| `([^`]+)` \| (.*?) \| (.*?) \|(.*)\|$")


def read_manifest() -> list:
    """The rows of the README's table: file, what is wrong, fragments, extra arguments."""
    cases = []
    for line in (CORPUS / "README.md").read_text().splitlines():
        m = _ROW.match(line)
        if m:
            name, what, frags, args = m.groups()
            args = args.strip().strip("`")
            cases.append(Case(name, what, tuple(re.findall(r"`([^`]+)`", frags)),
                              tuple(shlex.split(args))))
    return cases


CASES = read_manifest()
_KINDS_SEEN: set = set()
#: One file of each kind, for the subprocess ``validate`` checks.
FIRST_OF_KIND = [c for c in CASES if c.kind not in _KINDS_SEEN and not _KINDS_SEEN.add(c.kind)]


def write_generated(dest: Path) -> dict:
    """Write the ``gen-*.json`` files (too big to check in) into ``dest``; name -> path."""
    files = {
        "gen-id-10mb.json": {"name": "bad", "tasks": [{"id": "t" * BIG, "cmd": "true"}]},
        "gen-name-10mb.json": {"name": "n" * BIG, "tasks": [{"id": "a", "cmd": "true"}]},
        "gen-dep-10mb.json": {"name": "bad", "tasks": [
            {"id": "a", "cmd": "true"}, {"id": "b", "cmd": "true", "deps": ["a" * BIG]}]},
        "gen-key-10mb.json": {"name": "bad", "tasks": [
            {"id": "a", "cmd": "true", "k" * BIG: 1}]},
        "gen-fn-module-10mb.json": {"name": "bad", "tasks": [{"id": "a", "fn": "m" * BIG + ":f"}]},
        "gen-fn-attr-10mb.json": {"name": "bad", "tasks": [
            {"id": "a", "fn": "math:" + "f" * BIG}]},
        "gen-cmd-10mb-nul.json": {"name": "bad", "tasks": [
            {"id": "a", "cmd": "x" * BIG + "\x00"}]},
        "gen-100k-duplicate-last.json": {"name": "bad", "tasks": [
            {"id": f"t{i}", "cmd": "true"} for i in range(100_000)] + [
            {"id": "t0", "cmd": "true"}]},
        "gen-50k-chain-cycle.json": {"name": "bad", "tasks": [
            {"id": f"c{i}", "cmd": "true", "deps": [f"c{(i - 1) % 50_000}"]}
            for i in range(50_000)]},
    }
    out = {}
    for name, doc in files.items():
        path = dest / name
        path.write_text(json.dumps(doc))
        out[name] = path
    return out


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """A copy of tests/bad_inputs/ plus the generated files."""
    dest = tmp_path_factory.mktemp("bad_inputs")
    for src in CORPUS.iterdir():
        if src.is_file() and src.suffix in (".json", ".py"):
            shutil.copyfile(src, dest / src.name)
    write_generated(dest)
    return dest


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    """The current directory of every check: holds h5/*.h5 (make_h5.py)."""
    spec = importlib.util.spec_from_file_location("bad_inputs_make_h5", CORPUS / "make_h5.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dest = tmp_path_factory.mktemp("bad_inputs_cwd")
    module.make_all(str(dest))
    return dest


def snapshot(root: Path) -> dict:
    """Every file and directory under ``root``: relative path -> (size, mtime_ns)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            found[os.path.relpath(p, root)] = (st.st_size, st.st_mtime_ns)
    st = os.lstat(root)
    found["."] = (None, st.st_mtime_ns)
    return found


def check_error(case: Case, path: Path, code: int, stdout: str, stderr: str, elapsed: float,
                how: str) -> str:
    """The common bar: exit 2, empty stdout, one `mpitiny: error: FILE: ...` line."""
    shown = f"{how} {case.name}: exit {code}, {elapsed:.1f} s\n--- stdout\n{stdout[:2000]}" \
            f"\n--- stderr\n{stderr[:4000]}"
    assert code == 2, shown
    assert stdout == "", shown
    assert "Traceback" not in stderr, shown
    lines = stderr.splitlines()
    assert len(lines) == 1 and stderr.endswith("\n"), shown
    line = lines[0]
    assert line.startswith(f"mpitiny: error: {path}: "), shown
    for fragment in case.fragments:
        assert fragment in line, f"{fragment!r} not in the line\n{shown}"
    return line


# ------------------------------------------------------------------------------- the corpus

def test_manifest_matches_the_files():
    """Every file has its README row and every row its file (or its generator)."""
    listed = [c.name for c in CASES]
    assert len(listed) == len(set(listed)), "a file is listed twice"
    on_disk = {p.name for p in CORPUS.glob("*.json")}
    generated = {c.name for c in CASES if c.kind == "gen"}
    assert set(listed) - generated == on_disk
    assert len(CASES) >= 30
    for case in CASES:
        assert case.fragments and case.what, case
    kinds = {c.kind for c in CASES}
    assert {"json", "top", "task", "num", "foreach", "param", "dep", "fn", "h5", "gen"} <= kinds


def test_generated_names_match_the_manifest(tmp_path):
    made = set(write_generated(tmp_path))
    assert made == {c.name for c in CASES if c.kind == "gen"}


@pytest.fixture
def runner(monkeypatch, workdir):
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.setattr(sys, "path", list(sys.path))     # the loader prepends the dag's dir
    return CliRunner()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_validate(case, corpus, workdir, runner):
    path = corpus / case.name
    before = snapshot(workdir)
    start = time.monotonic()
    result = runner.invoke(cli, ["validate", str(path), *case.args], catch_exceptions=False)
    elapsed = time.monotonic() - start
    check_error(case, path, result.exit_code, result.stdout, result.stderr, elapsed,
                "mpitiny validate")
    assert snapshot(workdir) == before


def _env() -> dict:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"):
        env.pop(var, None)
    return env


@pytest.mark.parametrize("case", FIRST_OF_KIND, ids=[c.name for c in FIRST_OF_KIND])
def test_validate_subprocess(case, corpus, workdir):
    path = corpus / case.name
    before = snapshot(workdir)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "mpitiny", "validate", str(path), *case.args],
                          cwd=workdir, env=_env(), capture_output=True, text=True,
                          errors="replace", timeout=60)
    elapsed = time.monotonic() - start
    check_error(case, path, proc.returncode, proc.stdout, proc.stderr, elapsed,
                "mpitiny validate (subprocess)")
    assert snapshot(workdir) == before


def mpi_run(case: Case, path: Path, workdir: Path, out: str | None):
    args = ["-m", "mpitiny", "run", str(path), *case.args]
    if out is not None:
        args += ["--out", out]
    return mpirun(2, args, cwd=str(workdir), timeout=30, env={"PYTHONDONTWRITEBYTECODE": "1"})


@pytest.mark.mpi
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_run_mpi(case, corpus, workdir, mpi_impl):
    if mpi_impl != "mpich" and case not in FIRST_OF_KIND:
        pytest.skip("one case of each kind under this MPI (the messages come from loading, "
                    "on rank 0, before MPI carries anything but them; MPICH runs every case)")
    path = corpus / case.name
    out = workdir / "run-out"
    before = snapshot(workdir)
    proc = mpi_run(case, path, workdir, str(out))
    stderr = strip_mpi_banners(proc.stderr)
    check_error(case, path, proc.returncode, proc.stdout, stderr, proc.elapsed,
                "mpiexec -n 2 mpitiny run")
    assert not out.exists()
    assert snapshot(workdir) == before
    assert not proc.leftover_pids


EXISTING = ["json-binary-png.json", "dep-cycle-2.json", "fn-not-callable.json",
            "h5-offsets-overlap.json", "param-unknown-cli.json"]


@pytest.mark.mpi
@pytest.mark.parametrize("name", EXISTING)
def test_run_mpi_existing_run_dir_untouched(name, corpus, workdir, tmp_path):
    """A run directory that exists (a previous run) is left exactly as it was; and without
    --out, the default one (mpitiny-runs/<name>) is not created either."""
    case = next(c for c in CASES if c.name == name)
    path = corpus / name
    out = tmp_path / "previous-run"
    (out / "results").mkdir(parents=True)
    (out / "summary.json").write_text('{"exit_status": 0}\n')
    (out / "results" / "rank-0.jsonl").write_text('{"id": "a", "value": 1}\n')
    old = snapshot(out)
    proc = mpi_run(case, path, workdir, str(out))
    check_error(case, path, proc.returncode, proc.stdout, strip_mpi_banners(proc.stderr),
                proc.elapsed, "mpiexec -n 2 mpitiny run (existing --out)")
    assert snapshot(out) == old
    before = snapshot(workdir)
    proc = mpi_run(case, path, workdir, None)
    check_error(case, path, proc.returncode, proc.stdout, strip_mpi_banners(proc.stderr),
                proc.elapsed, "mpiexec -n 2 mpitiny run (default run directory)")
    assert snapshot(workdir) == before
    assert not (workdir / "mpitiny-runs").exists()


USAGE_ERRORS = [
    (["run", "dag.json", "--no-such-option"], "No such option '--no-such-option'"),
    (["runn", "dag.json"], "No such command 'runn'"),
    (["--no-such-option", "run", "dag.json"], "No such option '--no-such-option'"),
    (["run"], "Missing argument 'DAG_FILE'"),
]


@pytest.mark.mpi
@pytest.mark.parametrize("args,what", USAGE_ERRORS, ids=["option", "command", "top-option",
                                                         "argument"])
def test_usage_error_is_printed_once(args, what, tmp_path):
    """A mistyped command line (click's own usage errors) is shown by rank 0 alone, and every
    rank exits with click's status 2: 3 ranks, one ``Error:`` line."""
    (tmp_path / "dag.json").write_text('{"tasks": [{"id": "a", "cmd": "true"}]}')
    proc = mpirun(3, ["-m", "mpitiny", *args], cwd=str(tmp_path), timeout=60)
    stderr = strip_mpi_banners(proc.stderr)
    assert proc.returncode == 2, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and what in errors[0], stderr
    assert stderr.count("Usage: mpitiny") == 1, stderr
    assert proc.stdout == ""
    assert sorted(os.listdir(tmp_path)) == ["dag.json"]


@pytest.mark.mpi
def test_usage_error_reaches_the_terminal_every_time(tmp_path):
    """Eight launches of 3 ranks with a missing argument: rank 0's message is there every
    time. Open MPI's launcher ends the job at the first rank that exits with an error, and
    ranks that exited at once cut rank 0's message off in about one launch in ten
    (``mpitiny.cli.meet_every_rank``)."""
    lost = []
    for k in range(8):
        proc = mpirun(3, ["-m", "mpitiny", "run"], cwd=str(tmp_path), timeout=60)
        stderr = strip_mpi_banners(proc.stderr)
        if proc.returncode != 2 or stderr.count("Error: Missing argument 'DAG_FILE'") != 1:
            lost.append((k, proc.returncode, stderr))
    assert not lost, lost
