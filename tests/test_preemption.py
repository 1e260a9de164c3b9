"""Stop signals (SIGTERM, SIGUSR1): finish the step, write a checkpoint, exit 0, resume on rerun.

The recipe tests send real signals to real runs: each starts a recipe on the tiny model, waits until
it has logged its first update or step, signals it, checks the checkpoint and the missing final
model, then runs the same command again and checks that it continued rather than started over.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from medrlvr_trl.preemption import PreemptionCallback, PreemptionHandler

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CONFIGS = REPO / "recipes" / "configs" / "tiny"
DEMO = REPO / "data" / "demo" / "medqa"


# ------------------------------------------------------------------ the handler and the callback


def test_handler_records_the_signal_and_restores_the_previous_handler():
    def before(signum, frame):
        raise AssertionError("the previous handler ran while the preemption handler was installed")

    previous = signal.signal(signal.SIGUSR1, before)
    try:
        with PreemptionHandler() as handler:
            assert not handler.should_stop()
            os.kill(os.getpid(), signal.SIGUSR1)
            assert handler.received == "SIGUSR1"
            assert handler.should_stop() and handler.stopped
        assert signal.getsignal(signal.SIGUSR1) is before
        assert signal.getsignal(signal.SIGTERM) is not handler._record
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_callback_saves_and_stops_only_on_update_boundaries(tmp_path):
    handler = PreemptionHandler()
    callback = PreemptionCallback(handler, accelerator=None, every=2)
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    state, control = TrainerState(), TrainerControl()

    state.global_step = 1
    assert not callback.on_step_end(args, state, control).should_save  # no signal yet
    handler.received = "SIGTERM"
    assert not callback.on_step_end(args, state, control).should_training_stop  # inside an update
    state.global_step = 2
    control = callback.on_step_end(args, state, control)
    assert control.should_save and control.should_training_stop and handler.stopped


# ------------------------------------------------------------------ real runs, real signals


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRL_EXPERIMENTAL_SILENCE="1")
    env.update(PYTHONUNBUFFERED="1", TORCH_ELASTIC_SHUTDOWN_TIMEOUT="120")  # see launch/slurm_ppo.sbatch
    env.setdefault("OMP_NUM_THREADS", "1")  # the tiny model gains nothing from threads
    env.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / "build" / "torch_extensions"))
    return env


def _signal_when(
    command: list[str], log: Path, ready: Callable[[], bool], send: Callable[[subprocess.Popen], None]
) -> int:
    """Start `command` (output to `log`), call `send(process)` once `ready()`, return the exit code."""
    with log.open("w") as out:
        process = subprocess.Popen(command, env=_env(), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not ready():
            assert process.poll() is None, (
                f"the run ended before it was signalled:\n{log.read_text()[-3000:]}"
            )
            assert time.monotonic() < deadline, "the run logged nothing"
            time.sleep(0.02)
        send(process)
        return process.wait(timeout=300)


def _rows(path: Path) -> list[dict]:
    """The complete rows of a JSONL log that a run may be appending to."""
    text = path.read_text() if path.is_file() else ""
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


def _logged_beyond(out: Path, update: int) -> Callable[[], bool]:
    """Ready once the run logged an update after `update` (so its training loop is running)."""
    return lambda: len(_rows(out / "metrics.jsonl")) > update


def _assert_stopped_without_a_final_model(out: Path, log: Path, checkpoint: Path) -> None:
    assert checkpoint.is_dir(), sorted(p.name for p in out.iterdir())
    assert not (out / "run_info.json").exists() and not (out / "model.safetensors").exists()
    assert f"{checkpoint.name} written; run the same command to resume" in log.read_text()


def _ppo_command(model_dir: Path, out: Path, updates: int, *launcher: str) -> list[str]:
    """The tiny PPO run, `updates` updates of 8 rollouts per process (about 0.4 s each on a CPU)."""
    return [
        *(launcher or [str(BIN / "python")]),
        str(REPO / "recipes/ppo_medqa.py"),
        "--config", str(CONFIGS / "ppo.yaml"),
        "--model_name_or_path", str(model_dir),
        "--dataset_name", str(DEMO),
        "--output_dir", str(out),
        "--total_episodes", str(8 * updates * (2 if launcher else 1)),
    ]  # fmt: skip


def _last_update(out: Path) -> int:
    return max(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGUSR1], ids=lambda s: s.name)
def test_ppo_stops_on_a_signal_with_a_checkpoint_and_resumes(stop_signal, tiny_model_dir, tmp_path):
    out, log = tmp_path / "run", tmp_path / "first.log"
    command = _ppo_command(tiny_model_dir, out, 10)
    code = _signal_when(command, log, _logged_beyond(out, 0), lambda p: p.send_signal(stop_signal))
    assert code == 0, log.read_text()[-3000:]
    stopped = _last_update(out)
    assert stopped < 10
    _assert_stopped_without_a_final_model(out, log, out / f"checkpoint-{stopped:06d}")
    assert f"stopped by {stop_signal.name} after update {stopped}" in log.read_text()
    logged = _rows(out / "metrics.jsonl")
    assert [row["update"] for row in logged] == list(range(1, stopped + 1))

    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming at update {stopped} of 10" in done.stderr
    rows = _rows(out / "metrics.jsonl")
    assert [row["update"] for row in rows] == list(range(1, 11))
    assert rows[:stopped] == logged  # the first run's rows, kept, not recomputed
    assert (out / "run_info.json").is_file()


@pytest.mark.slow
def test_sft_stops_on_sigterm_with_a_checkpoint_and_the_same_command_resumes(tiny_model_dir, tmp_path):
    out, log = tmp_path / "run", tmp_path / "first.log"
    command = [
        str(BIN / "python"), str(REPO / "recipes/sft_medqa.py"),
        "--config", str(CONFIGS / "sft.yaml"),
        "--model_name_or_path", str(tiny_model_dir),
        "--dataset_name", str(DEMO),
        "--max_train_samples", "16",
        "--output_dir", str(out),
        "--max_steps", "30", "--logging_steps", "1",  # the config saves no checkpoints of its own
    ]  # fmt: skip
    code = _signal_when(
        command, log, lambda: "'loss'" in log.read_text(), lambda p: p.send_signal(signal.SIGTERM)
    )
    assert code == 0, log.read_text()[-3000:]
    (checkpoint,) = out.glob("checkpoint-*")
    stopped = json.loads((checkpoint / "trainer_state.json").read_text())["global_step"]
    assert checkpoint.name == f"checkpoint-{stopped}" and stopped < 30
    assert (checkpoint / "optimizer.pt").is_file() and (checkpoint / "scheduler.pt").is_file()
    _assert_stopped_without_a_final_model(out, log, checkpoint)

    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "holds checkpoints but no finished model: continuing that run" in done.stderr
    assert done.stdout.count("'loss'") == 30 - stopped  # only the remaining steps were trained
    assert json.loads((out / "run_info.json").read_text())["kind"] == "sft"


@pytest.mark.slow
def test_grpo_stops_on_sigterm_between_generation_batches_and_resumes(tiny_model_dir, tmp_path):
    out, log = tmp_path / "run", tmp_path / "first.log"
    command = [
        str(BIN / "python"), str(REPO / "recipes/grpo_medqa.py"),
        "--config", str(CONFIGS / "grpo.yaml"),
        "--model_name_or_path", str(tiny_model_dir),
        "--dataset_name", str(DEMO),
        "--max_train_samples", "16",
        "--output_dir", str(out),
        "--total_completions", "160",  # 10 updates of 2 optimizer steps
        "--max_completion_length", "8",
    ]  # fmt: skip
    code = _signal_when(command, log, _logged_beyond(out, 0), lambda p: p.send_signal(signal.SIGTERM))
    assert code == 0, log.read_text()[-3000:]
    (checkpoint,) = out.glob("checkpoint-*")
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    stopped = state["global_step"]
    assert stopped % 2 == 0 and stopped < 20  # at the end of a generation batch
    assert (checkpoint / "optimizer.pt").is_file()
    _assert_stopped_without_a_final_model(out, log, checkpoint)

    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    final = json.loads((out / "checkpoint-20" / "trainer_state.json").read_text())["log_history"]
    assert final[:stopped] == state["log_history"]  # restored (step_time included), not trained again
    assert [row["update"] for row in _rows(out / "metrics.jsonl")] == list(range(1, 11))
    assert (out / "run_info.json").is_file()


# ------------------------------------------------------------------ two processes


def _workers(launcher: subprocess.Popen) -> dict[int, int]:
    """Rank -> pid of the launcher's worker processes (torch elastic starts them as its children)."""
    children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
    ranks = {}
    for pid in map(int, children):
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        rank = next(v for v in environ if v.startswith(b"RANK="))
        ranks[int(rank[5:])] = pid
    return ranks


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the workers through /proc")
def test_two_process_ppo_stops_every_rank_at_one_update_wherever_the_signal_lands(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    launch = [str(BIN / "accelerate"), "launch", "--config_file", str(REPO / "launch/cpu_ddp.yaml")]
    command = _ppo_command(tiny_model_dir, out, 12, *launch)

    # SIGUSR1 to rank 1 only: rank 0 learns of it through the all-reduce, both stop, the launcher exits 0.
    log = tmp_path / "rank1.log"
    code = _signal_when(
        command, log, _logged_beyond(out, 0), lambda p: os.kill(_workers(p)[1], signal.SIGUSR1)
    )
    assert code == 0, log.read_text()[-3000:]
    first = _last_update(out)
    _assert_stopped_without_a_final_model(out, log, out / f"checkpoint-{first:06d}")
    assert f"stopped by a stop signal to another process after update {first}" in log.read_text()

    # SIGTERM to the launcher: torch elastic forwards it to both workers, waits for them, exits 1.
    log = tmp_path / "launcher.log"
    code = _signal_when(command, log, _logged_beyond(out, first), lambda p: p.send_signal(signal.SIGTERM))
    text = log.read_text()
    assert code == 1 and "SignalException" in text, text[-3000:]
    second = _last_update(out)
    assert first < second < 12
    # Usually one line per rank; a worker whose SIGTERM lands after its last check of the flag
    # stops through the other's flag instead, at the same update, without the line.
    assert 1 <= text.count("got SIGTERM: saving a checkpoint and stopping") <= 2
    assert "forcefully exiting" not in text  # no worker outlived the shutdown timeout
    _assert_stopped_without_a_final_model(out, log, out / f"checkpoint-{second:06d}")

    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming at update {second} of 12" in done.stderr
    assert [row["update"] for row in _rows(out / "metrics.jsonl")] == list(range(1, 13))
    assert (out / "run_info.json").is_file()
