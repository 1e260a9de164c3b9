"""Every documented entry point keeps working: each benchmark script runs at its smallest size and prints
its table, and each recipe, `python -m` module and make target answers a user's mistake (a missing
run, model or config file) with one `error:` line and exit code 2, never a traceback.

A new entry point in the README or docs must be added to ENTRY_POINTS, with where its mistakes are
tested; test_user_errors.py covers the ones listed there.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from test_user_errors import _assert_one_line, _run

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"

# Documented entry point -> where a user's mistake in it is tested, or why there is nothing to test.
ENTRY_POINTS = {
    "recipes/ppo_medqa.py": "test_user_errors: bf16 on a CPU, missing model folder",
    "recipes/sft_medqa.py": "test_user_errors: missing .gguf file",
    "recipes/grpo_medqa.py": "test_user_errors: unknown config key",
    "recipes/rloo_medqa.py": "here: missing model folder",
    "recipes/sft_grid.py": "here: missing sft_config",
    "recipes/compare.py": "test_compare: unknown --task or --methods, --task sanity before data/sanity exists",
    "recipes/eval_mcqa.py": "test_user_errors: missing model folder",
    "recipes/dynamics_report.py": "here: missing run folder, a folder that is not a run",
    "python -m medrlvr_trl.tiny": "here: missing --extra-corpus file",
    "python -m medrlvr_trl.smollm2": "test_user_errors: unreachable package index",
    "python -m demo.run": "here: missing --config_dir or --base_model folder",
    "python -m demo.task": "here: missing --knowledge table",
    "python -m demo.sanity": "no input files: writes the task from its seed (test_sanity: committed files match)",
    "python -m demo.sanity_run": "test_sanity: unknown run named in one line before any work",
    "python -m demo.pretrain": "here: missing --corpus file",
    "python -m demo.experiments.lookup_learning": "no input files: numeric options only (argparse checks them)",
    "python -m demo.experiments.scan_drills": "no input files: numeric options only (argparse checks them)",
    "python -m demo.experiments.fact_recall": "test_fact_recall: missing --model folder or --test_file",
    "make dynamics": "here: RUN=<missing folder>",
    "make sft-grid": "here: CONFIG=<missing file> (the missing-config test of every recipe's parser)",
    "make bench": "the bench smoke runs here (its scripts at their smallest sizes)",
    "make ppo": "here: CONFIG=<missing file> is one error line (the make targets launch with accelerate -q)",
    "make ppo-vllm": "as make ppo; the vLLM recipe runs: test_vllm",
    "make reinforce-pp": "as make ppo (the PPO recipe, tiny/reinforce_pp.yaml); config mistakes: test_reinforce_pp",
    "make vllm": "no input (installs vLLM; a failing index is pip's own error)",
    "make tiny-vllm": "no input: python -m medrlvr_trl.tiny --out build/tiny-vllm --num-heads 2",
    "make sft": "as make ppo (accelerate launch); the recipe's own errors: test_user_errors",
    "make grpo": "as make ppo (accelerate launch); the recipe's own errors: test_user_errors",
    "make sanity": "runs python -m demo.sanity_run (its mistakes: test_sanity); ARGS picks runs",
    "make compare": "runs recipes/compare.py (its mistakes: test_compare); TASK picks the task",
    "make rloo": "as make ppo (accelerate launch); the recipe's own errors: here",
    "make eval": "as make ppo (accelerate launch); the recipe's own errors: test_user_errors",
    "make demo": "ARGS go to python -m demo.run",
    "make demo-seed1": "ARGS go to python -m demo.run",
    "make demo-base": "ARGS go to python -m demo.experiments.lookup_learning (numeric options, argparse checks them)",
    "make demo-all": "make demo, then the GRPO, RLOO and eval recipes on the bundled demo configs",
    "make tiny": "no input: python -m medrlvr_trl.tiny --out build/tiny",
    "make smollm2": "python -m medrlvr_trl.smollm2",
    "make install": "no input",
    "make test": "no input (PYTEST_ARGS go to pytest)",
    "make test-fast": "no input",
    "make lint": "no input",
    "make clean": "no input",
}


def _documented_entry_points() -> set[str]:
    documents = [REPO / "README.md", REPO / "data/demo/README.md", *sorted(REPO.glob("docs/*.md"))]
    text = "\n".join(p.read_text(encoding="utf-8") for p in documents if p.is_file())
    recipes = set(re.findall(r"recipes/\w+\.py", text))
    modules = {f"python -m {m}" for m in re.findall(r"python -m ((?:demo|medrlvr_trl)[\w.]*\w)", text)}
    return recipes | modules


def test_every_documented_entry_point_says_where_its_mistakes_are_tested():
    missing = sorted(_documented_entry_points() - set(ENTRY_POINTS))
    assert not missing, f"documented but not in ENTRY_POINTS (add a mistake test): {missing}"
    recipes = {p.relative_to(REPO).as_posix() for p in (REPO / "recipes").glob("*.py")}
    assert recipes <= set(ENTRY_POINTS), sorted(recipes - set(ENTRY_POINTS))
    phony = re.search(r"^\.PHONY:(.*)$", (REPO / "Makefile").read_text(), re.M).group(1).split()
    targets = {f"make {target}" for target in phony}
    assert targets <= set(ENTRY_POINTS), sorted(targets - set(ENTRY_POINTS))
    for entry in ENTRY_POINTS:  # every entry still exists
        if entry.startswith("recipes/"):
            assert (REPO / entry).is_file(), entry
        elif entry.startswith("python -m "):
            assert importlib.util.find_spec(entry.removeprefix("python -m ")) is not None, entry
        else:
            assert entry.removeprefix("make ") in phony, entry


# ----------------------------------------------------------------------- a user's mistake, one line


def _make(*args: str) -> subprocess.CompletedProcess:
    """A make target run with this interpreter's environment, without re-running `make install`."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    environment = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    environment.pop("MEDRLVR_DEBUG", None)
    command = ["make", "--no-print-directory", "-o", ".venv/.installed", "-o", "tiny", *args]
    command.append(f"BIN={Path(sys.executable).parent}")
    return subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)


