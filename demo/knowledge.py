"""The demo's knowledge table (`data/demo/knowledge.tsv`) and the text each relation is rendered with."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from medrlvr_trl.user_errors import UserError

logger = logging.getLogger(__name__)

DEFAULT_KNOWLEDGE = Path("data/demo/knowledge.tsv")
KNOWLEDGE_HEADER = ("relation", "subject", "object")
# The corpus check splits prose into sentences on these, so facts must not contain them.
SENTENCE_ENDINGS = (".", "!", "?")
MIN_DISTINCT_OBJECTS = 6  # 5 options in distribution, at least 6 out of distribution


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

    Lines starting with "#" and blank lines are skipped. Any problem raises a `UserError` (a `ValueError`)
    that names the file, the line and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"knowledge table {path} does not exist; pass --knowledge PATH")
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
                raise UserError(
                    f"{where}: expected the header {'<TAB>'.join(KNOWLEDGE_HEADER)!r} as the first "
                    f"non-comment line, found {raw!r}. Add the header line."
                )
            header_seen = True
            continue
        fact = _parse_fact(fields, where, number)
        key = (fact.relation, fact.subject)
        if key in seen:
            raise UserError(
                f"{where}, field 'subject': {fact.subject!r} already has a {fact.relation!r} fact on line "
                f"{seen[key]}. Keep one row per (relation, subject)."
            )
        seen[key] = number
        facts.append(fact)
    if not facts:
        raise UserError(f"{path}: the knowledge table holds no facts; add rows below the header")
    _check_distractor_supply(facts, path)
    return facts


def _parse_fact(fields: list[str], where: str, number: int) -> Fact:
    if len(fields) != len(KNOWLEDGE_HEADER):
        raise UserError(
            f"{where}: expected {len(KNOWLEDGE_HEADER)} tab-separated fields (relation, subject, object), "
            f"found {len(fields)}. Separate the fields with single tab characters."
        )
    relation, subject, obj = fields
    if relation not in RELATIONS:
        raise UserError(
            f"{where}, field 'relation': unknown relation {relation!r}; known relations: "
            f"{list(RELATIONS)}. Fix the name or add the relation's texts to RELATIONS in {__name__}."
        )
    for name, value in (("subject", subject), ("object", obj)):
        if not value:
            raise UserError(f"{where}, field '{name}': the {name} is empty. Fill it in or remove the row.")
        bad = [mark for mark in SENTENCE_ENDINGS if mark in value]
        if bad:
            raise UserError(
                f"{where}, field '{name}': {value!r} contains {bad}, which would end a corpus sentence "
                "early. Rephrase it without sentence-ending punctuation."
            )
    return Fact(relation=relation, subject=subject, object=obj, line=number)


def _check_distractor_supply(facts: Sequence[Fact], path: Path) -> None:
    for relation, objects in objects_by_relation(facts).items():
        if len(objects) < MIN_DISTINCT_OBJECTS:
            raise UserError(
                f"{path}: relation {relation!r} has {len(objects)} distinct objects ({objects}); questions "
                f"need at least {MIN_DISTINCT_OBJECTS} for their distractors. Add rows to it or remove it."
            )


def objects_by_relation(facts: Sequence[Fact]) -> dict[str, list[str]]:
    """Distinct objects of each relation, in order of first appearance (deterministic)."""
    objects: dict[str, list[str]] = {}
    for fact in facts:
        found = objects.setdefault(fact.relation, [])
        if fact.object not in found:
            found.append(fact.object)
    return objects


def capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def render(template: str, fact: Fact) -> str:
    """A relation template with the fact's subject and object (`{S}`, `{O}`: capitalised)."""
    return template.format(
        s=fact.subject, o=fact.object, S=capitalise(fact.subject), O=capitalise(fact.object)
    )
