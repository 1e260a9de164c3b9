import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medrlvr_trl.rewards import RewardValues, check_format, extract_letter, verify

# (completion, format ok in "paper" mode, format ok in "strict" mode)
FORMAT_CASES = [
    pytest.param("<think>reasoning</think><answer>B</answer>", True, True, id="valid"),
    pytest.param("  <think> r </think>\n <answer> B </answer> \n", True, True, id="valid-whitespace"),
    pytest.param("<think>r</think>", False, False, id="missing-answer"),
    pytest.param("<answer>B</answer>", False, False, id="missing-think"),
    pytest.param("<think>r<answer>B</answer>", False, False, id="missing-think-close"),
    pytest.param("<think>r</think><answer>B", False, False, id="missing-answer-close"),
    pytest.param("B", False, False, id="no-tags"),
    pytest.param("", False, False, id="empty"),
    pytest.param("<think>a</think><think>b</think><answer>B</answer>", False, False, id="two-thinks"),
    pytest.param("<think>r</think><answer>B</answer><answer>C</answer>", False, False, id="two-answers"),
    pytest.param("<think>r <think> r</think><answer>B</answer>", False, False, id="duplicate-think-open"),
    pytest.param("<answer>B</answer><think>r</think>", False, False, id="answer-before-think"),
    pytest.param("</think>r<think><answer>B</answer>", False, False, id="think-tags-swapped"),
    pytest.param("<think>r</think></answer>B<answer>", False, False, id="answer-tags-swapped"),
    pytest.param("<think>r<answer>B</answer></think>", False, False, id="answer-inside-think"),
    pytest.param("<think>r</think><answer>B</answer> Done.", False, False, id="text-after-answer"),
    pytest.param("<think>r</think> So: <answer>B</answer>", False, False, id="text-between"),
    pytest.param("Step 1 ... <think></think><answer>B</answer>", True, False, id="prefix-empty-think"),
    pytest.param("Step 1 ... <think>ok</think><answer>B</answer>", True, False, id="prefix-text"),
    pytest.param("<think></think><answer>B</answer>", True, False, id="empty-think"),
    pytest.param("<think> \n </think><answer>B</answer>", True, False, id="blank-think"),
    pytest.param("<think>r</think>< answer >B</ answer >", False, False, id="spaced-tags"),
    pytest.param("<think>r</think><Answer>B</Answer>", False, False, id="capitalised-tags"),
    pytest.param("<THINK>r</THINK><answer>B</answer>", False, False, id="upper-case-think"),
    pytest.param("<think>r</think><answer></answer>", True, True, id="empty-answer-is-format-ok"),
]


@pytest.mark.parametrize(("completion", "paper_ok", "strict_ok"), FORMAT_CASES)
def test_format_rules_per_mode(completion, paper_ok, strict_ok):
    assert verify(completion, "B", 4, mode="paper").format_ok is paper_ok
    assert verify(completion, "B", 4, mode="strict").format_ok is strict_ok


INVALID_CASES = [
    pytest.param(case.values[0], mode, id=f"{case.id}-{mode}")
    for case in FORMAT_CASES
    for mode, ok in (("paper", case.values[1]), ("strict", case.values[2]))
    if not ok
]


@pytest.mark.parametrize(("completion", "mode"), INVALID_CASES)
def test_invalid_format_scores_format_error_without_letter(completion, mode):
    verdict = verify(completion, "B", 4, mode=mode)
    assert (verdict.reward, verdict.letter, verdict.correct) == (-1.0, None, False)


@pytest.mark.parametrize(
    ("answer_text", "letter"),
    [
        ("B", "B"),
        ("b", "B"),
        ("  B \n", "B"),
        ("B.", "B"),
        ("B. Ceftriaxone", "B"),
        ("B)", "B"),
        ("B) Ceftriaxone", "B"),
        ("B: Ceftriaxone", "B"),
        ("(B)", "B"),
        ("(B) Ceftriaxone", "B"),
        ("[B]", "B"),
        ("[B] Ceftriaxone", "B"),
        ("The answer is B", "B"),
        ("the answer is (B)", "B"),
        ("THE ANSWER IS B. Ceftriaxone", "B"),
        ("answer is B", "B"),
        ("Answer: B", "B"),
        ("answer:B)", "B"),
        ("The answer is b", "B"),
        ("J. Ten", "J"),
    ],
)
def test_extract_letter_accepted_patterns(answer_text, letter):
    assert extract_letter(answer_text) == letter


