"""The matched SFT baseline: examples, completion-only loss, the recipe's outputs and its guards."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from medrlvr_trl.data import load_mcqa
from medrlvr_trl.evaluation import questions_sha256, resolve_model, score_completion
from medrlvr_trl.generation import GenerationSettings, generate_hf
from medrlvr_trl.prompts import build_prompt
from medrlvr_trl.sft import MedSFTConfig, build_sft_dataset

REPO = Path(__file__).resolve().parents[1]


def load_recipe(name: str):
    """Import a recipe script as a fresh module (recipes are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", REPO / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def write_medqa(folder: Path, n: int, *, gold: str | None = None) -> Path:
    """`train.jsonl` in MedQA's schema; every gold letter is `gold` when given, else A, B, C, D in turn."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "train.jsonl").open("w") as handle:
        for i in range(n):
            options = {letter: f"drug {letter.lower()}{i}" for letter in "ABCD"}
            answer = gold or "ABCD"[i % 4]
            row = {"question": f"Which drug treats condition {i}?", "options": options, "answer_idx": answer}
            handle.write(json.dumps({**row, "answer": options[answer]}) + "\n")
    return folder


def tiny_sft_args(model_dir: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--model_name_or_path", str(model_dir),
        "--dataset_name", str(data),
        "--output_dir", str(out),
        "--per_device_train_batch_size", "8",
        "--bf16", "false",
        "--gradient_checkpointing", "false",
        "--use_cpu", "true",
        "--report_to", "none",
        "--save_strategy", "no",
        "--disable_tqdm", "true",
        *extra,
    ]  # fmt: skip


# --- examples and the loss mask ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "completion"),
    [("letter", " B"), ("letter_text", " B. drug b1"), ("tagged", " <answer>B</answer>")],
)
def test_sft_examples_pair_the_ppo_prompt_with_the_answer_target(tmp_path, target, completion):
    rows = load_mcqa(str(write_medqa(tmp_path, 2)), "train")
    example = build_sft_dataset(rows, template="r1", target=target)[1]
    assert example["prompt"] == build_prompt(rows[1]["question"], rows[1]["options"], template="r1")
    assert example["completion"] == completion


def test_unknown_sft_target_is_rejected_with_the_known_ones():
    with pytest.raises(ValueError, match="sft_target.*'letter'"):
        MedSFTConfig(output_dir="unused", sft_target="essay", bf16=False)


def test_prompt_tokens_are_masked_from_the_loss(tmp_path, tiny_model_dir):
    from trl import SFTTrainer

    from medrlvr_trl.modeling import load_policy, load_tokenizer

    rows = load_mcqa(str(write_medqa(tmp_path / "data", 3)), "train")
    dataset = build_sft_dataset(rows, template="r1", target="letter")
    tokenizer = load_tokenizer(str(tiny_model_dir))
    args = MedSFTConfig(output_dir=str(tmp_path / "out"), bf16=False, use_cpu=True, report_to="none")
    trainer = SFTTrainer(
        model=load_policy(str(tiny_model_dir), None, tokenizer),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    for row in range(3):
        prompt_length = len(tokenizer(dataset[row]["prompt"])["input_ids"])
        labels = batch["labels"][row]
        trained = labels[labels != -100].tolist()
        assert (labels[:prompt_length] == -100).all()
        assert tokenizer.decode(trained) == dataset[row]["completion"] + tokenizer.eos_token
        assert batch["input_ids"][row, prompt_length : prompt_length + len(trained)].tolist() == trained


# --- the recipe ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_sft(tmp_path_factory, tiny_model_dir) -> Path:
    """SFT on questions whose answer is always C: 16 steps teach the tiny model to say " C" and stop.

    The short "direct" template keeps sequences (and the test) short.
    """
    root = tmp_path_factory.mktemp("sft")
    data = write_medqa(root / "data", 16, gold="C")
    out = root / "out"
    argv = tiny_sft_args(tiny_model_dir, data, out, "--max_steps", "16", "--learning_rate", "3e-3")
    load_recipe("sft_medqa").main([*argv, "--lr_scheduler_type", "constant", "--prompt_template", "direct"])
    return out


def test_sft_run_saves_model_tokenizer_and_run_info(trained_sft):
    for name in ("model.safetensors", "config.json", "tokenizer.json", "README.md"):
        assert (trained_sft / name).is_file(), name
    info = json.loads((trained_sft / "run_info.json").read_text())
    assert info["sft_target"] == "letter"
    assert (info["answer_mode"], info["eval_prompt_template"]) == ("direct", "direct")
    assert "sft_target: `letter`" in (trained_sft / "README.md").read_text()


def test_sft_run_info_names_the_training_questions_by_evaluations_hash(trained_sft):
    data = trained_sft.parent / "data"
    info = json.loads((trained_sft / "run_info.json").read_text())
    assert info["training_data"] == {
        "source": str(data),
        "split": "train",
        "category": None,
        "revision": None,
        "n": 16,
        "questions_sha256": questions_sha256(load_mcqa(str(data), "train")),
    }


def test_sft_model_is_evaluated_as_a_direct_answer_and_learned_the_answer(trained_sft):
    from medrlvr_trl.modeling import load_policy, load_tokenizer

    spec = resolve_model("sft", str(trained_sft), None, None)
    assert (spec.answer_mode, spec.prompt_template) == ("direct", "direct")
    tokenizer = load_tokenizer(spec.path)
    model = load_policy(spec.path, None, tokenizer)
    options = ["drug w", "drug x", "drug y", "drug z"]
    prompts = [
        build_prompt(f"Which drug treats condition {i}?", options, template="direct") for i in (100, 101)
    ]
    completions = generate_hf(model, tokenizer, prompts, GenerationSettings(max_new_tokens=3))
    verdicts = [score_completion(c.text, "C", 4, spec.answer_mode) for c in completions]
    assert all(v.correct for v in verdicts), [c.text for c in completions]


@pytest.fixture()
def sft_recipe_without_models(monkeypatch):
    recipe = load_recipe("sft_medqa")

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(recipe, "load_policy", refuse)
    return recipe


def test_sft_refuses_a_non_empty_output_dir(tmp_path, tiny_model_dir, sft_recipe_without_models):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors").write_text("earlier run")
    argv = tiny_sft_args(tiny_model_dir, write_medqa(tmp_path / "data", 4), out)
    with pytest.raises(ValueError, match="already exists and is not empty.*overwrite_output_dir"):
        sft_recipe_without_models.main(argv)


def test_sft_resume_needs_a_checkpoint(tmp_path, tiny_model_dir, sft_recipe_without_models):
    argv = tiny_sft_args(tiny_model_dir, write_medqa(tmp_path / "data", 4), tmp_path / "out")
    with pytest.raises(ValueError, match="holds no checkpoint"):
        sft_recipe_without_models.main([*argv, "--resume_from_checkpoint", "last"])


def test_sft_config_files_parse(tmp_path):
    from trl import ModelConfig

    from medrlvr_trl.configs import MCQAScriptArguments, parse_config

    for config in ("recipes/configs/sft_qwen2.5-3b.yaml", "recipes/configs/tiny/sft.yaml"):
        script, training, model = parse_config(
            (MCQAScriptArguments, MedSFTConfig, ModelConfig),
            ["--config", str(REPO / config), "--bf16", "false", "--output_dir", str(tmp_path)],
        )
        assert training.sft_target == "letter"
        assert script.prompt_template == "r1"


# --- the learning-rate grid ----------------------------------------------------------------------


def test_grid_picks_the_best_dev_accuracy_and_the_earliest_on_a_tie():
    from medrlvr_trl.sft import pick_best

    rows = [{"learning_rate": lr, "accuracy": acc} for lr, acc in ((1e-5, 0.4), (5e-6, 0.5), (1e-6, 0.5))]
    assert pick_best(rows)["learning_rate"] == 5e-6


def test_grid_table_lists_every_learning_rate_and_marks_the_winner():
    from medrlvr_trl.sft import grid_markdown

    rows = [
        {
            "learning_rate": lr,
            "accuracy": acc,
            "accuracy_std": 0.014,
            "format_valid_rate": 1.0,
            "model": f"m{lr:g}",
        }
        for lr, acc in ((1e-5, 0.42), (5e-6, 0.5))
    ]
    table = grid_markdown(rows, rows[1], "medqa_dev")
    assert "| 1e-05 | 42.0 +- 1.4 | 100.0 | m1e-05 |  |" in table
    assert "| 5e-06 | 50.0 +- 1.4 | 100.0 | m5e-06 | yes |" in table


@pytest.mark.slow
def test_grid_trains_each_rate_scores_them_on_dev_and_links_the_best(tmp_path, tiny_model_dir):
    data = write_medqa(tmp_path / "data", 8)
    (data / "dev.jsonl").write_text((data / "train.jsonl").read_text())
    grid_dir = tmp_path / "grid"
    sft_args = (
        f"--model_name_or_path {tiny_model_dir} --dataset_name {data} --max_steps 2 --prompt_template direct"
    )
    argv = ["--sft_config", str(REPO / "recipes/configs/tiny/sft.yaml"), "--dev_dataset", f"dev={data}@dev"]
    argv += ["--learning_rates", "1e-3", "1e-4", "--grid_dir", str(grid_dir), "--launcher", "python"]
    argv += ["--sft_args", sft_args]
    argv += ["--eval_args", "--direct_max_new_tokens 2 --dtype float32"]
    load_recipe("sft_grid").main(argv)
    summary = json.loads((grid_dir / "grid.json").read_text())
    assert [row["learning_rate"] for row in summary["runs"]] == [1e-3, 1e-4]
    assert (grid_dir / "best").resolve() == Path(summary["best"]["model"]).resolve()
    assert "| 0.0001 |" in (grid_dir / "grid.md").read_text()


# --- as users launch it --------------------------------------------------------------------------


@pytest.mark.slow
def test_interrupted_sft_run_resumes_from_its_last_checkpoint(tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    common = (
        "--prompt_template",
        "direct",
        "--save_strategy",
        "steps",
        "--save_steps",
        "2",
        "--logging_steps",
        "1",
    )
    first = tiny_sft_args(tiny_model_dir, write_medqa(tmp_path / "a", 16, gold="C"), out, *common)
    load_recipe("sft_medqa").main([*first, "--max_steps", "2"])
    first_losses = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]

    # Resume on different data: steps 1-2 must come from the checkpoint, not be trained again.
    second = tiny_sft_args(tiny_model_dir, write_medqa(tmp_path / "b", 16, gold="A"), out, *common)
    load_recipe("sft_medqa").main([*second, "--max_steps", "4", "--resume_from_checkpoint", "last"])
    history = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    assert [row["step"] for row in history if "loss" in row] == [1, 2, 3, 4]
    assert history[:2] == first_losses[:2]


@pytest.mark.slow
@pytest.mark.parametrize("launch_config", ["cpu_ddp", "cpu_zero3"])
def test_two_process_sft_saves_a_full_model_with_its_tokenizer(launch_config, tmp_path, tiny_model_dir):
    import os
    import subprocess

    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / launch_config
    accelerate = Path(sys.executable).parent / "accelerate"
    command = [str(accelerate), "launch", "--config_file", str(REPO / f"launch/{launch_config}.yaml")]
    command += [str(REPO / "recipes/sft_medqa.py"), "--config", str(REPO / "recipes/configs/tiny/sft.yaml")]
    command += [
        "--model_name_or_path",
        str(tiny_model_dir),
        "--dataset_name",
        str(write_medqa(tmp_path / "d", 16)),
    ]
    command += ["--output_dir", str(out), "--max_steps", "2", "--prompt_template", "direct"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / "build" / "torch_extensions"))
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    trained = AutoModelForCausalLM.from_pretrained(out).state_dict()
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    assert {k: v.shape for k, v in trained.items()} == {k: v.shape for k, v in initial.items()}
    assert any(not torch.equal(trained[k], initial[k]) for k in initial)
    assert json.loads((out / "run_info.json").read_text())["answer_mode"] == "direct"
    assert (out / "tokenizer.json").is_file()
