"""Generate the bundled synthetic medical task that the offline demo trains and evaluates on.

The real Med-RLVR setting is a base model that learned medicine from web text, then is tuned on
MedQA and tested on MedQA (in distribution) and MMLU-Pro health (out of distribution). The demo
mimics that on a laptop: a small knowledge table (`data/demo/knowledge.tsv`, one fact per row as
relation, subject, object) becomes

- `corpus.txt`: the pretraining text of the tiny base model. Every fact is stated in several prose
  phrasings (forward and reversed), mixed with everyday filler prose and a small share of
  conversations on unrelated toy tasks (see "Tag format" below). Documents are separated by one
  blank line; no document contains a blank line.
- `medqa/{train,test}.jsonl`: in-distribution questions in MedQA's schema, 5 options each, asked
  with a fixed set of forward templates ("What is the first-line drug for X?").
- `mmlu_pro_health/test.jsonl`: out-of-distribution questions in MMLU-Pro's schema, 6 to 10 options,
  asked with templates the in-distribution set never uses: clinical-vignette style and reversed
  questions ("For which condition is X the first-line drug?"). A few rows have category "biology"
  (cell-biology facts) so that the `category="health"` filter has something to remove.
- `README.md`: what each file is, sizes and chance rates, rewritten on every run.

Split. MedQA train and test are split by fact: a fact's questions are all in train or all in test,
so a test question never repeats a training question, and answering it needs knowledge from
pretraining rather than from the training questions. The OOD file draws on every health fact
(train and test facts alike): its shift is in phrasing, question direction and option count.

Tag format and option lookup. The base model never sees the medical task in the R1 template, but
it has seen the template and lettered options: a few hundred corpus documents are conversations
rendered with `medrlvr_trl.prompts.build_prompt` (the paper's R1 template, lettered options) on toy
tasks and everyday quizzes (which number is largest, the capital of a country, the sound an animal
makes, a made-up name stated just before the question, ...), answered as
" <think> reasoning </think><answer>B</answer>"; more are the same quizzes as plain text and answer
keys ("Stibasa is option B."). This plays the part of the web text through which a real base model
has met such formats and learned to find an option's letter from its text: when PPO starts, the
format is familiar and the medical task in it is new. Because the conversations use `build_prompt`,
a change to the prompt template changes the corpus; the regeneration test then asks for the data to
be rebuilt.

Everything is seeded: the same table and seed give byte-identical files.

    python -m demo.task --out data/demo [--knowledge data/demo/knowledge.tsv] [--seed 1234]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from demo.corpus import (
    MATCHING_EXERCISES,
    MAX_QUIZ_OPTIONS,
    PROSE_PASSES,
    QUIZ_CONVERSATIONS,
    QUIZ_PAGES,
    TOY_CONVERSATIONS,
    build_corpus,
)
from demo.knowledge import DEFAULT_KNOWLEDGE, ID_FRAMES, RELATIONS, Fact, read_knowledge
from demo.questions import (
    ID_OPTIONS,
    ID_TEST_FRACTION,
    ID_TEST_TEMPLATES_PER_FACT,
    build_medqa_rows,
    build_mmlu_rows,
    check_unique_questions,
    split_facts,
)
from medrlvr_trl.user_errors import run_command

logger = logging.getLogger(__name__)

DEFAULT_SEED = 1234

CORPUS_FILE = "corpus.txt"
MEDQA_TRAIN_FILE = "medqa/train.jsonl"
MEDQA_TEST_FILE = "medqa/test.jsonl"
MMLU_TEST_FILE = "mmlu_pro_health/test.jsonl"
README_FILE = "README.md"
GENERATED_FILES = (CORPUS_FILE, MEDQA_TRAIN_FILE, MEDQA_TEST_FILE, MMLU_TEST_FILE, README_FILE)


# --- writing -------------------------------------------------------------------------------------


def chance_accuracy(rows: Sequence[dict[str, Any]]) -> float:
    """Expected accuracy of a uniform random guess: the mean of 1 / (number of options)."""
    return statistics.fmean(1 / len(row["options"]) for row in rows)


def _jsonl(rows: Sequence[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _readme(seed: int, facts: Sequence[Fact], splits: dict[str, list[dict[str, Any]]], corpus: str) -> str:
    train, test, ood = splits[MEDQA_TRAIN_FILE], splits[MEDQA_TEST_FILE], splits[MMLU_TEST_FILE]
    health = [row for row in ood if row["category"] == "health"]
    n_other = len(ood) - len(health)
    counts = sorted({len(row["options"]) for row in health})
    per_relation = {relation: 0 for relation in dict.fromkeys(f.relation for f in facts)}
    for fact in facts:
        per_relation[fact.relation] += 1
    relations = ", ".join(f"{relation} ({n})" for relation, n in per_relation.items())
    n_docs = corpus.count("\n\n") + 1
    n_phrasings = len(RELATIONS["first_line_drug"].corpus)
    table = [
        "| file | what it is | size | chance accuracy |",
        "| --- | --- | --- | --- |",
        f"| `knowledge.tsv` | the facts (relation, subject, object), written by hand | {len(facts)} rows | |",
        f"| `{CORPUS_FILE}` | pretraining text for the tiny base model | {len(corpus.encode())} bytes, "
        f"{n_docs} documents | |",
        f"| `{MEDQA_TRAIN_FILE}` | in-distribution training questions (MedQA schema) | {len(train)} rows "
        f"| {chance_accuracy(train):.1%} |",
        f"| `{MEDQA_TEST_FILE}` | in-distribution test questions (MedQA schema) | {len(test)} rows "
        f"| {chance_accuracy(test):.1%} |",
        f"| `{MMLU_TEST_FILE}` | out-of-distribution test (MMLU-Pro schema) | {len(health)} health + "
        f"{n_other} biology rows | {chance_accuracy(health):.1%} (health rows) |",
    ]
    return f"""# Demo task data (synthetic, for the offline demo)

