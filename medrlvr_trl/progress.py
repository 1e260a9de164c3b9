"""Progress lines for long loops (evaluation, training): done / total, elapsed and time left.

A log line rather than a bar, so that a terminal, a SLURM log file and `tee` all show the same
thing: the first, then at most one line every `every_s` seconds, and the last.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

logger = logging.getLogger(__name__)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Counts finished items of `total` and logs `label: done/total (pct), elapsed, ETA`."""

    def __init__(
        self, label: str, total: int, *, unit: str = "items", every_s: float = 10.0, done: int = 0
    ) -> None:
        self.label, self.total, self.unit, self.every_s = label, total, unit, every_s
        self.done = self._initial = done  # a resumed run starts part-way; its rate counts new items only
        self._start = self._last = time.monotonic()

    def advance(self, count: int = 1) -> None:
        """Record `count` more finished items; log if `every_s` has passed or all are done."""
        first = self.done == self._initial
        self.done += count
        now = time.monotonic()
        if not first and self.done < self.total and now - self._last < self.every_s:
            return
        self._last = now
        elapsed = now - self._start
        new_items = self.done - self._initial
        left = elapsed / new_items * (self.total - self.done) if new_items else 0.0
        logger.info(
            "%s: %d/%d %s (%.0f%%), %s elapsed, %s left",
            self.label,
            self.done,
            self.total,
            self.unit,
            100 * self.done / max(self.total, 1),
            _clock(elapsed),
            _clock(left),
        )


class TrainerProgress(TrainerCallback):
    """Progress lines for a Hugging Face `Trainer` run (SFT, GRPO, RLOO): optimizer steps done / total.

    transformers' own bar shows only on a terminal, and `disable_tqdm` (the tiny configs) hides it;
    these lines go to the log either way, from the main process only.
    """

    def __init__(self, label: str, *, unit: str = "steps", every_s: float = 30.0) -> None:
        self.label, self.unit, self.every_s = label, unit, every_s
        self.progress: Progress | None = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if state.is_world_process_zero:
            self.progress = Progress(
                self.label, state.max_steps, unit=self.unit, every_s=self.every_s, done=state.global_step
            )

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.progress is not None:
            self.progress.advance()
