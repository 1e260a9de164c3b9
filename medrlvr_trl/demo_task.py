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

    python -m medrlvr_trl.demo_task --out data/demo [--knowledge data/demo/knowledge.tsv] [--seed 1234]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medrlvr_trl.prompts import LETTERS, build_prompt
from medrlvr_trl.user_errors import run_command

logger = logging.getLogger(__name__)

DEFAULT_SEED = 1234
DEFAULT_KNOWLEDGE = Path("data/demo/knowledge.tsv")
KNOWLEDGE_HEADER = ("relation", "subject", "object")
# The corpus check splits prose into sentences on these, so facts must not contain them.
SENTENCE_ENDINGS = (".", "!", "?")
MIN_DISTINCT_OBJECTS = 6  # 5 options in distribution, at least 6 out of distribution

ID_OPTIONS = 5  # MedQA's original files have 5 options (A-E)
ID_TEST_FRACTION = 0.2
ID_TEST_TEMPLATES_PER_FACT = 7
OOD_MIN_OPTIONS, OOD_MAX_OPTIONS = 6, 10  # MMLU-Pro has up to 10 options (A-J)
OOD_HEALTH_ROWS = 200
PROSE_PASSES = 2  # each (fact, phrasing) sentence appears this many times in the corpus
FILLER_DOCUMENTS = 60
TOY_CONVERSATIONS = 60
QUIZ_CONVERSATIONS = 300  # R1-template quizzes on everyday knowledge (lettered options)
QUIZ_PAGES = 300  # the same kind of quizzes as plain text ("Question: ... Answer: C")
MATCHING_EXERCISES = 1800  # answer keys: every option of a list found again by its letter
MIN_QUIZ_OPTIONS = 2
MAX_QUIZ_OPTIONS = 10

CORPUS_FILE = "corpus.txt"
MEDQA_TRAIN_FILE = "medqa/train.jsonl"
MEDQA_TEST_FILE = "medqa/test.jsonl"
MMLU_TEST_FILE = "mmlu_pro_health/test.jsonl"
README_FILE = "README.md"
GENERATED_FILES = (CORPUS_FILE, MEDQA_TRAIN_FILE, MEDQA_TEST_FILE, MMLU_TEST_FILE, README_FILE)


# --- relations: the text every fact is rendered with ---------------------------------------------


@dataclass(frozen=True)
class RelationText:
    """How facts of one relation are written. Placeholders: {s}/{o} subject/object, {S}/{O} the
    same with the first letter capitalised.

    `corpus` holds prose sentences; `id_phrases` noun phrases that `ID_FRAMES` turn into
    in-distribution stems (empty: the relation is not asked in distribution); `ood_forward` and
    `ood_reverse` out-of-distribution stems that ask for the object and for the subject.
    """

    category: str
    corpus: tuple[str, ...]
    id_phrases: tuple[str, ...]
    ood_forward: tuple[str, ...]
    ood_reverse: tuple[str, ...]


ID_FRAMES = (
    "What is {np}?",
    "Which of the following is {np}?",
    "Identify {np}.",
    "Choose {np}.",
    "Name {np}.",
    "{NP} is which of the following?",
)

