"""Stores are checked before a job starts anything (``seedr1.cluster.stores``): a wrong endpoint, bucket, key or path
fails in seconds, naming the config key."""
import time

import pytest

from seedr1.cluster.stores import StoreCheckFailed, check_stores, job_stores
from seedr1.config import GRPOConfig, S3Config, load_config


def grpo(**kv) -> GRPOConfig:
    return load_config(GRPOConfig, None, [f"{k}={v}" for k, v in kv.items()])


def test_which_stores_a_job_names():
    cfg = grpo(**{"data.root": "s3://b/root", "model": "s3://b/model", "checkpoint.dir": "s3://b/ck", "resume": "auto"})
    assert [(k, u, w) for k, u, _, w in job_stores(cfg)] == [
        ("data.root", "s3://b/root", False), ("model", "s3://b/model", False), ("checkpoint.dir", "s3://b/ck", True)]
    cfg = grpo(**{"data.shards": "/data/shards/", "model": "tiny"})
    assert [(k, u) for k, u, _, _ in job_stores(cfg)] == [("data.shards", "/data/shards/manifest.json")]


def test_an_unreachable_endpoint_fails_in_seconds_naming_the_key():
    cfg = grpo(**{"data.root": "s3://bench/root", "data.s3.endpoint_url": "http://127.0.0.1:9",
                  "data.s3.access_key": "k", "data.s3.secret_key": "s"})
    t0 = time.perf_counter()
    with pytest.raises(StoreCheckFailed, match=r"data.root = s3://bench/root: .*cannot reach endpoint"):
        check_stores(cfg)
    assert time.perf_counter() - t0 < 10


def test_s3_paths_credentials_and_writes(s3_server, tiny_model_on_s3):
    import boto3

    uri, s3 = tiny_model_on_s3
    keys = {"data.s3.endpoint_url": s3.endpoint_url, "data.s3.access_key": s3.access_key,
            "data.s3.secret_key": s3.secret_key}
    client = boto3.client("s3", endpoint_url=s3.endpoint_url, aws_access_key_id=s3.access_key,
                          aws_secret_access_key=s3.secret_key, region_name="us-east-1")
    client.create_bucket(Bucket="ckpts")
    check_stores(grpo(model=uri, **{"checkpoint.dir": "s3://ckpts/run1"}, **keys))  # all there
    assert "Contents" not in client.list_objects_v2(Bucket="ckpts")  # the write probe cleaned up after itself
    with pytest.raises(StoreCheckFailed, match=r"model = s3://models/nothing-here: .*nothing there"):
        check_stores(grpo(model="s3://models/nothing-here", **keys))
    with pytest.raises(StoreCheckFailed, match=r"checkpoint.dir = s3://no-such-bucket/run: .*NoSuchBucket"):
        check_stores(grpo(**{"checkpoint.dir": "s3://no-such-bucket/run"}, **keys))


def test_local_paths(tmp_path):
    with pytest.raises(StoreCheckFailed, match=r"data.root = .*/missing: no such file or folder"):
        check_stores(grpo(**{"data.root": str(tmp_path / "missing")}))
    check_stores(grpo(**{"data.root": str(tmp_path)}))
