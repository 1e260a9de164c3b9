"""What every RL recipe (PPO, GRPO, RLOO) does the same way before and after training: logging on
the main process, reading the training rows and tokenizer with an offline hint, and the model card.
The SFT recipe shares the logging and the record of its training data (`training_data_record`)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from datasets import Dataset
from transformers import PreTrainedTokenizerBase
from trl import ModelConfig

from medrlvr_trl.configs import MCQAScriptArguments, offline_command
from medrlvr_trl.data import (
    DataSourceError,
    MissingDataFileError,
    SkippedRows,
    questions_sha256,
    read_mcqa,
)
from medrlvr_trl.modeling import MissingModelPathError, ModelSourceError, load_tokenizer

logger = logging.getLogger(__name__)


def end_distributed(accelerator: Any) -> None:
    """Wait for every process, tear the process group down, and in a multi-process launch exit at once.

    Call it last, when every file of the run is written. Without the barrier the other ranks destroy
    their group while the main process still writes the run summary. Even with it, a ZeRO-3 rank on
    gloo sometimes aborted in interpreter shutdown after a finished run ("terminate called without an
    active exception", exit -6; seen in two CI runs, not in 24 local ones), most likely gloo work
    objects that still hold tensors being freed after Python has gone (pytorch/pytorch#179291 describes
    it). The launcher then reports a finished run as failed, so a multi-process run skips that
    shutdown: logs are flushed and the process exits 0 here.
    """
    accelerator.wait_for_everyone()
    multi_process = accelerator.num_processes > 1
    accelerator.end_training()
    if multi_process:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _is_main_rank() -> bool:
    """Rank 0 of a launch, read from the launcher's environment (usable before any Accelerator exists)."""
    return int(os.environ.get("RANK", "0")) == 0


def setup_logging() -> None:
    """INFO on the main process, warnings only elsewhere (one log, not one per GPU)."""
    logging.basicConfig(
        level=logging.INFO if _is_main_rank() else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def load_rows_and_tokenizer(
    script_args: MCQAScriptArguments, model_args: ModelConfig, *, recipe: str, may_add_pad: bool = True
) -> tuple[Dataset, SkippedRows, PreTrainedTokenizerBase]:
    """The training rows, the rows `skip_invalid_rows` left out, and the tokenizer
    (`modeling.load_tokenizer`); without Hub access the error names the offline command."""
    try:
        rows, skipped = read_mcqa(
            script_args.dataset_name,
            script_args.dataset_train_split,
            category=script_args.dataset_category,
            limit=script_args.max_train_samples,
            skip_invalid_rows=script_args.skip_invalid_rows,
            revision=script_args.dataset_revision,
        )
        tokenizer = load_tokenizer(
            model_args.model_name_or_path, revision=model_args.model_revision, may_add_pad=may_add_pad
        )
    except (MissingDataFileError, MissingModelPathError):
        raise  # a local path: its message says what to pass or build
    except (DataSourceError, ModelSourceError) as err:  # the Hub: say how to try the recipe without it
        hint = (
            f"to try the recipe offline, use the tiny config: {offline_command(f'recipes/{recipe}_medqa.py')}"
        )
        raise type(err)(f"{err}; {hint}") from None
    return rows, skipped, tokenizer


def training_data_record(script_args: MCQAScriptArguments, rows: Dataset) -> dict[str, Any]:
    """run_info.json's `training_data`: which questions the run trained on.

    The keys are those of a dataset entry in evaluation's results.json (`source`, `split`, `category`,
    `revision`: the Hub commit asked for, null for the newest at the time; `n`; `questions_sha256` of
    the rows as loaded, before any option shuffle), so an evaluation on the same questions shows the
    same hash.
    """
    return {
        "source": script_args.dataset_name,
        "split": script_args.dataset_train_split,
        "category": script_args.dataset_category,
        "revision": script_args.dataset_revision,
        "n": len(rows),
        "questions_sha256": questions_sha256(rows),
    }


# MedQA-USMLE train size (docs/paper.md, Data): what `--dry_run`, which loads nothing, plans for.
MEDQA_TRAIN_ROWS = 10_178


def log_dry_run(
    script_args: MCQAScriptArguments,
    model_args: ModelConfig,
    training_args: Any,
    plan_for: Callable[[int], Any],
) -> None:
    """Print the resolved configuration and `plan_for(train_rows).describe()` on the main process."""
    train_rows = script_args.max_train_samples or MEDQA_TRAIN_ROWS
    plan = plan_for(train_rows)
    if not _is_main_rank():
        return
    logger.info("script arguments: %s", script_args)
    logger.info("model arguments: %s", model_args)
    logger.info("training arguments: %s", training_args)
    source = "--max_train_samples" if script_args.max_train_samples else "MedQA train size, not loaded"
    logger.info("plan for %d training rows (%s):\n%s", train_rows, source, plan.describe())


# The run's headline metrics, as the model card lists them; the KL key is the trainer's own name.
FINAL_METRIC_KEYS = ("verifier/reward", "verifier/format_ok", "verifier/accuracy", "verifier/response_length")


def last_metrics(log_history: list[dict[str, Any]], *, kl_key: str) -> dict[str, float]:
    """The headline metrics of the last logged update that has verifier metrics, rounded."""
    last = next((row for row in reversed(log_history) if "verifier/reward" in row), {})
    return {key: round(last[key], 4) for key in (*FINAL_METRIC_KEYS, kl_key) if key in last}