RELATIONS: dict[str, RelationText] = {
    "first_line_drug": RelationText(
        category="health",
        corpus=(
            "The first-line drug for {s} is {o}.",
            "Doctors usually start {o} when a patient has {s}.",
            "For {s}, the treatment of first choice is {o}.",
            "In most guidelines, {s} is treated first with {o}.",
            "{O} is the first-line drug for {s}.",
            "{O} is the usual first choice in {s}.",
        ),
        id_phrases=("the first-line drug for {s}", "the drug of first choice for treating {s}"),
        ood_forward=(
            "A patient is diagnosed with {s}. Which medication is usually started first?",
            "After a careful workup, a clinician confirms {s}. Which drug is the preferred first treatment?",
        ),
        ood_reverse=(
            "For which of the following conditions is {o} the first-line drug?",
            "{O} is the drug of first choice in which of the following conditions?",
        ),
    ),
    "gram_morphology": RelationText(
        category="health",
        corpus=(
            "{S} appears as {o} on Gram stain.",
            "On a Gram-stained smear, {s} is seen as {o}.",
            "Under the microscope, {s} shows {o}.",
            "The Gram stain of {s} reveals {o}.",
            "{O} on a Gram stain suggest {s}.",
            "Microbiologists describe {s} as {o}.",
        ),
        id_phrases=("the Gram stain appearance of {s}", "the appearance of {s} on a Gram-stained smear"),
        ood_forward=(
            "Cultures from a febrile patient grow {s}. How does this organism look on a Gram-stained smear?",
            "A laboratory identifies {s} in a clinical sample. What will its Gram stain most likely show?",
        ),
        ood_reverse=(
            "Which of the following organisms appears as {o} on Gram stain?",
            "A Gram-stained smear from a patient shows {o}. Which organism is the most likely cause?",
        ),
    ),
    "drug_class": RelationText(
        category="health",
        corpus=(
            "{S} belongs to the {o} class.",
            "{S} is classified as a drug of the {o} class.",
            "Pharmacologists group {s} with the {o} drugs.",
            "The drug {s} is one of the {o} agents.",
            "The {o} class includes {s}.",
            "One example of the {o} class is {s}.",
        ),
        id_phrases=("the drug class of {s}", "the pharmacological class that includes {s}"),
        ood_forward=(
            "A patient's medication list includes {s}. To which drug class does this medication belong?",
            "A pharmacist reviews a prescription for {s}. Which class of drugs is it from?",
        ),
        ood_reverse=(
            "Which of the following drugs belongs to the {o} class?",
            "A clinician wants to prescribe a member of the {o} class. Which drug should be chosen?",
        ),
    ),
    "deficiency_sign": RelationText(
        category="health",
        corpus=(
            "The classic sign of {s} is {o}.",
            "{S} typically causes {o}.",
            "Patients with {s} often develop {o}.",
            "A hallmark of {s} is {o}.",
            "When a patient shows {o}, think of {s}.",
            "Clinicians link {o} with {s}.",
        ),
        id_phrases=("the classic sign of {s}", "the hallmark clinical finding in {s}"),
        ood_forward=(
            "A patient with a poor diet is found to have {s}. Which finding is most characteristic?",
            "Blood tests confirm {s} in a malnourished patient. Which clinical feature is typical?",
        ),
        ood_reverse=(
            "A patient presents with {o}. Which deficiency is the most likely cause?",
            "Which nutritional deficiency classically causes {o}?",
        ),
    ),
    "antidote": RelationText(
        category="health",
        corpus=(
            "The antidote for {s} is {o}.",
            "{S} is treated with {o} as the specific antidote.",
            "In {s}, the specific antidote is {o}.",
            "Emergency teams give {o} for {s}.",
            "{O} is the antidote used in {s}.",
            "{O} is kept in emergency departments for {s}.",
        ),
        id_phrases=("the antidote for {s}", "the specific antidote used in {s}"),
        ood_forward=(
            "A patient arrives in the emergency department with {s}. Which agent is the specific antidote?",
            "Poison control is called about {s}. Which antidote should be recommended?",
        ),
        ood_reverse=(
            "{O} is the antidote for which of the following?",
            "An emergency physician orders {o}. Which poisoning or overdose is being treated?",
        ),
    ),
    "lab_finding": RelationText(
        category="health",
        corpus=(
            "The key laboratory finding in {s} is {o}.",
            "Laboratory tests in {s} typically show {o}.",
            "Blood or urine testing in {s} commonly reveals {o}.",
            "The diagnosis of {s} is supported by {o}.",
            "{O} is the characteristic lab result in {s}.",
            "Finding {o} should raise suspicion of {s}.",
        ),
        id_phrases=("the key laboratory finding in {s}", "the characteristic lab result in {s}"),
        ood_forward=(
            "A clinician suspects {s}. Which laboratory result would best support the diagnosis?",
            "A patient is being evaluated for {s}. Which test result is most characteristic?",
        ),
        ood_reverse=(
            "Laboratory testing shows {o}. Which diagnosis is most likely?",
            "{O} is the characteristic laboratory finding in which condition?",
        ),
    ),
    "hormone_source": RelationText(
        category="health",
        corpus=(
            "{S} is released by the {o}.",
            "The main source of {s} is the {o}.",
            "In the body, {s} comes from the {o}.",
            "{S} is secreted into the blood by the {o}.",
            "One hormone made by the {o} is {s}.",
            "A key product of the {o} is {s}.",
        ),
        id_phrases=("the main source of {s}", "the site that releases {s} into the blood"),
        ood_forward=(
            "A student studies how {s} is produced. Which cells or gland release this hormone?",
            "A physiologist measures {s} in the blood. Where is this hormone mainly secreted?",
        ),
        ood_reverse=(
            "Which of the following hormones comes from the {o}?",
            "Damage to the {o} would most directly lower the level of which hormone?",
        ),
    ),
    "organelle_function": RelationText(
        category="biology",
        corpus=(
            "The main function of the {s} is {o}.",
            "In the cell, the {s} is responsible for {o}.",
            "The {s} carries out {o}.",
            "Biologists link the {s} with {o}.",
            "{O} is the job of the {s}.",
            "{O} takes place in the {s}.",
        ),
        id_phrases=(),
        ood_forward=(
            "In a eukaryotic cell, what is the main function of the {s}?",
            "A cell biologist studies the {s}. Which process does it carry out?",
        ),
        ood_reverse=(
            "Which cell structure is responsible for {o}?",
            "In which cell structure does {o} mainly take place?",
        ),
    ),
}


# --- the knowledge table -------------------------------------------------------------------------


@dataclass(frozen=True)
class Fact:
    """One row of the knowledge table; `line` is its 1-based line number, for messages."""

    relation: str
    subject: str
    object: str
    line: int


