"""The fact-recall benchmark: which fact each test question asks, and where its phrasings are cut."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from demo import knowledge
from demo.experiments import fact_recall
from demo.knowledge import RELATIONS
from medrlvr_trl.user_errors import UserError


@pytest.fixture(scope="module")
def asked():
    return fact_recall.asked_facts(
        fact_recall.TEST_FILE, knowledge.read_knowledge(knowledge.DEFAULT_KNOWLEDGE)
    )


def test_every_test_question_maps_to_one_fact_whose_object_is_among_its_options(asked):
    rows = [json.loads(line) for line in open(fact_recall.TEST_FILE, encoding="utf-8")]
    assert {f"demo:{item.fact.relation}" for item in asked} == {row["meta_info"] for row in rows}
    assert len({item.fact for item in asked}) == len(asked)
    for item in asked:
        assert item.fact.object in item.options
        assert any(item.fact.subject in row["question"] and row["answer"] == item.fact.object for row in rows)


def test_phrasings_are_cut_just_before_the_object_and_name_the_subject(asked):
    for item in asked:
        cuts = fact_recall.prefixes(item.fact)
        templates = RELATIONS[item.fact.relation].corpus
        assert 2 <= len(cuts) <= len(templates)
        for cut in cuts:
            assert item.fact.subject.lower() in cut.lower()
            assert item.fact.object not in cut
            assert any(
                knowledge.render(t, item.fact).startswith(cut + " " + item.fact.object) for t in templates
            )


def test_a_run_scores_every_phrasing_of_every_asked_fact(asked, tiny_model_dir, tmp_path):
    result = fact_recall.main(["--model", str(tiny_model_dir), "--out", str(tmp_path / "recall.json")])
    overall = result["overall"]
    assert overall["facts"] == len(asked)
    assert overall["phrasings"] == sum(len(fact_recall.prefixes(item.fact)) for item in asked)
    for measure in ("greedy", "ranked"):
        assert 0 <= overall[f"{measure}_facts"] <= overall["facts"]
        assert 0 <= overall[f"{measure}_phrasings"] <= overall["phrasings"]
    assert json.loads((tmp_path / "recall.json").read_text()) == result


def test_a_missing_model_folder_or_test_file_is_one_clear_error(tmp_path, tiny_model_dir):
    with pytest.raises(UserError, match="no model folder"):
        fact_recall.main(["--model", str(tmp_path / "absent")])
    with pytest.raises(UserError, match="no such file"):
        fact_recall.main(["--model", str(tiny_model_dir), "--test_file", str(tmp_path / "absent.jsonl")])


@pytest.mark.parametrize(
    "bad_row, expected",
    [
        ("{not json", "not a demo MCQA row"),
        ('{"question": "Q?", "options": {"A": "x"}, "answer": "x"}', "not a demo MCQA row.*meta_info"),
        ('{"question": "Q?", "options": {"A": "x"}, "answer": "x", "meta_info": "demo:antidote"}',
         "cannot tell which fact"),
    ],
)  # fmt: skip
def test_a_malformed_test_row_is_one_error_naming_its_line(tmp_path, bad_row, expected):
    good = Path(fact_recall.TEST_FILE).read_text(encoding="utf-8").splitlines()[0]
    test_file = tmp_path / "test.jsonl"
    test_file.write_text(f"{good}\n{bad_row}\n", encoding="utf-8")
    with pytest.raises(UserError, match=f"test.jsonl:2: {expected}"):
        fact_recall.asked_facts(test_file, knowledge.read_knowledge(knowledge.DEFAULT_KNOWLEDGE))


def test_a_continuation_is_greedy_exactly_when_generate_writes_it(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    context = tokenizer("The antidote for digoxin toxicity is", add_special_tokens=False)["input_ids"]
    out = model.generate(
        torch.tensor([context]), max_new_tokens=4, do_sample=False, output_scores=True,
        return_dict_in_generate=True, pad_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    written = out.sequences[0, len(context) :].tolist()
    expected_logprob = sum(
        torch.log_softmax(step_scores[0], -1)[token].item()
        for step_scores, token in zip(out.scores, written, strict=True)
    )
    logprob, greedy = fact_recall.score_continuation(model, context, written)
    assert greedy and logprob == pytest.approx(expected_logprob, abs=1e-4)
    other = written[:-1] + [(written[-1] + 1) % len(tokenizer)]
    assert not fact_recall.score_continuation(model, context, other)[1]
