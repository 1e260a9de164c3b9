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
        "The answer is",
        "My answer is B",
        "answer isB",
        "B\nbecause",
    ],
)
def test_extract_letter_rejected_patterns(answer_text):
    assert extract_letter(answer_text) is None


# Option texts that start like letters: A..E = "Staphylococcus aureus", "C. difficile colitis", ...
LETTERED_OPTIONS = ("Staphylococcus aureus", "C. difficile colitis", "E. coli", "S. aureus", "Listeria")

# (answer section, letter without option texts, letter with LETTERED_OPTIONS)
ANSWER_CASES = [
    # prefixes, any case, an optional colon after "is"
    pytest.param("The correct answer is C", "C", "C", id="the-correct-answer-is"),
    pytest.param("the correct answer is: C", "C", "C", id="the-correct-answer-is-colon"),
    pytest.param("The answer is: C", "C", "C", id="the-answer-is-colon"),
    pytest.param("Answer is: C", "C", "C", id="answer-is-colon"),
    pytest.param("Correct answer: C", "C", "C", id="correct-answer-colon"),
    pytest.param("FINAL ANSWER: C", "C", "C", id="final-answer-colon"),
    pytest.param("The final answer is C.", "C", "C", id="the-final-answer-is"),
    pytest.param("The correct answer is B. Ceftriaxone", "B", "B", id="prefix-then-letter-text"),
    # "option" / "choice"
    pytest.param("Option C", "C", "C", id="option"),
    pytest.param("CHOICE c", "C", "C", id="choice-lower-letter"),
    pytest.param("The answer is option (C)", "C", "C", id="prefix-option-paren"),
    pytest.param("Option C. Anemia", "C", "C", id="option-letter-text"),
    # Markdown emphasis
    pytest.param("**C**", "C", "C", id="bold"),
    pytest.param("*C*", "C", "C", id="italic"),
    pytest.param("__C__", "C", "C", id="underscore-bold"),
    pytest.param("***C***", "C", "C", id="bold-italic"),
    pytest.param("The answer is **C**", "C", "C", id="prefix-bold"),
    pytest.param("**C. Anemia**", "C", "C", id="bold-letter-text"),
    pytest.param("**C.** Anemia", "C", "C", id="bold-letter-then-text"),
    pytest.param("**Answer:** C", "C", "C", id="bold-prefix"),
    # a spaced hyphen or dash and text
    pytest.param("C - Anemia", "C", "C", id="hyphen"),
    pytest.param("C \u2013 Anemia", "C", "C", id="en-dash"),
    pytest.param("C \u2014 Anemia", "C", "C", id="em-dash"),
    # still no letter
    pytest.param("A or B", None, None, id="or"),
    pytest.param("A/B", None, None, id="slash"),
    pytest.param("A, C", None, None, id="comma"),
    pytest.param("B and D", None, None, id="and"),
    pytest.param("The answer is A or B", None, None, id="prefix-or"),
    pytest.param("**A** or **B**", None, None, id="bold-or"),
    pytest.param("A drug that blocks the receptor", None, None, id="article"),
    pytest.param("The answer is A drug", None, None, id="prefix-article"),
    pytest.param("Option A drug", None, None, id="option-article"),
    pytest.param("C -", None, None, id="hyphen-without-text"),
    pytest.param("C-Anemia", None, None, id="unspaced-hyphen"),
    pytest.param("**C", None, None, id="unclosed-bold"),
    pytest.param("** C **", None, None, id="spaced-bold"),
    pytest.param("optionC", None, None, id="option-glued"),
    pytest.param("The correct option is C", None, None, id="unknown-prefix"),
    # option texts that start like a letter: read as letters only without the option texts
    pytest.param("C. difficile", "C", None, id="c-difficile-prefix-of-option-b"),
    pytest.param("C. difficile colitis", "C", None, id="c-difficile-option-b-text"),
    pytest.param("c. difficile COLITIS", None, None, id="c-difficile-lower-letter"),
    pytest.param("E. coli", "E", None, id="e-coli-option-c-text"),
    pytest.param("E.  Coli", "E", None, id="e-coli-case-and-spacing"),
    pytest.param("E. coli sepsis", "E", None, id="e-coli-then-more"),
    pytest.param("The answer is **E. coli**", "E", None, id="e-coli-prefix-bold"),
    pytest.param("S. aureus", "S", None, id="s-aureus-option-d-text"),
    pytest.param("B. C. difficile colitis", "B", "B", id="letter-and-its-own-lettered-text"),
    pytest.param("C. E. coli", "C", "C", id="letter-and-its-own-text"),
    pytest.param("E. Listeria", "E", "E", id="letter-and-its-own-plain-text"),
    pytest.param("E.", "E", "E", id="letter-dot-no-text"),
    pytest.param("E) coli", "E", "E", id="letter-paren-not-an-option-text"),
    pytest.param("B. Staphylococcus", "B", "B", id="other-text-not-lettered"),
    pytest.param("A. baumannii", "A", "A", id="lettered-but-no-such-option"),
]


