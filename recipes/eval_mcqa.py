"""Accuracy of one or more models on MedQA (in distribution) and MMLU-Pro health (out of distribution).

    accelerate launch recipes/eval_mcqa.py --config recipes/configs/eval.yaml \
        --models "sft=runs/sft,ppo=runs/ppo:cot,base-cot=Qwen/Qwen2.5-3B:cot,base-dir=Qwen/Qwen2.5-3B:direct"
    python recipes/eval_mcqa.py --config recipes/configs/tiny/eval.yaml          # offline, CPU

Questions are split across processes; the main process scores them (strict and lenient rules,
`medrlvr_trl.evaluation`) and writes, into output_dir: `predictions/<model>__<dataset>.jsonl`,
`results.json` (accuracy under both rules, unparsed rate, paired comparisons of every two models,
answer-letter counts, accuracy without within-set duplicates; with `--option_permutations K` accuracy
under K cyclic shifts of the options, whose predictions go to `predictions/shift<s>/`; with
`--train_dataset` the test questions found in the training set), `results.md` and `accuracy.png`
(strict-rule bars with bootstrap error bars and a random-guess bar, like Med-RLVR's Figure 3, plus
the RLVR-minus-SFT difference when both were evaluated). Models, tokenizers and data are all checked
before the first model loads.
"""

from __future__ import annotations

import gc
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from accelerate import PartialState

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from medrlvr_trl.configs import parse_config  # noqa: E402
from medrlvr_trl.data import (  # noqa: E402
    QuestionIndex,
    SkippedRows,
    load_mcqa,
    read_mcqa,
    unique_question_indices,
)
from medrlvr_trl.evaluation import (  # noqa: E402
    LOGLIKELIHOOD,
    RANDOM_LABEL,
    DatasetSpec,
    EvalReport,
    MCQAEvalArguments,
    MissingModelError,
    ModelSpec,
    chart_title,
    constant_letter_baseline,
    describe_dataset,
    generate_loglikelihood,
    headline_entries,
    headline_pair,
    load_accuracy_metric,
    paired_comparisons,
    parse_dataset_specs,
    parse_model_specs,
    parse_train_dataset,
    predict_permutations,
    random_summary,
    report_warnings,
    resolve_model,
    results_markdown,
    scoring_rules,
    shift_mean_outcomes,
    summarise_dataset,
    write_predictions,
)
from medrlvr_trl.generation import (  # noqa: E402
    Completion,
    GenerationSettings,
    generate_hf,
    generate_sharded,
    generate_vllm,
    vllm_available,
    vllm_engine,
)
from medrlvr_trl.modeling import load_policy, load_tokenizer  # noqa: E402
from medrlvr_trl.plots import plot_accuracy_bars  # noqa: E402
from medrlvr_trl.recipe_setup import setup_logging  # noqa: E402
from medrlvr_trl.user_errors import UserError, run_command  # noqa: E402

logger = logging.getLogger("eval_mcqa")

Generator = Callable[[Sequence[str], GenerationSettings], list[Completion]]


@dataclass
class Plan:
    """Everything checked before the first model loads."""

    models: list[ModelSpec]
    datasets: list[DatasetSpec]
    rows: dict[str, Any]
    tokenizers: dict[str, Any]
    train: DatasetSpec | None = None
    train_index: QuestionIndex | None = None
    skipped: dict[str, SkippedRows] = field(default_factory=dict)
    """Per dataset, the rows `skip_invalid_rows` left out (none without it)."""


