"""Does option-by-option scanning, trained into the demo's base model, carry over to the medical questions?

`lookup_learning --format scan` shows a tiny model learning to scan a lettered list ("C. hive
yes") in minutes when trained on nothing else. This benchmark asks the next question for `make demo`'s
learning bar: pretrain a fresh model of the demo's exact shape (`pretrain.demo_tiny_spec`, tied q/k
init) on the demo corpus's fact and filler prose (plain next-token loss) together with scan drills:
non-medical quizzes from `demo.corpus` in the R1 template, answered as

    <think> The capital of Peru is Lima.
    A. Quito no
    B. Lima yes
    So the answer is option B. </think><answer>B</answer>

with the loss on the answer only (the prompt is never scored, the densest signal for the skill).
`--medical_words` swaps the made-up words of the in-context quizzes ("Anna named the puppy X") for
the demo's medical terms, so the drills copy the same multi-token texts the medical options hold,
without asking any medical fact. Then, on the 259 demo-MedQA test questions (5 options, chance 20%):

- `cot`: greedy, R1 prompt (the base model's CoT accuracy in `make demo`);
- `gold_given`: greedy after `<think> The answer is <gold option text>.`, i.e. the lookup alone;
- `sampled`: temperature 1, the pool of right answers PPO would have to amplify.

    python -m demo.experiments.scan_drills --steps 900                    # prose + drills
    python -m demo.experiments.scan_drills --steps 1200 --prose_batch 0   # drills alone
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
from tokenizers import AddedToken
from transformers import AutoModelForCausalLM, AutoTokenizer

from bench.machine import machine_line
from demo import corpus, knowledge
from demo.experiments.fact_recall import TEST_FILE
from demo.experiments.lookup_learning import IGNORE, pad_rows, tie_query_key_init
from demo.pretrain import DEFAULT_CORPUS, corpus_token_stream, demo_tiny_spec, random_windows
from demo.questions import PositionDeck
from medrlvr_trl.generation import GenerationSettings, generate_hf
from medrlvr_trl.prompts import LETTERS, build_prompt
from medrlvr_trl.rewards import verify
from medrlvr_trl.tiny import build_tiny

LIST_MARKERS = ("Options:", "Question:", "<think>", "is option")  # documents that are not prose


class ScanDrills:
    """R1-template quizzes on everyday topics, answered by stating the fact and scanning the options."""

    def __init__(self, tokenizer, medical_words: float, seed: int) -> None:
        self.tokenizer, self.medical_words = tokenizer, medical_words
        self.rng = random.Random(seed)
        self.deck = PositionDeck(self.rng)
        facts = knowledge.read_knowledge(knowledge.DEFAULT_KNOWLEDGE)
        self.terms = sorted({f.object for f in facts} | {f.subject for f in facts})

    def _item(self) -> corpus.QuizItem:
        item = self.rng.choice(corpus.QUIZZES)(self.rng)
        if item.context and self.rng.random() < self.medical_words:
            gold, *pool = self.rng.sample(self.terms, 12)
            swap = lambda text: text.replace(item.gold, gold)  # noqa: E731
            item = corpus.QuizItem(item.stem, gold, tuple(pool), swap(item.facts), swap(item.context))
        return item

    def row(self) -> tuple[list[int], list[int]]:
        item = self._item()
        options, letter = corpus.quiz_options(item, self.rng, self.deck)
        prompt = build_prompt(f"{item.context} {item.stem}".strip(), options, template="r1")
        scan = "".join(
            f"\n{LETTERS[i]}. {t} {'yes' if t == item.gold else 'no'}" for i, t in enumerate(options)
        )
        answer = f" <think> {item.facts}{scan}\nSo the answer is option {letter}. </think><answer>{letter}</answer>"
        prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = self.tokenizer(answer, add_special_tokens=False)["input_ids"] + [
            self.tokenizer.eos_token_id
        ]
        return prompt_ids + answer_ids, [IGNORE] * len(prompt_ids) + answer_ids

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return pad_rows([self.row() for _ in range(size)], self.tokenizer.pad_token_id)


def add_term_tokens(tokenizer, model) -> None:
    """One vocabulary entry per knowledge-table term (and its capitalised form), matched as a word."""
    facts = knowledge.read_knowledge(knowledge.DEFAULT_KNOWLEDGE)
    terms = sorted({f.object for f in facts} | {f.subject for f in facts})
    forms = sorted({t for term in terms for t in (term, term[:1].upper() + term[1:])})
    tokenizer.add_tokens([AddedToken(t, single_word=True, normalized=False) for t in forms])
    model.resize_token_embeddings(len(tokenizer))


def prose_stream(tokenizer) -> torch.Tensor:
    documents = Path(DEFAULT_CORPUS).read_text(encoding="utf-8").split("\n\n")
    prose = [d for d in documents if d.strip() and not any(marker in d for marker in LIST_MARKERS)]
    return torch.tensor(corpus_token_stream(tokenizer, "\n\n".join(prose)))


def score(model, tokenizer, rows: list[dict], prefix: str, settings: GenerationSettings) -> dict[str, float]:
    """Accuracy and format-valid rate of completions after `prefix` (a `<think>` start, or nothing),
    and `names_gold`, the share whose generated text contains the gold option's text: without such
    completions PPO has no right reasoning to reinforce, only lucky letters."""
    prompts = [build_prompt(r["question"], list(r["options"].values()), template="r1") for r in rows]
    given = [prefix.format(gold=r["answer"]) for r in rows]
    completions = generate_hf(
        model, tokenizer, [p + g for p, g in zip(prompts, given, strict=True)], settings
    )
    verdicts = [
        verify(g + c.text, r["answer_idx"], len(r["options"]))
        for r, g, c in zip(rows, given, completions, strict=True)
    ]
    return {
        "accuracy": sum(v.correct for v in verdicts) / len(rows),
        "format_valid": sum(v.format_ok for v in verdicts) / len(rows),
        "names_gold": sum(r["answer"] in c.text for r, c in zip(rows, completions, strict=True)) / len(rows),
        "example": given[0] + completions[0].text,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=900)
    parser.add_argument(
        "--prose_batch", type=int, default=8, help="256-token prose windows per step (0: none)"
    )
    parser.add_argument("--drill_batch", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=3e-3)
    parser.add_argument("--medical_words", type=float, default=0.0, help="share of in-context drills")
    parser.add_argument("--max_new_tokens", type=int, default=96)
    parser.add_argument(
        "--single_token_terms",
        action="store_true",
        help="add every knowledge-table term to the vocabulary as one token, so each copy is one token",
    )
    parser.add_argument("--probe_every", type=int, default=0, help="score gold_given on 64 questions")
    parser.add_argument("--save_to", default="", help="save the trained model and tokenizer here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--build_dir", default="build/bench/scan_drills")
    parser.add_argument("--out", default="runs/bench/scan_drills.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    init = build_tiny(args.build_dir, demo_tiny_spec()).policy
    tokenizer = AutoTokenizer.from_pretrained(str(init), padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(str(init), dtype=torch.float32)
    if args.single_token_terms:
        add_term_tokens(tokenizer, model)
    tie_query_key_init(model)
    drills, stream = ScanDrills(tokenizer, args.medical_words, args.seed), prose_stream(tokenizer)
    generator = torch.Generator().manual_seed(args.seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=args.learning_rate, betas=(0.9, 0.95), weight_decay=0.01
    )
    print(machine_line())
    print(
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {stream.numel()} prose tokens"
    )
    print(f"{args}\n\n| step | seconds | prose loss | drill loss |\n| ---: | ---: | ---: | ---: |")
    rows = [json.loads(line) for line in Path(TEST_FILE).read_text(encoding="utf-8").splitlines()]
    probe_settings = GenerationSettings(max_new_tokens=64, batch_size=32)
    start, curve = time.perf_counter(), []
    model.train()
    for step in range(args.steps):
        warmup = min(1.0, (step + 1) / 50)
        cosine = 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in optimizer.param_groups:
            group["lr"] = args.learning_rate * warmup * cosine
        input_ids, labels = drills.batch(args.drill_batch)
        drill_loss = model(input_ids=input_ids, labels=labels).loss
        loss, prose_loss = drill_loss, float("nan")
        if args.prose_batch:
            windows = random_windows(stream, args.prose_batch, 256, generator)
            prose = model(input_ids=windows, labels=windows).loss
            loss, prose_loss = loss + prose, prose.item()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 100 == 0 or step == args.steps - 1:
            seconds = time.perf_counter() - start
            curve.append(
                {"step": step, "seconds": round(seconds), "prose": prose_loss, "drill": drill_loss.item()}
            )
            print(f"| {step} | {seconds:.0f} | {prose_loss:.3f} | {drill_loss.item():.3f} |", flush=True)
        if args.probe_every and (step + 1) % args.probe_every == 0:
            model.eval()
            probe = score(model, tokenizer, rows[:64], " <think> The answer is {gold}.", probe_settings)
            model.train()
            curve.append({"step": step, "gold_given_64": probe["accuracy"]})
            print(
                f"probe at step {step + 1}: gold given {100 * probe['accuracy']:.1f}% (64 questions)",
                flush=True,
            )
    train_seconds = time.perf_counter() - start

    greedy = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=32)
    sampled = GenerationSettings(
        max_new_tokens=args.max_new_tokens, batch_size=32, do_sample=True, seed=args.seed
    )
    results = {
        "cot": score(model, tokenizer, rows, "", greedy),
        "gold_given": score(model, tokenizer, rows, " <think> The answer is {gold}.", greedy),
        "sampled": score(model, tokenizer, rows, "", sampled),
    }
    print(f"\ntrained {train_seconds:.0f} s; {len(rows)} ID test questions, chance 20%\n")
    for name, result in results.items():
        print(
            f"{name}: accuracy {100 * result['accuracy']:.1f}%, format-valid {100 * result['format_valid']:.1f}%"
        )
        print("  e.g. " + result["example"].replace("\n", " / "))
    if args.save_to:
        model.save_pretrained(args.save_to)
        tokenizer.save_pretrained(args.save_to)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    record = {"args": vars(args), "train_seconds": round(train_seconds), "curve": curve, "results": results}
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