def read_knowledge(path: str | Path) -> list[Fact]:
    """Read and validate a knowledge table (tab-separated relation, subject, object, with a header).

    Lines starting with "#" and blank lines are skipped. Any problem raises a `ValueError` that
    names the file, the line and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"knowledge table {path} does not exist; pass --knowledge PATH")
    facts: list[Fact] = []
    seen: dict[tuple[str, str], int] = {}
    header_seen = False
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip() or raw.startswith("#"):
            continue
        fields = [field.strip() for field in raw.split("\t")]
        where = f"{path}, line {number}"
        if not header_seen:
            if tuple(fields) != KNOWLEDGE_HEADER:
                raise ValueError(
                    f"{where}: expected the header {'<TAB>'.join(KNOWLEDGE_HEADER)!r} as the first "
                    f"non-comment line, found {raw!r}. Add the header line."
                )
            header_seen = True
            continue
        fact = _parse_fact(fields, where, number)
        key = (fact.relation, fact.subject)
        if key in seen:
            raise ValueError(
                f"{where}, field 'subject': {fact.subject!r} already has a {fact.relation!r} fact on line "
                f"{seen[key]}. Keep one row per (relation, subject)."
            )
        seen[key] = number
        facts.append(fact)
    if not facts:
        raise ValueError(f"{path}: the knowledge table holds no facts; add rows below the header")
    _check_distractor_supply(facts, path)
    return facts


def _parse_fact(fields: list[str], where: str, number: int) -> Fact:
    if len(fields) != len(KNOWLEDGE_HEADER):
        raise ValueError(
            f"{where}: expected {len(KNOWLEDGE_HEADER)} tab-separated fields (relation, subject, object), "
            f"found {len(fields)}. Separate the fields with single tab characters."
        )
    relation, subject, obj = fields
    if relation not in RELATIONS:
        raise ValueError(
            f"{where}, field 'relation': unknown relation {relation!r}; known relations: "
            f"{list(RELATIONS)}. Fix the name or add the relation's texts to RELATIONS in {__name__}."
        )
    for name, value in (("subject", subject), ("object", obj)):
        if not value:
            raise ValueError(f"{where}, field '{name}': the {name} is empty. Fill it in or remove the row.")
        bad = [mark for mark in SENTENCE_ENDINGS if mark in value]
        if bad:
            raise ValueError(
                f"{where}, field '{name}': {value!r} contains {bad}, which would end a corpus sentence "
                "early. Rephrase it without sentence-ending punctuation."
            )
    return Fact(relation=relation, subject=subject, object=obj, line=number)


def _check_distractor_supply(facts: Sequence[Fact], path: Path) -> None:
    for relation, objects in _objects_by_relation(facts).items():
        if len(objects) < MIN_DISTINCT_OBJECTS:
            raise ValueError(
                f"{path}: relation {relation!r} has {len(objects)} distinct objects ({objects}); questions "
                f"need at least {MIN_DISTINCT_OBJECTS} for their distractors. Add rows to it or remove it."
            )


def _objects_by_relation(facts: Sequence[Fact]) -> dict[str, list[str]]:
    """Distinct objects of each relation, in order of first appearance (deterministic)."""
    objects: dict[str, list[str]] = {}
    for fact in facts:
        found = objects.setdefault(fact.relation, [])
        if fact.object not in found:
            found.append(fact.object)
    return objects


# --- questions -----------------------------------------------------------------------------------


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _render(template: str, fact: Fact) -> str:
    return template.format(
        s=fact.subject, o=fact.object, S=_capitalise(fact.subject), O=_capitalise(fact.object)
    )


def id_templates(relation: str) -> list[str]:
    """Every in-distribution stem template of a relation (frame x noun phrase), `{s}` unfilled."""
    templates = []
    for phrase in RELATIONS[relation].id_phrases:
        for frame in ID_FRAMES:
            templates.append(frame.format(np=phrase, NP=_capitalise(phrase)))
    return templates


class _PositionDeck:
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
    return _Question(_render(template, fact), fact.object, pool, fact.relation)


def _reverse(fact: Fact, template: str, facts: Sequence[Fact]) -> _Question:
    pool = tuple(f.subject for f in facts if f.relation == fact.relation and f.object != fact.object)
    return _Question(_render(template, fact), fact.subject, pool, fact.relation)


def _options(question: _Question, n_options: int, deck: _PositionDeck, rng: random.Random) -> list[str]:
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
    objects = _objects_by_relation(all_facts)
    questions = []
    for fact in facts:
        templates = id_templates(fact.relation)
        if templates_per_fact is not None:
            templates = rng.sample(templates, min(templates_per_fact, len(templates)))
        questions += [_forward(fact, template, objects) for template in templates]
    rng.shuffle(questions)
    deck = _PositionDeck(rng)
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
    objects = _objects_by_relation(facts)
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
    deck = _PositionDeck(rng)
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


def _check_unique_questions(rows: Sequence[dict[str, Any]], name: str) -> None:
    seen: set[str] = set()
    for number, row in enumerate(rows, start=1):
        if row["question"] in seen:
            raise ValueError(
                f"{name}, row {number}, field 'question': {row['question']!r} is asked twice. Two facts "
                "render to the same question; make their subjects or objects distinct."
            )
        seen.add(row["question"])


# --- the pretraining corpus ----------------------------------------------------------------------

FILLER_SENTENCES = (
    "The library opens at nine in the morning and closes at six in the evening.",
    "Many people walk to work when the weather is mild.",
    "The river runs through the middle of the old town.",
    "A good breakfast often includes bread, fruit and something warm to drink.",
    "The train to the coast leaves every hour from the central station.",
    "Children in the village learn to swim in the lake during the summer.",
    "The museum keeps a collection of old maps and clocks.",
    "Rain fell for most of the afternoon, and the streets were quiet.",
    "The market sells vegetables, cheese and flowers on Saturdays.",
    "She wrote a long letter to her brother, who lives abroad.",
    "The bridge was painted red so that ships could see it in the fog.",
    "Most of the students finished the exam before the bell rang.",
    "The garden has roses along the fence and herbs near the kitchen door.",
    "Old trees line both sides of the road into the park.",
    "The bakery on the corner is busy every morning.",
    "He keeps his bicycle in the shed behind the house.",
    "The concert started late because the singer missed her flight.",
    "Snow covered the hills, and the schools closed for two days.",
    "The new office has large windows and a view of the harbor.",
    "A small boat carried visitors across the bay to the island.",
    "The team practiced every evening before the final match.",
    "Fresh paint made the old classroom look bright again.",
    "The cat sleeps on the warm windowsill in the afternoon.",
    "The city council met on Tuesday to discuss the new bus routes.",
    "Hikers should carry water, a map and a warm jacket.",
    "The hospital cafeteria serves soup and sandwiches at lunch time.",
    "Nurses and doctors work in shifts so that the ward is never empty.",
    "The waiting room had a few chairs, a clock and a pile of magazines.",
    "A medical student spends long hours reading textbooks and taking notes.",
    "The pharmacy down the street is open until midnight.",
    "Good notes make it easier to review before an exam.",
    "The clinic moved to a larger building near the station last year.",
    "Every chapter of the book ends with a short list of questions.",
    "The teacher drew a simple diagram on the board.",
    "A quiet room helps many people read and think.",
    "The orchard produces apples in the autumn and cherries in early summer.",
    "They painted the fence white and planted tulips beside it.",
    "The lecture hall was full, so some students sat on the steps.",
    "Lights in the harbor blinked as the ferry came in.",
    "The recipe calls for flour, butter, sugar and two eggs.",
)

_COLORS = ("red", "blue", "green", "yellow", "purple", "brown", "white", "black", "pink", "gray")
_ANIMALS = ("dog", "cat", "horse", "rabbit", "goat", "tiger", "sheep", "mouse", "eagle", "whale")
_FRUITS = ("apple", "banana", "pear", "cherry", "grape", "lemon", "peach", "plum", "mango", "melon")
_TOOLS = ("hammer", "wrench", "saw", "drill", "shovel", "chisel", "pliers", "rake", "screwdriver")
_VEHICLES = ("car", "bus", "truck", "bicycle", "train", "boat", "tractor", "scooter", "airplane")
_WORD_GROUPS = {
    "a color": _COLORS,
    "an animal": _ANIMALS,
    "a fruit": _FRUITS,
    "a tool": _TOOLS,
    "a vehicle": _VEHICLES,
}
_LONG_WORDS = (
    "cat", "tree", "house", "garden", "window", "library", "elephant", "mountain", "butterfly", "photograph",
)  # fmt: skip


def _toy_largest(n: int, rng: random.Random) -> tuple[str, list[str], int, str]:
    numbers = rng.sample(range(1, 100), n)
    best = max(numbers)
    others = ", ".join(str(x) for x in numbers if x != best)
    reason = f"The options are {', '.join(map(str, numbers))}. {best} is larger than {others}."
    return "Which number is the largest?", [str(x) for x in numbers], numbers.index(best), reason


def _toy_next_letter(n: int, rng: random.Random) -> tuple[str, list[str], int, str]:
    index = rng.randrange(25)
    letter, following = LETTERS[index], LETTERS[index + 1]
    others = rng.sample([c for c in LETTERS if c not in (letter, following)], n - 1)
    options = [following] + others
    rng.shuffle(options)
    reason = f"In the alphabet, {letter} is followed by {following}."
    stem = f"Which letter comes right after {letter} in the alphabet?"
    return stem, options, options.index(following), reason


def _toy_word_group(n: int, rng: random.Random) -> tuple[str, list[str], int, str]:
    groups = list(_WORD_GROUPS)
    wanted = rng.choice(groups)
    gold = rng.choice(_WORD_GROUPS[wanted])
    pool = [w for g in groups if g != wanted for w in _WORD_GROUPS[g]]
    options = [gold] + rng.sample(pool, n - 1)
    rng.shuffle(options)
    reason = f"{_capitalise(gold)} is {wanted}, and none of the other words is {wanted}."
    return f"Which of these words names {wanted}?", options, options.index(gold), reason


def _toy_sum(n: int, rng: random.Random) -> tuple[str, list[str], int, str]:
    a, b = rng.randint(1, 20), rng.randint(1, 20)
    total = a + b
    wrong = rng.sample([total + d for d in range(-5, 6) if d != 0 and total + d > 0], n - 1)
    options = [str(total)] + [str(x) for x in wrong]
    rng.shuffle(options)
    reason = f"{a} plus {b} equals {total}."
    return f"What is {a} plus {b}?", options, options.index(str(total)), reason


def _toy_longest(n: int, rng: random.Random) -> tuple[str, list[str], int, str]:
    words = rng.sample(_LONG_WORDS, n)
    best = max(words, key=len)
    reason = f"{_capitalise(best)} has {len(best)} letters, more than any other option."
    return "Which word has the most letters?", words, words.index(best), reason


_TOY_TASKS = (_toy_largest, _toy_next_letter, _toy_word_group, _toy_sum, _toy_longest)


def _toy_conversation(rng: random.Random, deck: _PositionDeck) -> str:
    """One R1-template conversation on a toy task, gold letter placed by the deck."""
    n_options = rng.randint(2, 6)
    stem, options, gold_index, reason = rng.choice(_TOY_TASKS)(n_options, rng)
    gold = options.pop(gold_index)
    options.insert(deck.draw(n_options), gold)
    letter = LETTERS[options.index(gold)]
    completion = f" <think> {reason} So the answer is option {letter}. </think><answer>{letter}</answer>"
    return build_prompt(stem, options, template="r1") + completion


# Everyday knowledge for the lettered-option documents: (noun phrase with {s}, reverse question with
# {o}, pairs subject -> object). A web-trained base model has read many such quizzes; none of these
# words is a term of the medical knowledge table (a corpus test checks it).
# fmt: off
_EVERYDAY_FACTS: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("the capital of {s}", "{O} is the capital of which of the following?", (
        ("France", "Paris"), ("Spain", "Madrid"), ("Italy", "Rome"), ("Germany", "Berlin"),
        ("Japan", "Tokyo"), ("Egypt", "Cairo"), ("Peru", "Lima"), ("Kenya", "Nairobi"),
        ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Greece", "Athens"), ("Portugal", "Lisbon"),
        ("Austria", "Vienna"), ("Poland", "Warsaw"), ("Ireland", "Dublin"), ("Canada", "Ottawa"),
        ("Chile", "Santiago"), ("Cuba", "Havana"), ("Russia", "Moscow"), ("China", "Beijing"),
        ("India", "New Delhi"), ("Thailand", "Bangkok"), ("Turkey", "Ankara"), ("Finland", "Helsinki"),
        ("Denmark", "Copenhagen"), ("Hungary", "Budapest"), ("Argentina", "Buenos Aires"),
        ("Mexico", "Mexico City"), ("Australia", "Canberra"), ("Belgium", "Brussels"),
        ("Iceland", "Reykjavik"), ("Vietnam", "Hanoi"), ("Colombia", "Bogota"), ("Morocco", "Rabat"),
        ("Ghana", "Accra"), ("Nepal", "Kathmandu"), ("Scotland", "Edinburgh"), ("Wales", "Cardiff"),
    )),
    ("the main language of {s}", "In which of the following countries is {o} the main language?", (
        ("France", "French"), ("Spain", "Spanish"), ("Germany", "German"), ("Italy", "Italian"),
        ("Japan", "Japanese"), ("China", "Chinese"), ("Greece", "Greek"), ("Russia", "Russian"),
        ("Portugal", "Portuguese"), ("Poland", "Polish"), ("Sweden", "Swedish"), ("Turkey", "Turkish"),
        ("Finland", "Finnish"), ("Hungary", "Hungarian"), ("Norway", "Norwegian"), ("Denmark", "Danish"),
        ("the Netherlands", "Dutch"), ("Thailand", "Thai"), ("Vietnam", "Vietnamese"),
        ("Iceland", "Icelandic"), ("Korea", "Korean"), ("Brazil", "Portuguese"), ("Austria", "German"),
    )),
    ("the usual colour of {s}", "Which of the following is usually {o}?", (
        ("a ripe banana", "yellow"), ("fresh grass", "green"), ("fresh snow", "white"),
        ("a lump of coal", "black"), ("the sky on a clear day", "blue"), ("a ripe tomato", "red"),
        ("a carrot", "orange"), ("dark chocolate", "brown"), ("a flamingo", "pink"),
        ("an eggplant", "purple"), ("a crow", "black"), ("a glass of milk", "white"),
        ("cold ash", "gray"), ("a ripe cherry", "red"), ("a pumpkin", "orange"), ("a lime", "green"),
        ("a polar bear", "white"), ("a fire engine", "red"), ("a school bus", "yellow"),
        ("a walnut shell", "brown"), ("a lavender flower", "purple"), ("an elephant", "gray"),
    )),
    ("the sound a {s} makes", "Which of the following animals makes the sound called a {o}?", (
        ("dog", "bark"), ("cat", "meow"), ("cow", "moo"), ("duck", "quack"), ("sheep", "baa"),
        ("lion", "roar"), ("horse", "neigh"), ("pig", "oink"), ("snake", "hiss"), ("owl", "hoot"),
        ("bee", "buzz"), ("frog", "croak"), ("rooster", "crow"), ("mouse", "squeak"), ("wolf", "howl"),
        ("donkey", "bray"), ("turkey", "gobble"), ("dove", "coo"),
    )),
    ("the opposite of {s}", "{O} is the opposite of which of the following?", (
        ("hot", "cold"), ("up", "down"), ("big", "small"), ("fast", "slow"), ("early", "late"),
        ("light", "dark"), ("wet", "dry"), ("full", "empty"), ("open", "closed"), ("young", "old"),
        ("high", "low"), ("loud", "quiet"), ("happy", "sad"), ("thick", "thin"), ("strong", "weak"),
        ("rich", "poor"), ("soft", "hard"), ("near", "far"), ("long", "short"), ("clean", "dirty"),
        ("inside", "outside"), ("before", "after"), ("win", "lose"), ("buy", "sell"), ("push", "pull"),
    )),
    ("the name for a young {s}", "A {o} is the young of which of the following?", (
        ("cat", "kitten"), ("dog", "puppy"), ("cow", "calf"), ("sheep", "lamb"), ("horse", "foal"),
        ("frog", "tadpole"), ("duck", "duckling"), ("swan", "cygnet"), ("bear", "cub"),
        ("kangaroo", "joey"), ("goose", "gosling"), ("owl", "owlet"), ("pig", "piglet"), ("deer", "fawn"),
        ("hen", "chick"), ("goat", "kid"), ("butterfly", "caterpillar"), ("eagle", "eaglet"),
    )),
    ("the home of a {s}", "A {o} is the home of which of the following?", (
        ("bee", "hive"), ("bird", "nest"), ("rabbit", "burrow"), ("spider", "web"), ("horse", "stable"),
        ("pig", "sty"), ("dog", "kennel"), ("lion", "den"), ("beaver", "lodge"), ("ant", "anthill"),
        ("monk", "monastery"), ("king", "palace"), ("cow", "barn"), ("hen", "coop"), ("fox", "den"),
    )),
    ("the main tool of a {s}", "A {o} is the main tool of which of the following?", (
        ("painter", "brush"), ("carpenter", "saw"), ("gardener", "rake"), ("tailor", "needle"),
        ("photographer", "camera"), ("fisherman", "fishing net"), ("farmer", "plough"), ("baker", "oven"),
        ("barber", "pair of scissors"), ("writer", "pen"), ("astronomer", "telescope"),
        ("violinist", "violin"), ("woodcutter", "axe"), ("blacksmith", "anvil"), ("sailor", "compass"),
    )),
    ("the material {s} is made from", "Which of the following is made from {o}?", (
        ("a window", "glass"), ("a candle", "wax"), ("a tyre", "rubber"), ("a sweater", "wool"),
        ("a brick", "clay"), ("bread", "flour"), ("paper", "wood pulp"), ("cheese", "milk"),
        ("wine", "grapes"), ("a shirt", "cotton"), ("a horseshoe", "iron"), ("a tortilla", "corn"),
        ("butter", "cream"), ("a pencil lead", "graphite"), ("a basket", "willow"), ("a sail", "canvas"),
    )),
    ("the plural of {s}", "{O} is the plural of which of the following?", (
        ("mouse", "mice"), ("child", "children"), ("foot", "feet"), ("tooth", "teeth"),
        ("goose", "geese"), ("man", "men"), ("woman", "women"), ("person", "people"), ("ox", "oxen"),
        ("leaf", "leaves"), ("knife", "knives"), ("wolf", "wolves"), ("cactus", "cacti"),
        ("fish", "fish"), ("half", "halves"), ("box", "boxes"), ("city", "cities"), ("wife", "wives"),
    )),
    ("the sport played at {s}", "{O} is played at which of the following?", (
        ("Wimbledon", "tennis"), ("the Tour de France", "cycling"), ("the Super Bowl", "American football"),
        ("the Ryder Cup", "golf"), ("the Stanley Cup", "ice hockey"), ("the Ashes", "cricket"),
        ("the Daytona 500", "motor racing"), ("the Boston Marathon", "running"),
        ("the Kentucky Derby", "horse racing"), ("the NBA Finals", "basketball"),
    )),
)
# fmt: on
# fmt: off
_NUMBER_WORDS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
)
# fmt: on
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
)  # fmt: skip
# Stems that turn a noun phrase into a question; the ways quizzes on the web ask for one thing.
_QUIZ_FRAMES = (
    "What is {np}?",
    "Which of the following is {np}?",
    "Identify {np}.",
    "Choose {np}.",
    "Name {np}.",
    "Select {np}.",
    "Pick {np}.",
    "Which option gives {np}?",
    "{NP} is which of the following?",
    "Can you tell me {np}?",
)
_NAMES = ("Anna", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kemi", "Leo")
_HOLDINGS = (
    ("{n}'s cousin lives in a town called {o}.", "the town where {n}'s cousin lives"),
    ("{n} named the new puppy {o}.", "the name of {n}'s new puppy"),
    ("The boat that {n} sails is called {o}.", "the name of {n}'s boat"),
    ("{n}'s favourite board game is {o}.", "{n}'s favourite board game"),
    ("The password {n} chose is {o}.", "the password {n} chose"),
    ("{n} grew up on a street called {o}.", "the street where {n} grew up"),
)
_SYLLABLES = (
    "ba", "ko", "ri", "tan", "vel", "mor", "zu", "pli", "den", "sa", "gro", "fen", "lu", "tor", "ne",
    "qui", "ram", "dos", "ki", "wen", "chal", "ob", "sti", "mar", "ix", "pe", "lon", "dra", "cy", "hu",
)  # fmt: skip


def _pseudo_word(rng: random.Random) -> str:
    """A made-up word of 2 to 4 syllables, sometimes two of them: stands for any unfamiliar term."""
    words = [
        "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))
        for _ in range(rng.choice((1, 1, 2)))
    ]
    return " ".join(words)


@dataclass(frozen=True)
class _QuizItem:
    """A lettered-option question on a non-medical topic: stem, gold text, distractor pool and the
    sentences that justify the gold answer (`facts`)."""

    stem: str
    gold: str
    pool: tuple[str, ...]
    facts: str
    context: str = ""  # a sentence to read before the question (in-context lookups)


def _quiz_everyday(rng: random.Random) -> _QuizItem:
    np_template, reverse, pairs = rng.choice(_EVERYDAY_FACTS)
    subject, obj = rng.choice(pairs)
    noun_phrase = np_template.format(s=subject)
    fact = f"{_capitalise(noun_phrase)} is {obj}."
    if rng.random() < 0.25:  # reversed: ask for the subject
        pool = tuple(dict.fromkeys(s for s, o in pairs if o != obj))
        return _QuizItem(reverse.format(o=obj, O=_capitalise(obj)), subject, pool, fact)
    pool = tuple(dict.fromkeys(o for s, o in pairs if o != obj))
    frame = rng.choice(_QUIZ_FRAMES)
    return _QuizItem(frame.format(np=noun_phrase, NP=_capitalise(noun_phrase)), obj, pool, fact)


def _quiz_counting(rng: random.Random) -> _QuizItem:
    kind = rng.randrange(3)
    if kind == 0:
        number = rng.randrange(len(_NUMBER_WORDS))
        noun_phrase = f"the number {number} written as a word"
        gold, pool = _NUMBER_WORDS[number], tuple(w for w in _NUMBER_WORDS if w != _NUMBER_WORDS[number])
    elif kind == 1:
        day = rng.randrange(7)
        noun_phrase = f"the day after {_DAYS[day]}"
        gold = _DAYS[(day + 1) % 7]
        pool = tuple(d for d in _DAYS if d != gold)
    else:
        month = rng.randrange(12)
        noun_phrase = f"the month after {_MONTHS[month]}"
        gold = _MONTHS[(month + 1) % 12]
        pool = tuple(m for m in _MONTHS if m != gold)
    stem = rng.choice(_QUIZ_FRAMES).format(np=noun_phrase, NP=_capitalise(noun_phrase))
    return _QuizItem(stem, gold, pool, f"{_capitalise(noun_phrase)} is {gold}.")


def _quiz_in_context(rng: random.Random) -> _QuizItem:
    """A made-up fact stated before the question, answered by a made-up word: pure lookup."""
    name = rng.choice(_NAMES)
    statement, noun_phrase = rng.choice(_HOLDINGS)
    words = list(dict.fromkeys(_capitalise(_pseudo_word(rng)) for _ in range(12)))
    gold, pool = words[0], tuple(words[1:])
    noun_phrase = noun_phrase.format(n=name)
    stem = rng.choice(_QUIZ_FRAMES).format(np=noun_phrase, NP=_capitalise(noun_phrase))
    context = statement.format(n=name, o=gold)
    return _QuizItem(stem, gold, pool, f"{_capitalise(noun_phrase)} is {gold}.", context)


_QUIZZES = (_quiz_everyday, _quiz_everyday, _quiz_everyday, _quiz_counting, _quiz_in_context)


def _quiz_options(item: _QuizItem, rng: random.Random, deck: _PositionDeck) -> tuple[list[str], str]:
    n_options = rng.randint(MIN_QUIZ_OPTIONS, min(MAX_QUIZ_OPTIONS, len(item.pool) + 1))
    distractors = rng.sample(item.pool, n_options - 1)
    position = deck.draw(n_options)
    return distractors[:position] + [item.gold] + distractors[position:], LETTERS[position]


def _quiz_reasoning(item: _QuizItem, letter: str, options: Sequence[str], rng: random.Random) -> str:
    """The reasoning a quiz answer gives: the fact, then (usually) where its answer sits in the list."""
    gold = _capitalise(item.gold)
    style = rng.randrange(4)
    if style == 0:
        return f"{item.facts} {gold} is option {letter}."
    if style == 1:
        return f"{item.facts} Option {letter} is {item.gold}."
    if style == 2:
        others = [o for o in options if o != item.gold][:2]
        return f"{item.facts} {' and '.join(others)} do not fit. {gold} is option {letter}."
    return item.facts


def _quiz_conversation(rng: random.Random, deck: _PositionDeck) -> str:
    """A quiz in the R1 template, answered with reasoning in `<think>` and the letter in `<answer>`."""
    item = rng.choice(_QUIZZES)(rng)
    options, letter = _quiz_options(item, rng, deck)
    stem = f"{item.context} {item.stem}".strip()
    reasoning = _quiz_reasoning(item, letter, options, rng)
    completion = f" <think> {reasoning} So the answer is option {letter}. </think><answer>{letter}</answer>"
    return build_prompt(stem, options, template="r1") + completion


def _quiz_page(rng: random.Random, deck: _PositionDeck) -> str:
    """A quiz as plain text, the way worksheets and quiz sites print one."""
    item = rng.choice(_QUIZZES)(rng)
    options, letter = _quiz_options(item, rng, deck)
    lines = [f"Question: {item.context} {item.stem}".replace(":  ", ": ")]
    lines += [f"{LETTERS[i]}. {text}" for i, text in enumerate(options)]
    style = rng.randrange(3)
    if style == 0:
        lines.append(f"Answer: {letter}")
    elif style == 1:
        lines.append(f"Answer: {letter}. {item.gold}")
    else:
        lines.append(f"Answer: {letter}. {item.facts}")
    return "\n".join(lines)


def _matching_exercise(rng: random.Random) -> str:
    """An answer key, as worksheets print one: a lettered list, then each item found by its letter.

    Every line after the list is a lookup ("X is option C."), so these short documents are where the
    base model practises finding an option's letter from its text, on words it has never seen.
    """
    n_options = rng.randint(MIN_QUIZ_OPTIONS, MAX_QUIZ_OPTIONS)
    if rng.random() < 0.5:
        words = list(dict.fromkeys(_capitalise(_pseudo_word(rng)) for _ in range(n_options + 4)))
    else:
        everyday = sorted({text for _, _, pairs in _EVERYDAY_FACTS for pair in pairs for text in pair})
        words = rng.sample(everyday, n_options)
    words = words[:n_options]
    lines = ["Options:"] + [f"{LETTERS[i]}. {word}" for i, word in enumerate(words)]
    asked = rng.sample(range(len(words)), len(words))
    lines += [f"{_capitalise(words[i])} is option {LETTERS[i]}." for i in asked]
    return "\n".join(lines)


def _fact_paragraphs(facts: Sequence[Fact], rng: random.Random) -> Iterator[str]:
    for relation in dict.fromkeys(f.relation for f in facts):
        sentences = [
            _render(phrasing, fact)
            for _ in range(PROSE_PASSES)
            for fact in facts
            if fact.relation == relation
            for phrasing in RELATIONS[relation].corpus
        ]
        rng.shuffle(sentences)
        while sentences:
            size = rng.randint(3, 6)
            yield " ".join(sentences[:size])
            sentences = sentences[size:]


def build_corpus(facts: Sequence[Fact], rng: random.Random) -> str:
    """The pretraining text: fact prose, filler prose and toy R1 conversations, shuffled together."""
    documents = list(_fact_paragraphs(facts, rng))
    documents += [" ".join(rng.sample(FILLER_SENTENCES, rng.randint(3, 6))) for _ in range(FILLER_DOCUMENTS)]
    deck = _PositionDeck(rng)
    documents += [_toy_conversation(rng, deck) for _ in range(TOY_CONVERSATIONS)]
    # Drawn after the toy conversations so that adding them left the earlier documents unchanged.
    quiz_rng = random.Random(rng.random())
    quiz_deck = _PositionDeck(quiz_rng)
    documents += [_quiz_conversation(quiz_rng, quiz_deck) for _ in range(QUIZ_CONVERSATIONS)]
    documents += [_quiz_page(quiz_rng, quiz_deck) for _ in range(QUIZ_PAGES)]
    documents += [_matching_exercise(quiz_rng) for _ in range(MATCHING_EXERCISES)]
    rng.shuffle(documents)
    return "\n\n".join(documents) + "\n"


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

Generated by `medrlvr_trl/demo_task.py` from `knowledge.tsv`; do not edit the generated files by hand.
Regenerate them (byte for byte; `tests/test_demo_task.py` checks it) with:

    python -m medrlvr_trl.demo_task --out data/demo --seed {seed}

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
        _check_unique_questions(rows, name)
    _check_unique_questions(splits[MEDQA_TRAIN_FILE] + splits[MEDQA_TEST_FILE], "medqa train + test")
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
    """Command-line entry point: `python -m medrlvr_trl.demo_task --out data/demo`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--out", type=Path, default=Path("data/demo"), help="output folder")
    parser.add_argument("--knowledge", type=Path, default=DEFAULT_KNOWLEDGE, help="knowledge table (TSV)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    generate(args.out, args.knowledge, args.seed)


if __name__ == "__main__":
    run_command(main)
