import pytest

from medrlvr_trl.prompts import LETTERS, TEMPLATES, answer_target, build_prompt, option_letters

R1_HEADER = (
    "A conversation between User and Assistant. The user asks a question, and the assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> "
    "</answer> tags, respectively, i.e., <think> reasoning process here </think><answer> answer here "
    "</answer>.\n"
)

FOUR_OPTIONS = ["Ampicillin", "Ceftriaxone", "Doxycycline", "Nitrofurantoin"]


def test_r1_prompt_with_four_options_matches_paper_template():
    prompt = build_prompt("Which drug treats gonorrhea?", FOUR_OPTIONS)
    assert prompt == (
        R1_HEADER + "User: Which drug treats gonorrhea?\n"
        "Answer with just one of the letters from the options below.\n"
        "Options:\n"
        "A. Ampicillin\n"
        "B. Ceftriaxone\n"
        "C. Doxycycline\n"
        "D. Nitrofurantoin\n"
        "Assistant:"
    )


def test_r1_prompt_with_ten_options_letters_a_to_j():
    options = [f"choice {i}" for i in range(10)]
    prompt = build_prompt("Pick one.", options)
    assert prompt == (
        R1_HEADER + "User: Pick one.\n"
        "Answer with just one of the letters from the options below.\n"
        "Options:\n"
        "A. choice 0\nB. choice 1\nC. choice 2\nD. choice 3\nE. choice 4\n"
        "F. choice 5\nG. choice 6\nH. choice 7\nI. choice 8\nJ. choice 9\n"
        "Assistant:"
    )


def test_direct_prompt_has_no_reasoning_tags():
    prompt = build_prompt("Which drug treats gonorrhea?", FOUR_OPTIONS, template="direct")
    assert prompt == (
        "A conversation between User and Assistant. The user asks a question, and the assistant provides "
        "the user with the answer.\n"
        "User: Which drug treats gonorrhea?\n"
        "Answer with just one of the letters from the options below.\n"
        "Options:\n"
        "A. Ampicillin\nB. Ceftriaxone\nC. Doxycycline\nD. Nitrofurantoin\n"
        "Assistant:"
    )


def test_templates_say_whether_completions_use_tags():
    assert TEMPLATES["r1"].expects_tags
    assert not TEMPLATES["direct"].expects_tags


def test_unknown_template_error_lists_known_templates():
    with pytest.raises(ValueError, match=r"unknown prompt template 'cot'.*'direct'.*'r1'"):
        build_prompt("Q?", FOUR_OPTIONS, template="cot")


def test_braces_in_question_are_kept_verbatim():
    prompt = build_prompt("Value of {x} in {input}?", FOUR_OPTIONS)
    assert "User: Value of {x} in {input}?\n" in prompt


def test_multiline_option_stays_on_one_line():
    prompt = build_prompt("Q?", ["first\nline", "  second  "])
    assert "A. first line\nB. second\nAssistant:" in prompt


def test_lm_eval_template_pastes_question_and_options_verbatim():
    """As lm-eval's medqa_4options does (tests/test_loglikelihood.py checks against lm-eval itself)."""
    prompt = build_prompt("Q  one? ", ['intoxication\n"', "  second  ", "a\tb"], template="lm_eval")
    assert prompt == 'Question: Q  one? \nA. intoxication\n"\nB.   second  \nC. a\tb\nAnswer:'


@pytest.mark.parametrize("options", [[], ["only one"], [f"o{i}" for i in range(27)]])
def test_option_count_outside_two_to_26_is_rejected(options):
    with pytest.raises(ValueError, match="need a list of 2 to 26"):
        build_prompt("Q?", options)


def test_twenty_six_options_are_accepted():
    prompt = build_prompt("Q?", [f"o{i}" for i in range(26)])
    assert prompt.endswith("Z. o25\nAssistant:")


def test_empty_option_is_rejected_by_letter():
    with pytest.raises(ValueError, match="option C"):
        build_prompt("Q?", ["a", "b", "  "])


def test_empty_question_is_rejected():
    with pytest.raises(ValueError, match="question"):
        build_prompt("   ", FOUR_OPTIONS)


def test_option_letters_run_a_to_j_for_ten_options():
    assert option_letters(10) == list("ABCDEFGHIJ")
    assert LETTERS[:10] == tuple("ABCDEFGHIJ")


def test_option_letters_beyond_z_is_an_error():
    with pytest.raises(ValueError):
        option_letters(27)


@pytest.mark.parametrize(
    ("style", "expected"),
    [("letter", " B"), ("letter_text", " B. Ceftriaxone"), ("tagged", " <answer>B</answer>")],
)
def test_answer_target_styles(style, expected):
    assert answer_target("B", FOUR_OPTIONS, style=style) == expected


def test_prompt_plus_target_reads_as_one_answer():
    text = build_prompt("Q?", FOUR_OPTIONS) + answer_target("B", FOUR_OPTIONS, style="letter")
    assert text.endswith("\nAssistant: B")


def test_answer_target_rejects_letter_beyond_options():
    with pytest.raises(ValueError, match="'E' is not one of the 4 option letters ABCD"):
        answer_target("E", FOUR_OPTIONS, style="letter")


def test_answer_target_rejects_unknown_style():
    with pytest.raises(ValueError, match="unknown answer target style 'cot'"):
        answer_target("B", FOUR_OPTIONS, style="cot")