def main(argv: Sequence[str] | None = None) -> Path:
    (args,) = parse_config([MCQAEvalArguments], argv)
    setup_logging()
    # On a machine without CUDA, accelerate only forms a multi-process (gloo) group when told `cpu=True`.
    state = PartialState(cpu=args.use_cpu or not _cuda_available())
    out = Path(args.output_dir)
    plan = make_plan(args)
    for spec in plan.models:
        logger.info(
            "model %s: %s (answer mode %s, template %s)",
            spec.label,
            spec.path,
            spec.answer_mode,
            spec.prompt_template,
        )
    for spec in plan.datasets:
        logger.info("dataset %s: %s, %d questions", spec.label, spec.source, len(plan.rows[spec.label]))
    if cot_stopped_at_answer_close(args, plan):
        logger.warning(
            "stop_at_answer_close is on: cot generation stops at the first </answer>, so the strict rule "
            "cannot see (and penalise) text after the tags as training does"
        )
    kept = {d.label: unique_question_indices(plan.rows[d.label]["question"]) for d in plan.datasets}
    described = (
        [
            {
                **describe_dataset(d, plan.rows[d.label], kept[d.label], plan.train_index),
                "skipped_rows": plan.skipped.get(d.label, SkippedRows()).as_record(),
            }
            for d in plan.datasets
        ]
        if state.is_main_process
        else []
    )
    if args.dry_run:
        return out

    metric = load_accuracy_metric() if state.is_main_process else None
    results: dict[str, dict[str, dict[str, Any]]] = {}
    outcomes: dict[str, dict[str, list[bool]]] = {}
    shift_outcomes: dict[str, dict[str, list[float]]] = {}
    for spec in plan.models:
        generate = open_generator(spec, plan.tokenizers[spec.label], args, state)
        settings = args.generation_settings(spec.answer_mode, rank=state.process_index)
        for data in plan.datasets:
            label = f"{spec.label} on {data.label}"
            if args.option_permutations > 1:
                label += f" x {args.option_permutations} option orders"
            one_process = partial(generate, settings=settings, label=label)
            records = predict_permutations(
                plan.rows[data.label],
                spec,
                args.option_permutations,
                partial(generate_sharded, generate=one_process, state=state),
            )
            if state.is_main_process:
                write_predictions(out, spec.label, data.label, records)
                summary = summarise_dataset(
                    records, metric, kept[data.label], n_resamples=args.n_resamples, seed=args.bootstrap_seed
                )
                results.setdefault(spec.label, {})[data.label] = summary
                outcomes.setdefault(spec.label, {})[data.label] = [r["correct"] for r in records[0]]
                if len(records) > 1:
                    shift_outcomes.setdefault(spec.label, {})[data.label] = shift_mean_outcomes(records)
                logger.info(
                    "%s on %s: accuracy strict %.1f%% +- %.1f, lenient %.1f%%, unparsed %.1f%% "
                    "(n=%d, format-valid %.1f%%)",
                    spec.label,
                    data.label,
                    100 * summary["accuracy_strict"],
                    100 * summary["accuracy_std"],
                    100 * summary["accuracy_lenient"],
                    100 * summary["unparsed_rate"],
                    summary["n"],
                    100 * summary["format_valid_rate"],
                )
                if "accuracy_per_shift" in summary:
                    logger.info(
                        "%s on %s: strict accuracy per option shift %s, mean %.1f%%, consistent %.1f%%",
                        spec.label,
                        data.label,
                        [round(100 * a, 1) for a in summary["accuracy_per_shift"]],
                        100 * summary["accuracy_mean_over_shifts"],
                        100 * summary["consistency_rate"],
                    )
        del generate
        release_memory()
    if state.is_main_process:
        results[RANDOM_LABEL] = {
            d.label: random_summary(plan.rows[d.label], kept[d.label]) for d in plan.datasets
        }
        paired = paired_comparisons(
            plan.models,
            outcomes,
            [d.label for d in plan.datasets],
            n_resamples=args.n_resamples,
            seed=args.bootstrap_seed,
            shift_outcomes=shift_outcomes,
        )
        write_outputs(out, args, plan, described, results, paired)
    state.wait_for_everyone()
    return out


def make_plan(args: MCQAEvalArguments) -> Plan:
    """Resolve models and datasets and load tokenizers and questions; raise on anything missing."""
    models = []
    for label, path, mode, template in parse_model_specs(args.models):
        try:
            models.append(resolve_model(label, path, mode, template))
        except MissingModelError as err:
            if not args.skip_missing_models:
                raise
            logger.warning("%s; skipped (skip_missing_models)", err)
    if not models:
        raise UserError("no model left to evaluate: every model in --models was missing")
    results_file = Path(args.output_dir) / "results.json"
    if results_file.exists() and not args.overwrite_output_dir:
        raise UserError(
            f"{results_file} already exists; choose another output_dir or pass --overwrite_output_dir true"
        )
    datasets = parse_dataset_specs(args.datasets)
    rows, skipped = {}, {}
    for spec in datasets:
        loaded, skipped[spec.label] = read_mcqa(
            spec.source,
            split=spec.split,
            category=spec.category,
            limit=args.max_samples,
            skip_invalid_rows=args.skip_invalid_rows,
            revision=spec.revision,
        )
        if len(loaded) == 0:
            raise UserError(
                f"dataset {spec.label!r} ({spec.source}, split {spec.split}) has no rows after filtering"
            )
        rows[spec.label] = loaded
    train, train_index = load_train_index(args.train_dataset, skip_invalid_rows=args.skip_invalid_rows)
    tokenizers = {}
    for spec in models:
        try:
            tokenizers[spec.label] = load_tokenizer(spec.path)
        except (OSError, ValueError) as err:
            raise UserError(
                f"model {spec.label!r}: cannot load the tokenizer of {spec.path}: {err}"
            ) from None
    return Plan(
        models=models,
        datasets=datasets,
        rows=rows,
        tokenizers=tokenizers,
        train=train,
        train_index=train_index,
        skipped=skipped,
    )


