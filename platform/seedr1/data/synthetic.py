"""A deterministic synthetic "SEED-Bench-R1-mini" in exactly the official SEED-Bench-R1 layout and schema.

Every sample shows one cue object whose colour is drawn independently of all text; the four options name the four
cue colours, so the right answer can only be read off the pixels. Environments (background looks) and task families
are split like the official levels: L1 = training's environments and tasks, L2 = unseen environments, L3 = unseen
environments and task families.

Layout under ROOT::

    annotations/{training_6k,training_with_cot_6k,validation_L1,validation_L2,validation_L3}.jsonl
    videos/{video_source}/{video_id}.mp4        (only when task_progress_metadata is non-empty)
    images/{video_source}/{observation}.png
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image

from seedr1.data.prompt_text import LETTERS, build_prompt_text
from seedr1.data.synthetic_vocab import (CUE_COLOURS, CUE_THOUGHT, ENVIRONMENT_LOOKS, HELDOUT_ENVIRONMENTS,
                                         HELDOUT_TASKS, NARRATIONS, TRAIN_ENVIRONMENTS, TRAIN_TASKS)

EMPTY_PROGRESS_RATE = 1 / 8  # share of samples without task-progress video (official: video only if metadata)
CUE_SIDE = 0.4  # cue square side, as a share of the frame side
CUE_FRAMES = 0.25  # the cue object is visible in this last share of the progress video
HAND_GREY = (70, 70, 70)
SATURATION_MIN = 90  # cue colours have max-min >= 150, backgrounds (with noise) stay below ~45

# split name, annotation file, environments, task families, seed stream
_SPLITS = (
    ("train", "training_6k.jsonl", TRAIN_ENVIRONMENTS, TRAIN_TASKS, 0),
    ("L1", "validation_L1.jsonl", TRAIN_ENVIRONMENTS, TRAIN_TASKS, 1),
    ("L2", "validation_L2.jsonl", HELDOUT_ENVIRONMENTS, TRAIN_TASKS, 2),
    ("L3", "validation_L3.jsonl", HELDOUT_ENVIRONMENTS, HELDOUT_TASKS, 3),
)
COT_FILE = "training_with_cot_6k.jsonl"


@dataclass
class SynthSpec:
    seed: int = 0
    train: int = 400
    l1: int = 64
    l2: int = 32
    l3: int = 48
    frame_size: int = 56
    video_fps: int = 4
    video_seconds: float = 4.0

    def __post_init__(self):
        if self.frame_size % 2 or self.frame_size < 16:  # yuv420p needs even sides
            raise ValueError(f"frame_size must be even and >= 16, got {self.frame_size}")

    def count(self, split: str) -> int:
        return {"train": self.train, "L1": self.l1, "L2": self.l2, "L3": self.l3}[split]

    @property
    def n_frames(self) -> int:
        return max(1, round(self.video_fps * self.video_seconds))


def video_source_of(environment: str) -> str:
    return "EpicKitchens" if environment.startswith("kitchen") else "Ego4D"


def sorted_options(template: str) -> list[str]:
    """The four option phrases in sorted order (the order the sorted-option policy shows them)."""
    return sorted(template.format(colour=c) for c in CUE_COLOURS)


def cue_colour_of_image(image: np.ndarray) -> str:
    """Oracle 'perfect vision': the cue colour nearest to the mean of the saturated pixels of an HxWx3 image."""
    pixels = np.asarray(image, dtype=np.float64).reshape(-1, 3)
    saturated = pixels[pixels.max(1) - pixels.min(1) >= SATURATION_MIN]
    mean = (saturated if len(saturated) else pixels).mean(0)
    names = list(CUE_COLOURS)
    distances = [np.linalg.norm(mean - np.array(CUE_COLOURS[n])) for n in names]
    return names[int(np.argmin(distances))]


def environment_of_image(image: np.ndarray) -> str:
    """Oracle for the environment: the background look closest to the image's unsaturated (non-cue) pixels."""
    pixels = np.asarray(image, dtype=np.float64)
    keep = pixels.max(-1) - pixels.min(-1) < SATURATION_MIN
    errors = {env: np.abs(pixels - _background(env, pixels.shape[0]))[keep].mean() for env in ENVIRONMENT_LOOKS}
    return min(errors, key=errors.get)


