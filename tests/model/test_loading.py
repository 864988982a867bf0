"""Resolving an ``s3://`` checkpoint with an explicit S3 config (a job's ``data.s3``, serving's ``s3``), not only
the AWS variables; once per node, whole, keyed by endpoint, URI and the objects' ETags."""
import threading
from pathlib import Path

import boto3
import pytest

from seedr1.config import S3Config
from seedr1.model.loading import resolve_checkpoint
from seedr1.storage import StorageError


def test_s3_checkpoint_uses_the_given_config(s3_server, no_aws_env, monkeypatch, tmp_path):
    cfg = S3Config(endpoint_url=s3_server, region="us-east-1", access_key="testing", secret_key="testing",
                   max_attempts=1, connect_timeout_s=1.0)
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    client.create_bucket(Bucket="ckpts")
    client.put_object(Bucket="ckpts", Key="run/step-3/config.json", Body=b'{"model_type": "qwen2_vl"}')
    client.put_object(Bucket="ckpts", Key="run/step-3/tokenizer/vocab.json", Body=b"{}")

    local = resolve_checkpoint("s3://ckpts/run/step-3", cfg)
    assert no_aws_env in Path(local).parents
    assert open(f"{local}/config.json").read() == '{"model_type": "qwen2_vl"}'
    assert open(f"{local}/tokenizer/vocab.json").read() == "{}"
    # the same bucket and prefix reached through another endpoint name is another checkpoint (another folder)
    other = resolve_checkpoint("s3://ckpts/run/step-3", S3Config(**{**cfg.__dict__,
                                                                   "endpoint_url": s3_server.replace("127.0.0.1",
                                                                                                     "localhost")}))
    assert other != local and open(f"{other}/config.json").read() == '{"model_type": "qwen2_vl"}'
    assert Path(local).exists()  # and the first endpoint's copy is still there
    # without the config (and no AWS variables) the same URI is not reachable: the config is what made it work
    monkeypatch.setenv("SEEDR1_CACHE", str(tmp_path / "other-cache"))
    with pytest.raises(StorageError, match="S3 list s3://ckpts/run/step-3/ failed") as e:  # no credentials at all
        resolve_checkpoint("s3://ckpts/run/step-3")
    assert "every node needs them" in str(e.value)  # and the error says where they must be
    assert not list((tmp_path / "other-cache").rglob("*.json"))  # a failed fetch leaves no folder behind


def test_concurrent_fetches_of_one_checkpoint_all_get_it_whole(tiny_model_on_s3, no_aws_env):
    """Ranks and actors of one node resolve the same checkpoint at once: each gets the finished folder."""
    uri, cfg = tiny_model_on_s3
    results, errors = [], []

    def fetch():
        try:
            results.append(resolve_checkpoint(uri, cfg))
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    folder = Path(results[0])
    assert (folder / ".complete").exists() and (folder / "config.json").exists()
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary folders left


def test_rollout_worker_fetches_an_s3_model_with_the_jobs_config(tiny_model_on_s3, no_aws_env):
    """A job's ``data.s3`` reaches the rollout actors' model download (GRPO and evaluation start them with it), so
    a checkpoint a run saved to an S3-compatible store loads with the same settings, without AWS variables."""
    from seedr1.config import RolloutConfig
    from seedr1.rollout.actor import RolloutWorker

    uri, cfg = tiny_model_on_s3
    worker = RolloutWorker(uri, RolloutConfig(engine="hf", num_samples=2, max_tokens=3), s3=cfg)
    assert no_aws_env in Path(worker.engine.processor.tokenizer.name_or_path).parents


