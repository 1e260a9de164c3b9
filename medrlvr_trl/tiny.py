"""Build a tiny Qwen2-style policy, value model and tokenizer from text shipped with the repo.

Tests and the offline demo need a model that loads through exactly the same `from_pretrained(path)`
calls that real runs use with Hub ids, without any network. This module trains a byte-level BPE
tokenizer on `assets/tiny_corpus.txt` (plus optional extra text), creates a randomly initialised
`Qwen2ForCausalLM` and a matching `Qwen2ForSequenceClassification` value model, and saves both as
ordinary Hugging Face folders.

Builds are cached: a fingerprint of the spec, the corpus bytes and the library versions is stored in
the build folder, and an unchanged fingerprint returns at once. A build is written beside the target
and renamed into place, so an interrupted build never leaves a folder that looks valid.

    python -m medrlvr_trl.tiny --out build/tiny [--pad-equals-eos] [--extra-corpus facts.txt]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import importlib.metadata
import importlib.resources
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from medrlvr_trl.build_cache import build_once, fingerprint_of, package_versions
from medrlvr_trl.rewards import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN
from medrlvr_trl.user_errors import UserError, run_command

logger = logging.getLogger(__name__)

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
# Qwen2.5 ships spare special tokens like this one; the pad == eos build keeps one so that
# `modeling.load_tokenizer` can be tested picking an existing token, as it does for Qwen.
QWEN_SPARE_PAD_TOKEN = "<|fim_pad|>"
# The verifier's tags. They are ordinary (non-special) added tokens: each is one token, and
# `decode(..., skip_special_tokens=True)` keeps them, which the verifier relies on.
TAG_TOKENS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)

FINGERPRINT_FILE = "fingerprint.json"
POLICY_DIR = "policy"
VALUE_DIR = "value"


@dataclass(frozen=True)
class TinySpec:
    """Everything that decides what the tiny build contains.

    `vocab_size` is the BPE training target; the model's embedding rows equal the final tokenizer
    length (BPE vocabulary plus special and tag tokens).
    """

    vocab_size: int = 1024
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 128
    max_position_embeddings: int = 1024
    pad_equals_eos: bool = False
    seed: int = 0
    extra_corpora: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"TinySpec: hidden_size={self.hidden_size} must be divisible by num_heads={self.num_heads}."
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"TinySpec: num_heads={self.num_heads} must be divisible by num_kv_heads={self.num_kv_heads}."
            )
        if self.vocab_size < 300:
            raise ValueError(
                f"TinySpec: vocab_size={self.vocab_size} is too small; byte-level BPE needs at least 256 "
                "byte tokens plus merges (use 300 or more)."
            )


@dataclass(frozen=True)
class TinyPaths:
    """Where a tiny build lives. `policy` holds the causal LM and the tokenizer; `value` the critic."""

    root: Path
    policy: Path
    value: Path
    rebuilt: bool

    @classmethod
    def under(cls, root: Path, *, rebuilt: bool) -> TinyPaths:
        return cls(root=root, policy=root / POLICY_DIR, value=root / VALUE_DIR, rebuilt=rebuilt)


def build_tiny(build_dir: str | Path, spec: TinySpec = TinySpec()) -> TinyPaths:
    """Build (or reuse) the tiny policy, value model and tokenizer under `build_dir`.

    Returns at once with `rebuilt=False` when the stored fingerprint matches; otherwise builds into a
    temporary folder beside `build_dir` and swaps it in, returning `rebuilt=True`.
    """
    root = Path(build_dir).expanduser().resolve()
    corpora = _read_corpora(spec)

    def build(staging: Path) -> dict:
        _build_into(staging, spec, corpora)
        return {"spec": dataclasses.asdict(spec), "versions": package_versions()}

    _, rebuilt = build_once(
        root, _fingerprint(spec, corpora), build, record_file=FINGERPRINT_FILE, what="tiny-model"
    )
    if rebuilt:
        logger.info("built tiny model in %s", root)
    return TinyPaths.under(root, rebuilt=rebuilt)


def _read_corpora(spec: TinySpec) -> list[tuple[str, str]]:
    """Return (name, text) for the shipped corpus followed by each extra corpus file."""
    shipped = importlib.resources.files("medrlvr_trl") / "assets" / "tiny_corpus.txt"
    corpora = [("tiny_corpus.txt", shipped.read_text(encoding="utf-8"))]
    for raw in spec.extra_corpora:
        path = Path(raw).expanduser()
        if not path.is_file():
            raise UserError(f"TinySpec.extra_corpora: {path} is not a file; pass paths to UTF-8 text files.")
        try:
            corpora.append((str(path), path.read_text(encoding="utf-8")))
        except UnicodeDecodeError as err:
            raise UserError(f"TinySpec.extra_corpora: {path} is not valid UTF-8 text ({err}).") from None
    return corpora


def _fingerprint(spec: TinySpec, corpora: Sequence[tuple[str, str]]) -> str:
    """Hash what decides the build: spec (corpus paths by content), corpora, versions, this builder.

    The builder's own source is included so that an edit to the build steps never reuses a stale model.
    """
    spec_fields = {k: v for k, v in dataclasses.asdict(spec).items() if k != "extra_corpora"}
    payload = {
        "builder": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        "spec": spec_fields,
        "corpora": [hashlib.sha256(text.encode("utf-8")).hexdigest() for _, text in corpora],
        "versions": package_versions(),
    }
    return fingerprint_of(payload)


def _build_into(folder: Path, spec: TinySpec, corpora: Sequence[tuple[str, str]]) -> None:
    tokenizer = _train_tokenizer(spec, [text for _, text in corpora])
    policy, value = _init_models(spec, tokenizer)
    for subdir, model in ((POLICY_DIR, policy), (VALUE_DIR, value)):
        model.save_pretrained(folder / subdir)
        tokenizer.save_pretrained(folder / subdir)


def _train_tokenizer(spec: TinySpec, texts: Sequence[str]):
    """Train a byte-level BPE tokenizer (no BOS, no chat template, like Qwen2.5 base)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = [EOS_TOKEN, QWEN_SPARE_PAD_TOKEN] if spec.pad_equals_eos else [EOS_TOKEN, PAD_TOKEN]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        min_frequency=2,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = [line for text in texts for line in text.splitlines(keepends=True)]
    backend.train_from_iterator(lines, trainer=trainer)
    backend.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in TAG_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN if spec.pad_equals_eos else PAD_TOKEN,
        model_max_length=spec.max_position_embeddings,
        clean_up_tokenization_spaces=False,
    )