def _background(environment: str, size: int) -> np.ndarray:
    """The environment's muted base colour modulated by its brightness pattern (float HxWx3)."""
    base, pattern, period = ENVIRONMENT_LOOKS[environment]
    yy, xx = np.mgrid[0:size, 0:size]
    on = lambda coord: (coord % period) < period / 2  # noqa: E731
    mask = {"rows": on(yy), "cols": on(xx), "diag": on(yy + xx), "antidiag": on(yy - xx + size),
            "checks": on(yy) ^ on(xx), "grid": on(yy) & on(xx)}[pattern]
    return np.array(base, dtype=np.float64)[None, None, :] + np.where(mask, 14.0, -14.0)[..., None]


def _finish(frame: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    return np.clip(frame + rng.uniform(-noise, noise, frame.shape), 0, 255).round().astype(np.uint8)


def _observation(environment: str, colour: str, cue_xy: tuple[int, int], spec: SynthSpec,
                 rng: np.random.Generator) -> np.ndarray:
    frame = _background(environment, spec.frame_size)
    side = round(CUE_SIDE * spec.frame_size)
    x, y = cue_xy
    frame[y:y + side, x:x + side] = CUE_COLOURS[colour]
    return _finish(frame, rng, noise=6)


def _progress_frames(environment: str, colour: str, cue_xy: tuple[int, int], spec: SynthSpec,
                     rng: np.random.Generator) -> list[np.ndarray]:
    """A grey hand blob moving towards the cue's place; the cue object appears in the last frames."""
    size, n = spec.frame_size, spec.n_frames
    side = round(CUE_SIDE * size)
    start = rng.uniform(0, size, 2)
    target = np.array(cue_xy, dtype=np.float64) + side / 2
    yy, xx = np.mgrid[0:size, 0:size]
    frames = []
    for t in range(n):
        frame = _background(environment, size)
        if t >= n - max(1, round(CUE_FRAMES * n)):
            x, y = cue_xy
            frame[y:y + side, x:x + side] = CUE_COLOURS[colour]
        hx, hy = start + (target - start) * (t / max(1, n - 1))
        frame[(xx - hx) ** 2 + (yy - hy) ** 2 <= (size / 8) ** 2] = HAND_GREY
        frames.append(_finish(frame, rng, noise=3))
    return frames


def _write_mp4(path: Path, frames: list[np.ndarray], fps: int) -> None:
    """mpeg4/yuv420p at a fixed quantiser; bitexact flags keep the encoder version string out (stable bytes)."""
    with av.open(str(path), "w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("mpeg4", rate=fps, options={"flags": "+bitexact", "qmin": "2", "qmax": "2"})
        stream.width = stream.height = frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.thread_count = 1  # single-threaded encoding is bit-reproducible
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def _narrations(rng: np.random.Generator, task_start: int, n_frames: int) -> list[dict]:
    """1-3 distinct narrations over consecutive, increasing frame ranges covering the progress video."""
    k = min(int(rng.integers(1, 4)), n_frames)
    cuts = sorted(int(c) for c in rng.choice(np.arange(1, n_frames), k - 1, replace=False)) if k > 1 else []
    bounds = [0, *cuts, n_frames]
    texts = rng.choice(len(NARRATIONS), k, replace=False)
    return [{"narration_text": NARRATIONS[int(texts[j])], "start_frame": task_start + bounds[j],
             "stop_frame": task_start + bounds[j + 1] - 1} for j in range(k)]


def _make_sample(split: str, index: int, environments: tuple, tasks: tuple, stream: int, spec: SynthSpec):
    """One sample: its validation-schema record and its media (image, progress frames or None)."""
    rng = np.random.default_rng([spec.seed, stream, index])  # per-sample stream: order/size independent
    environment = environments[int(rng.integers(len(environments)))]
    domain, scenario, goal, question, template = tasks[index % len(tasks)]  # round-robin: every family present
    colour = list(CUE_COLOURS)[int(rng.integers(len(CUE_COLOURS)))]
    n = spec.n_frames
    task_start = int(rng.integers(0, 5000))
    progress = [] if rng.random() < EMPTY_PROGRESS_RATE else _narrations(rng, task_start, n)
    free = spec.frame_size - round(CUE_SIDE * spec.frame_size)
    cue_xy = (int(rng.integers(0, free + 1)), int(rng.integers(0, free + 1)))

    options, gold = sorted_options(template), template.format(colour=colour)
    video_id = f"syn-{split}-v{index + 1:05d}"
    record = {
        "sample_id": f"syn-{split}-{index + 1:05d}", "domain": domain, "scenario": scenario, "task_goal": goal,
        "question": question, **{f"choice_{l.lower()}": o for l, o in zip(LETTERS, options)},
        "golden_choice_idx": LETTERS[options.index(gold)], "answer": gold,
        "task_start_frame": task_start, "task_progress_metadata": progress,
        "video_id": video_id, "video_source": video_source_of(environment), "video_basename": f"{video_id}.mp4",
        "current_observation_basename": f"{video_id}_{task_start + (n if progress else 0)}.png",
        "task_level": split,
    }
    image = _observation(environment, colour, cue_xy, spec, rng)
    frames = _progress_frames(environment, colour, cue_xy, spec, rng) if progress else None
    return record, environment, colour, image, frames


def _training_record(record: dict) -> dict:
    """The training_6k schema: answer plus the three other options as negative_answers, no choices/letter."""
    options = [record[f"choice_{l.lower()}"] for l in LETTERS]
    keys = ("sample_id", "domain", "scenario", "task_goal", "question", "answer")
    tail = ("task_start_frame", "task_progress_metadata", "video_id", "video_source", "video_basename",
            "current_observation_basename")
    return {**{k: record[k] for k in keys}, "negative_answers": [o for o in options if o != record["answer"]],
            **{k: record[k] for k in tail}}


def _cot_record(record: dict, colour: str) -> dict:
    """The SFT record: the official chat prompt (video only with progress, then image, then text) and a response."""
    source = record["video_source"]
    content = [{"type": "video", "video": f"videos/{source}/{record['video_basename']}"}] \
        if record["task_progress_metadata"] else []
    content.append({"type": "image", "image": f"images/{source}/{record['current_observation_basename']}"})
    options = [record[f"choice_{l.lower()}"] for l in LETTERS]
    content.append({"type": "text", "text": build_prompt_text(record["question"], options)})
    response = f"<think>{CUE_THOUGHT.format(colour=colour)}</think><answer>{record['golden_choice_idx']}.</answer>"
    return {"sample_id": record["sample_id"], "prompt": [{"role": "user", "content": content}], "response": response}


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def write_synthetic(root: str | Path, spec: SynthSpec = SynthSpec()) -> dict:
    """Write the dataset under root (files are overwritten, nothing is deleted); returns counts per file."""
    root = Path(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    counts = {"videos": 0, "images": 0}
    for split, filename, environments, tasks, stream in _SPLITS:
        records, cot = [], []
        for index in range(spec.count(split)):
            record, _, colour, image, frames = _make_sample(split, index, environments, tasks, stream, spec)
            source = record["video_source"]
            image_path = root / "images" / source / record["current_observation_basename"]
            image_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(image_path)
            counts["images"] += 1
            if frames is not None:
                video_path = root / "videos" / source / record["video_basename"]
                video_path.parent.mkdir(parents=True, exist_ok=True)
                _write_mp4(video_path, frames, spec.video_fps)
                counts["videos"] += 1
            if split == "train":
                cot.append(_cot_record(record, colour))
                record = _training_record(record)
            records.append(record)
        _write_jsonl(root / "annotations" / filename, records)
        counts[f"annotations/{filename}"] = len(records)
        if split == "train":
            _write_jsonl(root / "annotations" / COT_FILE, cot)
            counts[f"annotations/{COT_FILE}"] = len(cot)
    return counts
