"""Rule-based reasoning analysis: does the `<think>` text conclude with the option the `<answer>` gives?

The SEED-Bench-R1 paper finds RL sharpens perception but leaves reasoning chains less coherent with the answer. A
think text "concludes" with the LAST option it mentions, either by letter with a cue ("answer is B", "option B",
"choice: B", "(B)", or "B." / "B:" / "B)" opening a line or sentence; a bare capital "A" is the English article, not a
mention) or by the full text of an option (case-insensitive). The answer letter and the format rule are the official
ones from `seedr1.algo.rewards`.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Optional, Sequence

from seedr1.algo.rewards import extract_answer, format_reward

_THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def option_letters(options: Sequence[str]) -> str:
    """The letters naming `options` in order: 'ABCD' for four options."""
    return "".join(chr(ord("A") + i) for i in range(len(options)))


@lru_cache(maxsize=None)
def _letter_patterns(letters: str) -> tuple[re.Pattern, ...]:
    """Regexes whose group 1 is a letter mention; cue words are case-insensitive, the letter is not."""
    one = f"([{re.escape(letters)}])"
    cue = r"(?i:\b(?:answer|option|choice|choose|chose|select)(?:s|ed)?\b)"
    link = r"(?:\s*(?i:is|would\s+be|should\s+be|must\s+be|=|:|-))*\s*"
    return (
        re.compile(cue + link + r"\(?" + one + r"(?![A-Za-z0-9])"),  # "answer is B", "option (B)", "choice: B"
        re.compile(r"\(" + one + r"\)"),  # "(B)"
        # "B. ..." / "B:" / "B)" opening a line or a sentence (the lookbehind lets "A. x. B. y" find both)
        re.compile(r"(?:^[ \t]*|(?<=[.!?])\s+)" + one + r"[.:)](?=\s|$)", re.MULTILINE),
    )


def think_text(response: str) -> Optional[str]:
    """Text inside the first complete `<think>...</think>` pair; None when there is none."""
    m = _THINK_RE.search(response)
    return None if m is None else m.group(1)


def _mentions(text: str, options: Sequence[str]) -> list[tuple[int, int, str]]:
    """Every option mention in `text` as (start, end, letter), minus those lying inside a longer mention."""
    letters = option_letters(options)
    found = []
    for pattern in _letter_patterns(letters) if letters else ():  # no options known: nothing can be mentioned
        found += [(m.start(1), m.end(1), m.group(1)) for m in pattern.finditer(text)]
    lowered = text.lower()
    for letter, option in zip(letters, options):
        needle = option.strip().lower()
        start = lowered.find(needle) if needle else -1
        while start >= 0:
            found.append((start, start + len(needle), letter))
            start = lowered.find(needle, start + 1)
    # "open the door" mentions that option, not also option "the door" that it contains
    return [a for a in found
            if not any(b[0] <= a[0] and a[1] <= b[1] and b[1] - b[0] > a[1] - a[0] for b in found)]


def think_conclusion(response: str, options: Sequence[str]) -> Optional[str]:
    """Letter of the last option the think text mentions (by cued letter or option text); None when none."""
    text = think_text(response)
    mentions = _mentions(text, options) if text else []
    if not mentions:
        return None
    return max(mentions, key=lambda m: (m[0], m[1] - m[0]))[2]


def answer_letter(response: str, options: Sequence[str]) -> Optional[str]:
    """First character of the official extracted answer when it is one of the option letters, else None."""
    answer = extract_answer(response)
    return answer[0] if answer and answer[0] in option_letters(options) else None


def is_consistent(response: str, options: Sequence[str]) -> Optional[bool]:
    """Whether the think conclusion equals the answer letter; None when either is missing."""
    concluded, answered = think_conclusion(response, options), answer_letter(response, options)
    if concluded is None or answered is None:
        return None
    return concluded == answered


def format_ok(response: str) -> bool:
    """The official `format` reward's rule: `<think>...</think>` then `<answer>...</answer>`."""
    return format_reward([response], [""])[0] == 1.0


def reasoning_chars(response: str) -> int:
    """Length of the stripped think text; 0 when there is no think tag pair."""
    return len((think_text(response) or "").strip())


def analyse(responses: Sequence[str], options_per_response: Sequence[Sequence[str]]) -> dict:
    """{'format_rate', 'mean_reasoning_chars', 'consistency_rate', 'consistency_n'} over the responses.

    consistency_n counts responses with both a think conclusion and an answer letter; consistency_rate is the
    consistent share of those (None when there are none). Empty input gives 0.0 rates.
    """
    if len(responses) != len(options_per_response):
        raise ValueError(f"{len(responses)} responses but {len(options_per_response)} option lists")
    n = len(responses)
    verdicts = [is_consistent(r, o) for r, o in zip(responses, options_per_response)]
    judged = [v for v in verdicts if v is not None]
    return {
        "format_rate": sum(format_ok(r) for r in responses) / n if n else 0.0,
        "mean_reasoning_chars": sum(reasoning_chars(r) for r in responses) / n if n else 0.0,
        "consistency_rate": sum(judged) / len(judged) if judged else None,
        "consistency_n": len(judged),
    }
