"""A multiple-choice task that RL can solve by construction: the sanity check of every trainer.

The demo's medical task needs an option lookup its tiny base model lacks, so a trainer that works and
one that is broken both leave it at chance. This task removes the lookup: each question names a
hospital ward by a colour (the *cue*), and the colour alone fixes the gold letter (red -> A, blue -> B,
...). Option texts are drawn at random, so nothing but the cue predicts the answer. It is a contextual
bandit written as MCQA, going through the real prompt template, verifier and trainers unchanged.
Held-out questions are drawn separately with the same cues (stems and option lists come from small
pools, so a few recur; the answer depends on the cue alone): a policy that learned cue -> letter
answers them, one that learned a letter prior scores 1 / K. The cues are as many as the
options and each is gold equally often, so a collapsed policy scores exactly 1 / K; `shuffled_gold`
moves the gold letters across the training questions (same counts, no cue -> letter map): the control.

Why it is learnable, and the base it starts from (docs/sanity.md has the measurements):
- the cue is salient: single-token colour words the base knows, `CUE_REPEATS` times in a short stem
  (multi-token ward names such as "cardiology", split into shared pieces like "olog", were not learned);
- the base has met the answer format with no preference among letters: `sanity_base` continues the
  demo's base for `WARMUP.steps` steps on R1 conversations over the *training* questions whose letters
  are drawn at random (so they carry no cue -> letter information) and whose `<think>` restates the
  ward. From the demo's base itself, whose letter prior is peaked (B 5%, A 30% of sampled answers),
  every trainer collapsed onto its two or three most likely letters before the other cues were found.

    python -m demo.sanity --out data/sanity          # the task's files (committed)
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from demo.pretrain import FINGERPRINT_FILE, PretrainSpec, train_causal_lm
from medrlvr_trl.build_cache import build_once, fingerprint_of, package_versions
from medrlvr_trl.prompts import LETTERS, build_prompt

logger = logging.getLogger(__name__)

CUES: tuple[str, ...] = ("red", "blue", "green", "yellow", "purple")
CUE_REPEATS = 12
TRAIN_ROWS = 1000
TEST_ROWS = 200
SEED = 1234
SANITY_BASE_DIR = "sanity-base"
# The format warm-up of the sanity base: short, since the conversations are nearly identical in form.
WARMUP = PretrainSpec(
    corpus="data/sanity/train.jsonl", steps=150, batch_size=8, learning_rate=1e-3, warmup_steps=10
)

_AGES = tuple(range(18, 90))
_SEXES = ("man", "woman")
_COMPLAINTS = (
    "fatigue",
    "fever",
    "a cough",
    "a headache",
    "back pain",
    "nausea",
    "a rash",
    "dizziness",
    "chest pain",
    "weight loss",
    "joint pain",
    "a sore throat",
)
_DRUGS = (
    "aspirin",
    "heparin",
    "warfarin",
    "metformin",
    "insulin",
    "atenolol",
    "lisinopril",
    "furosemide",
    "amoxicillin",
    "vancomycin",
    "prednisone",
    "omeprazole",
    "simvastatin",
    "digoxin",
    "morphine",
    "naloxone",
    "lithium",
    "haloperidol",
    "levothyroxine",
    "doxycycline",
)


def question_text(cue: str, age: int, sex: str, complaint: str) -> str:
    """A short stem that names the cue `CUE_REPEATS` times (the cue's salience: see the module doc)."""
    marks = ", ".join([cue] * (CUE_REPEATS - 2))
    return (
        f"A {age}-year-old {sex} on the {cue} ward has {complaint}. "
        f"Ward tags: {marks}. Which drug does the {cue} ward give?"
    )


def build_rows(n_rows: int, rng: random.Random) -> list[dict[str, Any]]:
    """`n_rows` MedQA-schema rows; cues (and so gold letters) cycle, so each is gold equally often."""
    n_options = len(CUES)
    rows = []
    for i in range(n_rows):
        cue_index = i % n_options
        options = rng.sample(_DRUGS, n_options)
        letter = LETTERS[cue_index]
        stem = question_text(CUES[cue_index], rng.choice(_AGES), rng.choice(_SEXES), rng.choice(_COMPLAINTS))
        rows.append(
            {
                "question": stem,
                "options": dict(zip(LETTERS, options, strict=False)),
                "answer": options[cue_index],
                "answer_idx": letter,
                "meta_info": f"sanity:{CUES[cue_index]}",
            }
        )
    rng.shuffle(rows)
    return rows


def shuffled_gold(rows: Sequence[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """The control's training rows: gold letters permuted across questions (same counts, no cue map)."""
    letters = [row["answer_idx"] for row in rows]
    rng.shuffle(letters)
    control = []
    for row, letter in zip(rows, letters, strict=True):
        control.append({**row, "answer_idx": letter, "answer": row["options"][letter]})
    return control


def write_task(out: str | Path, seed: int = SEED) -> dict[str, Path]:
    """Write train / test / control-train JSONL files under `out`; the same seed gives the same bytes."""
    rng = random.Random(seed)
    out = Path(out)
    train = build_rows(TRAIN_ROWS, rng)
    test = build_rows(TEST_ROWS, rng)
    files = {
        "train": (out / "train.jsonl", train),
        "test": (out / "test.jsonl", test),
        "control": (out / "control" / "train.jsonl", shuffled_gold(train, rng)),
    }
    for path, rows in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return {name: path for name, (path, _) in files.items()}


def warmup_corpus(rows: Sequence[dict[str, Any]], rng: random.Random) -> str:
    """R1 conversations over `rows` with a uniformly random answer letter each (blank-line separated):
    the format and the cue in `<think>`, but no cue -> letter information."""
    documents = []
    for row in rows:
        options = list(row["options"].values())
        cue = row["meta_info"].split(":", 1)[1]
        letter = rng.choice(LETTERS[: len(options)])
        documents.append(
            build_prompt(row["question"], options)
            + f" <think> The patient is on the {cue} ward. So the answer is option {letter}. </think>"
            + f"<answer>{letter}</answer>"
        )
    return "\n\n".join(documents)


def sanity_base(build_dir: str | Path, demo_base: str | Path, train_file: str | Path) -> Path:
    """The demo's base after the format warm-up (`WARMUP`), cached in `build_dir/sanity-base` by a
    fingerprint of the demo base, the warm-up corpus, the spec, versions and this module."""
    demo_base, target = Path(demo_base), Path(build_dir) / SANITY_BASE_DIR
    rows = [json.loads(line) for line in Path(train_file).read_text(encoding="utf-8").splitlines()]
    corpus = warmup_corpus(rows, random.Random(WARMUP.seed))
    payload = {
        "demo_base": json.loads((demo_base / FINGERPRINT_FILE).read_text())["fingerprint"],
        "corpus": hashlib.sha256(corpus.encode("utf-8")).hexdigest(),
        "spec": {k: v for k, v in dataclasses.asdict(WARMUP).items() if k not in ("tiny", "corpus")},
        "builder": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        "versions": package_versions(),
    }
    fingerprint = fingerprint_of(payload)

    def build(staging: Path) -> dict:
        losses = train_causal_lm(demo_base, corpus, WARMUP, staging)
        return {"final_loss": losses[-1][1], "loss_curve": losses}

    record, rebuilt = build_once(target, fingerprint, build, record_file=FINGERPRINT_FILE, what="sanity base")
    if rebuilt:
        logger.info("sanity base in %s (warm-up loss %.3f)", target, record["final_loss"])
    else:
        logger.info("sanity base in %s is up to date (cached)", target)
    return target


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/sanity")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    for name, path in write_task(args.out, args.seed).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
