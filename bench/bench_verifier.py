"""Verifier throughput: how many completions per second `verify` scores on one CPU core.

The verifier runs on every rollout on the trainer's main process, so it must stay far cheaper than
generation. The completion mix (fixed seed) resembles a run's samples: correct and wrong tagged
answers, format failures, long option-by-option reasoning (~8 KB) and answers leaked inside or
before <think>. Prints a markdown table header and one row, ready to paste into a report.

    python bench/bench_verifier.py --n 20000 --repeats 5
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from machine import machine_line

from medrlvr_trl.prompts import LETTERS
from medrlvr_trl.rewards import verify

WORDS = (
    "the patient presents with fever cough and dyspnea which suggests pneumonia rather than asthma".split()
)


def _prose(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def _completion(kind: str, gold: str, wrong: str, rng: random.Random) -> str:
    if kind == "correct":
        return f" <think>{_prose(rng, 60)}</think>\n<answer>{gold}. {_prose(rng, 3)}</answer>"
    if kind == "wrong":
        return f" <think>{_prose(rng, 60)}</think>\n<answer>The answer is {wrong}</answer>"
    if kind == "format_error":
        return rng.choice(
            [f" {gold}", f" {_prose(rng, 30)} The answer is {gold}.", f" <think>{_prose(rng, 20)}"]
        )
    if kind == "long":
        # ~1,300 words of option-by-option reasoning: about 8 KB, ~2,000 tokens.
        options = "\n".join(f"Option {letter}: {_prose(rng, 260)}" for letter in "ABCDE")
        return f" <think>{options}</think>\n<answer>{gold}</answer>"
    if kind == "leak_in_think":
        return f" <think>The correct answer is {gold}.</think><answer>{gold}</answer>"
    if kind == "leak_before_think":
        return f" {_prose(rng, 80)} So the answer is {gold}. <think></think><answer>({gold})</answer>"
    raise ValueError(f"unknown completion kind {kind!r}")


KINDS = ("correct", "wrong", "format_error", "long", "leak_in_think", "leak_before_think")
WEIGHTS = (0.30, 0.30, 0.15, 0.10, 0.10, 0.05)


def build_mix(n: int, seed: int) -> list[tuple[str, str, int]]:
    """`n` (completion, gold letter, option count) triples drawn with a fixed seed."""
    rng = random.Random(seed)
    mix = []
    for kind in rng.choices(KINDS, weights=WEIGHTS, k=n):
        num_options = rng.choice((4, 5, 10))
        gold, wrong = rng.sample(LETTERS[:num_options], 2)
        mix.append((_completion(kind, gold, wrong, rng), gold, num_options))
    return mix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="completions per repeat")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is reported")
    parser.add_argument("--mode", default="paper", choices=("paper", "strict"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    mix = build_mix(args.n, args.seed)
    mean_chars = sum(len(text) for text, _, _ in mix) / len(mix)
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for text, gold, num_options in mix:
            verify(text, gold, num_options, mode=args.mode)
        seconds.append(time.perf_counter() - start)
    rate = args.n / statistics.median(seconds)

    print(machine_line())
    print("| mode | n x repeats | mean chars | completions/s (median) | us/completion |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| {args.mode} | {args.n} x {args.repeats} | {mean_chars:.0f} | {rate:,.0f} | {1e6 / rate:.1f} |")


if __name__ == "__main__":
    main()