Generated by `demo/task.py` from `knowledge.tsv`; do not edit the generated files by hand.
Regenerate them (byte for byte; `tests/test_demo_task.py` checks it) with:

    python -m demo.task --out data/demo --seed {seed}

{chr(10).join(table)}

Chance accuracy is the mean of 1 / (number of options) over a file's rows.
Facts per relation: {relations}.

- MedQA files: `question`, `options` (letter -> text, {ID_OPTIONS} options), `answer` (option text),
  `answer_idx` (letter), `meta_info` (`demo:<relation>`). Stems come from {len(ID_FRAMES)} frames times 2
  noun phrases per relation ("What is the first-line drug for X?"); distractors are other objects of
  the same relation. Train and test are split by fact ({ID_TEST_FRACTION:.0%} of each relation's facts
  are test facts), so no test question appears in train and test facts are known only from the
  corpus. Cell-biology facts are not asked here.
- MMLU-Pro file: `question_id`, `question`, `options` (list of {counts[0]} to {counts[-1]} texts), `answer`
  (letter), `answer_index`, `cot_content` (empty), `category`, `src` (`demo`). Its phrasings never
  occur in the MedQA files: clinical vignettes that ask for the object, and reversed questions that
  ask for the subject. It draws on all health facts, train and test alike. The {n_other} rows with
  category `biology` are there so that loading with `category="health"` has rows to remove.
- Corpus: every fact in {n_phrasings} prose phrasings, {PROSE_PASSES} times each, everyday filler prose,
  and lettered-option documents on everyday, non-medical topics (capitals, colours, animal sounds,
  opposites, number words, made-up names, ...; 2 to {MAX_QUIZ_OPTIONS} options, gold letters balanced):
  {TOY_CONVERSATIONS + QUIZ_CONVERSATIONS} conversations in the R1 prompt template
  (`<think>`/`<answer>` tags), {QUIZ_PAGES} plain-text quizzes ("Question: ... Answer: C") and {MATCHING_EXERCISES} answer keys
  ("X is option C."). So the base model has met the format and the option-lookup skill, but never
  the medical task. Documents are separated by one blank line.
- Gold letters are balanced across option positions.
"""


def generate(
    out_dir: str | Path, knowledge: str | Path = DEFAULT_KNOWLEDGE, seed: int = DEFAULT_SEED
) -> list[Path]:
    """Read the knowledge table, build every demo file and write them under `out_dir`.

    Returns the written paths. Deterministic: one seeded generator per output, in a fixed order.
    """
    facts = read_knowledge(knowledge)
    out = Path(out_dir)
    asked = [f for f in facts if RELATIONS[f.relation].id_phrases]
    train_facts, test_facts = split_facts(asked, random.Random(f"{seed}:split"))
    splits = {
        MEDQA_TRAIN_FILE: build_medqa_rows(train_facts, asked, random.Random(f"{seed}:train"), None),
        MEDQA_TEST_FILE: build_medqa_rows(
            test_facts, asked, random.Random(f"{seed}:test"), ID_TEST_TEMPLATES_PER_FACT
        ),
        MMLU_TEST_FILE: build_mmlu_rows(facts, random.Random(f"{seed}:ood")),
    }
    for name, rows in splits.items():
        check_unique_questions(rows, name)
    check_unique_questions(splits[MEDQA_TRAIN_FILE] + splits[MEDQA_TEST_FILE], "medqa train + test")
    corpus = build_corpus(facts, random.Random(f"{seed}:corpus"))
    texts = {name: _jsonl(rows) for name, rows in splits.items()}
    texts[CORPUS_FILE] = corpus
    texts[README_FILE] = _readme(seed, facts, splits, corpus)
    written = []
    for name in GENERATED_FILES:
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(texts[name], encoding="utf-8", newline="\n")
        logger.info("wrote %s (%d bytes)", path, len(texts[name].encode()))
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: `python -m demo.task --out data/demo`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--out", type=Path, default=Path("data/demo"), help="output folder")
    parser.add_argument("--knowledge", type=Path, default=DEFAULT_KNOWLEDGE, help="knowledge table (TSV)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    generate(args.out, args.knowledge, args.seed)


if __name__ == "__main__":
    run_command(main)
