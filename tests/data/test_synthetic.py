"""The synthetic SEED-Bench-R1-mini: official layout/schema, determinism, level splits, and 'only vision decides'."""
from __future__ import annotations

import collections
import hashlib
import io
import json
from pathlib import Path

import decord
import numpy as np
import pytest
from PIL import Image

from seedr1.data.prompt_text import LETTERS, build_prompt_text
from seedr1.data.synthetic import (SynthSpec, cue_colour_of_image, environment_of_image, sorted_options,
                                   write_synthetic)
from seedr1.data.synthetic_vocab import CUE_COLOURS, CUE_THOUGHT, HELDOUT_ENVIRONMENTS, TRAIN_ENVIRONMENTS

# L1 and train >= 64 so the chance-level controls are statistically meaningful (seeds are fixed anyway).
SPEC = SynthSpec(seed=0, train=64, l1=64, l2=8, l3=16)
FILES = {"train": "training_6k.jsonl", "L1": "validation_L1.jsonl", "L2": "validation_L2.jsonl",
         "L3": "validation_L3.jsonl", "cot": "training_with_cot_6k.jsonl"}
VALIDATION_FIELDS = {
    "sample_id": str, "domain": str, "scenario": str, "task_goal": str, "question": str, "choice_a": str,
    "choice_b": str, "choice_c": str, "choice_d": str, "golden_choice_idx": str, "answer": str,
    "task_start_frame": int, "task_progress_metadata": list, "video_id": str, "video_source": str,
    "video_basename": str, "current_observation_basename": str, "task_level": str,
}
TRAINING_FIELDS = {k: t for k, t in VALIDATION_FIELDS.items()
                   if not k.startswith("choice_") and k not in ("golden_choice_idx", "task_level")}
TRAINING_FIELDS["negative_answers"] = list


def _read(root: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (root / "annotations" / FILES[split]).read_text().splitlines()]


def _image(root: Path, r: dict) -> np.ndarray:
    return np.array(Image.open(root / "images" / r["video_source"] / r["current_observation_basename"]))


def _options(r: dict) -> list[str]:
    if "negative_answers" in r:
        return sorted([r["answer"], *r["negative_answers"]])
    return [r[f"choice_{l.lower()}"] for l in LETTERS]


def _gold_letter(r: dict) -> str:
    return LETTERS[_options(r).index(r["answer"])]


def _colour_letter(r: dict, colour: str) -> str:
    """The letter of the option naming this colour (options differ only in their colour word)."""
    return LETTERS[next(i for i, o in enumerate(_options(r)) if colour in o.split())]


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    counts = write_synthetic(root, SPEC)
    return root, counts, {split: _read(root, split) for split in FILES}


def test_counts_and_layout(dataset):
    root, counts, data = dataset
    for split, n in (("train", 64), ("cot", 64), ("L1", 64), ("L2", 8), ("L3", 16)):
        assert counts[f"annotations/{FILES[split]}"] == len(data[split]) == n
    assert counts["images"] == len(list((root / "images").rglob("*.png"))) == 152
    assert counts["videos"] == len(list((root / "videos").rglob("*.mp4")))
    assert {p.name for p in (root / "videos").iterdir()} <= {"EpicKitchens", "Ego4D"}


@pytest.mark.parametrize("split", ["train", "L1", "L2", "L3"])
def test_schema(dataset, split):
    root, _, data = dataset
    fields = TRAINING_FIELDS if split == "train" else VALIDATION_FIELDS
    for r in data[split]:
        assert set(r) == set(fields)
        for key, typ in fields.items():
            assert isinstance(r[key], typ), (key, r[key])
        assert r["video_source"] in ("EpicKitchens", "Ego4D")
        assert r["video_basename"] == f"{r['video_id']}.mp4" and r["current_observation_basename"].endswith(".png")
        if split == "train":
            assert len(r["negative_answers"]) == 3 and r["answer"] not in r["negative_answers"]
            assert all(isinstance(a, str) for a in r["negative_answers"])
        else:
            assert r["task_level"] == split and r["golden_choice_idx"] in LETTERS
            assert r["answer"] == r[f"choice_{r['golden_choice_idx'].lower()}"]
            assert _options(r) == sorted(_options(r)) and len(set(_options(r))) == 4
        previous_stop = r["task_start_frame"] - 1
        for step in r["task_progress_metadata"]:
            assert isinstance(step["narration_text"], str)
            assert previous_stop < step["start_frame"] <= step["stop_frame"]
            previous_stop = step["stop_frame"]


def test_ids_unique(dataset):
    _, _, data = dataset
    records = [r for split in ("train", "L1", "L2", "L3") for r in data[split]]
    for key in ("sample_id", "video_id", "current_observation_basename"):
        assert len({r[key] for r in records}) == len(records)


