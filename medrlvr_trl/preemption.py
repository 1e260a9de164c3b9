"""Stop training cleanly on SIGTERM or SIGUSR1: finish the step, write a checkpoint, exit 0.

Clusters stop jobs with SIGTERM (SLURM at the time limit or on preemption, then SIGKILL after
KillWait, 30 s by default) and can warn earlier with another signal (`sbatch --signal=USR1@600`).
A run killed by the signal loses every update since its last checkpoint. A run that stops at the
next step boundary loses nothing, and re-running the same command resumes from that checkpoint.

- `PreemptionHandler` records the signal and nothing else. Python runs a signal handler between
  two bytecodes of the main thread, which may be in the middle of writing to a stream, and writing
  a log line from inside the handler can then fail with "reentrant call". So the line is logged
  at the next step boundary instead, by `should_stop`.
- `should_stop(accelerator)` is a collective call: every process must stop at the same step, or
  the others block in the next all-reduce, barrier or checkpoint save. Each process contributes
  its own flag, so a signal that reaches only one process still stops all of them.
- `PreemptionCallback` hooks the same check into the Hugging Face `Trainer` (SFT, GRPO, RLOO).

The PPO loop (`MedRLVRPPOTrainer.train`) calls `should_stop` itself after each update.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

logger = logging.getLogger(__name__)

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGUSR1)


class PreemptionHandler:
    """Catches SIGTERM and SIGUSR1 while training runs, so the loop can stop at a step boundary.

    Use as a context manager around `train()`. The previous handlers come back on exit, so a
    signal during the final save, or after it, has its usual effect again.
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        self.signals = signals
        self.received: str | None = None  # name of the first stop signal this process got
        self.stopped = False  # True once should_stop returned True: the run stopped early
        self._previous: dict[signal.Signals, Any] = {}
        self._announced = False

    def __enter__(self) -> PreemptionHandler:
        try:
            for sig in self.signals:
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._record)
        except ValueError:  # not the main thread: Python allows signal handlers only there
            self.close()
            logger.warning("not in the main thread: SIGTERM/SIGUSR1 will end training without a checkpoint")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Restore the handlers that were installed before."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name

    def should_stop(self, accelerator: Any = None) -> bool:
        """Whether any process got a stop signal; call it on every process at the same step.

        `accelerator` (an accelerate `Accelerator`) reduces the flag over all processes; with
        None, or a single process, only this process's flag counts.
        """
        stop = self.received is not None
        if accelerator is not None and accelerator.num_processes > 1:
            flag = torch.tensor([float(stop)], device=accelerator.device)
            stop = bool(accelerator.reduce(flag, reduction="max").item() > 0)
        # Announced after the reduction, so a signal that lands while this process waits in it
        # (the launcher forwards SIGTERM to one worker after another) still gets its line.
        if self.received is not None and not self._announced:
            self._announced = True
            logger.warning("got %s: saving a checkpoint and stopping", self.received)
        self.stopped = self.stopped or stop
        return stop

    def report(self, step: int, checkpoint: str | Path, *, unit: str = "step") -> None:
        """Log how the run ended and how to continue it."""
        logger.info(
            "stopped by %s after %s %d; %s written; run the same command to resume",
            self.received or "a stop signal to another process",
            unit,
            step,
            Path(checkpoint).name,
        )


class PreemptionCallback(TrainerCallback):
    """Makes a Hugging Face `Trainer` save a checkpoint and stop after a stop signal.

    Right after `on_step_end` the Trainer saves `checkpoint-<step>` (model, optimizer, scheduler,
    RNG and trainer state) when `should_save` is set, then leaves its loop on
    `should_training_stop`. `every` limits stops to steps that are multiples of it: GRPO and RLOO
    take several optimizer steps on one generation batch, and a run resumed inside a batch would
    not get that batch back.
    """

    def __init__(self, handler: PreemptionHandler, accelerator: Any, every: int = 1) -> None:
        self.handler = handler
        self.accelerator = accelerator
        self.every = every

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        if state.global_step % self.every == 0 and self.handler.should_stop(self.accelerator):
            control.should_save = True
            control.should_training_stop = True
        return control
