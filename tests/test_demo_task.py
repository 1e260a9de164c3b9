"""The bundled demo task: shipped files are current, well-formed, leak-free and balanced."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from demo.knowledge import KNOWLEDGE_HEADER, read_knowledge
from demo.task import GENERATED_FILES, MEDQA_TEST_FILE, MEDQA_TRAIN_FILE, MMLU_TEST_FILE, main
from medrlvr_trl.prompts import LETTERS, TEMPLATES

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"
KNOWLEDGE = DEMO / "knowledge.tsv"
HEADER = "\t".join(KNOWLEDGE_HEADER)


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DEMO / name).read_text(encoding="utf-8").splitlines()]


def _corpus_documents() -> list[str]:
    return (DEMO / "corpus.txt").read_text(encoding="utf-8").split("\n\n")


def _table(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / "knowledge.tsv"
    path.write_text("\n".join(["# a comment", HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def test_cli_regenerates_the_shipped_files_byte_for_byte(tmp_path):
    main(["--out", str(tmp_path), "--knowledge", str(KNOWLEDGE)])
    for name in GENERATED_FILES:
        assert (tmp_path / name).read_bytes() == (DEMO / name).read_bytes(), (
            f"data/demo/{name} is stale; regenerate with: python -m demo.task --out data/demo"
        )


@pytest.mark.parametrize("name", [MEDQA_TRAIN_FILE, MEDQA_TEST_FILE])
def test_medqa_gold_letter_points_at_the_answer_text(name):
    for row in _rows(name):
        assert list(row["options"]) == list("ABCDE")
        assert row["options"][row["answer_idx"]] == row["answer"]
        assert len(set(row["options"].values())) == 5, row["question"]


def test_mmlu_gold_letter_and_index_point_at_the_same_option():
    for row in _rows(MMLU_TEST_FILE):
        assert 0 <= row["answer_index"] < len(row["options"])
        assert row["answer"] == LETTERS[row["answer_index"]]
        assert len(set(row["options"])) == len(row["options"]), row["question"]


def test_mmlu_rows_have_6_to_10_options_and_are_mostly_health():
    rows = _rows(MMLU_TEST_FILE)
    assert all(6 <= len(row["options"]) <= 10 for row in rows)
    assert {len(row["options"]) for row in rows} == set(range(6, 11))
    categories = Counter(row["category"] for row in rows)
    assert categories["health"] == 200
    assert 0 < categories["biology"] < 20 and set(categories) == {"health", "biology"}
    assert all(row["src"] == "demo" and row["cot_content"] == "" for row in rows)
    assert [row["question_id"] for row in rows] == list(range(len(rows)))


@pytest.mark.parametrize("name", [MEDQA_TRAIN_FILE, MEDQA_TEST_FILE, MMLU_TEST_FILE])
def test_no_question_is_asked_twice_within_a_split(name):
    questions = [row["question"] for row in _rows(name)]
    assert len(questions) == len(set(questions))


def test_no_id_test_question_appears_in_train():
    train = {row["question"] for row in _rows(MEDQA_TRAIN_FILE)}
    assert not [row["question"] for row in _rows(MEDQA_TEST_FILE) if row["question"] in train]


def test_id_test_facts_are_never_asked_in_train():
    facts = read_knowledge(KNOWLEDGE)

    def asked(row: dict) -> tuple[str, str]:
        relation = row["meta_info"].removeprefix("demo:")
        subjects = [f.subject for f in facts if f.relation == relation and f.subject in row["question"]]
        return relation, max(subjects, key=len)

    train_facts = {asked(row) for row in _rows(MEDQA_TRAIN_FILE)}
    test_facts = {asked(row) for row in _rows(MEDQA_TEST_FILE)}
    assert test_facts and not test_facts & train_facts


def test_id_test_covers_every_relation_asked_in_train():
    relations = {row["meta_info"] for row in _rows(MEDQA_TRAIN_FILE)}
    assert len(relations) == 7
    assert {row["meta_info"] for row in _rows(MEDQA_TEST_FILE)} == relations


@pytest.mark.parametrize("name", [MEDQA_TRAIN_FILE, MEDQA_TEST_FILE, MMLU_TEST_FILE])
def test_gold_letters_are_balanced_across_positions(name):
    rows = _rows(name)
    observed = Counter(
        LETTERS.index(row["answer_idx"] if "answer_idx" in row else row["answer"]) for row in rows
    )
    for position in range(10):
        expected = sum(1 / len(row["options"]) for row in rows if len(row["options"]) > position)
        assert abs(observed[position] - expected) <= 0.1 * expected + 2, (position, observed, expected)


def test_corpus_states_every_fact_within_one_sentence():
    sentences = [s.casefold() for d in _corpus_documents() for s in re.split(r"(?<=[.!?])\s+", d)]
    missing = [
        (f.line, f.subject, f.object)
        for f in read_knowledge(KNOWLEDGE)
        if not any(f.subject.casefold() in s and f.object.casefold() in s for s in sentences)
    ]
    assert not missing


def test_corpus_is_small_enough_for_a_quick_cpu_pretraining():
    assert 150_000 <= (DEMO / "corpus.txt").stat().st_size <= 900_000


def test_corpus_shows_the_r1_template_only_on_unrelated_toy_tasks():
    preamble = TEMPLATES["r1"].text.split("{input}")[0]
    conversations = [d for d in _corpus_documents() if "<answer>" in d]
    assert len(conversations) >= 30
    assert all(
        d.startswith(preamble) and re.search(r"</think><answer>[A-J]</answer>$", d) for d in conversations
    )
    terms = {t.casefold() for f in read_knowledge(KNOWLEDGE) for t in (f.subject, f.object)}
    quizzes = conversations + [d for d in _corpus_documents() if d.startswith(("Question:", "Options:"))]
    assert len(quizzes) >= 1000  # many lettered-option documents, so option lookup is a general skill
    leaks = [t for d in quizzes for t in terms if re.search(rf"\b{re.escape(t)}\b", d.casefold())]
    assert not leaks


def test_shipped_knowledge_table_has_one_row_per_relation_and_subject():
    lines = KNOWLEDGE.read_text(encoding="utf-8").splitlines()
    keys = [tuple(line.split("\t")[:2]) for line in lines if line.strip() and not line.startswith("#")]
    assert keys[0] == KNOWLEDGE_HEADER[:2]
    assert [key for key, n in Counter(keys[1:]).items() if n > 1] == []


def test_malformed_row_error_names_the_file_and_line(tmp_path):
    path = _table(tmp_path, "antidote\topioid overdose\tnaloxone", "antidote\tcyanide poisoning")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}, line 4: expected 3 tab-separated fields"):
        read_knowledge(path)


def test_unknown_relation_error_names_the_field(tmp_path):
    path = _table(tmp_path, "side_effect\tamiodarone\tpulmonary fibrosis")
    with pytest.raises(ValueError, match=r"line 3, field 'relation': unknown relation 'side_effect'"):
        read_knowledge(path)


def test_duplicate_relation_and_subject_error_names_both_lines(tmp_path):
    path = _table(tmp_path, "antidote\topioid overdose\tnaloxone", "antidote\topioid overdose\tflumazenil")
    with pytest.raises(ValueError, match=r"line 4, field 'subject': 'opioid overdose' .* on line 3"):
        read_knowledge(path)


def test_fact_with_a_full_stop_is_rejected(tmp_path):
    path = _table(tmp_path, "antidote\topioid overdose\tnaloxone i.v.")
    with pytest.raises(ValueError, match=r"line 3, field 'object': .*sentence-ending punctuation"):
        read_knowledge(path)


def test_missing_header_is_rejected(tmp_path):
    path = tmp_path / "knowledge.tsv"
    path.write_text("antidote\topioid overdose\tnaloxone\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 1: expected the header"):
        read_knowledge(path)


def test_relation_with_too_few_distinct_objects_is_rejected(tmp_path):
    rows = [f"antidote\tpoison {i}\tantidote {i % 3}" for i in range(9)]
    with pytest.raises(ValueError, match=r"relation 'antidote' has 3 distinct objects"):
        read_knowledge(_table(tmp_path, *rows))


def test_demo_files_load_through_load_mcqa():
    data = pytest.importorskip("medrlvr_trl.data", reason="medrlvr_trl.data (load_mcqa) is not available")
    train = data.load_mcqa(str(DEMO / "medqa"), "train")
    test = data.load_mcqa(str(DEMO / "medqa"), "test")
    health = data.load_mcqa(str(DEMO / "mmlu_pro_health"), "test", category="health")
    assert (len(train), len(test)) == (len(_rows(MEDQA_TRAIN_FILE)), len(_rows(MEDQA_TEST_FILE)))
    assert len(health) == sum(row["category"] == "health" for row in _rows(MMLU_TEST_FILE))
    assert train[0]["answer"] == _rows(MEDQA_TRAIN_FILE)[0]["answer_idx"]
