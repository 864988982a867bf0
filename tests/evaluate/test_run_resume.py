"""Resuming an evaluation after a kill that cut the last predictions row short."""
import json

from seedr1.evaluate.run import open_for_append, read_done


def test_append_after_a_cut_off_row_keeps_every_row(tmp_path):
    path = tmp_path / "predictions.jsonl"
    good = {"sample_id": "s1", "k": 0, "response": "<answer>A</answer>", "task_level": "L1", "domain": "d"}
    path.write_text(json.dumps(good) + "\n" + '{"sample_id": "s2", "k": 0, "respo')  # killed mid-write
    assert set(read_done(path)) == {("s1", 0)}  # the fragment is redone
    new = {**good, "sample_id": "s2", "response": "<answer>B</answer>"}
    with open_for_append(path) as sink:  # what the rerun does before writing its first row
        sink.write(json.dumps(new) + "\n")
    assert [json.loads(line) for line in path.read_text().splitlines()] == [good, new]
    assert read_done(path) == {("s1", 0): good, ("s2", 0): new}


def test_append_keeps_a_complete_file_and_creates_a_missing_one(tmp_path):
    path = tmp_path / "predictions.jsonl"
    with open_for_append(path) as sink:
        sink.write('{"sample_id": "a", "k": 0}\n')
    with open_for_append(path) as sink:
        sink.write('{"sample_id": "b", "k": 0}\n')
    assert set(read_done(path)) == {("a", 0), ("b", 0)}
