"""Atomic, resumable training checkpoints.

A checkpoint is written into `checkpoint-NNNNNN.tmp` and renamed into place only once every
process has finished writing, so a crash (or SIGKILL) while saving leaves the previous
checkpoint as the newest usable one. `accelerate` saves models, optimizer, every registered
object (scheduler, progress counters) and each process's RNG state; it handles DeepSpeed too.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from accelerate import Accelerator

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_path(root: str | Path, step: int) -> Path:
    return Path(root) / f"checkpoint-{step:06d}"


def list_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root`, oldest first (unfinished `.tmp` folders are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return sorted(found)


def latest_checkpoint(root: str | Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def save_checkpoint(
    accelerator: Accelerator, root: str | Path, step: int, *, keep: int | None = None
) -> Path:
    """Save the full training state for `step`; keep only the newest `keep` checkpoints."""
    final = checkpoint_path(root, step)
    staging = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process and staging.exists():
        shutil.rmtree(staging)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        if keep is not None and keep > 0:
            for _, old in list_checkpoints(root)[:-keep]:
                shutil.rmtree(old)
        logger.info("saved checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, path: str | Path) -> None:
    accelerator.load_state(str(path))
    logger.info("resumed from %s", path)
