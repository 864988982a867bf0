"""Scoring predictions with the official rule: tricky responses, errors naming the sample, summaries by hand."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from seedr1.data.schema import Sample
from seedr1.evaluate.scoring import ScoringError, read_predictions, score, score_draws, score_files

OPTIONS = ["boil water", "cut the onion", "wash the cup", "open the door"]


def sample(sid: str, gold: str, level: str | None = "L1", domain: str | None = "Daily life",
           options: list[str] = OPTIONS) -> Sample:
    return Sample(sample_id=sid, kind="validation", question="What next?", answer=options["ABCD".index(gold)],
                  options=list(options), gold_letter=gold, task_level=level, domain=domain)


def pred(sid, response: str) -> dict:
    return {"sample_id": sid, "response": response}


TRICKY = [
    ("B", "B", 0),  # no tag
    ("<answer> </answer>", "B", 0),  # empty tag
    ("<answer></answer>", "B", 0),
    ("<answer>B", "B", 0),  # unclosed tag
    ("<answer>B</answer><answer>C</answer>", "B", 1),  # the first tag counts ...
    ("<answer>B</answer><answer>C</answer>", "C", 0),  # ... and only the first
    ("<answer>b</answer>", "B", 0),  # case-sensitive
    ("<answer>B. cut the onion</answer>", "B", 1),  # letter then option text
    ("<answer>\n  B \n</answer>", "B", 1),  # whitespace and newlines inside the tag
    ("<answer>cut the onion</answer>", "B", 0),  # option text alone is not a letter
    ("<think>maybe <answer>C</answer></think><answer>B</answer>", "B", 0),  # a tag inside think is the first
    ("<think>C?</think><answer>B</answer>", "B", 1),
]


@pytest.mark.parametrize("response,gold,correct", TRICKY, ids=[f"{r!r}-{g}" for r, g, _ in TRICKY])
def test_tricky_responses(response, gold, correct):
    summary = score([sample("s1", gold)], [pred("s1", response)])
    assert (summary["correct"], summary["n"], summary["accuracy"]) == (correct, 1, float(correct))


def _samples() -> list[Sample]:
    lvb = ["red ball", "blue ball"]
    return [  # deliberately not in level order: the summary orders L1, L2, L3
        sample("v4", "D", "L2", "Work"),
        sample("v1", "A", "L1", "Daily life"),
        sample("v2", "B", "L1", "Work"),
        sample("v3", "C", "L1", "Work"),
        sample("v5", "A", "L2", "Hobbies"),
        sample("v6", "B", "L3", "Hobbies"),
        sample("v7", "C", "L3", None),
        Sample(sample_id="lvb-1", kind="longvideobench", question="Which ball?", answer="red ball", options=lvb,
               gold_letter="A"),  # no level, no domain: overall only
    ]


PREDICTIONS = [
    pred("v1", "<think>The answer is A.</think><answer>A</answer>"),  # right, format, 16 chars, consistent
    pred("v2", "<answer>C</answer>"),  # wrong, no format, 0 chars, not judged
    # v3: missing
    pred("v4", "<think>Option B looks right.</think><answer>D</answer>"),  # right, format, 21 chars, inconsistent
    pred("v5", "<think>x</think> <answer>b</answer>"),  # wrong (case), format, 1 char, not judged
    pred("v6", "<think>I will cut the onion</think><answer>B. cut the onion</answer>"),  # right, 20 chars, consistent
    # v7: missing
    pred("lvb-1", "<answer>A</answer>"),  # right, no format, 0 chars
]


def test_summary_by_hand():
    summary = score(_samples(), PREDICTIONS)
    assert list(summary) == ["accuracy", "n", "correct", "by_level", "by_domain", "missing", "reasoning",
                             "reasoning_by_level"]
    assert (summary["accuracy"], summary["n"], summary["correct"]) == (4 / 8, 8, 4)
    assert summary["by_level"] == {"L1": {"accuracy": 1 / 3, "n": 3, "correct": 1},
                                   "L2": {"accuracy": 1 / 2, "n": 2, "correct": 1},
                                   "L3": {"accuracy": 1 / 2, "n": 2, "correct": 1}}
    assert list(summary["by_level"]) == ["L1", "L2", "L3"]
    assert summary["by_domain"] == {"Daily life": {"accuracy": 1.0, "n": 1, "correct": 1},
                                    "Hobbies": {"accuracy": 1 / 2, "n": 2, "correct": 1},
                                    "Work": {"accuracy": 1 / 3, "n": 3, "correct": 1}}
    assert list(summary["by_domain"]) == ["Daily life", "Hobbies", "Work"]
    assert summary["missing"] == ["v3", "v7"]
    # reasoning over the 6 predicted responses: format 4/6, chars 16+0+21+1+20+0 = 58, judged v1 T, v4 F, v6 T
    assert summary["reasoning"] == {"format_rate": 4 / 6, "mean_reasoning_chars": 58 / 6,
                                    "consistency_rate": 2 / 3, "consistency_n": 3}
    assert summary["reasoning_by_level"] == {
        "L1": {"format_rate": 1 / 2, "mean_reasoning_chars": 8.0, "consistency_rate": 1.0, "consistency_n": 1},
        "L2": {"format_rate": 1.0, "mean_reasoning_chars": 11.0, "consistency_rate": 0.0, "consistency_n": 1},
        "L3": {"format_rate": 1.0, "mean_reasoning_chars": 20.0, "consistency_rate": 1.0, "consistency_n": 1},
    }
    json.dumps(summary)  # JSON-ready


def test_no_predictions_at_all_counts_everything_wrong():
    summary = score(_samples(), [])
    assert (summary["accuracy"], summary["n"], summary["correct"]) == (0.0, 8, 0)
    assert summary["missing"] == ["v4", "v1", "v2", "v3", "v5", "v6", "v7", "lvb-1"]  # annotation order
    assert summary["reasoning"]["consistency_n"] == 0 and summary["reasoning"]["consistency_rate"] is None


def test_integer_sample_ids_match_their_string_form():
    assert score([sample("17", "A")], [pred(17, "<answer>A</answer>")])["correct"] == 1


@pytest.mark.parametrize("predictions,needle", [
    ([pred("v1", "<answer>A</answer>"), pred("nope-9", "<answer>A</answer>")], "'nope-9'"),  # unknown id
    ([pred("v1", "<answer>A</answer>"), pred("v1", "<answer>B</answer>")], "'v1' is predicted twice"),
    ([{"response": "<answer>A</answer>"}], "needs a sample_id"),
    ([{"sample_id": "v1"}], "sample_id 'v1' needs a string response"),
    ([{"sample_id": "v1", "response": None}], "sample_id 'v1' needs a string response"),
    ([{"sample_id": True, "response": "A"}], "needs a sample_id"),
    (["just a string"], "JSON object"),
])
def test_bad_predictions_raise_naming_the_sample(predictions, needle):
    with pytest.raises(ScoringError) as info:
        score(_samples(), predictions)
    assert needle in str(info.value)
    assert info.value.index == len(predictions) - 1


def test_a_sample_annotated_twice_or_without_gold_is_an_error():
    with pytest.raises(ScoringError, match="'v1' appears twice"):
        score([sample("v1", "A"), sample("v1", "B", level="L2")], [])
    train = Sample(sample_id="t1", kind="train", question="q", answer="a")
    with pytest.raises(ScoringError, match="'t1' .*no gold letter"):
        score([train], [])


# ---- files --------------------------------------------------------------------------------------------------------
def _validation_record(sid: str, gold: str, level: str, domain: str) -> dict:
    choices = {f"choice_{c}": o for c, o in zip("abcd", OPTIONS)}
    return {"sample_id": sid, "domain": domain, "scenario": "kitchen", "task_goal": "cook", "question": "What next?",
            **choices, "golden_choice_idx": gold, "answer": OPTIONS["ABCD".index(gold)], "task_start_frame": 0,
            "task_progress_metadata": [], "video_id": sid, "video_source": "Ego4D", "video_basename": f"{sid}.mp4",
            "current_observation_basename": f"{sid}.png", "task_level": level}


@pytest.fixture
def files(tmp_path):
    l1, l2 = tmp_path / "validation_L1.jsonl", tmp_path / "validation_L2.jsonl"
    l1.write_text("".join(json.dumps(_validation_record(s, g, "L1", "Daily life")) + "\n"
                          for s, g in [("a", "A"), ("b", "B")]))
    l2.write_text(json.dumps(_validation_record("c", "C", "L2", "Work")) + "\n")
    return [str(l1), str(l2)], tmp_path / "predictions.jsonl"


def test_score_files(files):
    annotations, predictions = files
    predictions.write_text(json.dumps(pred("a", "<answer>A</answer>")) + "\n\n" +
                           json.dumps({**pred("c", "<answer>D</answer>"), "model": "extra keys are fine"}) + "\n")
    summary = score_files(annotations, str(predictions))
    assert (summary["accuracy"], summary["n"], summary["correct"], summary["missing"]) == (1 / 3, 3, 1, ["b"])
    assert summary["by_level"] == {"L1": {"accuracy": 1 / 2, "n": 2, "correct": 1},
                                   "L2": {"accuracy": 0.0, "n": 1, "correct": 0}}


@pytest.mark.parametrize("lines,where,needle", [
    ([pred("a", "A"), None, pred("zz", "A")], 3, "'zz'"),  # blank line 2 still counts as a line
    ([pred("a", "A"), pred("b", "B"), pred("a", "C")], 3, "'a' is predicted twice"),
    ([pred("a", "A"), "{not json"], 2, "malformed JSON"),
    ([{"response": "A"}], 1, "needs a sample_id"),
    ([{"sample_id": "b"}], 1, "needs a string response"),
])
def test_file_errors_name_file_and_line(files, lines, where, needle):
    annotations, predictions = files
    text = [("" if row is None else row if isinstance(row, str) else json.dumps(row)) for row in lines]
    predictions.write_text("\n".join(text) + "\n")
    with pytest.raises(ScoringError) as info:
        score_files(annotations, str(predictions))
    assert f"{predictions}:{where}: " in str(info.value) and needle in str(info.value)


def test_read_predictions_skips_blank_lines(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('\n{"sample_id": "a", "response": "x"}\n  \n[1]\n')
    assert read_predictions(str(path)) == ([{"sample_id": "a", "response": "x"}, [1]], [2, 4])


def test_several_draws_give_figures_that_agree():
    """With k draws every figure is over all of them: correct is the mean count (correct / n == accuracy), missing
    lists a question missing in any draw, and the reasoning analysis covers every draw's answers."""
    samples = [sample("a", "A"), sample("b", "A"), sample("c", "A", "L2", "Work"), sample("d", "A", "L2", "Work")]
    draw0 = [dict(pred(s.sample_id, "<answer>B</answer>"), k=0) for s in samples]  # all wrong, no format
    right = "<think>The answer is A.</think><answer>A</answer>"  # format, 16 chars, consistent
    draw1 = [dict(pred(s.sample_id, right), k=1) for s in samples[:3]]  # d missing
    summary = score_draws(samples, draw0 + draw1, 2)
    assert (summary["accuracy"], summary["correct"], summary["n"]) == (3 / 8, 1.5, 4)
    l1 = summary["by_level"]["L1"]
    assert (l1["accuracy"], l1["correct"], l1["n"]) == (0.5, 1.0, 2)
    assert summary["by_level"]["L2"]["correct"] == 0.5 and summary["by_domain"]["Work"]["correct"] == 0.5
    assert summary["missing"] == ["d"]
    assert summary["reasoning"] == {"format_rate": 3 / 7, "mean_reasoning_chars": 3 * 16 / 7, "consistency_rate": 1.0,
                                    "consistency_n": 3}
    assert summary["reasoning_by_level"]["L2"]["format_rate"] == 1 / 3
    for entry in [summary, *summary["by_level"].values(), *summary["by_domain"].values()]:
        assert entry["correct"] / entry["n"] == pytest.approx(entry["accuracy"])


def test_a_rejected_sample_counts_wrong_apart_from_missing():
    stand_in = Sample(sample_id="r", kind="rejected", question="", answer="")  # shards alone: its id only
    summary = score([sample("a", "A"), sample("b", "A"), stand_in], [pred("a", "<answer>A</answer>")],
                    rejected=["b", "r"])
    assert (summary["n"], summary["correct"], summary["missing"]) == (3, 1, [])


def test_a_sample_id_in_two_annotation_files_names_both(files):
    from seedr1.data.annotations import AnnotationError

    (l1, l2), predictions = files
    Path(l2).write_text(Path(l2).read_text() + json.dumps(_validation_record("b", "B", "L2", "Work")) + "\n")
    predictions.write_text("")
    with pytest.raises(AnnotationError) as info:
        score_files([l1, l2], str(predictions))
    assert str(info.value) == f"{l2}:2 (sample_id b): field 'sample_id': also in {l1}:2"
