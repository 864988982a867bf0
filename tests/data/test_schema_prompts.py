"""Record schemas (validation / train / cot / LongVideoBench), option arrangement and the prompt text."""
from __future__ import annotations

import copy

import pytest

from seedr1.config import DataConfig
from seedr1.data.pipeline import prepare
from seedr1.data.prompt_text import LETTERS, build_prompt_text
from seedr1.data.prompts import arrange_options, user_message
from seedr1.data.schema import (RecordError, Sample, parse_cot, parse_longvideobench, parse_train,
                                parse_validation)

NARRATION = [{"narration_text": "open the fridge", "start_frame": 10, "stop_frame": 40},
             {"narration_text": "take the milk", "start_frame": 41, "stop_frame": 80}]


def validation_record(**overrides) -> dict:
    record = {
        "sample_id": "val-1", "domain": "Daily life", "scenario": "kitchen", "task_goal": "make tea",
        "question": "What is the next action?", "choice_a": "boil water", "choice_b": "cut bread",
        "choice_c": "wash the cup", "choice_d": "open the door", "golden_choice_idx": "C",
        "answer": "wash the cup", "task_start_frame": 10, "task_progress_metadata": copy.deepcopy(NARRATION),
        "video_id": "vid-1", "video_source": "EpicKitchens", "video_basename": "vid-1.mp4",
        "current_observation_basename": "vid-1_81.png", "task_level": "L2",
    }
    record.update(overrides)
    return record


def train_record(**overrides) -> dict:
    record = {
        "sample_id": "tr-1", "question": "What is the next action?", "answer": "pour the tea",
        "negative_answers": ["open the door", "cut bread", "boil water", "wash the cup", "sweep the floor"],
        "task_progress_metadata": copy.deepcopy(NARRATION), "video_source": "Ego4D",
        "video_basename": "tr-1.mp4", "current_observation_basename": "tr-1_81.png",
    }
    record.update(overrides)
    return record


def field_error(fn, record) -> RecordError:
    with pytest.raises(RecordError) as info:
        fn(record)
    return info.value


# ---- validation ---------------------------------------------------------------------------------------------------
def test_parse_validation_happy_path():
    s = parse_validation(validation_record())
    assert s.kind == "validation" and s.sample_id == "val-1"
    assert s.options == ["boil water", "cut bread", "wash the cup", "open the door"]
    assert s.gold_letter == "C" and s.answer == "wash the cup"
    assert s.video == "videos/EpicKitchens/vid-1.mp4"
    assert s.image == "images/EpicKitchens/vid-1_81.png"
    assert s.task_level == "L2" and s.domain == "Daily life"
    assert s.extra == {}


def test_integer_sample_id_is_stringified():
    assert parse_validation(validation_record(sample_id=17)).sample_id == "17"


def test_unknown_extra_fields_are_kept():
    s = parse_validation(validation_record(my_note="hello", other={"x": 1}))
    assert s.extra == {"my_note": "hello", "other": {"x": 1}}
    t = parse_train(train_record(domain="Daily life", task_level="L1", scenario="kitchen"))
    assert t.extra == {"domain": "Daily life", "task_level": "L1", "scenario": "kitchen"}
    assert t.domain == "Daily life" and t.task_level == "L1"


def test_missing_golden_choice_idx_names_the_field():
    record = validation_record()
    del record["golden_choice_idx"]
    e = field_error(parse_validation, record)
    assert e.field == "golden_choice_idx"
    assert "missing" in e.reason
    assert "golden_choice_idx" in str(e)


def test_null_field_counts_as_missing():
    e = field_error(parse_validation, validation_record(answer=None))
    assert e.field == "answer" and "missing" in e.reason


def test_golden_letter_not_matching_answer():
    e = field_error(parse_validation, validation_record(golden_choice_idx="A"))
    assert e.field == "golden_choice_idx"
    assert "boil water" in e.reason and "wash the cup" in e.reason


def test_golden_letter_outside_a_to_d():
    e = field_error(parse_validation, validation_record(golden_choice_idx="E"))
    assert e.field == "golden_choice_idx" and "'E'" in e.reason


@pytest.mark.parametrize("name,value,expected", [
    ("task_start_frame", "10", "int"),
    ("task_start_frame", True, "int"),  # bools are not ints here
    ("choice_b", 3, "str"),
    ("task_progress_metadata", "none", "list"),
    ("question", ["q"], "str"),
])
def test_wrong_type_names_the_field(name, value, expected):
    e = field_error(parse_validation, validation_record(**{name: value}))
    assert e.field == name
    assert f"expected {expected}" in e.reason


def test_not_an_object():
    e = field_error(parse_validation, ["not", "a", "dict"])
    assert e.field is None and "JSON object" in e.reason


