"""``mpitiny status RUN_DIR`` while a run goes on and after it ended (no MPI)."""
import json
import time

from click.testing import CliRunner

from mpitiny.cli import cli


def test_status_of_a_running_run(tmp_path):
    (tmp_path / "progress.json").write_text(json.dumps({
        "name": "big", "state": "running", "done": 250, "total": 1000, "failed": 2, "rate": 50.0,
        "eta_seconds": 15.0, "busy_ranks": 4, "ranks": 4, "rss_mb": 90, "elapsed_seconds": 5.0,
        "updated": time.time() - 3}))
    result = CliRunner().invoke(cli, ["status", str(tmp_path)])
    assert result.exit_code == 0
    assert "big: running: progress done=250/1000 pct=25.0 failed=2" in result.output
    assert "busy=100%" in result.output and "updated 3 s ago" in result.output


def test_status_of_nothing_is_one_clear_error(tmp_path):
    result = CliRunner().invoke(cli, ["status", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert result.output.count("mpitiny: error:") == 1 and "Traceback" not in result.output
