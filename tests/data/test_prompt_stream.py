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