def _init_models(spec: TinySpec, tokenizer):
    """Random policy with a seed; the value model shares its backbone and adds a fresh score head.

    Sharing the backbone mirrors real runs, where the critic starts from the base model's weights.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    value_config = copy.deepcopy(config)
    value_config.num_labels = 1  # transformers 5 rejects num_labels= as a from_config/init kwarg
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        policy = Qwen2ForCausalLM(config).to(torch.float32)
        value = Qwen2ForSequenceClassification(value_config).to(torch.float32)
    value.model.load_state_dict(policy.model.state_dict())
    policy.generation_config = GenerationConfig(
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    return policy, value


def main(argv: Sequence[str] | None = None) -> TinyPaths:
    """Command line: build the tiny model and log where it is."""
    parser = argparse.ArgumentParser(
        prog="python -m medrlvr_trl.tiny", description="Build the offline tiny model and tokenizer."
    )
    parser.add_argument("--out", default="build/tiny", help="Build folder (default: build/tiny).")
    parser.add_argument(
        "--pad-equals-eos", action="store_true", help="Configure pad == eos like Qwen2.5 base tokenizers."
    )
    parser.add_argument(
        "--extra-corpus",
        action="append",
        default=[],
        metavar="FILE",
        help="Extra UTF-8 text to train the tokenizer on (repeatable).",
    )
    parser.add_argument("--seed", type=int, default=TinySpec.seed, help="Seed for the random weights.")
    parser.add_argument(
        "--num-heads",
        type=int,
        default=TinySpec.num_heads,
        help="Attention heads (and key/value heads at most this many); 2 gives head_dim 32, the smallest "
        "vLLM's CPU attention takes (build/tiny-vllm).",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    spec = TinySpec(
        pad_equals_eos=args.pad_equals_eos,
        seed=args.seed,
        extra_corpora=tuple(args.extra_corpus),
        num_heads=args.num_heads,
        num_kv_heads=min(TinySpec.num_kv_heads, args.num_heads),
    )
    paths = build_tiny(args.out, spec)
    if not paths.rebuilt:
        logger.info("tiny model in %s is up to date (fingerprint unchanged); nothing rebuilt", paths.root)
    logger.info("policy model + tokenizer: %s", paths.policy)
    logger.info("value model: %s", paths.value)
    return paths


if __name__ == "__main__":
    run_command(main)
