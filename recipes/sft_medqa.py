"""Matched SFT baseline for Med-RLVR: the PPO training rows and prompt, the answer alone as the target.

    accelerate launch recipes/sft_medqa.py --config recipes/configs/sft_qwen2.5-3b.yaml
    python recipes/sft_medqa.py --config recipes/configs/tiny/sft.yaml --learning_rate 5e-6

Any config field can be overridden on the command line. The final model, its tokenizer, a model card
and `run_info.json` (target style, prompt template, answer mode for evaluation) go to `output_dir`.
SIGTERM or SIGUSR1 ends the run after the current optimizer step with a checkpoint and exit code 0,
without the final model; the same command then continues it (an output_dir with checkpoint-* folders
but no `run_info.json` is resumed).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from accelerate import PartialState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import ModelConfig, SFTTrainer, get_peft_config

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from medrlvr_trl.checkpoint import check_output_dir, resolve_resume  # noqa: E402
from medrlvr_trl.configs import MCQAScriptArguments, parse_config  # noqa: E402
from medrlvr_trl.data import load_mcqa, read_mcqa  # noqa: E402
from medrlvr_trl.modeling import (  # noqa: E402
    cast_saved_weights,
    load_policy,
    load_tokenizer,
    precision_record,
    trainable_dtype,
)
from medrlvr_trl.option_order import shuffled_rows, use_epoch_views  # noqa: E402
from medrlvr_trl.preemption import PreemptionCallback, PreemptionHandler  # noqa: E402
from medrlvr_trl.progress import TrainerProgress  # noqa: E402
from medrlvr_trl.recipe_setup import setup_logging, training_data_record  # noqa: E402
from medrlvr_trl.run_info import write_run_info  # noqa: E402
from medrlvr_trl.sft import (  # noqa: E402
    MedSFTConfig,
    build_sft_dataset,
    sft_run_info,
)
from medrlvr_trl.user_errors import run_command  # noqa: E402

logger = logging.getLogger("sft_medqa")


def main(argv: Sequence[str] | None = None) -> Path:
    script_args, training_args, model_args = parse_config(
        (MCQAScriptArguments, MedSFTConfig, ModelConfig), argv
    )
    setup_logging()
    if model_args.model_name_or_path is None:
        raise ValueError("model_name_or_path is required (a Hub id or a local model folder)")
    output_dir = Path(training_args.output_dir)
    resume = resolve_resume(training_args.resume_from_checkpoint, output_dir)
    check_output_dir(output_dir, overwrite=training_args.overwrite_output_dir, resuming=resume is not None)
    if script_args.dry_run:
        logger.info("dry run: script %s", json.dumps(asdict(script_args), default=str))
        logger.info("dry run: model %s", json.dumps(asdict(model_args), default=str))
        logger.info(
            "dry run: target=%s lr=%g epochs=%s per-device batch=%d x grad-accum %d x %d processes",
            training_args.sft_target,
            training_args.learning_rate,
            training_args.num_train_epochs,
            training_args.per_device_train_batch_size,
            training_args.gradient_accumulation_steps,
            PartialState().num_processes,
        )
        return output_dir

    # Data first: a bad row or an empty split fails before any model weights load.
    train_rows, skipped = read_mcqa(
        script_args.dataset_name,
        split=script_args.dataset_train_split,
        category=script_args.dataset_category,
        limit=script_args.max_train_samples,
        skip_invalid_rows=script_args.skip_invalid_rows,
        revision=script_args.dataset_revision,
    )

    def epoch_examples(epoch: int):
        """One epoch's prompt-completion examples (`shuffle_options`: that epoch's option orders)."""
        rows = train_rows
        if training_args.shuffle_options:
            rows = shuffled_rows(train_rows, seed=training_args.seed, epoch=epoch)
        return build_sft_dataset(rows, template=script_args.prompt_template, target=training_args.sft_target)

    train_dataset = epoch_examples(0)
    eval_dataset = None
    if training_args.eval_strategy != "no":
        eval_rows = load_mcqa(
            script_args.eval_dataset_name or script_args.dataset_name,
            split=script_args.dataset_test_split,
            category=script_args.dataset_category,
            limit=script_args.max_eval_samples,
            skip_invalid_rows=script_args.skip_invalid_rows,
            revision=script_args.eval_dataset_revision(),
        )
        eval_dataset = build_sft_dataset(
            eval_rows, template=script_args.prompt_template, target=training_args.sft_target
        )
    logger.info(
        "example prompt + completion:\n%s%s", train_dataset[0]["prompt"], train_dataset[0]["completion"]
    )

    tokenizer = load_tokenizer(model_args.model_name_or_path, revision=model_args.model_revision)
    # fp32 master weights unless DeepSpeed keeps its own; `bf16: true` is then bf16 autocast.
    dtype = trainable_dtype(model_args.dtype, training_args)
    model = load_policy(model_args.model_name_or_path, model_args, tokenizer, dtype=dtype)
    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    if training_args.shuffle_options:  # later epochs are tokenised by SFTTrainer's own preparation
        use_epoch_views(
            trainer,
            lambda epoch: trainer._prepare_dataset(
                epoch_examples(epoch), tokenizer, training_args, False, None, "train"
            ),
        )
    with PreemptionHandler() as preemption:
        trainer.add_callback(PreemptionCallback(preemption, trainer.accelerator))
        trainer.add_callback(TrainerProgress("SFT"))
        trainer.train(resume_from_checkpoint=resume)
    if preemption.stopped:  # not finished: no final model, so the same command resumes
        step = trainer.state.global_step
        preemption.report(step, output_dir / f"{PREFIX_CHECKPOINT_DIR}-{step}")
        return output_dir

    # `Trainer.save_model` unwraps DDP / FSDP and gathers ZeRO-3 shards (with
    # `zero3_save_16bit_model: true` in the accelerate config); it also saves the tokenizer.
    trainer.save_model(str(output_dir))
    info = sft_run_info(
        model_name_or_path=model_args.model_name_or_path,
        dataset=script_args.dataset_name,
        split=script_args.dataset_train_split,
        template=script_args.prompt_template,
        target=training_args.sft_target,
    )
    info["training_data"] = training_data_record(script_args, train_rows)
    info["skipped_rows"] = skipped.as_record()
    info["shuffle_options"] = training_args.shuffle_options
    if trainer.is_world_process_zero():
        cast_saved_weights(output_dir, training_args.final_model_dtype)
        precision = precision_record(training_args, model)
        write_run_info(output_dir, {**info, "learning_rate": training_args.learning_rate, **precision})
        trainer.create_model_card(
            model_name=output_dir.name,
            dataset_name=script_args.dataset_name,
            tags=["med-rlvr", "sft", f"sft-target-{training_args.sft_target}"],
        )
        _append_run_info_to_card(output_dir, info)
    trainer.accelerator.wait_for_everyone()
    logger.info("saved SFT model (target %r) to %s", training_args.sft_target, output_dir)
    return output_dir


def _append_run_info_to_card(output_dir: Path, info: dict) -> None:
    """Add the target and evaluation settings to README.md, where people look first."""
    card = output_dir / "README.md"
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    lines = ["", "", "## Med-RLVR SFT baseline", ""]
    lines += [f"- {key}: `{value}`" for key, value in info.items()]
    lines += ["", "Evaluate with `recipes/eval_mcqa.py`; it reads `run_info.json` for the answer mode.", ""]
    card.write_text(text + "\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    run_command(main)
