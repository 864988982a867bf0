"""`seedr1 score` on a synthetic SEED-Bench-R1-mini: prints and writes the summary; a bad file writes nothing."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from seedr1.cli import build_parser, command, main
from seedr1.data.synthetic import SynthSpec, write_synthetic


@pytest.fixture(scope="module")
def annotations(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("mini")
    write_synthetic(root, SynthSpec(train=0, l1=4, l2=2, l3=4))
    return [str(root / "annotations" / f"validation_L{k}.jsonl") for k in (1, 2, 3)]


def _golds(annotations: list[str]) -> list[tuple[str, str]]:
    return [(r["sample_id"], r["golden_choice_idx"]) for path in annotations
            for r in map(json.loads, Path(path).read_text().splitlines())]


def _predictions(annotations: list[str]) -> list[dict]:
    """All of L1 right, both of L2 wrong, L3: first two right, third wrong, fourth missing."""
    rows = []
    for sid, gold in _golds(annotations):
        level, index = sid.split("-")[1], int(sid.split("-")[2])
        right = level == "L1" or (level == "L3" and index <= 2)
        if level == "L3" and index == 4:
            continue
        letter = gold if right else ("B" if gold == "A" else "A")
        rows.append({"sample_id": sid, "response": f"<think>The answer is {letter}.</think><answer>{letter}</answer>"})
    return rows


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_score_prints_and_writes_the_summary(annotations, tmp_path, capsys):
    predictions = _write(tmp_path / "pred.jsonl", _predictions(annotations))
    out = tmp_path / "reports" / "score.json"
    assert main(["score", "--annotations", *annotations, "--predictions", predictions, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(out.read_text())
    assert json.loads(printed) == summary and printed.strip() == json.dumps(summary, indent=1)
    assert (summary["accuracy"], summary["n"], summary["correct"]) == (6 / 10, 10, 6)
    assert summary["by_level"] == {"L1": {"accuracy": 1.0, "n": 4, "correct": 4},
                                   "L2": {"accuracy": 0.0, "n": 2, "correct": 0},
                                   "L3": {"accuracy": 2 / 4, "n": 4, "correct": 2}}
    # synthetic domains: L1/L2 all Daily life; L3 round-robin Daily life, Hobbies, Recreation, Work
    assert summary["by_domain"] == {"Daily life": {"accuracy": 5 / 7, "n": 7, "correct": 5},
                                    "Hobbies": {"accuracy": 1.0, "n": 1, "correct": 1},
                                    "Recreation": {"accuracy": 0.0, "n": 1, "correct": 0},
                                    "Work": {"accuracy": 0.0, "n": 1, "correct": 0}}
    assert summary["missing"] == ["syn-L3-00004"]
    assert summary["reasoning"] == {"format_rate": 1.0, "mean_reasoning_chars": 16.0, "consistency_rate": 1.0,
                                    "consistency_n": 9}


def test_duplicate_prediction_exits_non_zero_and_writes_nothing(annotations, tmp_path, capsys):
    rows = _predictions(annotations)
    predictions = _write(tmp_path / "pred.jsonl", rows + [rows[1]])
    out = tmp_path / "score.json"
    code = main(["score", "--annotations", *annotations, "--predictions", predictions, "--out", str(out)])
    captured = capsys.readouterr()
    assert code != 0 and not out.exists() and captured.out == ""
    assert f"{predictions}:{len(rows) + 1}: sample_id {rows[1]['sample_id']!r} is predicted twice" in captured.err


def test_sampled_draws_score_as_mean_and_std(annotations, tmp_path, capsys):
    # The evaluation job with samples=2 writes a row per (sample_id, k): draw 0 as above (6/10), draw 1 all right
    # (10/10). The score is their mean and std, as the job's own summary; a repeat within one draw is still an
    # error, naming its line.
    draw0 = [dict(r, k=0) for r in _predictions(annotations)]
    draw1 = [{"sample_id": sid, "k": 1, "response": f"<answer>{gold}</answer>"} for sid, gold in _golds(annotations)]
    out = tmp_path / "score.json"
    predictions = _write(tmp_path / "pred.jsonl", draw0 + draw1)
    assert main(["score", "--annotations", *annotations, "--predictions", predictions, "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["samples"] == 2
    assert (summary["accuracy"], summary["accuracy_std"]) == (pytest.approx(0.8), pytest.approx(0.2))
    assert (summary["by_level"]["L2"]["accuracy"], summary["by_level"]["L2"]["accuracy_std"]) == (0.5, 0.5)
    assert summary["l3_by_domain"]["Work"]["accuracy"] == 0.5  # L3's 4th: missing in draw 0, right in draw 1
    capsys.readouterr()
    bad = _write(tmp_path / "bad.jsonl", draw0 + draw1 + [draw1[3]])
    assert main(["score", "--annotations", *annotations, "--predictions", bad]) != 0
    assert f"{bad}:{len(draw0) + len(draw1) + 1}: sample_id {draw1[3]['sample_id']!r} is predicted twice" \
        in capsys.readouterr().err


def test_real_command_line_exit_codes(annotations, tmp_path):
    rows = _predictions(annotations)
    good = _write(tmp_path / "good.jsonl", rows)
    bad = _write(tmp_path / "bad.jsonl", rows + [{"sample_id": "syn-L9-00001", "response": "<answer>A</answer>"}])
    cmd = [sys.executable, "-m", "seedr1.cli", "score", "--annotations", *annotations, "--predictions"]
    ok = subprocess.run(cmd + [good], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["correct"] == 6
    out = tmp_path / "never.json"
    failed = subprocess.run(cmd + [bad, "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert failed.returncode != 0 and "'syn-L9-00001'" in failed.stderr and not out.exists()


def test_score_is_top_level_and_the_groups_still_parse():
    parser = build_parser()
    assert parser.parse_args(["data", "validate", "root"]).command == "validate"
    args = parser.parse_args(["score", "--annotations", "a.jsonl", "b.jsonl", "--predictions", "p.jsonl"])
    assert args.annotations == ["a.jsonl", "b.jsonl"] and args.out is None
    with pytest.raises(ValueError, match="cannot also have subcommands"):
        command("score", "extra", "x", lambda p: None, lambda a: 0)
    with pytest.raises(ValueError, match="cannot also have subcommands"):
        command("data", None, "x", lambda p: None, lambda a: 0)
