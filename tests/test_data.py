"""`load_mcqa`: every supported schema and file kind lands in one schema; bad input fails loudly."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medrlvr_trl import data
from medrlvr_trl.data import (
    DataSourceError,
    MissingDataFileError,
    OverlapMatch,
    OverlapReport,
    QuestionIndex,
    load_mcqa,
    question_overlap,
    read_mcqa,
    unique_question_indices,
)
from medrlvr_trl.prompts import build_prompt

COLUMNS = ["id", "question", "options", "answer", "answer_index", "source"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def medqa_row(question: str = "Which drug treats X?", n_options: int = 4, answer_idx: str = "B", **extra):
    options = {letter: f"Drug {letter}" for letter in "ABCDEFGHIJ"[:n_options]}
    row = {"question": question, "options": options, "answer_idx": answer_idx, "answer": f"Drug {answer_idx}"}
    return {**row, **extra}


def mmlu_row(question_id: int, category: str = "health", **fields):
    row = {
        "question_id": question_id,
        "question": f"Question {question_id}?",
        "options": ["one", "two", "three", "four", "five"],
        "answer": "C",
        "answer_index": 2,
        "category": category,
        "src": "ori_mmlu-clinical_knowledge",
    }
    return {**row, **fields}


# --- schemas ---------------------------------------------------------------------------------------


def test_medqa_four_options_jsonl_loads_into_the_shared_schema(tmp_path):
    path = write_jsonl(tmp_path / "medqa.jsonl", [medqa_row(), medqa_row("Second?", answer_idx="D")])

    ds = load_mcqa(str(path))

    assert ds.column_names == COLUMNS
    assert ds[0] == {
        "id": "medqa-train-1",
        "question": "Which drug treats X?",
        "options": ["Drug A", "Drug B", "Drug C", "Drug D"],
        "answer": "B",
        "answer_index": 1,
        "source": "medqa",
    }
    assert (ds[1]["answer"], ds[1]["answer_index"]) == ("D", 3)


def test_medqa_five_options_with_keys_out_of_order_are_put_in_letter_order(tmp_path):
    row = {
        "question": "Five options?",
        "options": {"C": "c", "E": "e", "A": "a", "D": "d", "B": "b"},
        "answer_idx": "E",
        "answer": "e",
        "meta_info": "step1",
    }
    ds = load_mcqa(str(write_jsonl(tmp_path / "us.jsonl", [row])))

    assert ds[0]["options"] == ["a", "b", "c", "d", "e"]
    assert (ds[0]["answer"], ds[0]["answer_index"]) == ("E", 4)


def test_question_and_option_whitespace_is_kept_and_training_prompts_tidy_it(tmp_path):
    """The loader keeps texts as the source gives them (lm-eval's template shows them so); the training
    templates strip the question and put each option on one line, as before texts were kept."""
    row = {
        "question": "  Padded?\n",
        "options": {"A": " yes ", "B": "\tno\nway"},
        "answer_idx": "A",
        "answer": "yes",
    }
    ds = load_mcqa(str(write_jsonl(tmp_path / "q.jsonl", [row])))

    assert ds[0]["question"] == "  Padded?\n"
    assert ds[0]["options"] == [" yes ", "\tno\nway"]
    prompt = build_prompt(ds[0]["question"], ds[0]["options"], template="direct")
    assert "User: Padded?\nAnswer with" in prompt
    assert "A. yes\nB. no way\nAssistant:" in prompt


def test_bigbio_key_value_options_load_in_letter_order(tmp_path):
    row = {
        "meta_info": "step1",
        "question": "Bigbio?",
        "answer_idx": "A",
        "answer": "first",
        "options": [
            {"key": "B", "value": "second"},
            {"key": "A", "value": "first"},
            {"key": "C", "value": "third"},
        ],
    }
    ds = load_mcqa(str(write_jsonl(tmp_path / "bigbio.jsonl", [row])))

    assert ds[0]["options"] == ["first", "second", "third"]
    assert (ds[0]["answer"], ds[0]["answer_index"]) == ("A", 0)


def test_mmlu_pro_category_filter_is_case_insensitive_and_keeps_question_ids(tmp_path):
    rows = [mmlu_row(10, "health"), mmlu_row(11, "law"), mmlu_row(12, "Health")]
    ds = load_mcqa(str(write_jsonl(tmp_path / "mmlu_pro.jsonl", rows)), "test", category="HEALTH")

    assert ds["id"] == ["10", "12"]
    assert ds[0]["answer"] == "C" and ds[0]["answer_index"] == 2
    assert ds[0]["options"] == ["one", "two", "three", "four", "five"]


def test_mmlu_pro_with_only_answer_index_derives_the_letter(tmp_path):
    row = mmlu_row(1, answer_index=4)
    del row["answer"]
    ds = load_mcqa(str(write_jsonl(tmp_path / "m.jsonl", [row])))

    assert (ds[0]["answer"], ds[0]["answer_index"]) == ("E", 4)


def test_mmlu_pro_with_only_answer_letter_derives_the_index(tmp_path):
    row = mmlu_row(1, answer="A")
    del row["answer_index"]
    ds = load_mcqa(str(write_jsonl(tmp_path / "m.jsonl", [row])))

    assert (ds[0]["answer"], ds[0]["answer_index"]) == ("A", 0)


# --- file kinds ------------------------------------------------------------------------------------


def test_json_list_file_loads(tmp_path):
    path = tmp_path / "medqa.json"
    path.write_text(json.dumps([medqa_row(), medqa_row("Other?")]), encoding="utf-8")

    ds = load_mcqa(str(path))

    assert ds["question"] == ["Which drug treats X?", "Other?"]


def test_json_file_holding_json_lines_loads(tmp_path):
    path = write_jsonl(tmp_path / "medqa.json", [medqa_row(), medqa_row("Other?")])

    assert load_mcqa(str(path))["question"] == ["Which drug treats X?", "Other?"]


def test_parquet_with_mixed_option_counts_reads_null_padding_as_absent(tmp_path):
    # A columnar file stores dict options as one struct; 4-option rows get E = null next to 5-option rows.
    path = tmp_path / "medqa.parquet"
    pq.write_table(pa.Table.from_pylist([medqa_row(n_options=5, answer_idx="E"), medqa_row()]), path)

    ds = load_mcqa(str(path))

    assert [len(options) for options in ds["options"]] == [5, 4]
    assert ds["answer"] == ["E", "B"]


def test_folder_source_reads_the_requested_split_and_names_the_source_after_the_folder(tmp_path):
    folder = tmp_path / "medqa_us"
    write_jsonl(folder / "train.jsonl", [medqa_row("Train question?")])
    write_jsonl(folder / "test.jsonl", [medqa_row("Test question?")])

    ds = load_mcqa(str(folder), "test")

    assert ds["question"] == ["Test question?"]
    assert ds[0]["id"] == "medqa_us-test-1"
    assert ds[0]["source"] == "medqa_us"


def test_folder_without_the_split_file_lists_what_it_holds(tmp_path):
    folder = tmp_path / "medqa_us"
    write_jsonl(folder / "train.jsonl", [medqa_row()])

    with pytest.raises(MissingDataFileError, match=r"dev\.jsonl.*train\.jsonl"):
        load_mcqa(str(folder), "dev")


def test_unsupported_file_type_is_rejected(tmp_path):
    path = tmp_path / "medqa.csv"
    path.write_text("question,answer\n", encoding="utf-8")

    with pytest.raises(DataSourceError, match=r"medqa\.csv.*\.jsonl, \.json or \.parquet"):
        load_mcqa(str(path))


def test_invalid_json_line_names_file_and_row(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(medqa_row()) + "\n{not json\n", encoding="utf-8")

    with pytest.raises(ValueError, match=r"broken\.jsonl, row 2: not valid JSON"):
        load_mcqa(str(path))


@pytest.mark.parametrize("source", ["./missing/train.jsonl", "data/medqa.parquet", "/no/such/dir"])
def test_missing_local_path_is_reported_as_a_missing_file_not_a_hub_problem(source):
    with pytest.raises(FileNotFoundError, match="does not exist") as caught:
        load_mcqa(source)

    assert "Hub" not in str(caught.value)


# --- bad rows ----------------------------------------------------------------------------------------


def _without(row: dict, key: str) -> dict:
    return {k: v for k, v in row.items() if k != key}


BAD_ROWS = {
    "missing question": (_without(medqa_row(), "question"), "question", "missing or empty"),
    "empty question": (medqa_row(question="   "), "question", "missing or empty"),
    "one option": (
        {"question": "Q?", "options": {"A": "only"}, "answer_idx": "A", "answer": "only"},
        "options",
        "2 to 26 options, found 1",
    ),
    "27 options": (
        mmlu_row(1, options=[f"o{i}" for i in range(27)], answer="A", answer_index=0),
        "options",
        "2 to 26 options, found 27",
    ),
    "letter not among options": (
        medqa_row(answer_idx="E", answer=None),
        "answer_idx",
        "not among the options A-D",
    ),
    "letter and index disagree": (mmlu_row(1, answer="B", answer_index=3), "answer_index", "disagrees"),
    "answer text disagrees": (medqa_row(answer="Drug C"), "answer", "differs from option B"),
    "letters with a gap": (
        {"question": "Q?", "options": {"A": "a", "B": "b", "D": "d"}, "answer_idx": "A", "answer": "a"},
        "options",
        "without gaps, found A, B, D",
    ),
    "empty option": (
        {"question": "Q?", "options": {"A": "a", "B": " "}, "answer_idx": "A", "answer": "a"},
        "options[B]",
        "non-empty text",
    ),
    "duplicate option texts": (
        {
            "question": "Q?",
            "options": {"A": "Aspirin", "B": "x", "C": " aspirin "},
            "answer_idx": "B",
            "answer": "x",
        },
        "options",
        "options A and C have the same text",
    ),
    "placeholder inside the options": (
        mmlu_row(1, options=["a", "N/A", "c"], answer="A", answer_index=0),
        "options[B]",
        "placeholder",
    ),
    "placeholder as the answer": (
        mmlu_row(1, options=["a", "b", "N/A"], answer="C", answer_index=2),
        "options[C]",
        "placeholder",
    ),
    "unrecognised schema": (
        {"question": "Q?", "choices": ["a", "b"], "label": 0},
        "options",
        r"found keys \['choices', 'label', 'question'\]; expected one of MedQA",
    ),
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_bad_row_error_names_file_row_and_field(tmp_path, case):
    bad_row, field, problem = BAD_ROWS[case]
    path = write_jsonl(tmp_path / "bad.jsonl", [medqa_row(), bad_row])

    with pytest.raises(ValueError, match=problem) as caught:
        load_mcqa(str(path))

    message = str(caught.value)
    assert str(path) in message
    assert "row 2" in message
    assert f"field '{field}'" in message


def test_trailing_placeholder_options_are_padding_and_dropped(tmp_path):
    path = write_jsonl(
        tmp_path / "mmlu.jsonl",
        [mmlu_row(1, options=["a", "b", "c", "N/A", "n/a"], answer="B", answer_index=1)],
    )
    assert load_mcqa(str(path))[0]["options"] == ["a", "b", "c"]


def test_skip_invalid_rows_leaves_bad_rows_out_and_reports_them(tmp_path, caplog):
    rows = [medqa_row("Q1?"), medqa_row(answer_idx="Z", answer=None), medqa_row("Q3?"), {"question": "Q?"}]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    with pytest.raises(ValueError, match=r"row 2, field 'answer_idx'.*--skip_invalid_rows true"):
        load_mcqa(str(path))

    caplog.set_level(logging.WARNING, logger="medrlvr_trl.data")
    dataset, skipped = read_mcqa(str(path), skip_invalid_rows=True)
    assert dataset["question"] == ["Q1?", "Q3?"]
    assert skipped.count == 2 and len(skipped.first) == 2
    assert "row 2, field 'answer_idx'" in skipped.first[0] and "row 4" in skipped.first[1]
    assert "skipped 2 invalid rows" in caplog.text
    assert skipped.as_record() == {"count": 2, "first": list(skipped.first)}


def test_duplicate_ids_name_both_rows(tmp_path):
    path = write_jsonl(tmp_path / "dup.jsonl", [mmlu_row(7), mmlu_row(8), mmlu_row(7)])

    with pytest.raises(ValueError, match=r"dup\.jsonl, row 3, field 'id': id '7' is already used by row 1"):
        load_mcqa(str(path))


def test_bad_row_past_the_limit_still_fails(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [medqa_row(), medqa_row(answer_idx="Z", answer=None)])

    with pytest.raises(ValueError, match="row 2"):
        load_mcqa(str(path), limit=1)


# --- filtering and limits ------------------------------------------------------------------------------


def test_limit_keeps_the_first_rows_after_filtering(tmp_path):
    rows = [mmlu_row(1, "law"), mmlu_row(2), mmlu_row(3, "law"), mmlu_row(4), mmlu_row(5)]
    ds = load_mcqa(str(write_jsonl(tmp_path / "m.jsonl", rows)), category="health", limit=2)

    assert ds["id"] == ["2", "4"]


def test_category_matching_no_row_names_the_category_and_those_present(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [mmlu_row(1, "law"), mmlu_row(2, "biology")])

    with pytest.raises(ValueError, match=r"category 'health'; categories present: \['biology', 'law'\]"):
        load_mcqa(str(path), category="health")


def test_category_filter_on_rows_without_a_category_field_fails(tmp_path):
    path = write_jsonl(tmp_path / "medqa.jsonl", [medqa_row()])

    with pytest.raises(ValueError, match=r"medqa\.jsonl, row 1, field 'category'"):
        load_mcqa(str(path), category="health")


def test_non_positive_limit_is_rejected(tmp_path):
    path = write_jsonl(tmp_path / "medqa.jsonl", [medqa_row()])

    with pytest.raises(ValueError, match="limit must be a positive"):
        load_mcqa(str(path), limit=0)


# --- Hub --------------------------------------------------------------------------------------------------


def test_offline_hub_fails_fast_and_says_to_pass_a_local_path(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()

    with pytest.raises(DataSourceError) as caught:
        load_mcqa("GBaker/MedQA-USMLE-4-options", "train")

    message = str(caught.value)
    assert "GBaker/MedQA-USMLE-4-options" in message
    assert "local path" in message and "train.jsonl" in message
    assert time.monotonic() - started < 10


def test_offline_flag_set_after_import_fails_without_touching_the_network(monkeypatch):
    # The Hub libraries read HF_HUB_OFFLINE at import; set later, they would retry the network for ~25 s.
    monkeypatch.setattr(data.datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def must_not_be_called(*args, **kwargs):
        raise AssertionError("load_dataset was called although HF_HUB_OFFLINE is set")

    monkeypatch.setattr(data.datasets, "load_dataset", must_not_be_called)

    with pytest.raises(DataSourceError, match=r"'GBaker/MedQA-USMLE-4-options'.*offline.*local path"):
        load_mcqa("GBaker/MedQA-USMLE-4-options")


def test_hub_connection_error_becomes_one_clear_error(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hub")

    monkeypatch.setattr(data.datasets, "load_dataset", unreachable)

    with pytest.raises(DataSourceError, match=r"'TIGER-Lab/MMLU-Pro'.*unreachable.*local path"):
        load_mcqa("TIGER-Lab/MMLU-Pro", "test")


def _bigbio_source_rows(answer: str) -> datasets.Dataset:
    """One row as bigbio's `med_qa_en_source` config holds it: options as key/value records."""
    row = {"question": "Q?", "options": [{"key": "A", "value": "a"}, {"key": "B", "value": "b"}]}
    return datasets.Dataset.from_list([{**row, "answer_idx": answer}])


def test_hub_config_after_a_colon_is_passed_as_the_config_name(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    calls = []

    def fake_load_dataset(repo, config, split):
        calls.append((repo, config, split))
        return _bigbio_source_rows(answer="B")

    monkeypatch.setattr(data.datasets, "load_dataset", fake_load_dataset)

    ds = load_mcqa("bigbio/med_qa:med_qa_en_source", "validation")

    assert calls == [("bigbio/med_qa", "med_qa_en_source", "validation")]
    assert (ds[0]["id"], ds[0]["source"], ds[0]["answer"]) == ("med_qa-validation-1", "med_qa", "B")


def test_a_script_dataset_is_read_from_the_hub_s_parquet_export_of_its_config(monkeypatch):
    """datasets >= 4 refuses bigbio's loading script; the recipe configs' default must still load."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    calls = []

    def fake_load_dataset(repo, config=None, *, split, data_dir=None, revision=None):
        calls.append((repo, config, data_dir, revision, split))
        if revision is None:
            raise RuntimeError("Dataset scripts are no longer supported, but found med_qa.py")
        return _bigbio_source_rows(answer="A")

    monkeypatch.setattr(data.datasets, "load_dataset", fake_load_dataset)

    ds = load_mcqa("bigbio/med_qa:med_qa_en_source", "train")

    assert calls == [
        ("bigbio/med_qa", "med_qa_en_source", None, None, "train"),
        ("bigbio/med_qa", None, "med_qa_en_source", "refs/convert/parquet", "train"),
    ]
    assert (ds[0]["answer"], ds[0]["options"]) == ("A", ["a", "b"])


def test_a_pinned_revision_is_read_from_the_hub_and_replaces_the_moving_parquet_export(monkeypatch):
    """refs/convert/parquet is rewritten by the Hub's converter; a pinned commit reads the same rows."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    calls = []

    def fake_load_dataset(repo, config=None, *, split, data_dir=None, revision=None):
        calls.append((repo, config, data_dir, revision, split))
        if data_dir is None and repo == "bigbio/med_qa":
            raise RuntimeError("Dataset scripts are no longer supported, but found med_qa.py")
        return _bigbio_source_rows(answer="A")

    monkeypatch.setattr(data.datasets, "load_dataset", fake_load_dataset)
    load_mcqa("bigbio/med_qa:med_qa_en_source", "test", revision="0123abc")
    load_mcqa("GBaker/MedQA-USMLE-4-options", "test", revision="4567def")
    assert calls == [
        ("bigbio/med_qa", "med_qa_en_source", None, "0123abc", "test"),
        ("bigbio/med_qa", None, "med_qa_en_source", "0123abc", "test"),
        ("GBaker/MedQA-USMLE-4-options", None, None, "4567def", "test"),
    ]


def test_a_revision_on_a_local_path_is_a_user_error(tmp_path):
    (tmp_path / "test.jsonl").write_text("")
    with pytest.raises(data.UserError, match="local path; a revision applies to Hub datasets only"):
        load_mcqa(str(tmp_path), "test", revision="0123abc")


def test_a_script_dataset_without_a_parquet_export_is_one_clear_error(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)

    def fake_load_dataset(repo, config=None, *, split, data_dir=None, revision=None):
        if revision is None:
            raise RuntimeError("Dataset scripts are no longer supported, but found med_qa.py")
        raise FileNotFoundError(f"Unable to find 'hf://datasets/{repo}@{revision}/{data_dir}'")

    monkeypatch.setattr(data.datasets, "load_dataset", fake_load_dataset)

    with pytest.raises(
        DataSourceError, match=r"'bigbio/med_qa:med_qa_en_source'.*Unable to find.*local path"
    ):
        load_mcqa("bigbio/med_qa:med_qa_en_source", "train")


# --- train/test overlap ------------------------------------------------------------------------------------


def _dataset(ids: list[str], questions: list[str]) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"id": ids, "question": questions})


