"""How many training steps the demo-size model needs to learn option lookup, isolated from everything else.

To answer a multiple-choice question a model must find the letter of the option whose text it has in
mind: an in-context lookup ("Key: tailor is option" -> the letter printed before " tailor" in the
list). `make demo`'s learning bar needs its tiny base model to have this skill after a few minutes of
CPU pretraining. This benchmark trains a freshly initialised model of the demo's shape on nothing but
answer keys and reports, over steps and seconds, how often it picks the right letter.

Each training row is one answer key over single-token words of the demo corpus:

    Options:
    A. tailor
    B. lime
    C. hive
    Key: hive is option C.
    Key: tailor is option A.
    ...

By default every option is asked once, so a row holds 2 to `--max_options` lookups and its last key
can be answered by elimination; `--keys_per_row 1` asks one, which only a lookup answers.
`--format prompt` asks the same one-key lookup in the demo's exact prompt: the R1 template over a
neutral question and the options of one knowledge-table relation (multi-token texts that share
prefixes, "Gram-positive cocci in clusters" / "Gram-positive cocci in chains"), answered
`<think> The answer is <text>. So the answer is option C. </think><answer>C</answer>`, the letter
after "option" scored: the lookup a demo base needs, at the length its rows have.
`--loss letter` puts the loss on the answer-bearing tokens only (the densest signal for this skill);
`--loss all` scores every token after the options list (the list itself is random, so it is never
scored).
The probe asks one key of a fresh `--probe_options`-option list (chance 1 / that) over words that also
appear in training, so their embeddings are trained and only the lookup itself is measured.

Long runs write their training state beside `--out` every `--save_every` steps; the same command
continues from it (a larger `--steps` extends a finished run).

With `--prose_batch N` each step also trains next-token prediction on N 256-token windows of the demo
corpus (the demo base's own pretraining data), so the run pretrains a candidate demo base: facts and
tags from the prose, the lookup from the drills. `--checkpoint_every` then saves the model as a Hugging
Face folder beside `--out` and scores it on the demo's ID test questions (`save_and_score_checkpoint`):
`lookup`, the probe above on the real questions (the gate of a demo base), greedy answers with the
gold text given and from the bare prompt, and fact recall (`fact_recall`).

    python -m demo.experiments.lookup_learning --steps 3000                   # 2-6 options, probe 5
    python -m demo.experiments.lookup_learning --steps 1500 --max_options 2 --probe_options 2  # control
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoTokenizer, GenerationConfig, Qwen2Config, Qwen2ForCausalLM

from bench.machine import machine_line
from demo import knowledge
from demo.experiments import fact_recall
from demo.pretrain import DEFAULT_CORPUS, corpus_token_stream, demo_tiny_spec, random_windows
from medrlvr_trl.generation import GenerationSettings
from medrlvr_trl.prompts import LETTERS, build_prompt
from medrlvr_trl.tiny import build_tiny

IGNORE = -100
NEUTRAL_QUESTION = "Which of the following is the answer?"  # asks no fact: only the lookup is trained
PROSE_WINDOW = 256  # tokens per corpus window, as the demo's pretraining
GOLD_GIVEN = " <think> The answer is {gold}."  # the fact is given: only its letter remains to find
GATE = 0.6  # a demo base must pass the lookup on the real questions at this accuracy


def single_token_words(tokenizer, corpus: str) -> list[str]:
    """Lower-case corpus words that the tokenizer encodes, with their leading space, as one token."""
    words = {w for w in corpus.split() if w.isalpha() and w.islower()}
    return sorted(w for w in words if len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) == 1)


def shared_prefix_length(input_ids: torch.Tensor) -> int:
    """How many leading tokens every row of the batch shares (always leaving at least one unshared)."""
    differs = (input_ids != input_ids[:1]).any(dim=0).tolist() + [True]
    return min(differs.index(True), input_ids.shape[1] - 1)


def scored_loss(model, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`model(input_ids=input_ids, labels=labels).loss`, computed for less.

    Prompt rows start with the same ~100 tokens (template, question, "Options:") and score one
    token, so this runs the shared prefix once and repeats its keys and values for every row, and
    applies the output layer only where a token is scored: the same loss and gradients up to float
    rounding (test), in about half the time on prompt rows.
    """
    common = shared_prefix_length(input_ids)
    if common:
        prefix = model.model(input_ids=input_ids[:1, :common], use_cache=True)
        cache = prefix.past_key_values
        cache.batch_repeat_interleave(input_ids.shape[0])
        rest = model.model(input_ids=input_ids[:, common:], past_key_values=cache, use_cache=True)
        shared = prefix.last_hidden_state.expand(input_ids.shape[0], -1, -1)
        hidden = torch.cat([shared, rest.last_hidden_state], dim=1)
    else:
        hidden = model.model(input_ids=input_ids).last_hidden_state
    targets = labels[:, 1:]
    rows, positions = (targets != IGNORE).nonzero(as_tuple=True)
    logits = model.lm_head(hidden[rows, positions])
    return torch.nn.functional.cross_entropy(logits.float(), targets[rows, positions])


