"""`seedr1 data validate ROOT`: a clean synthetic root passes; each kind of defect is rejected with file, line,
sample_id and field, and only the bad records are."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import weakref
from pathlib import Path

import pytest

from seedr1.cli import main
from seedr1.config import DataConfig
from seedr1.data.synthetic import SynthSpec, write_synthetic

SPEC = SynthSpec(seed=0, train=16, l1=8, l2=4, l3=8)
TOTAL = 16 + 16 + 8 + 4 + 8  # train, cot, L1, L2, L3


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "root"
    write_synthetic(root, SPEC)
    return root


def _lines(root: Path, name: str) -> list[str]:
    return (root / "annotations" / name).read_text().splitlines()


def _write_lines(root: Path, name: str, lines: list[str]) -> None:
    (root / "annotations" / name).write_text("".join(line + "\n" for line in lines))


def _edit(root: Path, name: str, lineno: int, fn) -> dict:
    """Apply fn to the record on a 1-based line; returns the record after the edit."""
    lines = _lines(root, name)
    record = json.loads(lines[lineno - 1])
    fn(record)
    lines[lineno - 1] = json.dumps(record)
    _write_lines(root, name, lines)
    return record


def _record(root: Path, name: str, lineno: int) -> dict:
    return json.loads(_lines(root, name)[lineno - 1])


def _first_line_with_video(root: Path, name: str) -> int:
    return next(i for i, line in enumerate(_lines(root, name), start=1)
                if json.loads(line)["task_progress_metadata"])


# Each defect: mutate a copy, return the one reject expected (file, line, sample_id, field, reason fragment).
def truncated_video(root: Path) -> dict:
    line = _first_line_with_video(root, "validation_L1.jsonl")
    r = _record(root, "validation_L1.jsonl", line)
    path = root / "videos" / r["video_source"] / r["video_basename"]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return dict(file="validation_L1.jsonl", line=line, sample_id=r["sample_id"], field="video_basename",
                reason=r["video_basename"])


def missing_image(root: Path) -> dict:
    r = _record(root, "validation_L2.jsonl", 3)
    (root / "images" / r["video_source"] / r["current_observation_basename"]).unlink()
    return dict(file="validation_L2.jsonl", line=3, sample_id=r["sample_id"], field="current_observation_basename",
                reason="missing image")


def malformed_json(root: Path) -> dict:
    lines = _lines(root, "validation_L3.jsonl")
    lines[2] = lines[2][:-7]  # cut the closing part off line 3
    _write_lines(root, "validation_L3.jsonl", lines)
    return dict(file="validation_L3.jsonl", line=3, sample_id=None, field=None, reason="malformed JSON")


def missing_golden(root: Path) -> dict:
    r = _edit(root, "validation_L1.jsonl", 6, lambda rec: rec.pop("golden_choice_idx"))
    return dict(file="validation_L1.jsonl", line=6, sample_id=r["sample_id"], field="golden_choice_idx",
                reason="missing")


def wrong_golden(root: Path) -> dict:
    def flip(rec):
        rec["golden_choice_idx"] = "A" if rec["golden_choice_idx"] != "A" else "B"
    r = _edit(root, "validation_L3.jsonl", 5, flip)
    return dict(file="validation_L3.jsonl", line=5, sample_id=r["sample_id"], field="golden_choice_idx",
                reason="but answer is")


def duplicate_id(root: Path) -> dict:
    first = _record(root, "training_6k.jsonl", 2)["sample_id"]
    _edit(root, "training_6k.jsonl", 9, lambda rec: rec.update(sample_id=first))
    return dict(file="training_6k.jsonl", line=9, sample_id=first, field="sample_id", reason="duplicate sample_id")


def unreadable_image(root: Path) -> dict:
    """A media path that exists but cannot be read (here a folder) used to abort the whole run."""
    r = _record(root, "validation_L3.jsonl", 7)
    path = root / "images" / r["video_source"] / r["current_observation_basename"]
    path.unlink()
    path.mkdir()
    return dict(file="validation_L3.jsonl", line=7, sample_id=r["sample_id"], field="current_observation_basename",
                reason=f"cannot read {path}")


def cot_image_without_path(root: Path) -> dict:
    def blank(rec):
        part = next(p for p in rec["prompt"][0]["content"] if p["type"] == "image")
        part["image"] = ""
    r = _edit(root, "training_with_cot_6k.jsonl", 4, blank)
    index = [p["type"] for p in r["prompt"][0]["content"]].index("image")
    return dict(file="training_with_cot_6k.jsonl", line=4, sample_id=r["sample_id"],
                field=f"prompt[0].content[{index}].image", reason="has no path")


def not_utf8(root: Path) -> dict:
    """One line with a byte that is not UTF-8 used to stop the whole run (validate, pack, training) unnamed."""
    path = root / "annotations" / "validation_L2.jsonl"
    lines = path.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b'"', b'"\xff', 1)
    path.write_bytes(b"\n".join(lines))
    return dict(file="validation_L2.jsonl", line=2, sample_id=None, field=None, reason="not UTF-8 text (byte 0xff)")


def empty_cot_response(root: Path) -> dict:
    r = _edit(root, "training_with_cot_6k.jsonl", 3, lambda rec: rec.update(response=""))
    return dict(file="training_with_cot_6k.jsonl", line=3, sample_id=r["sample_id"], field="response",
                reason="empty response")


DEFECTS = [truncated_video, missing_image, malformed_json, missing_golden, wrong_golden, duplicate_id,
           unreadable_image, cot_image_without_path, not_utf8, empty_cot_response]


def _copy(clean_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(clean_root, root)
    return root


def _validate(root: Path, tmp_path: Path, capsys) -> tuple[int, list[dict], str]:
    rejects = tmp_path / "out" / "rejects.jsonl"
    code = main(["data", "validate", str(root), "--rejects", str(rejects)])
    out = capsys.readouterr().out
    return code, [json.loads(line) for line in rejects.read_text().splitlines()], out


def _assert_reject(actual: dict, expected: dict) -> None:
    assert set(actual) == {"file", "line", "sample_id", "field", "reason"}
    for key in ("file", "line", "sample_id", "field"):
        assert actual[key] == expected[key], (key, actual, expected)
    assert expected["reason"] in actual["reason"], (actual, expected)


def test_clean_root_passes(clean_root, tmp_path, capsys):
    code, rejects, out = _validate(clean_root, tmp_path, capsys)
    assert code == 0 and rejects == []
    assert out.strip().endswith("OK")
    for name, n in [("training_6k.jsonl", 16), ("training_with_cot_6k.jsonl", 16), ("validation_L1.jsonl", 8),
                    ("validation_L2.jsonl", 4), ("validation_L3.jsonl", 8)]:
        row = next(line for line in out.splitlines() if line.startswith(name)).split()
        assert row[1:] == [str(n), str(n), "0"], row


@pytest.mark.parametrize("defect", DEFECTS, ids=lambda f: f.__name__)
def test_each_defect_is_one_reject(defect, clean_root, tmp_path, capsys):
    root = _copy(clean_root, tmp_path)
    expected = defect(root)
    code, rejects, out = _validate(root, tmp_path, capsys)
    assert code == 1
    assert len(rejects) == 1, rejects  # exactly the bad record; every other record still passes
    _assert_reject(rejects[0], expected)
    assert "FAILED: 1 bad records" in out
    row = next(line for line in out.splitlines() if line.startswith(expected["file"])).split()
    assert int(row[1]) - int(row[2]) == 1 and row[3] == "1"


def test_all_defects_together(clean_root, tmp_path, capsys):
    root = _copy(clean_root, tmp_path)
    expected = [defect(root) for defect in DEFECTS]
    code, rejects, out = _validate(root, tmp_path, capsys)
    assert code == 1
    assert len(rejects) == len(expected), rejects
    key = lambda r: (r["file"], r["line"])  # noqa: E731
    for actual, want in zip(sorted(rejects, key=key), sorted(expected, key=key)):
        _assert_reject(actual, want)
    assert f"FAILED: {len(expected)} bad records" in out
    total_ok = sum(int(line.split()[2]) for line in out.splitlines() if line.split()[0].endswith(".jsonl"))
    assert total_ok == TOTAL - len(expected)


def test_decoded_frames_are_not_kept(clean_root, monkeypatch):
    """A record's decoded frames are dropped once it is checked: validating a file holds a few records' pixels, not
    the whole file's (training_6k at 252 px would be ~18 GB)."""
    from seedr1.data import validate

    prepare_from_root, lock = validate.prepare_from_root, threading.Lock()
    videos: list = []  # weak references to every decoded video
    most_alive = 0

    def spy(*args, **kwargs):
        nonlocal most_alive
        row = prepare_from_root(*args, **kwargs)
        with lock:
            most_alive = max(most_alive, sum(ref() is not None for ref in videos))
            if row["video"] is not None:
                videos.append(weakref.ref(row["video"]))
        return row

    monkeypatch.setattr(validate, "prepare_from_root", spy)
    report = validate.validate_root(str(clean_root), workers=2)
    assert report.ok and len(videos) >= 8
    assert most_alive <= 1, most_alive  # at most the other worker's record, in flight
    meta = next(validate.raw_records(str(clean_root), ["annotations/validation_L1.jsonl"], DataConfig()))
    row = validate.check_record(meta, str(clean_root), DataConfig(root=str(clean_root)))
    assert row == {"ok": True, "file": "validation_L1.jsonl", "line": 1, "sample_id": meta["record"]["sample_id"],
                   "field": None, "reason": None}