@pytest.mark.parametrize(("answer_text", "without_options", "with_options"), ANSWER_CASES)
def test_extract_letter_table(answer_text, without_options, with_options):
    assert extract_letter(answer_text) == without_options
    assert extract_letter(answer_text, options=LETTERED_OPTIONS) == with_options


@pytest.mark.parametrize(("answer_text", "without_options", "with_options"), ANSWER_CASES)
def test_verify_reads_the_answer_section_by_the_table(answer_text, without_options, with_options):
    completion = f"<think>r</think><answer>{answer_text}</answer>"
    assert verify(completion, "C", 5).letter == without_options
    verdict = verify(completion, "C", 5, options=LETTERED_OPTIONS)
    assert (verdict.format_ok, verdict.letter) == (True, with_options)
    assert verdict.reward == (1.0 if with_options == "C" else 0.0)


@pytest.mark.parametrize(
    "answer_text",
    [
        "The correct answer is C",
        "The answer is: C",
        "Option C",
        "**C**",
        "C - Anemia",
    ],
)
def test_issue_answers_for_gold_c_now_score_one(answer_text):
    options = ("Iron overload", "Hypertension", "Anemia", "Gout", "Asthma")
    for option_texts in (None, options):
        verdict = verify(f"<think>r</think><answer>{answer_text}</answer>", "C", 5, options=option_texts)
        assert (verdict.letter, verdict.correct, verdict.reward) == ("C", True, 1.0)


def test_an_option_that_is_the_letter_s_own_lettered_text_agrees_with_the_letter():
    options = ("Staphylococcus aureus", "Listeria", "C. difficile colitis", "E. coli")
    assert extract_letter("C. difficile", options=options) == "C"
    assert extract_letter("E. coli", options=options) is None  # option D's text, not letter E
    assert extract_letter("D. E. coli", options=options) == "D"


def test_the_letter_followed_by_its_own_option_text_is_that_letter():
    # "E. coli" is option A's text, and also letter E followed by option E's text: the letter reading wins.
    options = ("E. coli", "Listeria", "Anemia", "Gout", "coli")
    assert extract_letter("E. coli", options=options) == "E"
    assert extract_letter("E. COLI", options=options) == "E"
    assert extract_letter("E. coli sepsis", options=options) is None


def test_options_must_match_the_option_count():
    completion = "<think>r</think><answer>B</answer>"
    with pytest.raises(ValueError, match="options: got 3 option texts for num_options=4"):
        verify(completion, "B", 4, options=("x", "y", "z"))
    with pytest.raises(ValueError, match="options: got the string"):
        verify(completion, "B", 4, options="wxyz")
    assert verify(completion, "B", 4, options=()).correct  # no option texts: letters only


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


ANSWER_PIECES = st.sampled_from(["**", "*", "__", "The answer is ", "Option ", "E", ". ", " - ", "coli", " "])


@settings(max_examples=300, deadline=None)
@given(
    answer_text=st.one_of(st.text(max_size=20), st.lists(ANSWER_PIECES, max_size=8).map("".join)),
    options=st.lists(
        st.sampled_from(["E. coli", "E. coli sepsis", "coli", "Anemia", "C. diff"]), min_size=2, max_size=6
    ),
)
def test_option_texts_only_ever_take_a_letter_away(answer_text, options):
    letter = extract_letter(answer_text, options=options)
    assert letter in {None, extract_letter(answer_text)}
