"""The demo's MedQA- and MMLU-Pro-shaped questions, built from the knowledge table (see `demo.task`)."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from demo.knowledge import ID_FRAMES, RELATIONS, Fact, capitalise, objects_by_relation, render
from medrlvr_trl.prompts import LETTERS

logger = logging.getLogger(__name__)

ID_OPTIONS = 5  # MedQA's original files have 5 options (A-E)
ID_TEST_FRACTION = 0.2
ID_TEST_TEMPLATES_PER_FACT = 7
OOD_MIN_OPTIONS, OOD_MAX_OPTIONS = 6, 10  # MMLU-Pro has up to 10 options (A-J)
OOD_HEALTH_ROWS = 200


# --- questions -----------------------------------------------------------------------------------


def id_templates(relation: str) -> list[str]:
    """Every in-distribution stem template of a relation (frame x noun phrase), `{s}` unfilled."""
    templates = []
    for phrase in RELATIONS[relation].id_phrases:
        for frame in ID_FRAMES:
            templates.append(frame.format(np=phrase, NP=capitalise(phrase)))
    return templates


class PositionDeck:
    """Gold-answer positions drawn from shuffled decks, so every letter is gold equally often."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._decks: dict[int, list[int]] = {}

    def draw(self, n_options: int) -> int:
        deck = self._decks.setdefault(n_options, [])
        if not deck:
            deck.extend(range(n_options))
            self._rng.shuffle(deck)
        return deck.pop()


@dataclass(frozen=True)
class _Question:
    """A question before its options are drawn: stem, gold text and the pool of distractors."""

    stem: str
    gold: str
    pool: tuple[str, ...]
    relation: str


def _forward(fact: Fact, template: str, objects: dict[str, list[str]]) -> _Question:
    pool = tuple(o for o in objects[fact.relation] if o != fact.object)
    return _Question(render(template, fact), fact.object, pool, fact.relation)


def _reverse(fact: Fact, template: str, facts: Sequence[Fact]) -> _Question:
    pool = tuple(f.subject for f in facts if f.relation == fact.relation and f.object != fact.object)
    return _Question(render(template, fact), fact.subject, pool, fact.relation)


def _options(question: _Question, n_options: int, deck: PositionDeck, rng: random.Random) -> list[str]:
    distractors = rng.sample(question.pool, n_options - 1)
    position = deck.draw(n_options)
    return distractors[:position] + [question.gold] + distractors[position:]


def split_facts(
    facts: Sequence[Fact], rng: random.Random, test_fraction: float = ID_TEST_FRACTION
) -> tuple[list[Fact], list[Fact]]:
    """Split facts into (train, test) within each relation, keeping table order in each part."""
    test_keys: set[tuple[str, str]] = set()
    for relation in dict.fromkeys(f.relation for f in facts):
        members = [f for f in facts if f.relation == relation]
        n_test = max(1, round(test_fraction * len(members)))
        test_keys.update((f.relation, f.subject) for f in rng.sample(members, n_test))
    train = [f for f in facts if (f.relation, f.subject) not in test_keys]
    test = [f for f in facts if (f.relation, f.subject) in test_keys]
    return train, test


def build_medqa_rows(
    facts: Sequence[Fact], all_facts: Sequence[Fact], rng: random.Random, templates_per_fact: int | None
) -> list[dict[str, Any]]:
    """MedQA-schema rows for `facts`: every ID template per fact, or a seeded sample of them."""
    objects = objects_by_relation(all_facts)
    questions = []
    for fact in facts:
        templates = id_templates(fact.relation)
        if templates_per_fact is not None:
            templates = rng.sample(templates, min(templates_per_fact, len(templates)))
        questions += [_forward(fact, template, objects) for template in templates]
    rng.shuffle(questions)
    deck = PositionDeck(rng)
    rows = []
    for question in questions:
        options = _options(question, ID_OPTIONS, deck, rng)
        letter = LETTERS[options.index(question.gold)]
        rows.append(
            {
                "question": question.stem,
                "options": dict(zip(LETTERS, options, strict=False)),
                "answer": question.gold,
                "answer_idx": letter,
                "meta_info": f"demo:{question.relation}",
            }
        )
    return rows


def build_mmlu_rows(facts: Sequence[Fact], rng: random.Random) -> list[dict[str, Any]]:
    """MMLU-Pro-schema rows, 6 to 10 options each.

    Candidates are one vignette per fact (asking for the object) and one reversed question per
    distinct object (asking for a subject). `OOD_HEALTH_ROWS` health candidates are kept, plus half of
    the non-health ones: a few rows for the `category` filter to remove.
    """
    objects = objects_by_relation(facts)
    health, other = [], []
    for relation in objects:
        members = [f for f in facts if f.relation == relation]
        target = health if RELATIONS[relation].category == "health" else other
        for fact in members:
            target.append(_forward(fact, rng.choice(RELATIONS[relation].ood_forward), objects))
        for obj in objects[relation]:
            gold = rng.choice([f for f in members if f.object == obj])
            target.append(_reverse(gold, rng.choice(RELATIONS[relation].ood_reverse), facts))
    if len(health) < OOD_HEALTH_ROWS:
        raise ValueError(
            f"the knowledge table yields {len(health)} out-of-distribution health questions; "
            f"{OOD_HEALTH_ROWS} are needed. Add health facts."
        )
    chosen = rng.sample(health, OOD_HEALTH_ROWS)
    chosen += rng.sample(other, len(other) // 2)
    rng.shuffle(chosen)
    deck = PositionDeck(rng)
    rows = []
    for question_id, question in enumerate(chosen):
        most = min(OOD_MAX_OPTIONS, len(question.pool) + 1)
        options = _options(question, rng.randint(OOD_MIN_OPTIONS, most), deck, rng)
        index = options.index(question.gold)
        rows.append(
            {
                "question_id": question_id,
                "question": question.stem,
                "options": options,
                "answer": LETTERS[index],
                "answer_index": index,
                "cot_content": "",
                "category": RELATIONS[question.relation].category,
                "src": "demo",
            }
        )
    return rows


def check_unique_questions(rows: Sequence[dict[str, Any]], name: str) -> None:
    seen: set[str] = set()
    for number, row in enumerate(rows, start=1):
        if row["question"] in seen:
            raise ValueError(
                f"{name}, row {number}, field 'question': {row['question']!r} is asked twice. Two facts "
                "render to the same question; make their subjects or objects distinct."
            )
        seen.add(row["question"])