def test_unknown_video_source():
    e = field_error(parse_validation, validation_record(video_source="YouTube"))
    assert e.field == "video_source" and "YouTube" in e.reason


def test_unknown_task_level():
    e = field_error(parse_validation, validation_record(task_level="L4"))
    assert e.field == "task_level"


@pytest.mark.parametrize("index,entry_field,value,path", [
    (0, "start_frame", "10", "task_progress_metadata[0].start_frame"),
    (1, "narration_text", 5, "task_progress_metadata[1].narration_text"),
    (1, "stop_frame", None, "task_progress_metadata[1].stop_frame"),
])
def test_bad_narration_entry_field_path(index, entry_field, value, path):
    record = validation_record()
    record["task_progress_metadata"][index][entry_field] = value
    assert field_error(parse_validation, record).field == path
    assert field_error(parse_train, train_record(task_progress_metadata=record["task_progress_metadata"])).field == path


def test_narration_entry_not_an_object():
    e = field_error(parse_validation, validation_record(task_progress_metadata=[NARRATION[0], "x"]))
    assert e.field == "task_progress_metadata[1]"


def test_media_path_rule_video_only_with_task_progress():
    with_progress = parse_validation(validation_record())
    without = parse_validation(validation_record(task_progress_metadata=[]))
    assert with_progress.video == "videos/EpicKitchens/vid-1.mp4"
    assert without.video is None
    assert without.image == with_progress.image == "images/EpicKitchens/vid-1_81.png"  # image always
    t = parse_train(train_record(task_progress_metadata=[]))
    assert t.video is None and t.image == "images/Ego4D/tr-1_81.png"
    assert parse_train(train_record()).video == "videos/Ego4D/tr-1.mp4"


# ---- train --------------------------------------------------------------------------------------------------------
def test_parse_train_happy_path():
    s = parse_train(train_record())
    assert s.kind == "train" and s.answer == "pour the tea"
    assert s.negative_answers == train_record()["negative_answers"]
    assert s.options == [] and s.gold_letter is None


def test_train_missing_negative_answers():
    record = train_record()
    del record["negative_answers"]
    assert field_error(parse_train, record).field == "negative_answers"


@pytest.mark.parametrize("negatives", [["a", "b"], ["a", "b", 3]])
def test_train_needs_three_string_negatives(negatives):
    assert field_error(parse_train, train_record(negative_answers=negatives)).field == "negative_answers"


def test_train_answer_among_negatives():
    e = field_error(parse_train, train_record(negative_answers=["a", "b", "pour the tea"]))
    assert e.field == "negative_answers" and "answer" in e.reason


def test_train_repeated_negatives_are_dropped_keeping_order():
    s = parse_train(train_record(negative_answers=["x", "x", "pour the tea", "y", "z", "y"]))
    assert s.negative_answers == ["x", "y", "z"]  # repeats and the answer dropped, first occurrences kept in order
    for policy in ("shuffle", "sorted", "as_given"):  # as_given used to give 5 options and an IndexError
        for epoch in range(8):
            options, gold = arrange_options(s, policy, seed=0, epoch=epoch)
            assert sorted(options) == ["pour the tea", "x", "y", "z"]
            assert options[LETTERS.index(gold)] == "pour the tea"


@pytest.mark.parametrize("negatives", [["x", "x", "y", "y"], ["x", "y", "x", "pour the tea"]])
def test_train_fewer_than_three_distinct_negatives(negatives):
    e = field_error(parse_train, train_record(negative_answers=negatives))
    assert e.field == "negative_answers"
    assert "at least 3 distinct negative answers" in e.reason and f"got 2 (of {len(negatives)} given)" in e.reason


def test_train_unknown_video_source():
    assert field_error(parse_train, train_record(video_source="ego4d")).field == "video_source"


# ---- cot ----------------------------------------------------------------------------------------------------------
def test_parse_cot_happy_path_and_default_id():
    record = {"prompt": [{"role": "user", "content": [
        {"type": "video", "video": "videos/Ego4D/x.mp4"}, {"type": "image", "image": "images/Ego4D/x.png"},
        {"type": "text", "text": "Q"}]}], "response": "<think>t</think><answer>B.</answer>"}
    s = parse_cot(record, 7)
    assert s.kind == "cot" and s.sample_id == "cot-7"
    assert s.video == "videos/Ego4D/x.mp4" and s.image == "images/Ego4D/x.png"
    assert s.messages == record["prompt"] and s.response.endswith("<answer>B.</answer>")
    assert parse_cot({**record, "sample_id": "abc"}, 7).sample_id == "abc"


