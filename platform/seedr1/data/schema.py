"""SEED-Bench-R1 record schemas and the internal record type every reader produces.

The official release has three record shapes: validation (four lettered choices and a golden letter), GRPO training
(the answer plus a list of negative answers; options are drawn at prompt time) and SFT chain-of-thought (chat
messages with relative media paths plus the response). LongVideoBench files are read into the same ``Sample``.
Unknown extra fields are allowed; missing required fields and wrong types are errors naming the field.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from seedr1.data.prompt_text import LETTERS

VIDEO_SOURCES = ("EpicKitchens", "Ego4D")
LEVELS = ("L1", "L2", "L3")

_COMMON = {
    "sample_id": (str, int),
    "question": str,
    "answer": str,
    "task_progress_metadata": list,
    "video_source": str,
    "video_basename": str,
    "current_observation_basename": str,
}
VALIDATION_FIELDS = {
    **_COMMON,
    "domain": str, "scenario": str, "task_goal": str,
    "choice_a": str, "choice_b": str, "choice_c": str, "choice_d": str,
    "golden_choice_idx": str, "task_start_frame": int, "video_id": (str, int), "task_level": str,
}
TRAIN_FIELDS = {**_COMMON, "negative_answers": list}
COT_FIELDS = {"prompt": list, "response": str}
LONGVIDEOBENCH_FIELDS = {"question": str, "candidates": list, "correct_choice": int, "video_path": str}
NARRATION_FIELDS = {"narration_text": str, "start_frame": int, "stop_frame": int}


class RecordError(ValueError):
    """One record is invalid; ``field`` names the offending field (or None for the whole line)."""

    def __init__(self, reason: str, field: Optional[str] = None):
        super().__init__(f"{field}: {reason}" if field else reason)
        self.reason = reason
        self.field = field


@dataclass
class Sample:
    """One multiple-choice question with its media, whatever file it came from."""

    sample_id: str
    kind: str  # "validation" | "train" | "cot" | "longvideobench"
    question: str
    answer: str  # text of the right option
    options: list[str] = field(default_factory=list)  # as given (validation/longvideobench); empty for train
    negative_answers: list[str] = field(default_factory=list)  # train only
    gold_letter: Optional[str] = None  # validation/longvideobench
    video: Optional[str] = None  # media path relative to the data root (None: no video for this sample)
    image: Optional[str] = None
    task_level: Optional[str] = None
    domain: Optional[str] = None
    messages: Optional[list] = None  # cot: the chat prompt as given
    response: Optional[str] = None  # cot: the target
    extra: dict = field(default_factory=dict)
    video_field: str = "video_basename"  # the record field that names the video (media errors name it)
    image_field: str = "current_observation_basename"

    def media(self) -> dict[str, tuple[str, str]]:
        """{'mp4': (relative path, field), 'png': (...)} for the media this sample uses."""
        return {ext: (rel, name) for ext, rel, name in (("mp4", self.video, self.video_field),
                                                          ("png", self.image, self.image_field)) if rel}


def _typename(t) -> str:
    return " or ".join(x.__name__ for x in t) if isinstance(t, tuple) else t.__name__


def check_fields(record: Any, spec: dict) -> None:
    """Raise RecordError for the first missing or mistyped required field."""
    if not isinstance(record, dict):
        raise RecordError(f"expected a JSON object, got {type(record).__name__}")
    for name, typ in spec.items():
        if name not in record or record[name] is None:
            raise RecordError("missing required field", name)
        value = record[name]
        if isinstance(value, bool) or not isinstance(value, typ):
            raise RecordError(f"expected {_typename(typ)}, got {type(value).__name__}", name)


def _media_paths(record: dict) -> tuple[Optional[str], str]:
    source = record["video_source"]
    if source not in VIDEO_SOURCES:
        raise RecordError(f"unknown video_source {source!r} (expected one of {list(VIDEO_SOURCES)})", "video_source")
    for i, step in enumerate(record["task_progress_metadata"]):
        try:
            check_fields(step, NARRATION_FIELDS)
        except RecordError as e:
            raise RecordError(e.reason, f"task_progress_metadata[{i}].{e.field}" if e.field else
                              f"task_progress_metadata[{i}]") from None
    # The official rule: the task-progress video is used only when there is task progress to show.
    video = f"videos/{source}/{record['video_basename']}" if record["task_progress_metadata"] else None
    return video, f"images/{source}/{record['current_observation_basename']}"


def parse_validation(record: dict) -> Sample:
    check_fields(record, VALIDATION_FIELDS)
    gold = record["golden_choice_idx"]
    if gold not in LETTERS:
        raise RecordError(f"{gold!r} is not one of A, B, C, D", "golden_choice_idx")
    if record["task_level"] not in LEVELS:
        raise RecordError(f"{record['task_level']!r} is not one of {list(LEVELS)}", "task_level")
    options = [record[f"choice_{c}"] for c in "abcd"]
    if options[LETTERS.index(gold)] != record["answer"]:
        raise RecordError(f"golden_choice_idx {gold} points at {options[LETTERS.index(gold)]!r} but answer is "
                          f"{record['answer']!r}", "golden_choice_idx")
    video, image = _media_paths(record)
    return Sample(sample_id=str(record["sample_id"]), kind="validation", question=record["question"],
                  answer=record["answer"], options=options, gold_letter=gold, video=video, image=image,
                  task_level=record["task_level"], domain=record["domain"],
                  extra={k: v for k, v in record.items() if k not in VALIDATION_FIELDS})


def parse_train(record: dict) -> Sample:
    check_fields(record, TRAIN_FIELDS)
    given = record["negative_answers"]
    if not all(isinstance(n, str) for n in given):
        raise RecordError("every negative answer must be a string", "negative_answers")
    # Three are drawn as distinct options: repeats (and the answer itself) would give a duplicate option.
    negatives = [n for n in dict.fromkeys(given) if n != record["answer"]]
    if len(negatives) < 3:
        raise RecordError(f"needs at least 3 distinct negative answers other than the answer, got "
                          f"{len(negatives)} (of {len(given)} given)", "negative_answers")
    video, image = _media_paths(record)
    return Sample(sample_id=str(record["sample_id"]), kind="train", question=record["question"],
                  answer=record["answer"], negative_answers=negatives, video=video, image=image,
                  task_level=record.get("task_level"), domain=record.get("domain"),
                  extra={k: v for k, v in record.items() if k not in TRAIN_FIELDS})


def _cot_media(prompt: list) -> dict[str, tuple[str, str]]:
    """{'video': (path, field), 'image': (path, field)} of a chat prompt: one non-empty path per media part, at
    most one part of each type (the pipeline decodes one video and one image per sample)."""
    media: dict[str, tuple[str, str]] = {}
    for m, message in enumerate(prompt):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise RecordError("each message needs role and content", f"prompt[{m}]")
        if not isinstance(message["content"], list):
            continue
        for i, part in enumerate(message["content"]):
            if not isinstance(part, dict) or "type" not in part:
                raise RecordError("each content part needs a type", f"prompt[{m}].content")
            kind = part["type"]
            if kind not in ("video", "image"):
                continue
            name, path = f"prompt[{m}].content[{i}].{kind}", part.get(kind)
            if not isinstance(path, str) or not path:
                raise RecordError(f"the {kind} part has no path (needs a non-empty string)", name)
            if kind in media:
                raise RecordError(f"a second {kind} part (the first is {media[kind][1]}); one is supported", name)
            media[kind] = (path, name)
    return media


def parse_cot(record: dict, index: int) -> Sample:
    check_fields(record, COT_FIELDS)
    if not record["prompt"]:
        raise RecordError("empty prompt (no chat messages)", "prompt")
    if not record["response"].strip():  # nothing to train on: a reject here, not a failed SFT job later
        raise RecordError("empty response", "response")
    media = _cot_media(record["prompt"])
    (video, video_field), (image, image_field) = media.get("video", (None, "")), media.get("image", (None, ""))
    return Sample(sample_id=str(record.get("sample_id", f"cot-{index}")), kind="cot", question="", answer="",
                  video=video, image=image, messages=record["prompt"], response=record["response"],
                  video_field=video_field, image_field=image_field)


def _text_or_none(value) -> Optional[str]:
    """Levels are text everywhere ("L1"); LongVideoBench's duration groups are numbers (15, 60, 600, 3600)."""
    return None if value is None else str(value)