def load_train_index(
    entry: str | None, *, skip_invalid_rows: bool = False
) -> tuple[DatasetSpec | None, QuestionIndex | None]:
    """The `--train_dataset` spec and an index of its questions (both None when it is unset)."""
    if not entry:
        return None, None
    spec = parse_train_dataset(entry)
    loaded = load_mcqa(
        spec.source,
        split=spec.split,
        category=spec.category,
        skip_invalid_rows=skip_invalid_rows,
        revision=spec.revision,
    )
    logger.info("training set %s: %s, %d questions", spec.label, spec.source, len(loaded))
    return spec, QuestionIndex.of(loaded)


def cot_stopped_at_answer_close(args: MCQAEvalArguments, plan: Plan) -> bool:
    """Whether some cot completion was cut at `</answer>`, hiding from the strict rule what follows."""
    return args.stop_at_answer_close and any(spec.answer_mode == "cot" for spec in plan.models)


def open_generator(
    spec: ModelSpec, tokenizer: Any, args: MCQAEvalArguments, state: PartialState
) -> Generator:
    """Load one model for generation (or, in loglikelihood mode, scoring); the returned function
    holds the only reference to it."""
    backend = args.backend
    if backend == "vllm" and spec.answer_mode == LOGLIKELIHOOD:
        logger.info("model %s: loglikelihood mode scores with transformers, not vllm", spec.label)
        backend = "hf"
    if backend == "vllm" and not vllm_available():
        raise UserError(
            "backend 'vllm' needs vLLM, which is not installed: run `make vllm` (or use backend hf)"
        )
    if backend == "vllm":
        if state.num_processes > 1:
            raise UserError(
                "the vllm backend runs in one process; launch without accelerate data parallelism"
            )
        return partial(generate_vllm, vllm_engine(spec.path, dtype=args.dtype, seed=args.seed))
    model = load_policy(spec.path, None, tokenizer, dtype=args.dtype).to(state.device)
    if spec.answer_mode == LOGLIKELIHOOD:
        return partial(generate_loglikelihood, model, tokenizer)
    return partial(generate_hf, model, tokenizer)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def release_memory() -> None:
    """Free the previous model before the next one loads."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def write_outputs(
    out: Path,
    args: MCQAEvalArguments,
    plan: Plan,
    described: list[dict[str, Any]],
    results: dict[str, dict[str, dict[str, Any]]],
    paired: list[dict[str, Any]],
) -> None:
    dataset_labels = [d.label for d in plan.datasets]
    train = plan.train
    report = EvalReport(
        models=[asdict(m) for m in plan.models],
        datasets=described,
        generation={
            k: v for k, v in asdict(args).items() if k not in ("models", "datasets", "train_dataset")
        },
        results=results,
        paired=paired,
        headline=headline_pair(plan.models),
        scoring=scoring_rules(stop_at_answer_close=cot_stopped_at_answer_close(args, plan)),
        train_dataset=None if train is None else {**asdict(train), "n": len(plan.train_index.ids)},
        constant_letter={d.label: constant_letter_baseline(plan.rows[d.label]) for d in plan.datasets},
    )
    for warning in report_warnings(report):
        logger.warning("%s", warning)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(report.to_json(), encoding="utf-8")
    (out / "results.md").write_text(results_markdown(report), encoding="utf-8")
    model_order = [RANDOM_LABEL] + [m.label for m in plan.models]
    plot_accuracy_bars(
        results,
        out / "accuracy.png",
        dataset_order=dataset_labels,
        model_order=model_order,
        title=chart_title(stop_at_answer_close=cot_stopped_at_answer_close(args, plan)),
        baseline_label=RANDOM_LABEL,
        headline=headline_entries(paired, report.headline),
    )
    logger.info("results:\n%s", json.dumps(results, indent=1))
    logger.info("wrote %s, %s and %s", out / "results.json", out / "results.md", out / "accuracy.png")


if __name__ == "__main__":
    run_command(main)