def test_dynamics_report_on_a_missing_run_folder_is_one_line(tmp_path):
    missing = tmp_path / "runs" / "ppo"
    _assert_one_line(
        _run("recipes/dynamics_report.py", "--run", str(missing)), f"run folder {missing} does not exist"
    )
    (tmp_path / "not_a_run").mkdir()
    done = _run("recipes/dynamics_report.py", "--run", str(tmp_path / "not_a_run"))
    _assert_one_line(done, "completions.jsonl does not exist", "PPO, GRPO or RLOO")


def test_make_dynamics_on_a_missing_run_folder_is_one_line(tmp_path):
    missing = tmp_path / "nope"
    _assert_one_line(_make("dynamics", f"RUN={missing}"), f"run folder {missing} does not exist")


def test_make_sft_grid_with_a_missing_config_file_is_one_line(tmp_path):
    missing = tmp_path / "grid.yaml"
    _assert_one_line(_make("sft-grid", f"CONFIG={missing}"), f"config file {missing} does not exist")


@pytest.mark.slow
def test_make_ppo_with_a_missing_config_file_is_one_line(tmp_path):
    missing = tmp_path / "ppo.yaml"
    _assert_one_line(_make("ppo", f"CONFIG={missing}"), f"config file {missing} does not exist")


def test_rloo_with_a_missing_model_folder_says_how_to_build_the_tiny_model(tmp_path):
    missing = tmp_path / "tiny" / "policy"
    done = _run(
        "recipes/rloo_medqa.py",
        "--config",
        "recipes/configs/tiny/rloo.yaml",
        "--model_name_or_path",
        str(missing),
    )
    _assert_one_line(done, str(missing), "does not exist", "make tiny")


def test_sft_grid_with_a_missing_sft_config_names_it(tmp_path):
    missing = tmp_path / "sft.yaml"
    done = _run(
        "recipes/sft_grid.py", "--config", "recipes/configs/tiny/sft_grid.yaml", "--sft_config", str(missing)
    )
    _assert_one_line(done, f"sft_config '{missing}' does not exist")


