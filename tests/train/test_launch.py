"""What a driver hands its Ray workers: they do not run in its working directory, so local paths go out absolute."""
from pathlib import Path

from seedr1.config import GRPOConfig
from seedr1.model.loading import resolve_for_workers
from seedr1.train.launch import prepare_run


def test_relative_model_and_data_paths_reach_workers_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "tiny-warm").mkdir(parents=True)  # as in the README: --out runs/tiny-warm
    cfg = GRPOConfig(run_dir="runs/grpo", model="runs/tiny-warm", resume="auto")
    cfg.data.root = "runs/data-mini"
    cfg = prepare_run(cfg, "grpo")
    assert cfg.model == str(tmp_path / "runs" / "tiny-warm")
    assert cfg.data.root == str(tmp_path / "runs" / "data-mini") and cfg.data.shards == ""
    assert Path(cfg.run_dir).is_absolute()


def test_remote_models_are_left_for_each_node_to_resolve(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for remote in ("Qwen/Qwen2-VL-7B-Instruct", "s3://bucket/checkpoints/step_100/hf"):
        assert resolve_for_workers(remote) == remote
    cfg = GRPOConfig(run_dir="run", model="Qwen/Qwen2-VL-7B-Instruct", resume="auto")
    cfg.data.shards = "s3://bucket/shards"
    cfg = prepare_run(cfg, "grpo")
    assert (cfg.model, cfg.data.shards, cfg.data.root) == ("Qwen/Qwen2-VL-7B-Instruct", "s3://bucket/shards", "")


def test_tiny_goes_to_workers_by_name_built_here_first(tmp_path, monkeypatch):
    # A worker on another node (another pod) has another cache: a path into the driver's cache would not exist there.
    from seedr1.model.loading import resolve_checkpoint

    monkeypatch.setenv("SEEDR1_CACHE", str(tmp_path / "cache"))
    assert resolve_for_workers("tiny") == "tiny"
    assert Path(resolve_checkpoint("tiny")).is_relative_to(tmp_path / "cache")  # already built: this node's workers
    assert (Path(resolve_checkpoint("tiny")) / "seedr1_tiny.json").exists()


def test_aws_secrets_reach_workers_only_of_a_ray_started_here(monkeypatch):
    """A runtime_env is plain text in Ray's dashboard: secrets go only to a Ray this driver starts (no RAY_ADDRESS),
    or when asked for; the endpoint and region always go."""
    from seedr1.train.launch import worker_env

    for name, value in [("AWS_ENDPOINT_URL", "http://s3.local"), ("AWS_REGION", "eu-1"), ("AWS_ACCESS_KEY_ID", "id"),
                        ("AWS_SECRET_ACCESS_KEY", "secret"), ("AWS_SESSION_TOKEN", "token")]:
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SEEDR1_FORWARD_AWS_SECRETS", raising=False)
    secrets = {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "token"}
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    env = worker_env()
    assert secrets.items() <= env.items() and env["AWS_ENDPOINT_URL"] == "http://s3.local"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # joining a cluster (ray job submit, KubeRay)
    env = worker_env()
    assert not secrets.keys() & env.keys() and env["AWS_REGION"] == "eu-1"
    monkeypatch.setenv("SEEDR1_FORWARD_AWS_SECRETS", "1")
    assert secrets.items() <= worker_env().items()


def test_no_aws_secrets_from_inside_a_ray_task(ray_cluster, monkeypatch):
    """A Serve application built on a cluster (RayService) runs in a Ray task: its pods have the credentials."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "RAY_ADDRESS", "SEEDR1_FORWARD_AWS_SECRETS"):
        monkeypatch.delenv(name, raising=False)

    @ray_cluster.remote
    def env_from_a_task():
        import os

        from seedr1.train.launch import worker_env

        before = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
        os.environ.update(AWS_ACCESS_KEY_ID="id", AWS_SECRET_ACCESS_KEY="secret")
        try:
            return worker_env()
        finally:  # a pooled worker process serves later tests
            for k, v in before.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)

    env = ray_cluster.get(env_from_a_task.remote())
    assert "AWS_ACCESS_KEY_ID" not in env and "AWS_SECRET_ACCESS_KEY" not in env


def _never_runs(config):
    raise AssertionError("the worker group should never have started")


def test_a_trainer_group_that_cannot_start_fails_once_within_its_timeout(ray_cluster, tmp_path, monkeypatch):
    """Ray Train alone retries a worker group it cannot place every 60 s forever; ours fails after
    trainer.start_timeout_s, once, with the line that names the setting."""
    import time

    import pytest
    from ray.train import ControllerError

    from seedr1.cluster.failures import explain
    from seedr1.config import TrainerConfig
    from seedr1.train.launch import run_trainer_group

    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "60")  # restored after: launch sets it
    trainer = TrainerConfig(num_workers=1, cpus_per_worker=64.0, start_timeout_s=3.0)  # the session cluster has 8
    t0 = time.time()
    with pytest.raises(ControllerError) as e:
        run_trainer_group(_never_runs, {}, trainer, str(tmp_path), keep=1)
    assert time.time() - t0 < 60
    assert "trainer.start_timeout_s" in explain(e.value)
