"""Resuming an evaluation: after a kill that cut the last predictions row short, and from a broken file."""
import json

import pytest

from seedr1.config import ConfigError
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


def test_a_complete_last_row_missing_only_its_newline_is_kept(tmp_path):
    """read_done counts such a row as done, so appending must keep it (it used to be cut off, and never redone)."""
    path = tmp_path / "predictions.jsonl"
    first = {"sample_id": "s1", "k": 0, "response": "<answer>A</answer>"}
    last = {**first, "sample_id": "s2"}
    path.write_text(json.dumps(first) + "\n" + json.dumps(last))  # killed before the newline
    assert set(read_done(path)) == {("s1", 0), ("s2", 0)}
    new = {**first, "sample_id": "s3"}
    with open_for_append(path) as sink:
        sink.write(json.dumps(new) + "\n")
    assert [json.loads(line) for line in path.read_text().splitlines()] == [first, last, new]


@pytest.mark.parametrize("bad,needle", [
    ('{"k": 0, "response": "x"}', "needs 'sample_id'"),  # valid JSON, not a prediction row
    ('[1, 2]', "needs 'sample_id'"),
    ('{"sample_id": "b", "k": "1"}', "an integer 'k'"),
    ('{"sample_id": "b", "k"', "malformed JSON"),  # not the last line: not a cut-off row
])
def test_an_unreadable_row_names_path_and_line(tmp_path, bad, needle):
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"sample_id": "a", "k": 0, "response": "x"}\n' + bad + '\n{"sample_id": "c", "k": 0}\n')
    with pytest.raises(ConfigError) as info:
        read_done(path)
    assert str(info.value).startswith(f"{path}:2: ") and needle in str(info.value)
