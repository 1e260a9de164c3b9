"""Progress lines: done / total with elapsed and remaining time, throttled, the last always shown."""

from __future__ import annotations

import logging

from medrlvr_trl.progress import Progress


def test_progress_logs_the_last_item_and_throttles_the_rest(caplog):
    caplog.set_level(logging.INFO, logger="medrlvr_trl.progress")
    progress = Progress("ppo on medqa", 64, unit="questions", every_s=3600)
    for _ in range(4):
        progress.advance(16)
    first, last = [record.getMessage() for record in caplog.records]  # the first gives an early ETA
    assert first.startswith("ppo on medqa: 16/64 questions (25%), 0:00 elapsed, 0:00 left")
    assert last.startswith("ppo on medqa: 64/64 questions (100%), 0:00 elapsed, 0:00 left")


def test_every_advance_is_logged_without_throttling(caplog):
    caplog.set_level(logging.INFO, logger="medrlvr_trl.progress")
    progress = Progress("sft on medqa", 3, every_s=0)
    for _ in range(3):
        progress.advance()
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "sft on medqa: 1/3 items",
        "sft on medqa: 2/3 items",
        "sft on medqa: 3/3 items",
    ]