def test_question_overlap_ignores_case_whitespace_and_punctuation(caplog):
    train = _dataset(["t1", "t2", "t3"], ["What causes fever?", "Which nerve is injured?", "Unrelated one."])
    test = _dataset(
        ["e1", "e2", "e3", "e4"], ["what  causes FEVER", "New question?", "Which nerve, is injured", "x"]
    )

    with caplog.at_level(logging.WARNING, logger="medrlvr_trl.data"):
        report = question_overlap(train, test)

    assert report == OverlapReport(
        size_a=3,
        size_b=4,
        exact=2,
        near=0,
        threshold=0.5,
        ngram=8,
        examples=(OverlapMatch("e1", "t1", "exact", 1.0), OverlapMatch("e3", "t2", "exact", 1.0)),
    )
    assert (report.overlapping, report.fraction_of_b) == (2, 0.5)
    assert "2 of 4 rows" in caplog.text


def test_question_overlap_of_disjoint_sets_is_zero_and_does_not_warn(caplog):
    with caplog.at_level(logging.WARNING, logger="medrlvr_trl.data"):
        report = question_overlap(_dataset(["a"], ["First?"]), _dataset(["b"], ["Second?"]))

    assert (report.overlapping, report.fraction_of_b, report.examples) == (0, 0.0, ())
    assert caplog.text == ""