@pytest.mark.parametrize(
    ("module", "option", "fragment"),
    [
        ("medrlvr_trl.tiny", "--extra-corpus", "is not a file"),
        ("demo.task", "--knowledge", "does not exist"),
        ("demo.pretrain", "--corpus", "is not a file"),
        ("demo.run", "--config_dir", "does not exist"),
        ("demo.run", "--base_model", "no config.json there"),
    ],
)
def test_a_module_given_a_missing_input_file_names_it(module, option, fragment, tmp_path):
    missing = tmp_path / "missing"
    done = _run(
        "-m",
        module,
        option,
        str(missing),
        "--out" if module != "demo.run" else "--output_dir",
        str(tmp_path / "out"),
    )
    _assert_one_line(done, str(missing), fragment)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # imports the PPO trainer to read the config: several seconds
def test_the_memory_plan_bench_with_a_missing_config_is_one_line(tmp_path):
    missing = tmp_path / "ppo.yaml"
    _assert_one_line(
        _run("bench/bench_memory_plan.py", "--paper-fit", str(missing)),
        f"config file {missing} does not exist",
    )


# ------------------------------------------------------------------------- benchmarks, smallest sizes


def _bench_module(name: str) -> ModuleType:
    """A bench/ script as a module (bench/ is a folder of scripts, not a package)."""
    saved = list(sys.path)
    sys.path.insert(0, str(BENCH))  # the scripts import their neighbours (harness, machine)
    try:
        spec = importlib.util.spec_from_file_location(f"bench_script_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path[:] = saved


# script -> (smallest arguments, the header of the table it must print, the rows that table must have)
BENCH_SMOKE = {
    "bench_verifier.py": (["--n", "50", "--repeats", "1"], "| mode |", ["| paper |"]),
    "bench_eval.py": (
        ["--questions", "4", "--batch-size", "2", "--max-new-tokens", "4"],
        "| generation |",
        ["| batched (batch 2) |", "| one at a time |"],
    ),
    "bench_ppo.py": (
        ["--updates", "2", "--batch", "2", "--response-length", "8"],
        "| phase |",
        [
            "| rollout: generation |",
            "| rollout: policy + critic forward |",
            "| rollout: reference forward |",
            "| verifier |",
            "| advantages (GAE) |",
            "| update: backward |",
            "| update: optimizer step |",
            "| TRL PPOTrainer |",
        ],
    ),
    "bench_rollout_memory.py": (
        ["--rollouts", "2", "--chunk", "2", "--response-length", "8", "--prompt-length", "16"],
        "| path |",
        ["| BEFORE:", "| AFTER:"],
    ),
    "bench_memory_plan.py": (["--cases", "smoke"], "| case |", ["| smoke |"]),
    "bench_scored_loss.py": (["--repeats", "1", "--batch", "4"], "| rows |", ["| prompt |", "| key |"]),
    "bench_rollouts.py": (
        ["--model", "tiny-vllm", "--rollouts", "4", "--response-length", "8", "--repeats", "1"],
        "| rollouts sampled by |",
        ["| hf (one generate call) |", "| hf, chunks of 8", "| vllm (colocated engine) |"],
    ),
}
FAST_BENCH = {"bench_verifier.py"}  # the others start torch and a model: several seconds each
NEEDS_VLLM = {"bench_rollouts.py"}  # the vLLM tier's marker too


def test_every_bench_script_has_a_smoke_run():
    assert {p.name for p in BENCH.glob("bench_*.py")} == set(BENCH_SMOKE)


def _table_rows(stdout: str, header: str) -> list[str]:
    """The rows of the markdown table whose header line starts with `header`."""
    lines = [*stdout.splitlines(), ""]
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    assert lines[start + 1].startswith("| ---"), stdout
    end = next(i for i in range(start + 2, len(lines)) if not lines[i].startswith("|"))
    return lines[start + 2 : end]


@pytest.mark.parametrize(
    "script",
    [
        pytest.param(
            s, marks=() if s in FAST_BENCH else (pytest.mark.slow, *([pytest.mark.vllm] * (s in NEEDS_VLLM)))
        )
        for s in BENCH_SMOKE
    ],
)
def test_bench_script_runs_at_its_smallest_size_and_prints_its_table(script):
    arguments, header, expected_rows = BENCH_SMOKE[script]
    environment = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRL_EXPERIMENTAL_SILENCE="1")
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *arguments],
        cwd=REPO, env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    # the machine line heads the report (a library may log a line of its own before it, e.g. DeepSpeed's
    # "Setting accelerator to CPU" when vLLM's imports load it)
    assert any(line.startswith("machine: ") for line in done.stdout.splitlines()[:3]), done.stdout
    rows = _table_rows(done.stdout, header)
    assert rows, done.stdout
    for expected in expected_rows:
        assert any(line.startswith(expected) for line in done.stdout.splitlines()), (expected, done.stdout)
    assert not re.search(r"\bnan\b", "".join(rows)), rows


