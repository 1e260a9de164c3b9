"""Pretrain the tiny offline model on the demo corpus, so that it starts RL knowing facts and tags.

Med-RLVR starts from a *base* model: it has read medical text and (in Qwen's pretraining mix) has
met reasoning formats, but it was never taught the multiple-choice task. The offline demo needs a
base model in the same position, so this module takes the randomly initialised tiny model from
`medrlvr_trl.tiny` and trains it as a plain causal language model on `data/demo/corpus.txt` (facts
as prose plus R1-format conversations on unrelated toy tasks). Nothing task-specific is used here:
no question, option list or answer from the MCQA files is read.

The result is an ordinary Hugging Face folder (model + tokenizer) that every recipe loads with
`from_pretrained`. Like `tiny.py` the build is cached by a fingerprint of everything that decides
it (tiny spec, pretraining spec, corpus bytes, library versions, this file) and written beside the
target, then renamed into place, so an interrupted run never leaves a folder that looks finished.

    python -m demo.pretrain --out build/demo [--steps 1200]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from medrlvr_trl import tiny
from medrlvr_trl.build_cache import (
    build_once,
    fingerprint_of,
    one_intra_op_thread,
    package_versions,
    stored_record,
)
from medrlvr_trl.tiny import TinySpec, build_tiny
from medrlvr_trl.user_errors import UserError, run_command

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

DEFAULT_CORPUS = "data/demo/corpus.txt"
BASE_DIR = "base"
TINY_DIR = "tiny"
FINGERPRINT_FILE = "pretrain.json"


def demo_tiny_spec(corpus: str = DEFAULT_CORPUS, *, seed: int = 0) -> TinySpec:
    """The tiny architecture the demo pretrains: large enough to memorise the corpus's facts,
    small enough that pretraining, PPO and evaluation fit in minutes on two CPU cores."""
    return TinySpec(
        vocab_size=2048,
        hidden_size=128,
        num_layers=4,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=384,
        max_position_embeddings=512,
        seed=seed,
        extra_corpora=(corpus,),
    )


@dataclass(frozen=True)
class PretrainSpec:
    """Everything that decides the pretrained weights (besides the corpus bytes and versions)."""

    tiny: TinySpec = field(default_factory=demo_tiny_spec)
    corpus: str = DEFAULT_CORPUS
    steps: int = 1200
    batch_size: int = 16
    seq_len: int = 256
    learning_rate: float = 2e-3
    min_learning_rate: float = 1e-4
    warmup_steps: int = 50
    weight_decay: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "seq_len"):
            if getattr(self, name) < 1:
                raise UserError(f"PretrainSpec.{name}: got {getattr(self, name)}; need a positive integer")
        if self.seq_len > self.tiny.max_position_embeddings:
            raise UserError(
                f"PretrainSpec.seq_len={self.seq_len} exceeds the model's max_position_embeddings="
                f"{self.tiny.max_position_embeddings}; lower seq_len or enlarge the TinySpec"
            )
        if not 0 <= self.warmup_steps < self.steps:
            raise UserError(f"PretrainSpec.warmup_steps: got {self.warmup_steps}; need 0 <= warmup < steps")


@dataclass(frozen=True)
class PretrainResult:
    """Where the pretrained base model lives and what its pretraining reached."""

    path: Path
    rebuilt: bool
    final_loss: float
    seconds: float


def pretrain_base(build_dir: str | Path, spec: PretrainSpec = PretrainSpec()) -> PretrainResult:
    """Build (or reuse) the pretrained base model under `build_dir/base`.

    The random-init tiny model goes to `build_dir/tiny` (its own cache); the pretrained model and
    tokenizer to `build_dir/base`, with a `pretrain.json` holding the fingerprint and the loss curve.
    """
    root = Path(build_dir).expanduser().resolve()
    corpus = _read_corpus(spec.corpus)
    target = root / BASE_DIR
    fingerprint = _fingerprint(spec, corpus)
    if (stored := stored_record(target, FINGERPRINT_FILE)).get("fingerprint") == fingerprint:
        logger.info("pretrained base model in %s is up to date (cached)", target)
        return PretrainResult(target, rebuilt=False, final_loss=stored["final_loss"], seconds=0.0)

    tiny = build_tiny(root / TINY_DIR, spec.tiny)

    def build(staging: Path) -> dict:
        start = time.perf_counter()
        losses = train_causal_lm(tiny.policy, corpus, spec, staging)
        return {
            "spec": dataclasses.asdict(spec),
            "versions": package_versions(),
            "final_loss": losses[-1][1],
            "seconds": round(time.perf_counter() - start, 1),
            "loss_curve": losses,
        }

    record, rebuilt = build_once(target, fingerprint, build, record_file=FINGERPRINT_FILE, what="pretrain")
    if rebuilt:
        logger.info(
            "pretrained base model in %s (final loss %.3f, %.0f s)",
            target,
            record["final_loss"],
            record["seconds"],
        )
    return PretrainResult(
        target,
        rebuilt=rebuilt,
        final_loss=record["final_loss"],
        seconds=record["seconds"] if rebuilt else 0.0,
    )


def _read_corpus(path: str) -> str:
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(
            f"PretrainSpec.corpus: {file} is not a file; pass the demo corpus (data/demo/corpus.txt)"
        )
    text = file.read_text(encoding="utf-8")
    if not text.strip():
        raise UserError(f"PretrainSpec.corpus: {file} is empty; nothing to pretrain on")
    return text


def _fingerprint(spec: PretrainSpec, corpus: str) -> str:
    """Hash the spec (corpus by content, not path), the corpus, versions and the builders' sources."""
    spec_fields = dataclasses.asdict(spec)
    spec_fields.pop("corpus")
    spec_fields["tiny"].pop("extra_corpora")
    tiny_source = Path(tiny.__file__).read_bytes()
    payload = {
        "builders": [
            hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
            hashlib.sha256(tiny_source).hexdigest(),
        ],
        "spec": spec_fields,
        "extra_corpora": [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in spec.tiny.extra_corpora],
        "corpus": hashlib.sha256(corpus.encode("utf-8")).hexdigest(),
        "versions": package_versions(),
    }
    return fingerprint_of(payload)


