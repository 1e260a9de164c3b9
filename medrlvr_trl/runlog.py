"""Append-only JSONL logs of a training run that stay consistent across resumes.

Rows carry the update number that produced them; on resume, rows newer than the checkpoint
are dropped, because that work is about to be redone.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Every RL recipe writes these in its output_dir; the dynamics report reads them.
METRICS_FILE = "metrics.jsonl"
COMPLETIONS_FILE = "completions.jsonl"


def append_rows(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_rows(path: str | Path) -> Iterator[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}: line {number} is not valid JSON ({err.msg})") from None


def truncate_after(path: str | Path, update: int) -> None:
    """Keep only rows with `row["update"] <= update` (rewritten atomically).

    A process killed mid-write can leave a torn last line; it belongs to work being redone, so it
    is dropped with a warning. A bad line anywhere else is still an error.
    """
    path = Path(path)
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):
                logger.warning("%s: dropping a torn last line left by an interrupted run", path)
                continue
            raise ValueError(f"{path}: line {number} is not valid JSON ({err.msg})") from None
        if row.get("update", 0) <= update:
            kept.append(line)
    staging = path.with_name(path.name + ".tmp")
    staging.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    os.replace(staging, path)
