"""The JSONL logs of an RL run (`metrics.jsonl`, `completions.jsonl`): one row format for PPO, GRPO
and RLOO, append-only and consistent across resumes.

Rows carry the update number that produced them; on resume, rows newer than the checkpoint are
dropped, because that work is about to be redone. `completion_row` is the one `completions.jsonl`
row (update, id, gold, completion, response_tokens, the verdict, score, the stage features); PPO
writes it from its rollouts, and for TRL's critic-free trainers, which keep their completions to
themselves, the first reward function hands every scored generation batch to `RolloutLog`. One
update is then one generation batch, like a PPO rollout, so `medrlvr_trl.dynamics_report` reads
every run folder the same way.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from medrlvr_trl.dynamics import CompletionFeatures, StageThresholds, completion_features, stage_metrics
from medrlvr_trl.rewards import Gold, Verdict
from medrlvr_trl.rewards.reward_funcs import ScoredCompletion

logger = logging.getLogger(__name__)

# Every RL recipe writes these in its output_dir; the dynamics report reads them.
METRICS_FILE = "metrics.jsonl"
COMPLETIONS_FILE = "completions.jsonl"


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]], *, append: bool = False) -> Path:
    """Write `rows` as JSON Lines (UTF-8, one object per line), after what is there if `append`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a" if append else "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def append_rows(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    write_jsonl(path, rows, append=True)


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


def completion_row(
    update: int,
    gold: Gold,
    completion: str,
    response_tokens: int,
    verdict: Verdict,
    score: float,
    features: CompletionFeatures,
    **extra: Any,
) -> dict[str, Any]:
    """One `completions.jsonl` row; `response_tokens` counts the eos token. `extra` keys come last."""
    return {
        "update": update,
        "id": gold.id,
        "gold": gold.answer,
        "completion": completion,
        "response_tokens": response_tokens,
        **asdict(verdict),
        "score": score,
        **features.as_row(),
        **extra,
    }


class RolloutLog:
    """The `on_batch` hook of `rewards.reward_funcs.reward_functions`: logs each generation batch as one update.

    Every process scores its share of a batch; the rows are gathered so that the main process writes
    them once. The metrics also go to TRL's own logs (its `log_metric`), next to its loss and KL.
    """

    def __init__(
        self,
        output_dir: str | Path,
        *,
        eos_token_id: int,
        optimizer_steps_per_update: int,
        thresholds: StageThresholds,
        log_completions_steps: int = 1,
    ) -> None:
        if optimizer_steps_per_update < 1:
            raise ValueError(f"optimizer_steps_per_update must be >= 1, got {optimizer_steps_per_update}")
        self.output_dir = Path(output_dir)
        self.eos_token_id = eos_token_id
        self.steps_per_update = optimizer_steps_per_update
        self.thresholds = thresholds
        self.every = log_completions_steps

    def update_at(self, global_step: int) -> int:
        """The update (1-based generation batch) that starts at optimizer step `global_step`."""
        return global_step // self.steps_per_update + 1

    def drop_rows_after(self, global_step: int) -> None:
        """Forget logged updates a run resumed at `global_step` redoes (all of them on a fresh start)."""
        if not _is_main_process():
            return
        completed = global_step // self.steps_per_update
        for name in (METRICS_FILE, COMPLETIONS_FILE):
            path = self.output_dir / name
            if not path.is_file():
                continue
            before = _line_count(path)
            truncate_after(path, completed)
            dropped = before - _line_count(path)
            if dropped:
                logger.warning(
                    "%s: dropped %d rows of updates after %d, which this run redoes", path, dropped, completed
                )

    def __call__(self, scored: list[ScoredCompletion], trl_kwargs: dict[str, Any]) -> None:
        from accelerate.utils import gather_object

        missing = sorted({"trainer_state", "completion_ids"} - set(trl_kwargs))
        if missing:
            raise ValueError(
                f"RolloutLog needs the reward-function arguments {missing} that TRL trainers pass"
            )
        state, completion_ids = trl_kwargs["trainer_state"], trl_kwargs["completion_ids"]
        update = self.update_at(state.global_step)
        local = [self._row(update, item, ids) for item, ids in zip(scored, completion_ids, strict=True)]
        gathered = gather_object(local)  # every process calls the reward functions at the same time
        rows = [row for row, _ in gathered]
        metrics = batch_metrics(rows, [features for _, features in gathered])
        log_metric = trl_kwargs.get("log_metric")
        if log_metric is not None:
            for name, value in metrics.items():
                log_metric(name, value)
        if _is_main_process():
            summary = {**metrics, "update": update, "episode": update * len(rows), "step": state.global_step}
            append_rows(self.output_dir / METRICS_FILE, [summary])
            if self.every > 0 and update % self.every == 0:
                append_rows(self.output_dir / COMPLETIONS_FILE, rows)

    def _row(
        self, update: int, item: ScoredCompletion, ids: Sequence[int]
    ) -> tuple[dict[str, Any], CompletionFeatures]:
        features = completion_features(
            item.completion, item.verdict, options=item.gold.options, thresholds=self.thresholds
        )
        row = completion_row(
            update,
            item.gold,
            item.completion,
            len(ids),  # includes the eos token, as PPO counts
            item.verdict,
            item.score,
            features,
            hit_length_limit=bool(ids) and ids[-1] != self.eos_token_id,
            terms=item.terms,
        )
        return row, features


def batch_metrics(rows: Sequence[dict[str, Any]], features: Sequence[CompletionFeatures]) -> dict[str, float]:
    """The PPO recipe's verifier, reward-term and dynamics metrics for one batch of logged rows."""

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else 0.0

    metrics = {
        "verifier/reward": mean([row["reward"] for row in rows]),
        "verifier/format_ok": mean([float(row["format_ok"]) for row in rows]),
        "verifier/accuracy": mean([float(row["correct"]) for row in rows]),
        "verifier/response_length": mean([row["response_tokens"] for row in rows]),
        "verifier/hit_length_limit": mean([float(row["hit_length_limit"]) for row in rows]),
        "objective/scores": mean([row["score"] for row in rows]),
    }
    for name in rows[0]["terms"] if rows else ():
        metrics[f"reward/{name}"] = mean([row["terms"][name] for row in rows])
    metrics.update(stage_metrics(features))
    return metrics


def _line_count(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def _is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process
