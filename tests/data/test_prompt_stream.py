"""The training prompt stream resumes from a saved position: nothing repeated, nothing skipped, across epochs."""
import pytest

from seedr1.config import DataConfig
from seedr1.data.prompt_stream import PromptStream
from seedr1.data.synthetic import SynthSpec, write_synthetic

FILES = ["annotations/training_6k.jsonl"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from seedr1.data.shards import pack

    root = tmp_path_factory.mktemp("stream-data")
    write_synthetic(root, SynthSpec(seed=3, train=6, l1=1, l2=1, l3=1, frame_size=56))
    shards = root.parent / "stream-shards"
    pack(str(root), str(shards), shard_size=40_000, log=lambda *a, **k: None)
    return str(root), str(shards)


def _ids(records):
    return [(r.sample_id, tuple(r.options)) for r in records]


@pytest.mark.parametrize("source", ["root", "shards"])
def test_resumed_stream_continues_exactly(ray_cluster, data, source):
    root, shards = data
    cfg = DataConfig(root=root, shards=shards if source == "shards" else "", frame_size=56, image_size=56,
                     decode_concurrency=1)
    stream = PromptStream(cfg, FILES)
    whole = stream.take(10)  # 6 per epoch: crosses into epoch 1
    stream.close()
    assert len({r.sample_id for r in whole[:6]}) == 6  # an epoch is a permutation
    assert _ids(whole[:6]) != _ids(whole[6:]) + _ids(whole[:2])  # epoch 1: new order/options
    first = PromptStream(cfg, FILES)
    head = first.take(4)
    position = first.position
    first.close()
    assert position == {"epoch": 0, "rows": 4}
    resumed = PromptStream(cfg, FILES, position=dict(position))
    tail = resumed.take(6)
    assert _ids(head + tail) == _ids(whole)
    assert resumed.position == {"epoch": 1, "rows": 4}
    resumed.close()


def test_cot_messages_come_through_ray_data_unchanged(ray_cluster, data):
    """Nested chat messages keep their exact keys through Ray Data (no Arrow-unified null keys)."""
    from seedr1.data.pipeline import RecordStream, iter_local

    root, _ = data
    cfg = DataConfig(root=root, frame_size=56, image_size=56, decode_concurrency=1)
    files = ["annotations/training_with_cot_6k.jsonl"]
    local = {r.sample_id: r.messages for r in RecordStream(iter_local(cfg, files), cfg)}
    stream = PromptStream(cfg, files)
    for r in stream.take(len(local)):
        assert r.messages == local[r.sample_id]
    stream.close()


def test_a_bad_record_is_written_to_rejects_once_over_epochs_and_resumes(ray_cluster, data, tmp_path):
    import json
    import shutil
    from pathlib import Path

    root = tmp_path / "root"
    shutil.copytree(data[0], root)
    path = root / FILES[0]
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2] + ["{not json"] + lines[2:]) + "\n")  # 6 good + 1 bad per epoch
    cfg = DataConfig(root=str(root), frame_size=56, image_size=56, decode_concurrency=1, max_bad_fraction=0.5)
    rejects = tmp_path / "rejects.jsonl"
    stream = PromptStream(cfg, FILES, str(rejects))
    stream.take(13)  # epochs 0 and 1, into 2: the bad line is rejected three times
    position = stream.position
    stream.close()
    assert position["epoch"] == 2
    resumed = PromptStream(cfg, FILES, str(rejects), position=position)
    resumed.take(6)
    resumed.close()
    written = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(w["file"], w["line"]) for w in written] == [(Path(FILES[0]).name, 3)]


def test_progress_bars_are_off_unless_asked(ray_cluster, data):
    """Outside a terminal (a Ray worker's log) every progress-bar update is a log line: a tiny GRPO run's log was
    ~40% of them. The setting is the executing process's Ray Data context."""
    import ray

    root, _ = data
    for bars in (True, False):
        stream = PromptStream(DataConfig(root=root, frame_size=56, image_size=56, decode_concurrency=1,
                                         progress_bars=bars), FILES)
        assert len(stream.take(2)) == 2
        assert ray.data.DataContext.get_current().enable_progress_bars is bars
        stream.close()
