"""From questions to prediction records: prompts under every option shift, one call to a model's
answer function, the letters each rule reads, and the predictions/ files.

Decoding itself lives in `medrlvr_trl.generation` (shared with PPO's rollouts); loglikelihood mode's
scoring in `medrlvr_trl.loglikelihood`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medrlvr_trl.evaluation.answers import lenient_letter, score_completion
from medrlvr_trl.evaluation.permutations import permuted_rows
from medrlvr_trl.evaluation.specs import LOGLIKELIHOOD, ModelSpec
from medrlvr_trl.generation import Completion, GenerationSettings
from medrlvr_trl.loglikelihood import score_letters
from medrlvr_trl.prompts import build_prompt
from medrlvr_trl.run_logs import write_jsonl


def generate_loglikelihood(
    model: Any,
    tokenizer: Any,
    requests: Sequence[tuple[str, int]],
    settings: GenerationSettings,
    *,
    label: str = "loglikelihood",
) -> list[Completion]:
    """Loglikelihood mode's answers to (prompt, number of options) requests (`loglikelihood.score_letters`).

    Only `settings.batch_size` applies: nothing is decoded.
    """
    scores = score_letters(
        model,
        tokenizer,
        [prompt for prompt, _ in requests],
        [n for _, n in requests],
        batch_size=settings.batch_size,
        label=label,
    )
    return [Completion(text=s.letter, num_tokens=0, loglikelihoods=s.loglikelihoods) for s in scores]


def predict_permutations(
    rows: Any, spec: ModelSpec, shifts: int, generate: Callable[[Sequence[str]], list[Completion]]
) -> list[list[dict[str, Any]]]:
    """Prediction records per shift, `[shift][question]`, from one `generate` call over every shift.

    One call keeps the batches full (and, with `generate_hf`, sorted by length) however many shifts.
    In loglikelihood mode `generate` gets (prompt, number of options) requests instead of prompts.
    """
    shifted = permuted_rows(rows, shifts)
    questions_in_order = [row for questions in shifted for row in questions]
    prompts = [
        build_prompt(row["question"], row["options"], template=spec.prompt_template)
        for row in questions_in_order
    ]
    if spec.answer_mode == LOGLIKELIHOOD:
        completions = generate(
            [(p, len(r["options"])) for p, r in zip(prompts, questions_in_order, strict=True)]
        )
    else:
        completions = generate(prompts)
    n = len(shifted[0])
    return [
        prediction_records(
            questions,
            prompts[s * n : (s + 1) * n],
            completions[s * n : (s + 1) * n],
            spec.answer_mode,
            shift=s,
            verifier_mode=spec.verifier_mode,
        )
        for s, questions in enumerate(shifted)
    ]


def prediction_records(
    rows: Any,
    prompts: Sequence[str],
    completions: Sequence[Completion],
    answer_mode: str,
    *,
    shift: int = 0,
    verifier_mode: str = "paper",
) -> list[dict[str, Any]]:
    """One JSON-ready record per question: inputs, completion, and the letter under each rule.

    `letter`, `format_ok`, `correct` and `reward` are the strict rule's verdict (what training
    rewards); `letter_lenient`, `correct_lenient` and `lenient_source` the lenient rule's. `rows`
    hold the options in the order prompted; `shift` says which cyclic shift that is (`shift_options`).
    In loglikelihood mode both rules take the most likely letter (`lenient_source` "loglikelihood")
    and `loglikelihoods` holds every letter's score. `verifier_mode`: the strict rule's format mode.
    """
    records = []
    for row, prompt, completion in zip(rows, prompts, completions, strict=True):
        num_options = len(row["options"])
        verdict = score_completion(
            completion.text,
            row["answer"],
            num_options,
            answer_mode,
            options=row["options"],
            verifier_mode=verifier_mode,
        )
        if completion.loglikelihoods is None:
            lenient, source = lenient_letter(
                completion.text, num_options, answer_mode, options=row["options"]
            )
        else:
            lenient, source = verdict.letter, LOGLIKELIHOOD
        record = {
            "id": row["id"],
            "shift": shift,
            "prompt": prompt,
            "completion": completion.text,
            "completion_tokens": completion.num_tokens,
            "letter": verdict.letter,
            "answer": row["answer"],
            "num_options": num_options,
            "format_ok": verdict.format_ok,
            "correct": verdict.correct,
            "reward": verdict.reward,
            "letter_lenient": lenient,
            "correct_lenient": lenient == row["answer"],
            "lenient_source": source,
        }
        if completion.loglikelihoods is not None:
            record["loglikelihoods"] = completion.loglikelihoods
        records.append(record)
    return records


def prediction_path(out: str | Path, model: str, dataset: str, shift: int = 0) -> Path:
    """`predictions/<model>__<dataset>.jsonl` for the options as given, `predictions/shift<s>/...`
    for shift s, so readers of the first keep reading the unshifted predictions."""
    folder = Path(out) / "predictions"
    if shift:
        folder = folder / f"shift{shift}"
    return folder / f"{model}__{dataset}.jsonl"


def write_predictions(
    out: str | Path, model: str, dataset: str, records_by_shift: Sequence[Sequence[dict[str, Any]]]
) -> list[Path]:
    """One JSON Lines file per shift (`prediction_path`)."""
    return [
        write_jsonl(prediction_path(out, model, dataset, shift), records)
        for shift, records in enumerate(records_by_shift)
    ]