def corpus_token_stream(tokenizer, corpus: str) -> list[int]:
    """Token ids of every document (blank-line separated), each followed by EOS, concatenated.

    EOS between documents teaches the model to stop after a conversation's `</answer>`, as the
    policy must during PPO (generation stops at EOS).
    """
    ids: list[int] = []
    for document in corpus.split("\n\n"):
        if document.strip():
            ids.extend(tokenizer(document.strip("\n"), add_special_tokens=False)["input_ids"])
            ids.append(tokenizer.eos_token_id)
    return ids


def random_windows(stream: torch.Tensor, count: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """`count` random `length`-token windows of a token stream (a 1-D tensor), drawn from `generator`."""
    import torch

    starts = torch.randint(0, stream.numel() - length - 1, (count,), generator=generator)
    return torch.stack([stream[s : s + length] for s in starts.tolist()])


def _learning_rate(step: int, spec: PretrainSpec) -> float:
    """Linear warmup, then cosine decay to `min_learning_rate`."""
    if step < spec.warmup_steps:
        return spec.learning_rate * (step + 1) / spec.warmup_steps
    progress = (step - spec.warmup_steps) / max(1, spec.steps - spec.warmup_steps)
    return spec.min_learning_rate + 0.5 * (spec.learning_rate - spec.min_learning_rate) * (
        1 + math.cos(math.pi * progress)
    )


@one_intra_op_thread()
def train_causal_lm(init_dir: Path, corpus: str, spec: PretrainSpec, out: Path) -> list[tuple[int, float]]:
    """Next-token training on random windows of the corpus stream; saves model + tokenizer to `out`.

    Bit-reproducible on one machine: same spec, same weights, whatever thread count the caller uses.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(init_dir))
    model = AutoModelForCausalLM.from_pretrained(str(init_dir), dtype=torch.float32)
    stream = torch.tensor(corpus_token_stream(tokenizer, corpus), dtype=torch.long)
    if stream.numel() <= spec.seq_len + 1:
        raise UserError(
            f"PretrainSpec.corpus: {spec.corpus} has only {stream.numel()} tokens; need more than seq_len="
            f"{spec.seq_len}"
        )
    logger.info(
        "pretraining %.2fM parameters on %d corpus tokens: %d steps x %d x %d tokens",
        sum(p.numel() for p in model.parameters()) / 1e6,
        stream.numel(),
        spec.steps,
        spec.batch_size,
        spec.seq_len,
    )
    generator = torch.Generator().manual_seed(spec.seed)
    torch.manual_seed(spec.seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=spec.learning_rate,
        betas=(0.9, 0.95),
    )
    model.train()
    losses: list[tuple[int, float]] = []
    running = None
    bar = tqdm(range(spec.steps), desc="pretrain", unit="step", mininterval=2.0)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, spec)
        batch = random_windows(stream, spec.batch_size, spec.seq_len, generator)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        value = loss.item()
        running = value if running is None else 0.95 * running + 0.05 * value
        if step % 25 == 0 or step == spec.steps - 1:
            losses.append((step, round(running, 4)))
            bar.set_postfix(loss=f"{running:.3f}")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return losses


def main(argv: Sequence[str] | None = None) -> PretrainResult:
    """Command line: pretrain (or reuse) the demo's base model and log where it is."""
    parser = argparse.ArgumentParser(
        prog="python -m demo.pretrain", description="Pretrain the offline demo's tiny base model."
    )
    parser.add_argument("--out", default="build/demo", help="Build folder (default: build/demo).")
    parser.add_argument(
        "--corpus", default=DEFAULT_CORPUS, help=f"Pretraining text (default: {DEFAULT_CORPUS})."
    )
    parser.add_argument("--steps", type=int, default=PretrainSpec.steps, help="Optimizer steps.")
    parser.add_argument(
        "--seed", type=int, default=0, help="Seed for the initial weights and the data order."
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec = PretrainSpec(
        tiny=demo_tiny_spec(args.corpus, seed=args.seed), corpus=args.corpus, steps=args.steps, seed=args.seed
    )
    result = pretrain_base(args.out, spec)
    logger.info("base model + tokenizer: %s", result.path)
    return result


if __name__ == "__main__":
    run_command(main)