def test_a_checkpoint_rewritten_in_place_is_fetched_again(s3_server, no_aws_env, monkeypatch):
    """A prefix such as ``latest`` rewritten by a later run: the cache follows the objects' ETags, not just the URI."""
    cfg = S3Config(endpoint_url=s3_server, region="us-east-1", access_key="testing", secret_key="testing",
                   max_attempts=1)
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    client.create_bucket(Bucket="rewritten")
    client.put_object(Bucket="rewritten", Key="latest/config.json", Body=b'{"step": 1}')
    client.put_object(Bucket="rewritten", Key="latest/vocab.json", Body=b"{}")

    first = Path(resolve_checkpoint("s3://rewritten/latest", cfg))
    (first / "planted").write_text("x")  # only a re-download into a new folder would lose it
    assert resolve_checkpoint("s3://rewritten/latest", cfg) == str(first) and (first / "planted").exists()

    client.put_object(Bucket="rewritten", Key="latest/config.json", Body=b'{"step": 2}')  # same size, new ETag
    second = Path(resolve_checkpoint("s3://rewritten/latest", cfg))
    assert second != first and (second / "config.json").read_text() == '{"step": 2}'
    assert (first / "planted").exists()  # kept: another process of the node may still be loading it
    client.delete_object(Bucket="rewritten", Key="latest/vocab.json")
    third = Path(resolve_checkpoint("s3://rewritten/latest", cfg))
    assert third != second and not (third / "vocab.json").exists()

    # rewritten while it downloads: a clear error, and no half-old half-new folder passes for either version
    from seedr1.storage import S3Storage

    download = S3Storage.download_dir

    def download_then_rewrite(self, prefix, dest):
        out = download(self, prefix, dest)
        client.put_object(Bucket="rewritten", Key="latest/config.json", Body=b'{"step": 4}')
        return out

    client.put_object(Bucket="rewritten", Key="latest/config.json", Body=b'{"step": 3}')
    with monkeypatch.context() as m:
        m.setattr(S3Storage, "download_dir", download_then_rewrite)
        with pytest.raises(StorageError, match="changed while it was downloaded"):
            resolve_checkpoint("s3://rewritten/latest", cfg)
    assert sorted(p.name for p in third.parent.iterdir()) == sorted([first.name, second.name, third.name])

    # The store out of reach (a restart during an outage): the copy fetched last, not a failed start, and not an
    # unfinished folder (a download in progress already holds its marker just before its rename).
    decoy = third.with_name(third.name + ".tmp99.abcd")
    decoy.mkdir()
    (decoy / ".complete").write_text("")
    import botocore.exceptions
    import botocore.paginate

    def fail_with(error):
        def pages(self):
            raise error
            yield  # a generator, as the real one
        return pages

    with monkeypatch.context() as m:
        m.setattr(botocore.paginate.PageIterator, "__iter__",
                  fail_with(botocore.exceptions.EndpointConnectionError(endpoint_url=s3_server)))
        assert resolve_checkpoint("s3://rewritten/latest", cfg) == str(third)
        with pytest.raises(StorageError, match="cannot reach endpoint"):  # nothing fetched before: the error stands
            resolve_checkpoint("s3://rewritten/never-fetched", cfg)
        # an answer from the store (here: access denied) is not an outage: no old weights behind its back
        m.setattr(botocore.paginate.PageIterator, "__iter__", fail_with(botocore.exceptions.ClientError(
            {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "ListObjectsV2")))
        with pytest.raises(StorageError, match="AccessDenied"):
            resolve_checkpoint("s3://rewritten/latest", cfg)
    # nor is a checkpoint deleted from a reachable store
    client.delete_object(Bucket="rewritten", Key="latest/config.json")
    with pytest.raises(FileNotFoundError, match="no checkpoint at s3://rewritten/latest"):
        resolve_checkpoint("s3://rewritten/latest", cfg)


def test_a_killed_makers_folder_is_removed_by_the_next_make_and_a_live_ones_is_not(tmp_path):
    """A download killed half-way (an OOM kill, a pod deleted) leaves its temp folder; the next make in the same
    cache folder removes it, but never the folder of a maker still at work (each holds a lock on ``<tmp>.lock``)."""
    import fcntl
    import signal
    import subprocess
    import sys

    from seedr1.model.loading import _make_once

    killed = tmp_path / "ckpt-a.tmp111.dead0000"
    maker = (f"import fcntl, os, signal, pathlib\n"
             f"fh = open({str(killed) + '.lock'!r}, 'w'); fcntl.flock(fh, fcntl.LOCK_EX)\n"
             f"d = pathlib.Path({str(killed)!r}); d.mkdir(); (d / 'model.safetensors').write_bytes(b'x' * 1000)\n"
             f"os.kill(os.getpid(), signal.SIGKILL)\n")
    assert subprocess.run([sys.executable, "-c", maker]).returncode == -signal.SIGKILL
    assert (killed / "model.safetensors").exists()
    live = tmp_path / "ckpt-b.tmp222.live0000"
    live.mkdir()
    with open(str(live) + ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a maker at work (flock locks of two opens conflict, even in one process)

        seen = {}

        def make(tmp):
            seen["locks"] = sorted(p.name for p in tmp_path.glob("*.lock"))
            tmp.mkdir()
            (tmp / "done").write_text("")

        _make_once(tmp_path / "ckpt-c", "done", make)
        assert not killed.exists() and not Path(str(killed) + ".lock").exists()
        assert live.exists()
        # while making, this maker's own lock was there beside the live one; afterwards only the live one is left
        assert len(seen["locks"]) == 2 and "ckpt-b.tmp222.live0000.lock" in seen["locks"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-b.tmp222.live0000", "ckpt-b.tmp222.live0000.lock",
                                                               "ckpt-c"]
