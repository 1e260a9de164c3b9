"""`run_info.json` and the model card: what a finished training run records next to its model.

Every training recipe writes `run_info.json` last, so a folder that holds one holds a finished
model (resume and the SFT grid rely on that). Evaluation reads its `answer_mode` and prompt
template, so a model is prompted the way it was trained.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from medrlvr_trl.user_errors import UserError

logger = logging.getLogger(__name__)

RUN_INFO_FILE = "run_info.json"
MODEL_CARD_FILE = "README.md"


def is_finished(folder: str | Path) -> bool:
    """Whether `folder` holds a finished run's model (its `run_info.json`)."""
    return (Path(folder) / RUN_INFO_FILE).is_file()


def read_run_info(folder: str | Path) -> dict[str, Any] | None:
    """The run_info.json a training recipe wrote next to its model, or None if there is none."""
    path = Path(folder) / RUN_INFO_FILE
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err.msg}); fix or delete the file") from None
    if not isinstance(info, dict):
        raise UserError(f"{path}: expected a JSON object")
    return info


def write_run_info(folder: str | Path, info: dict[str, Any]) -> Path:
    """Write `run_info.json` into `folder`; values JSON cannot hold are written as text."""
    path = Path(folder) / RUN_INFO_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
    logger.info("wrote %s", path)
    return path


def model_card_text(title: str, summary: str, info: dict[str, Any]) -> str:
    """A short markdown card: flat entries as a list, nested ones (hyperparameters, metrics) as sections."""
    lines = [f"# {title}", "", summary, ""]
    lines += [f"- **{key}**: {value}" for key, value in info.items() if not isinstance(value, dict)]
    for key, value in info.items():
        if isinstance(value, dict):
            lines += ["", f"## {key}", ""] + [f"- {k}: {v}" for k, v in value.items()]
    return "\n".join(lines) + "\n"


def write_card_and_run_info(folder: str | Path, title: str, summary: str, info: dict[str, Any]) -> None:
    """The model card, then `run_info.json` (last: it marks the model finished)."""
    (Path(folder) / MODEL_CARD_FILE).write_text(model_card_text(title, summary, info), encoding="utf-8")
    write_run_info(folder, info)
