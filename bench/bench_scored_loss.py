"""Training-step time of the lookup benchmark: the model's own loss vs `scored_loss`.

`demo.experiments.lookup_learning` trains on rows that share a long prompt prefix and score one
token. `scored_loss` runs the shared prefix once and the output layer only at scored tokens; its
tests show it is the same loss with the same gradients. This script measures what it saves: the
median time of one forward + backward pass on the same batch, both ways, in one process on one thread
(the demo's shape: 4 layers, hidden 128). Prints a markdown table.

    python bench/bench_scored_loss.py --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from machine import machine_line
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's demo package

from demo.experiments.lookup_learning import (
    LookupRows,
    relation_objects,
    scored_loss,
    shared_prefix_length,
    single_token_words,
)
from demo.pretrain import DEFAULT_CORPUS, demo_tiny_spec
from medrlvr_trl.tiny import build_tiny


def model_loss(model, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return model(input_ids=input_ids, labels=labels).loss


def step_seconds(loss_of, model, input_ids: torch.Tensor, labels: torch.Tensor, repeats: int) -> float:
    """Median seconds of one forward + backward pass of `loss_of(model, input_ids, labels)`."""
    times = []
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        loss_of(model, input_ids, labels).backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--batch", type=int, default=128, help="the largest batch; prompt rows also at a quarter"
    )
    parser.add_argument("--build_dir", default="build/bench/lookup")
    args = parser.parse_args()
    torch.set_num_threads(1)
    policy = build_tiny(args.build_dir, demo_tiny_spec()).policy  # the demo's shape, randomly initialised
    tokenizer = AutoTokenizer.from_pretrained(str(policy))
    model = AutoModelForCausalLM.from_pretrained(str(policy), dtype=torch.float32)
    pools = {
        "prompt": relation_objects(),
        "key": single_token_words(tokenizer, Path(DEFAULT_CORPUS).read_text(encoding="utf-8")),
    }
    print(machine_line())
    print("| rows | batch | tokens (shared prefix) | model loss s | scored_loss s | speed-up |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row_format, batch_size in (
        ("prompt", max(1, args.batch // 4)),
        ("prompt", args.batch),
        ("key", args.batch),
    ):
        rows = LookupRows(
            tokenizer,
            pools[row_format],
            row_format=row_format,
            max_options=6,
            loss="letter",
            seed=0,
            keys_per_row=1,
        )
        input_ids, labels = rows.batch(batch_size, tokenizer.pad_token_id)
        full = step_seconds(model_loss, model, input_ids, labels, args.repeats)
        fast = step_seconds(scored_loss, model, input_ids, labels, args.repeats)
        print(
            f"| {row_format} | {batch_size} | {input_ids.shape[1]} ({shared_prefix_length(input_ids)}) | "
            f"{full:.3f} | {fast:.3f} | {full / fast:.2f}x |"
        )


if __name__ == "__main__":
    main()
