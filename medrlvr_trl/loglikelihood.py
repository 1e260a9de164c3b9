"""Zero-shot multiple-choice answers read from the model's likelihoods instead of generated text.

A base model's generated answer depends on how it phrases it ("B", "(B)", "The answer is B"), so
its generation-mode accuracy partly measures formatting. This mode asks the model no question
about format: for each option letter it takes the log-likelihood of the continuation " A", " B",
... right after the prompt, and the answer is the letter with the largest one.

It is the computation lm-evaluation-harness runs for a `multiple_choice` task such as
`medqa_4options` (docs/lm_eval_parity.md; tests/test_loglikelihood.py runs both and compares):
- the continuation is the task's `target_delimiter` (" " by default) followed by the choice;
- whitespace at the end of the prompt moves to the front of the continuation;
- prompt + continuation is tokenised as one string (the tokenizer's default special tokens, none
  when the text already starts with the BOS text), and the continuation's tokens are what follows
  the prompt's own tokenisation, so a merge across the boundary is scored the way the harness does;
- an option's score is the sum of its tokens' log-probabilities (no length normalisation; `acc`),
  and the first of equal maxima wins;
- a sequence longer than the model's context keeps its last tokens.
Log-softmax runs in float32 whatever the model's dtype.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from medrlvr_trl.progress import Progress
from medrlvr_trl.prompts import build_prompt, option_letters

logger = logging.getLogger(__name__)

TARGET_DELIMITER = " "
"""Put between the prompt and each choice, as lm-eval's default `target_delimiter`."""
DEFAULT_CONTEXT = 2048
"""The context length assumed when neither the model config nor the tokenizer names one."""
_CONTEXT_ATTRS = ("n_positions", "max_position_embeddings", "n_ctx")
_UNSET_TOKENIZER_LENGTH = 10**18


@dataclass(frozen=True)
class LetterScores:
    """One question's answer: the chosen letter and the log-likelihood of every option letter."""

    letter: str
    loglikelihoods: dict[str, float]


@dataclass(frozen=True)
class _Request:
    """One continuation to score: the model input and the tokens whose log-probs are summed."""

    inputs: tuple[int, ...]
    targets: tuple[int, ...]


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of `text` with the tokenizer's default special tokens.

    A text that already starts with the BOS text (the EOS text for tokenizers without BOS) gets no
    second one.
    """
    prefix_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    prefix = tokenizer.decode(prefix_id) if prefix_id is not None else None
    if prefix and text.startswith(prefix):
        return tokenizer.encode(text, add_special_tokens=False)
    return tokenizer.encode(text)


def split_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Tokens of `context` and of `continuation` as they fall in the tokenised concatenation."""
    if not context:
        raise ValueError("a prompt to score continuations after must not be empty")
    stripped = context.rstrip()
    continuation = context[len(stripped) :] + continuation
    whole = encode(tokenizer, stripped + continuation)
    context_ids = encode(tokenizer, stripped)
    return context_ids, whole[len(context_ids) :]


def context_length(model: Any, tokenizer: Any) -> int:
    """The longest input the model takes: from its config, else the tokenizer, else `DEFAULT_CONTEXT`."""
    config = model.config
    text_config = getattr(config, "text_config", None)
    for source in (text_config, config):
        for attr in _CONTEXT_ATTRS:
            value = getattr(source, attr, None) if source is not None else None
            if isinstance(value, int) and value > 0:
                return value
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _UNSET_TOKENIZER_LENGTH:
        return limit
    return DEFAULT_CONTEXT


def _request(context_ids: list[int], continuation_ids: list[int], max_length: int) -> _Request:
    if not continuation_ids:
        raise ValueError("a continuation must add at least one token")
    if len(continuation_ids) > max_length:
        raise ValueError(f"a continuation of {len(continuation_ids)} tokens exceeds the context {max_length}")
    full = context_ids + continuation_ids
    if len(full) > max_length + 1:
        logger.warning(
            "prompt + continuation is %d tokens, over the model's %d: keeping the last ones",
            len(full),
            max_length,
        )
    # The model sees every token but the last; position i predicts token i + 1.
    return _Request(inputs=tuple(full[-(max_length + 1) :][:-1]), targets=tuple(continuation_ids))


