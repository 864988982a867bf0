"""Resolving an ``s3://`` checkpoint with an explicit S3 config (serving's ``s3:`` section), not only the AWS
variables."""
from pathlib import Path

import boto3
import pytest

from seedr1.config import S3Config
from seedr1.model.loading import resolve_checkpoint
from seedr1.storage import StorageError


def test_s3_checkpoint_uses_the_given_config(s3_server, monkeypatch, tmp_path):
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):  # no credentials from files either
        monkeypatch.setenv(name, str(tmp_path / "none"))
    monkeypatch.setenv("SEEDR1_CACHE", str(tmp_path / "cache"))
    cfg = S3Config(endpoint_url=s3_server, region="us-east-1", access_key="testing", secret_key="testing",
                   max_attempts=1, connect_timeout_s=1.0)
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    client.create_bucket(Bucket="ckpts")
    client.put_object(Bucket="ckpts", Key="run/step-3/config.json", Body=b'{"model_type": "qwen2_vl"}')
    client.put_object(Bucket="ckpts", Key="run/step-3/tokenizer/vocab.json", Body=b"{}")

    local = resolve_checkpoint("s3://ckpts/run/step-3", cfg)
    assert (tmp_path / "cache") in Path(local).parents
    assert open(f"{local}/config.json").read() == '{"model_type": "qwen2_vl"}'
    assert open(f"{local}/tokenizer/vocab.json").read() == "{}"
    # without the config (and no AWS variables) the same URI is not reachable: the config is what made it work
    monkeypatch.setenv("SEEDR1_CACHE", str(tmp_path / "other-cache"))
    with pytest.raises(StorageError, match="S3 list s3://ckpts/run/step-3/ failed"):  # no credentials, or AWS itself
        resolve_checkpoint("s3://ckpts/run/step-3")


def test_rollout_worker_fetches_an_s3_model_with_the_jobs_config(s3_server, monkeypatch, tmp_path, tiny_model_dir):
    """A job's ``data.s3`` reaches the rollout actors' model download (GRPO and evaluation start them with it), so
    a checkpoint a run saved to an S3-compatible store loads with the same settings, without AWS variables."""
    from seedr1.config import RolloutConfig
    from seedr1.rollout.actor import RolloutWorker

    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SEEDR1_CACHE", str(tmp_path / "cache"))
    cfg = S3Config(endpoint_url=s3_server, region="us-east-1", access_key="testing", secret_key="testing")
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    client.create_bucket(Bucket="models")
    for f in Path(tiny_model_dir).rglob("*"):
        if f.is_file():
            client.upload_file(str(f), "models", f"tiny/{f.relative_to(tiny_model_dir)}")

    worker = RolloutWorker("s3://models/tiny", RolloutConfig(engine="hf", num_samples=2, max_tokens=3), s3=cfg)
    assert (tmp_path / "cache") in Path(worker.engine.processor.tokenizer.name_or_path).parents