def test_cli_subprocess_exit_codes(clean_root, tmp_path):
    """The real command line: exit 0 on the clean root, 1 with a defect, 2 (one clear line) on a missing root."""
    cmd = [sys.executable, "-m", "seedr1.cli", "data", "validate"]
    ok = subprocess.run(cmd + [str(clean_root)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    root = _copy(clean_root, tmp_path)
    missing_golden(root)
    bad = subprocess.run(cmd + [str(root)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "field=golden_choice_idx" in bad.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    none = subprocess.run(cmd + [str(empty)], capture_output=True, text=True, timeout=120)
    assert none.returncode == 1 and f"FAILED: no annotation files under {empty}/annotations" in none.stdout
    typo = subprocess.run(cmd + [str(tmp_path / "typo")], capture_output=True, text=True, timeout=120)
    assert typo.returncode == 1 and f"({tmp_path / 'typo'} does not exist)" in typo.stdout
    (root / "manifest.json").write_text("{}")  # a packed data set is not a root
    packed = subprocess.run(cmd + [str(root)], capture_output=True, text=True, timeout=120)
    assert packed.returncode == 2 and "is a packed data set" in packed.stderr
    folder = subprocess.run(cmd + [str(clean_root), "--rejects", str(tmp_path)], capture_output=True, text=True,
                            timeout=120)
    assert folder.returncode == 2 and "Is a directory" in folder.stderr and "Traceback" not in folder.stderr


def test_other_annotation_files_are_validated_too(clean_root, tmp_path, capsys):
    # The full training file (not one of the five official names) is checked like training_6k; a file whose kind
    # its name does not tell is left alone.
    root = _copy(clean_root, tmp_path)
    lines = _lines(root, "training_6k.jsonl")
    _write_lines(root, "training_full.jsonl", lines[:3] + ["{not json"])
    (root / "annotations" / "notes.jsonl").write_text("whatever\n")
    code, rejects, out = _validate(root, tmp_path, capsys)
    assert code == 1 and [(r["file"], r["line"]) for r in rejects] == [("training_full.jsonl", 4)]
    assert next(line for line in out.splitlines() if line.startswith("training_full.jsonl")).split()[1:] == \
        ["4", "3", "1"]
    assert not any(line.startswith("notes.jsonl") for line in out.splitlines())