def _accepts_logits_to_keep(model: Any) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _forward_batch(model: Any, batch: list[tuple[int, ...]], pad_id: int, keep: int) -> Any:
    """Float32 log-probs of the last `keep` positions of each input, left-padded into one batch."""
    import torch

    device = next(model.parameters()).device
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        mask[row, width - len(ids) :] = 1
    # Positions count real tokens only, so a left-padded row is scored as if it were alone.
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    kwargs = {"logits_to_keep": keep} if _accepts_logits_to_keep(model) else {}
    logits = model(
        input_ids=input_ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        use_cache=False,
        **kwargs,
    ).logits
    return torch.log_softmax(logits[:, -keep:, :].float(), dim=-1)


def continuation_loglikelihoods(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[tuple[str, str]],
    *,
    batch_size: int = 16,
    max_length: int | None = None,
    label: str = "loglikelihood",
) -> list[float]:
    """Sum of log-probs of each (prompt, continuation) pair's continuation tokens, in input order.

    Pairs whose model inputs are identical (every one-token option of a question) share one
    forward pass. Longest inputs go first, so padding stays low; no gradients are kept.
    """
    import torch

    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    limit = max_length or context_length(model, tokenizer)
    requests = [_request(*split_pair(tokenizer, context, cont), limit) for context, cont in pairs]
    users: dict[tuple[int, ...], list[int]] = {}
    for index, req in enumerate(requests):
        users.setdefault(req.inputs, []).append(index)
    order = sorted(users, key=lambda ids: (-len(ids), ids))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    totals: list[float] = [0.0] * len(requests)
    was_training = model.training
    model.eval()
    progress = Progress(label, len(order), unit="forward passes")
    try:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            keep = max(len(requests[i].targets) for ids in batch for i in users[ids])
            with torch.inference_mode():
                logprobs = _forward_batch(model, batch, pad_id, keep)
            for row, ids in enumerate(batch):
                for index in users[ids]:
                    totals[index] = _sum_targets(logprobs[row], requests[index].targets)
            progress.advance(len(batch))
    finally:
        model.train(was_training)
    return totals


def _sum_targets(logprobs: Any, targets: tuple[int, ...]) -> float:
    """Sum the log-probs of `targets`, the tokens predicted at the last len(targets) positions."""
    import torch

    rows = logprobs[-len(targets) :]
    picked = rows.gather(1, torch.tensor(targets, device=rows.device).unsqueeze(1))
    return float(picked.double().sum())


def score_letters(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    num_options: Sequence[int],
    *,
    batch_size: int = 16,
    max_length: int | None = None,
    target_delimiter: str = TARGET_DELIMITER,
    label: str = "loglikelihood",
) -> list[LetterScores]:
    """Each question's most likely option letter after its prompt, with every letter's log-likelihood.

    `num_options[i]` letters (A, B, ...) are scored for `prompts[i]`; ties go to the earlier letter.
    """
    if len(prompts) != len(num_options):
        raise ValueError(f"got {len(prompts)} prompts but {len(num_options)} option counts")
    letters = [option_letters(n) for n in num_options]
    pairs = [(p, f"{target_delimiter}{x}") for p, row in zip(prompts, letters, strict=True) for x in row]
    values = iter(
        continuation_loglikelihoods(
            model, tokenizer, pairs, batch_size=batch_size, max_length=max_length, label=label
        )
    )
    results = []
    for row in letters:
        scores = {letter: next(values) for letter in row}
        best = max(row, key=scores.__getitem__)  # max keeps the first of equal values
        results.append(LetterScores(letter=best, loglikelihoods=scores))
    return results


def harness_medqa_prompt(question: str, options: Sequence[str]) -> str:
    """The prompt lm-eval's `medqa_4options` shows (the `lm_eval` template): "Question: ...", one
    "X. text" line per option, then "Answer:". With it (and MedQA's 4-option test set) this mode's
    accuracy is that task's `acc`."""
    return build_prompt(question, options, template="lm_eval")