@pytest.mark.parametrize(
    "answer_text",
    [
        "",
        "   ",
        "A or B",
        "A/B",
        "A, C",
        "B and D",
        "B Ceftriaxone",
        "Ceftriaxone",
        "b.",
        "(b)",
        "(B",
        "(B]",
        "BC",
        "**B**",
        "The answer is",
        "The answer is: B",
        "My answer is B",
        "answer isB",
        "B\nbecause",
    ],
)
def test_extract_letter_rejected_patterns(answer_text):
    assert extract_letter(answer_text) is None


@pytest.mark.parametrize("mode", ["paper", "strict"])
def test_correct_letter_scores_one(mode):
    verdict = verify(
        "<think>Gonorrhea: ceftriaxone.</think><answer>B. Ceftriaxone</answer>", "B", 4, mode=mode
    )
    assert verdict.format_ok and verdict.correct
    assert (verdict.letter, verdict.reward) == ("B", 1.0)


@pytest.mark.parametrize("mode", ["paper", "strict"])
def test_wrong_letter_scores_zero(mode):
    verdict = verify("<think>r</think><answer>C</answer>", "B", 4, mode=mode)
    assert verdict.format_ok and not verdict.correct
    assert (verdict.letter, verdict.reward) == ("C", 0.0)


def test_unreadable_answer_is_wrong_not_format_error():
    verdict = verify("<think>r</think><answer>A or B</answer>", "B", 4)
    assert (verdict.format_ok, verdict.letter, verdict.correct, verdict.reward) == (True, None, False, 0.0)


def test_lower_case_gold_letter_in_completion_is_correct():
    assert verify("<think>r</think><answer>b</answer>", "B", 4).correct


def test_letter_beyond_options_is_kept_but_wrong():
    verdict = verify("<think>r</think><answer>F</answer>", "B", 4)
    assert (verdict.format_ok, verdict.letter, verdict.correct, verdict.reward) == (True, "F", False, 0.0)


def test_answer_leaked_in_think_still_scores_by_answer_tag():
    verdict = verify("<think>The correct answer is C</think><answer>C</answer>", "C", 5)
    assert verdict.reward == 1.0


def test_custom_reward_values_are_used():
    values = RewardValues(format_error=-2.0, wrong=-0.5, correct=3.0)
    assert verify("B", "B", 4, values=values).reward == -2.0
    assert verify("<think>r</think><answer>C</answer>", "B", 4, values=values).reward == -0.5
    assert verify("<think>r</think><answer>B</answer>", "B", 4, values=values).reward == 3.0


def test_check_format_returns_the_parts():
    parts = check_format("I think B. <think> short </think>\n<answer> B </answer>")
    assert (parts.prefix, parts.think, parts.answer) == ("I think B. ", " short ", " B ")


def test_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match=r"unknown format mode 'loose'.*'paper'.*'strict'"):
        verify("<think>r</think><answer>B</answer>", "B", 4, mode="loose")


@pytest.mark.parametrize(
    ("answer", "num_options", "message"),
    [
        ("b", 4, "gold answer"),
        ("E", 4, "gold answer"),
        ("AB", 4, "gold answer"),
        ("", 4, "gold answer"),
        ("A", 1, "num_options"),
        ("A", 27, "num_options"),
        ("A", "4", "num_options"),
    ],
)
def test_bad_gold_answer_or_option_count_is_an_error(answer, num_options, message):
    with pytest.raises(ValueError, match=message):
        verify("<think>r</think><answer>A</answer>", answer, num_options)


TAGS = st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", " ", "\n", "B", "The answer is "])
COMPLETIONS = st.one_of(st.text(), st.lists(st.one_of(TAGS, st.text(max_size=5)), max_size=12).map("".join))


@settings(max_examples=300, deadline=None)
@given(
    completion=COMPLETIONS,
    num_options=st.integers(min_value=2, max_value=26),
    gold_index=st.integers(min_value=0, max_value=25),
    mode=st.sampled_from(["paper", "strict"]),
)
def test_verify_never_raises_and_is_deterministic(completion, num_options, gold_index, mode):
    values = RewardValues(format_error=-3.0, wrong=0.25, correct=2.0)
    gold = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[gold_index % num_options]
    verdict = verify(completion, gold, num_options, mode=mode, values=values)
    assert verdict.reward in {-3.0, 0.25, 2.0}
    assert verdict.reward == (-3.0 if not verdict.format_ok else 2.0 if verdict.correct else 0.25)
    assert verdict == verify(completion, gold, num_options, mode=mode, values=values)
