"""A stage runs offline in its own log, and a failure shows the end of that log."""

from __future__ import annotations

import sys

import pytest

from medrlvr_trl.stages import run_stage


def test_a_stage_runs_offline_with_its_output_in_its_log(tmp_path):
    log = tmp_path / "logs" / "ok.log"
    code = "import os; print('offline', os.environ['HF_HUB_OFFLINE'], os.environ['HF_DATASETS_OFFLINE'])"
    run_stage("ok", [sys.executable, "-c", code], log)
    lines = log.read_text().splitlines()
    assert lines[0].startswith("$ ") and lines[-1] == "offline 1 1"


def test_a_failing_stage_names_its_exit_code_and_log_and_shows_the_end(tmp_path):
    log = tmp_path / "bad.log"
    code = "import sys; print('\\n'.join(f'line {i}' for i in range(40))); sys.exit(3)"
    with pytest.raises(RuntimeError) as failed:
        run_stage("bad", [sys.executable, "-c", code], log, progress=lambda: (0, None))
    message = str(failed.value)
    assert message.startswith(f"stage 'bad' failed (exit code 3); full log: {log}")
    assert "line 39" in message and "line 10\n" not in message  # the last 25 lines only