def relation_objects() -> list[list[str]]:
    """The knowledge table's option texts, one list per relation (texts within one share prefixes)."""
    facts = knowledge.read_knowledge(knowledge.DEFAULT_KNOWLEDGE)
    return list(knowledge.objects_by_relation(facts).values())


def pad_rows(rows: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (token ids, labels) rows into one batch; padding is never scored."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id)
    labels = torch.full((len(rows), width), IGNORE)
    for i, (ids, row_labels) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(row_labels)] = torch.tensor(row_labels)
    return input_ids, labels


class LookupRows:
    """Training rows and probes for one row format, as token ids and labels (`IGNORE`: no loss).

    `key`: the options list, then every option asked once ("Key: hive is option C.").
    `scan`: the options list, a target word, then one line per option in order, the option's text
    copied after its letter and marked yes or no ("C. hive yes"), then "Answer: C". The scan splits
    the lookup into steps a small model may find easier: copy the text that follows a given letter
    (the keys are always the same few letter tokens), and find the letter of the line marked yes.
    `prompt`: one key in the demo's R1 prompt format (module docstring); `words` is then a list of
    option-text lists, one per relation, and a row's options come from one of them.
    """

    def __init__(
        self,
        tokenizer,
        words: list[str],
        *,
        row_format: str,
        max_options: int,
        loss: str,
        seed: int,
        keys_per_row: int = 0,
    ):
        self.tokenizer, self.words, self.row_format, self.loss = tokenizer, words, row_format, loss
        self.keys_per_row = keys_per_row  # 0: every option asked (the last one by elimination)
        self.options_cap = max_options  # rows have 2 to this many options; a curriculum raises it
        self.rng = random.Random(seed)
        self.letter_ids = [self._ids(" " + letter)[0] for letter in LETTERS[:max_options]]

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def options_header(self, words: list[str]) -> list[int]:
        return self._ids("Options:\n" + "".join(f"{LETTERS[i]}. {w}\n" for i, w in enumerate(words)))

    def _labels(self, ids: list[int], scored: list[bool]) -> list[int]:
        return [t if (keep or self.loss == "all") else IGNORE for t, keep in zip(ids, scored, strict=True)]

    def key_row(self, words: list[str]) -> tuple[list[int], list[int]]:
        ids = self.options_header(words)
        labels = [IGNORE] * len(ids)
        asked = len(words) if self.keys_per_row == 0 else min(self.keys_per_row, len(words))
        for index in self.rng.sample(range(len(words)), asked):
            question = self._ids(f"Key: {words[index]} is option")
            part = question + [self.letter_ids[index]] + self._ids(".\n")
            ids += part
            labels += self._labels(part, [i == len(question) for i in range(len(part))])
        return ids, labels

    def prompt_row(self, texts: list[str], gold: int) -> tuple[list[int], list[int], int]:
        """A prompt row, and the position that predicts the letter after "So the answer is option"."""
        prompt = self._ids(build_prompt(NEUTRAL_QUESTION, texts, template="r1"))
        lead = self._ids(f" <think> The answer is {texts[gold]}. So the answer is option")
        letter = LETTERS[gold]
        tail = [self.letter_ids[gold]] + self._ids(f". </think><answer>{letter}</answer>")
        tail.append(self.tokenizer.eos_token_id)
        answer = lead + tail
        labels = [IGNORE] * len(prompt) + self._labels(answer, [i == len(lead) for i in range(len(answer))])
        return prompt + answer, labels, len(prompt) + len(lead) - 1

    def _options(self, n: int) -> list[str]:
        pool = self.rng.choice(self.words) if self.row_format == "prompt" else self.words
        return self.rng.sample(pool, n)

    def scan_row(
        self, words: list[str], gold: int
    ) -> tuple[list[int], list[int], list[tuple[str, int, int]]]:
        """A scan row and its probe points: (what, position that predicts it, expected token)."""
        ids = self.options_header(words) + self._ids(f"Target: {words[gold]}\n")
        labels = [IGNORE] * len(ids)
        probes: list[tuple[str, int, int]] = []
        for index, word in enumerate(words):
            head, text = self._ids(f"{LETTERS[index]}."), self._ids(" " + word)[0]
            mark = self._ids(" yes" if index == gold else " no")[0]
            probes.append(("copy", len(ids) + len(head) - 1, text))
            part = head + [text, mark] + self._ids("\n")
            ids += part
            labels += self._labels(part, [False] * len(head) + [True, True, False])
        head = self._ids("Answer:")
        probes.append(("letter", len(ids) + len(head) - 1, self.letter_ids[gold]))
        ids += head + [self.letter_ids[gold]]
        labels += self._labels(head + [self.letter_ids[gold]], [False] * len(head) + [True])
        return ids, labels, probes

    def row(self) -> tuple[list[int], list[int]]:
        words = self._options(self.rng.randint(2, self.options_cap))
        if self.row_format == "key":
            return self.key_row(words)
        row = self.prompt_row if self.row_format == "prompt" else self.scan_row
        ids, labels, _ = row(words, self.rng.randrange(len(words)))
        return ids, labels

    def batch(self, size: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        return pad_rows([self.row() for _ in range(size)], pad_id)

    @torch.no_grad()
    def probe(self, model, n: int, n_options: int) -> dict[str, float]:
        """Accuracies on `n` fresh `n_options` lists: `letter` (the answer's letter) and, for scan
        rows, `copy` (an option's text after its letter). A key probe asks one key, so it cannot
        be answered by elimination; a scan probe is scored teacher-forced."""
        hits: dict[str, list[int]] = {}
        for _ in range(n):
            words = self._options(n_options)
            gold = self.rng.randrange(n_options)
            if self.row_format == "key":
                ids = self.options_header(words) + self._ids(f"Key: {words[gold]} is option")
                probes = [("letter", len(ids) - 1, self.letter_ids[gold])]
            elif self.row_format == "prompt":
                ids, _, position = self.prompt_row(words, gold)
                ids, probes = ids[: position + 1], [("letter", position, self.letter_ids[gold])]
            else:
                ids, _, probes = self.scan_row(words, gold)
            logits = model(torch.tensor([ids])).logits[0]
            for what, position, expected in probes:
                if what == "letter":  # the most likely of the listed letters
                    guess = self.letter_ids[logits[position, self.letter_ids[:n_options]].argmax().item()]
                else:
                    guess = logits[position].argmax().item()
                counts = hits.setdefault(what, [0, 0])
                counts[0] += int(guess == expected)
                counts[1] += 1
        return {what: right / total for what, (right, total) in sorted(hits.items())}


def tie_query_key_init(model) -> None:
    """Start every key projection equal to the query projection of its head group.

    Then q . k is largest between identical tokens, a prior towards the matching a lookup needs
    (the idea of "mimetic initialisation", Trockman & Kolter, ICML 2023); nothing stays tied.
    """
    config = model.config
    group = config.num_attention_heads // config.num_key_value_heads
    with torch.no_grad():
        for layer in model.model.layers:
            attention = layer.self_attn
            query = attention.q_proj.weight.view(config.num_attention_heads, attention.head_dim, -1)
            attention.k_proj.weight.copy_(query[::group].reshape_as(attention.k_proj.weight))


@torch.no_grad()
def real_question_lookup(model, tokenizer, rows: list[dict]) -> float:
    """The prompt-format probe on real questions: after a row's R1 prompt and `<think> The answer is
    <gold text>. So the answer is option`, how often the gold letter is the likeliest listed letter.
    Teacher-forced, so it measures the lookup alone, as the drills train it (loss on the letter)."""
    letter_ids = {
        letter: tokenizer(" " + letter, add_special_tokens=False)["input_ids"][0] for letter in LETTERS
    }
    hits = 0
    for row in rows:
        letters = [letter_ids[letter] for letter in row["options"]]
        prompt = build_prompt(row["question"], list(row["options"].values()), template="r1")
        text = prompt + GOLD_GIVEN.format(gold=row["answer"]) + " So the answer is option"
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        guess = model(ids).logits[0, -1, letters].argmax().item()
        hits += list(row["options"])[guess] == row["answer_idx"]
    return hits / len(rows)


def save_and_score_checkpoint(model, tokenizer, folder: Path) -> dict[str, float]:
    """Save the model as a Hugging Face folder (atomically) and score it as a demo base.

    `lookup`: `real_question_lookup` on the ID test questions, the gate (`GATE`); `gold_given`: greedy
    accuracy after the gold option's text is stated, where the model must also write the rest of the
    answer format itself, and `gold_given_format_valid`, the share of those completions the verifier
    can read; `cot` and `cot_names_gold`: greedy accuracy from the bare R1 prompt (the demo's base-CoT
    row) and the share of those completions that name the gold text; `fact_recall`: facts the test
    asks, ranked first among their question's options (`fact_recall.measure`, majority of phrasings).
    """
    from demo.experiments.scan_drills import score  # here: scan_drills imports this module

    staging = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(staging, folder)
    rows = [json.loads(line) for line in Path(fact_recall.TEST_FILE).read_text(encoding="utf-8").splitlines()]
    left = AutoTokenizer.from_pretrained(str(folder), padding_side="left")
    model.eval()
    greedy = GenerationSettings(max_new_tokens=64, batch_size=32)
    gate, cot = score(model, left, rows, GOLD_GIVEN, greedy), score(model, left, rows, "", greedy)
    asked = fact_recall.asked_facts(
        fact_recall.TEST_FILE, knowledge.read_knowledge(knowledge.DEFAULT_KNOWLEDGE)
    )
    recall = fact_recall.measure(model, tokenizer, asked)["overall"]
    model.train()
    return {
        "lookup": real_question_lookup(model, tokenizer, rows),
        "gold_given": gate["accuracy"],
        "gold_given_format_valid": gate["format_valid"],
        "cot": cot["accuracy"],
        "cot_names_gold": cot["names_gold"],
        "fact_recall": recall["ranked_facts"] / recall["facts"],
    }


# Options that do not change what a step computes: a rerun may differ in these and still continue.
RESUMABLE_CHANGES = ("steps", "out", "save_every", "checkpoint_every", "threads")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=3e-3)
    parser.add_argument("--hidden_size", type=int, default=128)
    parser.add_argument("--num_layers", type=int, default=2)
    parser.add_argument("--max_options", type=int, default=6)
    parser.add_argument("--probe_options", type=int, default=5)
    parser.add_argument("--format", choices=("key", "scan", "prompt"), default="key", help="see LookupRows")
    parser.add_argument("--loss", choices=("letter", "all"), default="letter")
    parser.add_argument(
        "--keys_per_row",
        type=int,
        default=0,
        help="key rows: ask this many options (0: all; with every item asked the last key is answered by elimination)",
    )
    parser.add_argument("--tied_qk_init", action="store_true", help="see tie_query_key_init")
    parser.add_argument(
        "--grow_options_every", type=int, default=0, help="curriculum: start at 2 options, +1 every N steps"
    )
    parser.add_argument(
        "--prose_batch",
        type=int,
        default=0,
        help=f"demo-corpus windows of {PROSE_WINDOW} tokens per step (0: none)",
    )
    parser.add_argument(
        "--checkpoint_every",
        type=int,
        default=0,
        help="save a model folder beside --out and score it on the demo test every N steps (a multiple of --probe_every)",
    )
    parser.add_argument("--probe_every", type=int, default=100)
    parser.add_argument("--probe_size", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="intra-op threads (the same run up to float rounding)"
    )
    parser.add_argument("--build_dir", default="build/bench/lookup")
    parser.add_argument("--out", default="runs/bench/lookup_learning.json")
    parser.add_argument(
        "--save_every",
        type=int,
        default=500,
        help="write the training state beside --out every N steps (0: never); a rerun continues from it",
    )
    args = parser.parse_args(argv)
    if not 2 <= args.probe_options <= args.max_options <= len(LETTERS):
        parser.error("need 2 <= --probe_options <= --max_options <= 26")
    if args.threads < 1 or min(args.prose_batch, args.checkpoint_every) < 0:
        parser.error("need --threads >= 1, --prose_batch >= 0 and --checkpoint_every >= 0")
    if args.checkpoint_every % args.probe_every:
        parser.error("--checkpoint_every must be a multiple of --probe_every")
    torch.set_num_threads(args.threads)

    spec = demo_tiny_spec()
    init_dir = build_tiny(args.build_dir, spec).policy
    tokenizer = AutoTokenizer.from_pretrained(str(init_dir))
    if args.format == "prompt":
        words = relation_objects()
    else:
        words = single_token_words(tokenizer, Path(DEFAULT_CORPUS).read_text(encoding="utf-8"))
    rows = LookupRows(
        tokenizer,
        words,
        row_format=args.format,
        max_options=args.max_options,
        loss=args.loss,
        seed=args.seed,
        keys_per_row=args.keys_per_row,
    )
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden_size,
        intermediate_size=3 * args.hidden_size,
        num_hidden_layers=args.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(args.seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig.from_pretrained(str(init_dir))
    if args.tied_qk_init:
        tie_query_key_init(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, betas=(0.9, 0.95))

    n_texts = sum(map(len, words)) if args.format == "prompt" else len(words)
    asked = {"key": f"{args.keys_per_row or 'all'} keys asked", "scan": "scanned", "prompt": "1 key asked"}[
        args.format
    ]
    print(machine_line())
    print(
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {n_texts} option texts, "
        f"{args.format} rows ({asked}), loss on {args.loss}, batch {args.batch_size}, lr {args.learning_rate}, tied q/k init "
        f"{args.tied_qk_init}, options grow every {args.grow_options_every or '-'} steps\n"
    )
    if args.prose_batch:
        stream = torch.tensor(
            corpus_token_stream(tokenizer, Path(DEFAULT_CORPUS).read_text(encoding="utf-8"))
        )
        prose_rng = torch.Generator().manual_seed(args.seed)
        print(
            f"plus {args.prose_batch} corpus windows of {PROSE_WINDOW} tokens a step ({stream.numel()} corpus tokens)"
        )
    probed = ("copy", "letter") if args.format == "scan" else ("letter",)
    print(f"probes on {args.probe_options}-option lists; letter chance {100 / args.probe_options:.0f}%\n")
    print("| step | seconds | loss | " + " | ".join(probed) + " |")
    print("| ---: | ---: | ---: |" + " ---: |" * len(probed))
    state_path = Path(args.out).with_suffix(".state.pt")
    settings = {k: v for k, v in vars(args).items() if k not in RESUMABLE_CHANGES}
    curve, first_step, elapsed, loss, prose_loss = [], 0, 0.0, float("nan"), float("nan")
    if state_path.is_file():
        state = torch.load(state_path, weights_only=False)
        # an option added after the state was written counts as its default
        stored = {k: state["settings"].get(k, parser.get_default(k)) for k in settings}
        if stored != settings:
            changed = sorted(k for k in settings if stored[k] != settings[k])
            parser.error(
                f"{state_path} holds a run with other {', '.join(changed)}; remove it or pick another --out"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        rows.rng.setstate(state["rows_rng"])
        torch.set_rng_state(state["torch_rng"])
        curve, first_step, elapsed, loss = state["curve"], state["step"], state["seconds"], state["loss"]
        if args.prose_batch:
            prose_rng.set_state(state["prose_rng"])
            prose_loss = state["prose_loss"]
        print(f"continuing from step {first_step} ({state_path})", flush=True)
    start = time.perf_counter() - elapsed
    for step in range(first_step, args.steps + 1):
        if step % args.probe_every == 0 and not (curve and curve[-1]["step"] == step):
            model.eval()
            accuracy = rows.probe(model, args.probe_size, args.probe_options)
            model.train()
            seconds = time.perf_counter() - start
            curve.append({"step": step, "seconds": round(seconds, 1), "loss": loss, "probe": accuracy})
            cells = " | ".join(f"{100 * accuracy[what]:.1f}%" for what in probed)
            if args.prose_batch:
                curve[-1]["prose_loss"] = prose_loss
                cells += f" (prose loss {prose_loss:.3f})"
            if args.checkpoint_every and step % args.checkpoint_every == 0 and step > 0:
                folder = Path(args.out).with_suffix("") / f"step-{step}"
                curve[-1]["checkpoint"] = save_and_score_checkpoint(model, tokenizer, folder)
                cells += " (checkpoint {}: lookup {lookup:.1%}, gold given {gold_given:.1%}, format-valid {gold_given_format_valid:.1%}, CoT {cot:.1%}, naming the gold {cot_names_gold:.1%}, facts {fact_recall:.1%})".format(
                    folder, **curve[-1]["checkpoint"]
                )
            print(f"| {step} | {seconds:.0f} | {loss:.3f} | {cells} |", flush=True)
        if step == args.steps:
            break
        if args.save_every and step % args.save_every == 0 and step > first_step:
            state = {"settings": settings, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "rows_rng": rows.rng.getstate(), "torch_rng": torch.get_rng_state(), "curve": curve,
                     "step": step, "seconds": time.perf_counter() - start, "loss": loss}  # fmt: skip
            if args.prose_batch:
                state.update(prose_rng=prose_rng.get_state(), prose_loss=prose_loss)
            state_path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(state, state_path.with_suffix(".tmp"))
            os.replace(state_path.with_suffix(".tmp"), state_path)  # never a half-written state
        if args.grow_options_every:
            rows.options_cap = min(args.max_options, 2 + step // args.grow_options_every)
        input_ids, labels = rows.batch(args.batch_size, tokenizer.pad_token_id)
        batch_loss = scored_loss(model, input_ids, labels)
        total = batch_loss
        if args.prose_batch:
            windows = random_windows(stream, args.prose_batch, PROSE_WINDOW, prose_rng)
            prose = model(input_ids=windows, labels=windows).loss
            total, prose_loss = batch_loss + prose, round(prose.item(), 4)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss = round(batch_loss.item(), 4)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "curve": curve}, indent=2) + "\n")


if __name__ == "__main__":
    main()
