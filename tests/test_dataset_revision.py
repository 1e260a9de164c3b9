"""Training data pinned and recorded: `dataset_revision` reaches the Hub loader in every training recipe,
a local path with a revision is a one-line error, and run_info.json's `training_data` names the same
questions hash as evaluation's results.json."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest
import yaml
from trl import ModelConfig

from medrlvr_trl.configs import MCQAScriptArguments, parse_config
from medrlvr_trl.data import load_mcqa
from medrlvr_trl.evaluation import DatasetSpec, describe_dataset, questions_sha256
from medrlvr_trl.ppo import MedRLVRPPOConfig
from medrlvr_trl.recipe_setup import training_data_record
from medrlvr_trl.user_errors import run_command

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "recipes" / "configs"
DEMO_DATA = REPO / "data" / "demo" / "medqa"

import grpo_medqa  # noqa: E402
import ppo_medqa  # noqa: E402
import rloo_medqa  # noqa: E402
import sft_medqa  # noqa: E402

# recipe -> (its main, its tiny config)
RECIPES = {
    "ppo": (ppo_medqa.main, "ppo"),
    "reinforce_pp": (ppo_medqa.main, "reinforce_pp"),
    "grpo": (grpo_medqa.main, "grpo"),
    "rloo": (rloo_medqa.main, "rloo"),
    "sft": (sft_medqa.main, "sft"),
}
PAPER_TRAINING_CONFIGS = sorted(
    path for path in CONFIGS.glob("*_qwen2.5-3b.yaml") if not path.name.startswith("sft_grid")
)


def _ppo_args(*argv: str) -> MCQAScriptArguments:
    script_args, _, _ = parse_config([MCQAScriptArguments, MedRLVRPPOConfig, ModelConfig], list(argv))
    return script_args


def test_dataset_revision_defaults_to_the_newest_and_parses_from_yaml_and_the_command_line(tmp_path):
    base = ["--config", str(CONFIGS / "tiny" / "ppo.yaml"), "--output_dir", str(tmp_path)]
    assert _ppo_args(*base).dataset_revision is None
    hub = [*base, "--dataset_name", "org/medqa"]
    assert _ppo_args(*hub, "--dataset_revision", "0123abc").dataset_revision == "0123abc"
    assert _ppo_args(*hub, "--dataset_revision", "").dataset_revision is None  # empty: the newest
    config = tmp_path / "pinned.yaml"
    tiny = yaml.safe_load((CONFIGS / "tiny" / "ppo.yaml").read_text())
    config.write_text(yaml.safe_dump({**tiny, "dataset_name": "org/medqa", "dataset_revision": "0123abc"}))
    assert _ppo_args("--config", str(config), "--output_dir", str(tmp_path)).dataset_revision == "0123abc"


@pytest.mark.parametrize("config", PAPER_TRAINING_CONFIGS, ids=lambda path: path.stem)
def test_paper_training_configs_leave_a_revision_to_pin_and_say_how(config):
    loaded = yaml.safe_load(config.read_text())
    assert "dataset_revision" in loaded and loaded["dataset_revision"] is None  # no invented commit
    assert "HfApi().dataset_info('bigbio/med_qa', revision='refs/convert/parquet').sha" in config.read_text()


def test_paper_sft_grid_dev_set_has_its_revision_field():
    assert yaml.safe_load((CONFIGS / "sft_grid_qwen2.5-3b.yaml").read_text())["dev_dataset"].endswith(
        "@revision="
    )


class _Captured(Exception):
    """Raised by the stand-in `load_dataset` once it has seen its arguments (not an error the loader wraps)."""


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_dataset_revision_reaches_load_dataset_in_every_training_recipe(recipe, monkeypatch, tmp_path):
    main, tiny = RECIPES[recipe]
    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        raise _Captured

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)  # offline: nothing reaches the Hub
    argv = ["--config", str(CONFIGS / "tiny" / f"{tiny}.yaml"), "--output_dir", str(tmp_path / "out")]
    argv += ["--dataset_name", "org/medqa", "--dataset_revision", "0123abc"]
    with pytest.raises(_Captured):
        main(argv)
    assert calls == [(("org/medqa", None), {"split": "train", "revision": "0123abc"})]


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_a_local_dataset_with_a_revision_is_one_line_and_exit_code_2(recipe, capsys, tmp_path):
    main, tiny = RECIPES[recipe]
    argv = ["--config", str(CONFIGS / "tiny" / f"{tiny}.yaml"), "--output_dir", str(tmp_path / "out")]
    # A model that does not exist: the revision is refused before anything would load it.
    argv += ["--model_name_or_path", str(tmp_path / "no-model"), "--dataset_name", str(DEMO_DATA)]
    with pytest.raises(SystemExit) as exit_info:
        run_command(main, [*argv, "--dataset_revision", "0123abc"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: dataset_revision '0123abc'")
    assert str(DEMO_DATA) in err and "local path" in err
    assert not (tmp_path / "out").exists()


def test_training_data_record_names_the_hash_evaluation_gives_the_same_rows(tmp_path):
    script_args = _ppo_args(
        "--config",
        str(CONFIGS / "tiny" / "ppo.yaml"),
        "--output_dir",
        str(tmp_path),
        "--max_train_samples",
        "12",
    )
    rows = load_mcqa(str(DEMO_DATA), "train", limit=12)
    record = training_data_record(script_args, rows)
    spec = DatasetSpec(label="medqa_train", source=str(DEMO_DATA), split="train")
    described = describe_dataset(spec, rows, list(range(len(rows))))
    assert record == {
        "source": "data/demo/medqa",
        "split": "train",
        "category": None,
        "revision": None,
        "n": 12,
        "questions_sha256": described["questions_sha256"],
    }
    assert record["questions_sha256"] != questions_sha256(load_mcqa(str(DEMO_DATA), "train", limit=11))