def parse_longvideobench(record: dict) -> Sample:
    check_fields(record, LONGVIDEOBENCH_FIELDS)
    candidates = record["candidates"]
    if not 2 <= len(candidates) <= 26 or not all(isinstance(c, str) for c in candidates):
        raise RecordError("needs 2..26 option strings", "candidates")
    idx = record["correct_choice"]
    if not 0 <= idx < len(candidates):
        raise RecordError(f"{idx} is out of range for {len(candidates)} candidates", "correct_choice")
    sid = record.get("id", record.get("sample_id"))
    if sid is None:
        raise RecordError("missing required field", "id")
    return Sample(sample_id=str(sid), kind="longvideobench", question=record["question"], answer=candidates[idx],
                  options=list(candidates), gold_letter=chr(ord("A") + idx), video=f"videos/{record['video_path']}",
                  video_field="video_path", image=None,
                  task_level=_text_or_none(record.get("level", record.get("duration_group"))),
                  domain=record.get("topic_category"))


PARSERS = {"validation": parse_validation, "train": parse_train, "longvideobench": parse_longvideobench}


def parse_record(kind: str, record: Any, index: int = 0) -> Sample:
    """Parse one raw record of the given kind (``index`` names CoT records that carry no sample_id)."""
    if isinstance(record, dict) and "__error__" in record:  # a line that was not valid JSON
        raise RecordError(record["__error__"])
    if kind == "cot":
        return parse_cot(record, index)
    if kind not in PARSERS:
        raise RecordError(f"unknown record kind {kind!r}")
    return PARSERS[kind](record)


def media_of(kind: str, record: Any) -> dict[str, str]:
    """Relative media paths a valid record uses: {'mp4': ..., 'png': ...}; an invalid record uses none."""
    try:
        sample = parse_record(kind, record)
    except RecordError:
        return {}
    return {ext: rel for ext, (rel, _) in sample.media().items()}
