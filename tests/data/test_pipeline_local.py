"""The in-process pipeline (no Ray): iter_local + RecordStream -> PromptRecords; option shuffles per epoch; resume."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from seedr1.config import DataConfig
from seedr1.data.pipeline import DataQualityError, PromptRecord, RecordStream, iter_local
from seedr1.data.prompt_text import LETTERS, build_prompt_text
from seedr1.data.synthetic import SynthSpec, write_synthetic

SPEC = SynthSpec(seed=0, train=16, l1=8, l2=4, l3=8)
TRAIN = "annotations/training_6k.jsonl"
COT = "annotations/training_with_cot_6k.jsonl"
L1 = "annotations/validation_L1.jsonl"
SIZE = 32


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "root"
    write_synthetic(root, SPEC)
    return root


def _cfg(root: Path, **kw) -> DataConfig:
    return DataConfig(root=str(root), frame_size=SIZE, image_size=SIZE, **kw)


def _raw(root: Path, rel: str) -> list[dict]:
    return [json.loads(line) for line in (root / rel).read_text().splitlines()]


def _records(root: Path, files: list[str], epoch: int = 0, shuffle: bool = False, skip: int = 0,
             **kw) -> list[PromptRecord]:
    cfg = _cfg(root, **kw)
    return list(RecordStream(iter_local(cfg, files, epoch=epoch, shuffle=shuffle), cfg, skip=skip))


def test_train_records(root):
    raw = {r["sample_id"]: r for r in _raw(root, TRAIN)}
    records = _records(root, [TRAIN])
    assert [r.sample_id for r in records] == list(raw)  # file order without shuffle
    with_video = 0
    for rec in records:
        r = raw[rec.sample_id]
        assert rec.kind == "train"
        assert len(rec.messages) == 1 and rec.messages[0]["role"] == "user"
        types = [p["type"] for p in rec.messages[0]["content"]]
        if r["task_progress_metadata"]:
            with_video += 1
            assert types == ["video", "image", "text"]
            assert rec.video.dtype == np.uint8 and rec.video.shape == (8, SIZE, SIZE, 3)  # 4 s at 2 fps
            assert rec.video_fps == pytest.approx(2.0)
        else:
            assert types == ["image", "text"] and rec.video is None
        assert rec.image.dtype == np.uint8 and rec.image.shape == (SIZE, SIZE, 3)
        assert sorted(rec.options) == sorted([r["answer"], *r["negative_answers"]])
        assert rec.options[LETTERS.index(rec.gold_letter)] == r["answer"]
        assert rec.messages[0]["content"][-1]["text"] == build_prompt_text(r["question"], rec.options)
    assert 0 < with_video < len(records)  # both media rules are exercised


def test_validation_records_keep_letters(root):
    for rec, r in zip(_records(root, [L1]), _raw(root, L1)):
        assert rec.sample_id == r["sample_id"] and rec.kind == "validation"
        assert rec.options == [r[f"choice_{c}"] for c in "abcd"]
        assert rec.gold_letter == r["golden_choice_idx"] and rec.task_level == "L1"


def test_cot_records(root):
    records = _records(root, [COT])
    raw = _raw(root, COT)
    assert len(records) == len(raw)
    for rec, r in zip(records, raw):
        assert rec.kind == "cot" and rec.response == r["response"]
        content = rec.messages[0]["content"]
        assert [p["type"] for p in content] == [p["type"] for p in r["prompt"][0]["content"]]
        assert all(set(p) == {"type"} for p in content if p["type"] != "text")  # media paths become placeholders
        assert (rec.video is not None) == (content[0]["type"] == "video") and rec.image is not None


def test_epoch_changes_option_shuffle_and_same_epoch_reproduces(root):
    e0 = {r.sample_id: (r.options, r.gold_letter) for r in _records(root, [TRAIN], epoch=0)}
    e0_again = {r.sample_id: (r.options, r.gold_letter) for r in _records(root, [TRAIN], epoch=0)}
    e1 = {r.sample_id: (r.options, r.gold_letter) for r in _records(root, [TRAIN], epoch=1)}
    assert e0 == e0_again
    assert any(e0[k] != e1[k] for k in e0)
    assert len({g for _, g in e0.values()}) > 1  # the answer is not always in the same place
    # a different seed gives different arrangements too
    s1 = {r.sample_id: r.options for r in _records(root, [TRAIN], epoch=0, seed=1)}
    assert any(e0[k][0] != s1[k] for k in e0)


def test_sorted_option_order(root):
    for rec in _records(root, [TRAIN], option_order="sorted"):
        assert rec.options == sorted(rec.options)


def test_sample_order_shuffle_is_deterministic_per_epoch(root):
    ids = lambda epoch: [r.sample_id for r in _records(root, [TRAIN], epoch=epoch, shuffle=True)]  # noqa: E731
    e0, e1 = ids(0), ids(1)
    assert e0 == ids(0) and e0 != e1 and sorted(e0) == sorted(e1)
    assert e0 != [r["sample_id"] for r in _raw(root, TRAIN)]


def test_skip_resumes_at_the_right_record(root):
    full = _records(root, [TRAIN, L1], epoch=2, shuffle=True)
    for skip in (0, 1, 7, len(full) - 1, len(full)):
        resumed = _records(root, [TRAIN, L1], epoch=2, shuffle=True, skip=skip)
        assert [r.sample_id for r in resumed] == [r.sample_id for r in full[skip:]]
        assert [r.options for r in resumed] == [r.options for r in full[skip:]]
        if resumed:
            assert np.array_equal(resumed[0].image, full[skip].image)


def test_skip_counts_only_good_records(root, tmp_path):
    """A rejected record before the resume point must not shift the resumed position."""
    bad = tmp_path / "root"
    shutil.copytree(root, bad)
    lines = (bad / TRAIN).read_text().splitlines()
    lines[1] = "{broken"
    (bad / TRAIN).write_text("\n".join(lines) + "\n")
    cfg = _cfg(bad, max_bad_fraction=0.5)
    full = list(RecordStream(iter_local(cfg, [TRAIN]), cfg))
    assert len(full) == len(lines) - 1
    stream = RecordStream(iter_local(cfg, [TRAIN]), cfg, skip=3, rejects_path=str(tmp_path / "rej.jsonl"))
    resumed = list(stream)
    assert [r.sample_id for r in resumed] == [r.sample_id for r in full[3:]]
    assert stream.rejected == 1 and stream.seen == len(lines)
    rejects = [json.loads(x) for x in (tmp_path / "rej.jsonl").read_text().splitlines()]
    assert len(rejects) == 1 and rejects[0]["file"] == "training_6k.jsonl" and rejects[0]["line"] == 2
    assert "malformed JSON" in rejects[0]["reason"]


def test_too_many_rejects_raise(root, tmp_path):
    bad = tmp_path / "root"
    shutil.copytree(root, bad)
    lines = (bad / L1).read_text().splitlines()
    for i in (0, 2, 4):
        r = json.loads(lines[i])
        del r["answer"]
        lines[i] = json.dumps(r)
    (bad / L1).write_text("\n".join(lines) + "\n")
    cfg = _cfg(bad, max_bad_fraction=0.2, min_records_for_bad_fraction=4)
    stream = RecordStream(iter_local(cfg, [L1]), cfg)
    got = []
    with pytest.raises(DataQualityError, match=r"3 of 5 records rejected \(60% > max_bad_fraction 20%\)"):
        for rec in stream:
            got.append(rec.sample_id)
    # checked at each reject once min_records_for_bad_fraction rows were seen: the good rows before it came through
    assert got == [json.loads(lines[i])["sample_id"] for i in (1, 3)]
    # below the limit the same file streams through with the bad records counted
    lenient = _cfg(bad, max_bad_fraction=0.75, min_records_for_bad_fraction=4)
    s = RecordStream(iter_local(lenient, [L1]), lenient)
    assert len(list(s)) == len(lines) - 3 and s.rejected == 3


def test_arrow_blocks_round_trip_rows(root):
    """Ray Data carries rows as Arrow blocks built by ``_to_table``: records with and without video, CoT records and
    rejects come back from a block exactly as from the in-process rows."""
    from seedr1.data.pipeline import _blocks, _reject, to_record

    rows = list(iter_local(_cfg(root), [TRAIN, COT]))
    rows.append(_reject("training_6k.jsonl", 3, "s3", "current_observation_basename", "missing image x.png"))
    tables = list(_blocks(rows))
    assert [t.num_rows for t in tables][:-1] == [8] * (len(tables) - 1) and sum(t.num_rows for t in tables) == len(rows)
    back = [dict(zip(t.column_names, values)) for t in tables for values in zip(*(c.to_pylist() for c in t.columns))]
    assert [r["ok"] for r in back] == [r["ok"] for r in rows] and back[-1]["reason"] == "missing image x.png"
    assert any(r["video"] is None for r in rows if r["ok"]) and any(r["video"] is not None for r in rows)
    for mine, theirs in zip(rows[:-1], back[:-1]):
        a, b = to_record(mine), to_record(theirs)
        assert a.sample_id == b.sample_id and a.messages == b.messages and a.options == b.options
        assert a.gold_letter == b.gold_letter and a.response == b.response and a.kind == b.kind
        assert theirs["video_fps"] == mine["video_fps"] and (mine["video"] is None) == (mine["video_fps"] is None)
        for x, y in ((a.video, b.video), (a.image, b.image)):
            assert (x is None and y is None) or (x.shape == y.shape and np.array_equal(x, y))