def test_cot_errors_name_the_field():
    assert field_error(lambda r: parse_cot(r, 0), {"prompt": []}).field == "response"
    assert field_error(lambda r: parse_cot(r, 0), {"prompt": "x", "response": "y"}).field == "prompt"
    assert field_error(lambda r: parse_cot(r, 0), {"prompt": [{"role": "user"}], "response": "y"}).field == "prompt[0]"
    bad_part = {"prompt": [{"role": "user", "content": [{"text": "no type"}]}], "response": "y"}
    assert field_error(lambda r: parse_cot(r, 0), bad_part).field == "prompt[0].content"


def test_empty_cot_prompt_or_response_is_a_reject_naming_the_field():
    record = {"prompt": [{"role": "user", "content": "What next?"}], "response": "<answer>A</answer>"}
    assert parse_cot(record, 0).response == "<answer>A</answer>"
    assert field_error(lambda r: parse_cot(r, 0), {**record, "response": " \n"}).field == "response"
    assert field_error(lambda r: parse_cot(r, 0), {**record, "prompt": []}).field == "prompt"


def cot_record(*content) -> dict:
    return {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": list(content)}],
            "response": "<answer>A.</answer>"}


VIDEO = {"type": "video", "video": "videos/Ego4D/x.mp4"}
IMAGE = {"type": "image", "image": "images/Ego4D/x.png"}
TEXT = {"type": "text", "text": "Q"}


@pytest.mark.parametrize("content,path,reason", [
    ([{"type": "video"}, IMAGE, TEXT], "prompt[1].content[0].video", "the video part has no path"),
    ([VIDEO, {"type": "image", "image": ""}, TEXT], "prompt[1].content[1].image", "the image part has no path"),
    ([VIDEO, {"type": "image", "image": None}, TEXT], "prompt[1].content[1].image", "has no path"),
    ([IMAGE, {"type": "video", "video": 3}, TEXT], "prompt[1].content[1].video", "has no path"),
    ([VIDEO, IMAGE, {"type": "video", "video": "videos/Ego4D/y.mp4"}, TEXT], "prompt[1].content[2].video",
     "a second video part (the first is prompt[1].content[0].video)"),
    ([VIDEO, IMAGE, IMAGE, TEXT], "prompt[1].content[2].image", "a second image part"),
])
def test_cot_media_parts_need_one_path_each(content, path, reason):
    e = field_error(lambda r: parse_cot(r, 0), cot_record(*content))
    assert e.field == path and reason in e.reason


def test_cot_media_errors_name_the_prompt_part():
    s = parse_cot(cot_record(TEXT, IMAGE, VIDEO), 0)
    assert (s.video, s.video_field) == ("videos/Ego4D/x.mp4", "prompt[1].content[2].video")
    assert (s.image, s.image_field) == ("images/Ego4D/x.png", "prompt[1].content[1].image")
    meta = {"file": "training_with_cot_6k.jsonl", "kind": "cot", "line": 4, "record": cot_record(TEXT, IMAGE, VIDEO)}
    row = prepare(meta, {"mp4": None, "png": b"x"}, DataConfig(), 0)
    assert not row["ok"] and row["field"] == "prompt[1].content[2].video" and "missing video" in row["reason"]
    row = prepare(meta, {"mp4": b"not a video", "png": b"x"}, DataConfig(), 0)
    assert not row["ok"] and row["field"] == "prompt[1].content[2].video" and "cannot decode video" in row["reason"]
    assert parse_longvideobench(lvb_record()).video_field == "video_path"


# ---- LongVideoBench -----------------------------------------------------------------------------------------------
def lvb_record(**overrides) -> dict:
    record = {"id": "lvb-9", "question": "Where is the cat?", "candidates": ["sofa", "table", "bed"],
              "correct_choice": 2, "video_path": "abc.mp4", "duration_group": 600, "topic_category": "pets"}
    record.update(overrides)
    return record


def test_parse_longvideobench_happy_path():
    s = parse_longvideobench(lvb_record())
    assert s.kind == "longvideobench" and s.sample_id == "lvb-9"
    assert s.options == ["sofa", "table", "bed"] and s.gold_letter == "C" and s.answer == "bed"
    assert s.video == "videos/abc.mp4" and s.image is None
    assert s.task_level == "600" and s.domain == "pets"  # duration group as the level, text like "L1"


def test_longvideobench_errors():
    assert field_error(parse_longvideobench, lvb_record(correct_choice=3)).field == "correct_choice"
    assert field_error(parse_longvideobench, lvb_record(correct_choice="1")).field == "correct_choice"
    assert field_error(parse_longvideobench, lvb_record(candidates=["only"])).field == "candidates"
    record = lvb_record()
    del record["id"]
    assert field_error(parse_longvideobench, record).field == "id"
    assert parse_longvideobench({**record, "sample_id": 5}).sample_id == "5"
    del record["video_path"]
    assert field_error(parse_longvideobench, record).field == "video_path"