VIGNETTE = "A 45 year old man presents with fever and cough for three days after travel abroad"  # 16 words


def _with_word(text: str, position: int, word: str) -> str:
    words = text.split()
    words[position] = word
    return " ".join(words)


def test_a_question_sharing_most_word_8_grams_is_a_near_duplicate_and_one_sharing_few_is_not():
    train = _dataset(["t1", "t2"], ["Which vitamin deficiency causes scurvy?", VIGNETTE])
    near = _with_word(VIGNETTE, 13, "visiting")  # 3 of its 9 8-grams hold word 14: 6 of 9 shared
    far = _with_word(VIGNETTE, 7, "rash")  # 8 of 9 8-grams hold word 8: 1 of 9 shared
    test = _dataset(["copy", "near", "far"], [VIGNETTE.upper() + "!", near, far])

    report = question_overlap(train, test)

    assert (report.exact, report.near, report.overlapping) == (1, 1, 2)
    assert report.examples == (
        OverlapMatch("copy", "t2", "exact", 1.0),
        OverlapMatch("near", "t2", "near", pytest.approx(6 / 9)),
    )
    assert question_overlap(train, test, threshold=0.7).near == 0  # 6/9 is under a 0.7 threshold
    assert question_overlap(train, test, threshold=1 / 9).near == 2  # the threshold is inclusive