def test_a_failing_benchmark_child_shows_its_own_traceback():
    harness = _bench_module("harness")
    child = "import sys; print('partial output'); raise RuntimeError('MedRLVRPPOTrainer._generate moved')"
    with pytest.raises(SystemExit) as stopped:
        harness.run_child([sys.executable, "-c", child], "ours (hf)")
    message = str(stopped.value.code)
    assert "benchmark child 'ours (hf)' failed (exit code 1)" in message
    assert "Traceback (most recent call last)" in message
    assert "RuntimeError: MedRLVRPPOTrainer._generate moved" in message

    with pytest.raises(SystemExit, match="no RESULT line on stdout"):
        harness.run_child([sys.executable, "-c", "print('done')"], "quiet child")
    assert harness.run_child([sys.executable, "-c", "print('RESULT {\"a\": 1}')"], "ok") == {"a": 1}


def test_phase_timer_nests_phases_and_names_a_method_that_is_gone():
    harness = _bench_module("harness")

    class Trainer:
        def step(self) -> None:
            self._rollout()
            self._update()

        def _rollout(self) -> None:
            self._generate()

        def _generate(self) -> None:
            pass

        def _update(self) -> None:
            pass

    trainer, timer = Trainer(), harness.PhaseTimer()
    for name, label in (("_rollout", "rollout"), ("_generate", "generation"), ("_update", "update")):
        timer.wrap(trainer, name, label)
    trainer.step()
    timer.check_all_called()
    rows = timer.rows(total=10.0, order=["rollout", "generation", "update"])
    assert [name for name, _ in rows] == [
        "rollout", "rollout: generation", "rollout: rest", "update", "other (metrics, logs, loop)",
    ]  # fmt: skip
    assert rows[-1][1] == pytest.approx(10.0 - timer.seconds["rollout"] - timer.seconds["update"])

    with pytest.raises(AttributeError, match=r"Trainer\._score does not exist any more.*'verifier'"):
        timer.wrap(trainer, "_score", "verifier")
    idle = harness.PhaseTimer()
    idle.wrap(Trainer(), "_update", "update")
    with pytest.raises(RuntimeError, match=r"never called during training: Trainer\._update"):
        idle.check_all_called()


def test_the_ppo_bench_phases_are_methods_of_todays_trainer():
    """The fast half of the PPO smoke run: every phase it times exists (test-fast catches a rename)."""
    from accelerate import Accelerator
    from accelerate.optimizer import AcceleratedOptimizer

    from medrlvr_trl.ppo import MedRLVRPPOTrainer, PolicyAndCritic

    bench_ppo = _bench_module("bench_ppo")
    classes = {
        "trainer": MedRLVRPPOTrainer,
        "pair": PolicyAndCritic,
        "accelerator": Accelerator,
        "optimizer": AcceleratedOptimizer,
    }
    for backend in bench_ppo.BACKENDS:
        for owner, name, _ in bench_ppo._phases(backend):
            assert callable(getattr(classes[owner], name, None)), f"{classes[owner].__name__}.{name}"
