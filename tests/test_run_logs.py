"""Run logs stay consistent across a resume: redone updates are not logged twice."""

from __future__ import annotations

import json

import pytest

from medrlvr_trl import run_logs


def test_truncate_drops_rows_newer_than_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    run_logs.append_rows(path, [{"update": u, "reward": u / 10} for u in range(1, 6)])
    run_logs.truncate_after(path, 3)
    assert [row["update"] for row in run_logs.read_rows(path)] == [1, 2, 3]


def test_truncate_drops_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    run_logs.append_rows(path, [{"update": 1}, {"update": 2}])
    with path.open("a") as f:
        f.write('{"update": 3, "rew')  # a kill in the middle of a write
    run_logs.truncate_after(path, 2)
    assert [row["update"] for row in run_logs.read_rows(path)] == [1, 2]


def test_a_bad_line_before_the_end_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"update": 1}) + "\nnot json\n" + json.dumps({"update": 2}) + "\n")
    with pytest.raises(ValueError, match="line 2"):
        run_logs.truncate_after(path, 5)