def test_questions_under_eight_words_only_count_as_exact_copies():
    train = _dataset(["t1"], ["What is the first line drug for migraine?"])  # 8 words: one 8-gram
    test = _dataset(
        ["same", "one word changed", "short copy", "short changed"],
        [
            "What is the first-line drug for migraine",  # exact after normalising
            "What is the first line drug for gout?",
            "What is the first line drug",
            "What is the second line drug",
        ],
    )
    train_short = _dataset(["s1"], ["What is the first line drug"])

    assert (question_overlap(train, test).exact, question_overlap(train, test).near) == (1, 0)
    short = question_overlap(train_short, test)
    assert (short.exact, short.near) == (1, 0)
    assert [m.id for m in short.examples] == ["short copy"]


def test_a_near_duplicate_names_the_training_question_sharing_most_8_grams():
    other = _with_word(VIGNETTE, 15, "overseas")  # shares 8 of the vignette's 9 8-grams
    train = _dataset(["t1", "t2"], [VIGNETTE, other])
    test = _dataset(["e1"], [_with_word(other, 0, "The")])  # shares 8 with t2, 7 with t1
    (match,) = question_overlap(train, test).examples
    assert (match.match_id, match.kind) == ("t2", "near")


def test_one_index_of_the_training_set_serves_several_test_sets_and_is_fast():
    words = [f"w{i}" for i in range(3000)]
    train_questions = [" ".join(words[(7 * i + k * 13) % 3000] for k in range(100)) for i in range(2000)]
    index = QuestionIndex.build([f"t{i}" for i in range(2000)], train_questions)
    tests = _dataset(
        [f"e{i}" for i in range(500)], train_questions[:5] + [f"new question {i}" for i in range(495)]
    )
    started = time.perf_counter()
    for _ in range(2):
        report = question_overlap(index, tests)
    assert (report.size_a, report.exact) == (2000, 5)
    assert time.perf_counter() - started < 5


def test_within_set_duplicates_keep_the_first_of_each_group():
    questions = ["What causes fever?", "Other question", "what  causes FEVER", "Other question!", "Third"]
    assert unique_question_indices(questions) == [0, 1, 4]


def test_a_pinned_commit_of_the_parquet_export_reads_the_config_folder(monkeypatch):
    """A pinned commit of `refs/convert/parquet` holds no script: `datasets` refuses the config name
    there (ValueError, not the script RuntimeError), and the config's folder at that commit is read."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    sha = "0" * 40
    calls = []

    def fake_load_dataset(repo, config=None, *, split, data_dir=None, revision=None):
        calls.append((repo, config, data_dir, revision, split))
        if config is not None:
            raise ValueError(f"BuilderConfig '{config}' not found. Available: ['default']")
        return _bigbio_source_rows(answer="A")

    monkeypatch.setattr(data.datasets, "load_dataset", fake_load_dataset)

    ds = load_mcqa("bigbio/med_qa:med_qa_en_source", "train", revision=sha)

    assert calls == [
        ("bigbio/med_qa", "med_qa_en_source", None, sha, "train"),
        ("bigbio/med_qa", None, "med_qa_en_source", sha, "train"),
    ]
    assert ds[0]["answer"] == "A"
