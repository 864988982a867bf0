"""Rule-based reasoning analysis: think conclusions, answer consistency, format and length, aggregates by hand."""
from __future__ import annotations

import pytest

from seedr1.evaluate.reasoning import (analyse, answer_letter, format_ok, is_consistent, option_letters,
                                       reasoning_chars, think_conclusion, think_text)

OPTIONS = ["boil water", "cut the onion", "wash the cup", "open the door"]


def think(text: str, answer: str = "<answer>A</answer>") -> str:
    return f"<think>{text}</think>{answer}"


CONCLUSIONS = [
    ("The answer is B.", "B"),
    ("A man opens the fridge. A bowl is on the table.", None),  # the article "A" is no mention
    ("Plan A failed, so a new plan.", None),  # a capital A without a cue
    ("answer is a good guess", None),  # lower-case letters are English, not options
    ("It is 5 p.m. A cup is visible.", None),  # "A" opens a sentence but is not followed by "." or ":"
    ("A.M. is when the man cooks.", None),  # "A." glued to "M."
    ("A man walks in. So option C.", "C"),
    ("(D) fits best", "D"),
    ("I should wash the cup next.", "C"),  # by option text
    ("NEXT: WASH THE CUP", "C"),  # option text, case-insensitive
    ("Option A is wrong; the answer is D", "D"),  # the last mention wins
    ("The answer is B, but wait: the person will open the door", "D"),  # a later option text beats a letter
    ("First open the door? No. Answer: (A)", "A"),  # a later letter beats an option text
    ("A. boil water is unlikely.\nB. cut the onion fits.", "B"),  # "X." opening a line; B's text comes later too
    ("A: boil water", "A"),  # "X:" opening a line
    ("Looking again. C) is it.", "C"),  # "X)" opening a sentence
    ("I choose C", "C"),
    ("The choice would be (B) here", "B"),
    ("the answer is E", None),  # not one of the four letters
    ("", None),  # empty think
]


@pytest.mark.parametrize("text,expected", CONCLUSIONS, ids=[t or "<empty>" for t, _ in CONCLUSIONS])
def test_think_conclusion(text, expected):
    assert think_conclusion(think(text), OPTIONS) == expected


def test_no_think_tag_concludes_nothing():
    assert think_conclusion("<answer>B</answer>", OPTIONS) is None
    assert think_conclusion("<think>the answer is B but never closed<answer>B</answer>", OPTIONS) is None


def test_a_longer_option_text_is_one_mention_not_also_the_shorter_one_inside():
    options = ["the door", "open the door", "close the window", "sit down"]
    assert think_conclusion(think("I will open the door"), options) == "B"
    assert think_conclusion(think("open the door? no, just look at the door"), options) == "A"


def test_option_letters_follow_the_option_count():
    assert option_letters(OPTIONS) == "ABCD"
    assert option_letters(["x", "y"]) == "AB"
    assert think_conclusion(think("the answer is C"), ["x", "y"]) is None  # only A and B exist


@pytest.mark.parametrize("response,expected", [
    ("<think>the answer is B</think><answer>B</answer>", True),
    ("<think>I would wash the cup</think><answer>C. wash the cup</answer>", True),
    ("<think>the answer is B</think><answer>C. wash the cup</answer>", False),
    ("<think>nothing to conclude</think><answer>B</answer>", None),  # no think conclusion
    ("<think>the answer is B</think>", None),  # no answer tag
    ("<think>the answer is B</think><answer> </answer>", None),  # empty answer
    ("<think>the answer is B</think><answer>b</answer>", None),  # lower-case: not an answer letter
    ("<answer>B</answer>", None),  # no think at all
])
def test_is_consistent(response, expected):
    assert is_consistent(response, OPTIONS) is expected


def test_answer_letter_is_the_official_extraction_first_character():
    assert answer_letter("<answer>\n B. cut the onion \n</answer><answer>C</answer>", OPTIONS) == "B"
    assert answer_letter("<answer>cut the onion</answer>", OPTIONS) is None
    assert answer_letter("B", OPTIONS) is None


def test_format_ok_and_reasoning_chars():
    assert format_ok("<think> ab </think>\n<answer>A</answer>") is True
    assert reasoning_chars("<think> ab </think>\n<answer>A</answer>") == 2  # stripped
    assert format_ok("x<think>ab</think><answer>A</answer>") is False  # must start with <think>
    assert format_ok("<answer>A</answer>") is False
    assert reasoning_chars("<answer>A</answer>") == 0
    assert think_text("<think>one</think><think>two</think>") == "one"


def test_analyse_by_hand():
    responses = [
        "<think>So the answer is A.</think><answer>A</answer>",  # format, 19 chars, consistent
        "<think>I pick wash the cup</think>\n<answer>D</answer>",  # format, 19 chars, C vs D: inconsistent
        "<answer>B</answer>",  # no format, 0 chars, not judged
        "<think>hmm</think><answer>C</answer>",  # format, 3 chars, no conclusion: not judged
    ]
    summary = analyse(responses, [OPTIONS] * 4)
    assert summary == {"format_rate": 3 / 4, "mean_reasoning_chars": 41 / 4, "consistency_rate": 1 / 2,
                       "consistency_n": 2}


def test_analyse_empty_and_mismatched():
    assert analyse([], []) == {"format_rate": 0.0, "mean_reasoning_chars": 0.0, "consistency_rate": None,
                               "consistency_n": 0}
    with pytest.raises(ValueError, match="2 responses but 1 option lists"):
        analyse(["a", "b"], [OPTIONS])