# ---- prompts ------------------------------------------------------------------------------------------------------
def test_user_message_content_order():
    msg = user_message("hello", has_video=True, has_image=True)
    assert msg == [{"role": "user", "content": [{"type": "video"}, {"type": "image"},
                                                {"type": "text", "text": "hello"}]}]
    assert [p["type"] for p in user_message("t", False, True)[0]["content"]] == ["image", "text"]


def test_arrange_options_validation_keeps_a_to_d():
    s = parse_validation(validation_record())
    for policy in ("shuffle", "sorted", "as_given"):
        for epoch in (0, 1, 5):
            options, gold = arrange_options(s, policy, seed=3, epoch=epoch)
            assert options == ["boil water", "cut bread", "wash the cup", "open the door"]
            assert gold == "C"


def test_arrange_options_longvideobench_as_given():
    options, gold = arrange_options(parse_longvideobench(lvb_record()), "shuffle", seed=1, epoch=2)
    assert options == ["sofa", "table", "bed"] and gold == "C"


def _train_samples(n: int = 20) -> list[Sample]:
    return [parse_train(train_record(sample_id=f"tr-{i}")) for i in range(n)]


def test_training_draws_three_negatives_and_gold_matches():
    for s in _train_samples():
        for policy in ("shuffle", "sorted", "as_given"):
            options, gold = arrange_options(s, policy, seed=0, epoch=0)
            assert len(options) == 4 and len(set(options)) == 4
            assert options[LETTERS.index(gold)] == s.answer
            negatives = [o for o in options if o != s.answer]
            assert len(negatives) == 3 and set(negatives) <= set(s.negative_answers)


def test_training_options_reproducible_per_seed_sample_epoch():
    samples = _train_samples()
    first = [arrange_options(s, "shuffle", seed=11, epoch=2) for s in samples]
    again = [arrange_options(copy.deepcopy(s), "shuffle", seed=11, epoch=2) for s in samples]
    assert first == again
    # the draw depends on the sample id, the epoch and the seed
    assert len({tuple(o) for o, _ in first}) > 1
    other_epoch = [arrange_options(s, "shuffle", seed=11, epoch=3) for s in samples]
    assert any(a != b for a, b in zip(first, other_epoch))
    other_seed = [arrange_options(s, "shuffle", seed=12, epoch=2) for s in samples]
    assert any(a != b for a, b in zip(first, other_seed))
    # all five negatives get drawn somewhere across samples/epochs (not always the first three)
    drawn = {o for s in samples for e in range(3) for o in arrange_options(s, "shuffle", 0, e)[0]}
    assert drawn == {samples[0].answer, *samples[0].negative_answers}
    # the gold letter is not constant under shuffle
    assert len({g for _, g in first}) > 1


def test_training_sorted_and_as_given():
    s = parse_train(train_record())
    for epoch in range(6):
        shuffled, _ = arrange_options(s, "shuffle", seed=0, epoch=epoch)
        options, gold = arrange_options(s, "sorted", seed=0, epoch=epoch)
        assert options == sorted(options) and set(options) == set(shuffled)  # same draw, sorted
        assert options[LETTERS.index(gold)] == s.answer
        given, gold = arrange_options(s, "as_given", seed=0, epoch=epoch)
        assert set(given) == set(shuffled)
        assert given[-1] == s.answer and gold == "D"
        positions = [s.negative_answers.index(n) for n in given[:3]]
        assert positions == sorted(positions)  # negatives keep the order they were given in


def test_unknown_option_order():
    with pytest.raises(ValueError, match="unknown option order"):
        arrange_options(parse_train(train_record()), "random")  # type: ignore[arg-type]


def test_build_prompt_text_exact_string():
    text = build_prompt_text("What is the next action?", ["boil water", "cut bread", "wash the cup", "open the door"])
    assert text == (
        "What is the next action?\n"
        "A. boil water\n"
        "B. cut bread\n"
        "C. wash the cup\n"
        "D. open the door\n"
        " Output the thinking process in <think> </think> and final answer in <answer> </answer> tags, i.e., "
        "<think> reasoning process here </think><answer> answer here </answer>. "
    )


def test_build_prompt_text_other_counts_and_templates():
    assert build_prompt_text("Q", ["x", "y", "z"], instruction="") == "Q\nA. x\nB. y\nC. z\n"
    custom = build_prompt_text("Q", list("abcd"), question_template="{question} | {d}{c}{b}{a}", instruction="!")
    assert custom == "Q | dcba!"