def test_media(dataset):
    root, _, data = dataset
    records = [r for split in ("train", "L1", "L2", "L3") for r in data[split]]
    with_video = [r for r in records if r["task_progress_metadata"]]
    assert 0 < len(with_video) < len(records)  # some samples have no progress video, like the official data
    for r in records:
        image = Image.open(root / "images" / r["video_source"] / r["current_observation_basename"])
        assert image.size == (SPEC.frame_size, SPEC.frame_size) and image.mode == "RGB"
        video = root / "videos" / r["video_source"] / r["video_basename"]
        assert video.exists() == bool(r["task_progress_metadata"])
    for r in with_video[:12]:
        path = root / "videos" / r["video_source"] / r["video_basename"]
        reader = decord.VideoReader(io.BytesIO(path.read_bytes()))
        assert len(reader) == len(decord.VideoReader(str(path))) == SPEC.n_frames
        last = reader[len(reader) - 1].asnumpy()
        assert last.shape == (SPEC.frame_size, SPEC.frame_size, 3)
        assert cue_colour_of_image(last) == cue_colour_of_image(_image(root, r))  # the cue shows up at the end
        first = reader[0].asnumpy().astype(int)
        assert ((first.max(-1) - first.min(-1)) >= 90).mean() < 0.01  # ...and not at the start


def test_deterministic(dataset, tmp_path):
    root, _, _ = dataset
    write_synthetic(tmp_path / "same", SPEC)
    assert _hashes(tmp_path / "same") == _hashes(root)
    write_synthetic(tmp_path / "other", SynthSpec(**{**SPEC.__dict__, "seed": 1}))
    other = _hashes(tmp_path / "other")
    assert other["annotations/training_6k.jsonl"] != _hashes(root)["annotations/training_6k.jsonl"]
    assert not {h for k, h in other.items() if k.startswith("images/")} & set(_hashes(root).values())


def test_level_splits(dataset):
    root, _, data = dataset
    env = {split: {environment_of_image(_image(root, r)) for r in data[split]} for split in ("train", "L1", "L2", "L3")}
    tasks = {split: {r["task_goal"] for r in data[split]} for split in ("train", "L1", "L2", "L3")}
    assert env["train"] <= set(TRAIN_ENVIRONMENTS) and env["L1"] <= env["train"] and tasks["L1"] <= tasks["train"]
    assert env["L2"] <= set(HELDOUT_ENVIRONMENTS) and not env["L2"] & env["train"] and tasks["L2"] <= tasks["train"]
    assert env["L3"] <= set(HELDOUT_ENVIRONMENTS) and not env["L3"] & env["train"]
    assert not tasks["L3"] & tasks["train"]
    assert {r["domain"] for r in data["L3"]} == {"Daily life", "Hobbies", "Recreation", "Work"}
    for split in ("train", "L1", "L2", "L3"):  # the source follows the environment consistently
        for r in data[split]:
            kitchen = environment_of_image(_image(root, r)).startswith("kitchen")
            assert r["video_source"] == ("EpicKitchens" if kitchen else "Ego4D")


def _oracle_accuracy(records: list[dict], images: list[np.ndarray]) -> float:
    hits = [_colour_letter(r, cue_colour_of_image(img)) == _gold_letter(r) for r, img in zip(records, images)]
    return float(np.mean(hits))


@pytest.mark.parametrize("split", ["train", "L1", "L2", "L3"])
def test_vision_decides(dataset, split):
    root, _, data = dataset
    records = data[split]
    images = [_image(root, r) for r in records]
    assert _oracle_accuracy(records, images) == 1.0
    if len(records) >= 64:  # controls: media from another sample, and text alone, are at chance
        shuffled = [images[i] for i in np.random.default_rng(123).permutation(len(images))]
        assert 0.1 <= _oracle_accuracy(records, shuffled) <= 0.45


def test_text_only_is_chance(dataset):
    """Predict, per prompt text, the gold letter most often seen for that text in training: chance on held-out L1."""
    _, _, data = dataset
    seen = collections.defaultdict(collections.Counter)
    for r in data["train"]:
        seen[build_prompt_text(r["question"], _options(r))][_gold_letter(r)] += 1
    hits = [seen[build_prompt_text(r["question"], _options(r))].most_common(1)[0][0] == _gold_letter(r)
            for r in data["L1"]]
    assert 0.1 <= np.mean(hits) <= 0.45


def test_cot(dataset):
    root, _, data = dataset
    assert [c["sample_id"] for c in data["cot"]] == [r["sample_id"] for r in data["train"]]
    for cot, r in zip(data["cot"], data["train"]):
        (turn,) = cot["prompt"]
        assert turn["role"] == "user"
        kinds = [part["type"] for part in turn["content"]]
        assert kinds == (["video"] if r["task_progress_metadata"] else []) + ["image", "text"]
        for part in turn["content"][:-1]:
            rel = part[part["type"]]
            assert not Path(rel).is_absolute() and (root / rel).is_file()
            assert rel.startswith(f"{part['type']}s/{r['video_source']}/")
        assert turn["content"][-1]["text"] == build_prompt_text(r["question"], _options(r))
        colour = cue_colour_of_image(_image(root, r))
        thought = CUE_THOUGHT.format(colour=colour)
        assert cot["response"] == f"<think>{thought}</think><answer>{_gold_letter(r)}.</answer>"


def test_options_are_the_four_colours(dataset):
    _, _, data = dataset
    for r in data["L3"] + data["train"]:
        words = [set(o.split()) & set(CUE_COLOURS) for o in _options(r)]
        assert sorted(w.pop() for w in words) == sorted(CUE_COLOURS)
        template = r["answer"].replace(next(c for c in CUE_COLOURS if c in r["answer"].split()), "{colour}")
        assert sorted_options(template) == _options(r)
