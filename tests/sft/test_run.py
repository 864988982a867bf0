"""SFT launch arithmetic that runs before any Ray work."""
from seedr1.config import DataConfig
from seedr1.data.shards import pack
from seedr1.data.synthetic import SynthSpec, write_synthetic
from seedr1.sft.run import record_count


def test_steps_from_epochs_count_records_in_shards_too(tmp_path):
    # training from shards (data.root empty) counted the file under data.root: a path relative to the working folder
    write_synthetic(tmp_path / "root", SynthSpec(train=6, l1=1, l2=1, l3=1, frame_size=56))
    pack(str(tmp_path / "root"), str(tmp_path / "shards"), shard_size=20_000, log=lambda *a, **k: None)
    cot = "annotations/training_with_cot_6k.jsonl"
    assert record_count(DataConfig(root=str(tmp_path / "root")), cot) == 6
    assert record_count(DataConfig(shards=str(tmp_path / "shards")), cot) == 6
    assert record_count(DataConfig(shards=str(tmp_path / "shards")), "annotations/validation_L1.jsonl") == 1
