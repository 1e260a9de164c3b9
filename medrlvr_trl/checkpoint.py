"""Atomic, resumable training checkpoints, and when a run continues from one.

A checkpoint is written into `checkpoint-NNNNNN.tmp` and renamed into place only once every
process has finished writing, so a crash (or SIGKILL) while saving leaves the previous
checkpoint as the newest usable one. `accelerate` saves models, optimizer, every registered
object (scheduler, progress counters) and each process's RNG state; it handles DeepSpeed too.
PPO writes these; GRPO, RLOO and SFT use TRL's `checkpoint-N` folders.

Resume policy. A rerun of the same command continues an unfinished run from its newest checkpoint
(a requeued job resumes). The RL recipes refuse, with `resume: false`, to train over checkpoints
(`refuse_unless_resuming`); SFT refuses a non-empty folder unless told to overwrite a finished run
or to resume (`check_output_dir`, `resolve_resume`).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from medrlvr_trl.run_info import is_finished
from medrlvr_trl.user_errors import UserError

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^checkpoint-(\d+)$")
# What a checkpoint holds, beside accelerate's files: the settings that decide which models and
# optimizers it saved, so a resume under other settings is refused with one line before loading.
SHAPE_FILE = "checkpoint_shape.json"


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
    accelerator: Accelerator,
    root: str | Path,
    step: int,
    *,
    keep: int | None = None,
    shape: dict[str, Any] | None = None,
) -> Path:
    """Save the full training state for `step`; keep only the newest `keep` checkpoints.

    `shape`: settings that decide what was saved (see `check_checkpoint_shape`), written beside it.
    """
    final = checkpoint_path(root, step)
    staging = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process and staging.exists():
        shutil.rmtree(staging)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if shape is not None:
            (staging / SHAPE_FILE).write_text(json.dumps(shape, indent=2) + "\n", encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        if keep is not None and keep > 0:
            for _, old in list_checkpoints(root)[:-keep]:
                shutil.rmtree(old)
        logger.info("saved checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


def check_checkpoint_shape(path: str | Path, shape: dict[str, Any]) -> None:
    """Refuse, before loading, a checkpoint saved under settings that change what it holds.

    A PPO checkpoint with a critic cannot continue as a critic-free run (or the reverse): accelerate
    would fail deep inside `load_state` on missing weights. Checkpoints without the record are loaded
    as they are.
    """
    record = Path(path) / SHAPE_FILE
    if not record.is_file():
        return
    saved = json.loads(record.read_text(encoding="utf-8"))
    for name, value in shape.items():
        if name in saved and saved[name] != value:
            raise UserError(
                f"{path} was saved with {name}={saved[name]!r} but this run has {name}={value!r}; "
                f"pass --{name} {saved[name]} to continue that run, or a new --output_dir to start this one"
            )


def load_checkpoint(accelerator: Accelerator, path: str | Path) -> None:
    accelerator.load_state(str(path))
    logger.info("resumed from %s", path)


def refuse_unless_resuming(output_dir: str | Path, found: str | Path | None, *, resume: bool) -> None:
    """With `resume` off, a run must not train over the checkpoints it found in its output_dir."""
    if found is not None and not resume:
        raise UserError(
            f"{output_dir} already holds checkpoints ({Path(found).name}); pass a new --output_dir, or "
            "drop --resume false to continue that run"
        )


def resume_checkpoint(args: Any) -> str | None:
    """The checkpoint to continue from: `resume_from_checkpoint`, else the newest one in output_dir."""
    from transformers.trainer_utils import get_last_checkpoint

    if args.resume_from_checkpoint:
        return args.resume_from_checkpoint
    folder = Path(args.output_dir)
    found = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    refuse_unless_resuming(args.output_dir, found, resume=args.resume)
    return found


def checkpoint_step(checkpoint: str | None) -> int:
    """The optimizer step a TRL checkpoint was saved at (0 for none)."""
    if checkpoint is None:
        return 0
    return int(
        json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))["global_step"]
    )


def check_output_dir(output_dir: str | Path, *, overwrite: bool, resuming: bool) -> None:
    """Refuse to train into a folder that already holds files, unless told to overwrite or resume."""
    path = Path(output_dir)
    if path.is_dir() and any(path.iterdir()) and not (overwrite or resuming):
        raise UserError(
            f"output_dir {str(path)!r} already exists and is not empty. Choose another output_dir, pass "
            "--overwrite_output_dir true to reuse it, or --resume_from_checkpoint to continue its run."
        )


def resolve_resume(value: str | None, output_dir: str | Path) -> str | bool | None:
    """Map the `resume_from_checkpoint` option onto what `Trainer.train` expects.

    "last" or "true" means the newest checkpoint in output_dir (an error if there is none); any
    other value is a checkpoint path, which must exist. Unset, an output_dir with checkpoint-*
    folders but no `run_info.json` holds a run that was stopped (preempted, killed) before it
    finished; it continues, as the RL recipes do, so a requeued job's unchanged command resumes, even
    with --overwrite_output_dir (which lets a new run replace a *finished* one, as the tiny smoke
    config does, and never throws away an unfinished run's progress).
    """
    from transformers.trainer_utils import get_last_checkpoint

    has_checkpoint = Path(output_dir).is_dir() and get_last_checkpoint(str(output_dir)) is not None
    if value is None or value == "":
        if not has_checkpoint or is_finished(output_dir):
            return None
        logger.info("%s holds checkpoints but no finished model: continuing that run", output_dir)
        return True
    if value.lower() in {"last", "true"}:
        if not has_checkpoint:
            raise UserError(
                f"resume_from_checkpoint={value!r} but output_dir {str(output_dir)!r} holds no checkpoint-* "
                "folder; pass a checkpoint path or drop the option"
            )
        return True
    if not Path(value).is_dir():
        raise UserError(f"resume_from_checkpoint: checkpoint folder {value!r} does not exist")
    return value
