"""Session fixtures: one tiny model, one local Ray cluster, one loopback S3 server per test session."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Local-only test defaults (explicit, so tests don't depend on the machine's environment).
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # Ray 2.60 turns token auth on by default
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing downloads in tests
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """The default tiny Qwen2-VL (seed 0), built once per session."""
    from seedr1.config import TinyModelConfig
    from seedr1.model.tiny import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny") / "qwen2-vl", TinyModelConfig()))


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the whole session (8 logical CPUs: actors and trainer workers run 1 thread each)."""
    import ray

    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"RAY_AUTH_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}},
             _system_config={"metrics_report_interval_ms": 1000})  # Prometheus values within ~1 s, not ~10 s
    yield ray
    ray.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto) on loopback; yields its endpoint URL. Credentials are dummies."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise RuntimeError("moto server did not start")
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def tiny_model_on_s3(s3_server, tiny_model_dir):
    """The tiny model uploaded to ``s3://models/tiny`` on the loopback server; yields (uri, an S3Config reaching it)."""
    import boto3

    from seedr1.config import S3Config

    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    client.create_bucket(Bucket="models")
    for f in Path(tiny_model_dir).rglob("*"):
        if f.is_file():
            client.upload_file(str(f), "models", f"tiny/{f.relative_to(tiny_model_dir)}")
    return "s3://models/tiny", S3Config(endpoint_url=s3_server, region="us-east-1", access_key="testing",
                                        secret_key="testing")


@pytest.fixture()
def no_aws_env(monkeypatch, tmp_path):
    """No AWS variables or credential files, and an empty model cache: only an explicit S3Config reaches S3."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        monkeypatch.setenv(name, str(tmp_path / "none"))
    monkeypatch.setenv("SEEDR1_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture()
def s3_env(s3_server, monkeypatch):
    """AWS variables pointing at the loopback server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return s3_server


class PrometheusWatch(threading.Thread):
    """Scrapes the Ray node's Prometheus endpoint while a run goes on (workers' series go when they exit): every
    seedr1 series name seen, and the largest value of each gauge for this run."""

    def __init__(self, ray, run: str):
        super().__init__(daemon=True)
        node = ray.nodes()[0]
        self.url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
        self.run_tag, self.names, self.values, self.done = run, set(), {}, threading.Event()
        self.start()

    def scrape(self) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        try:
            body = urllib.request.urlopen(self.url, timeout=5).read().decode()
        except OSError:
            return
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                if sample.name.startswith("ray_seedr1_"):
                    self.names.add(re.sub(r"_(bucket|sum|count)$", "", sample.name))
                    if sample.labels.get("run") == self.run_tag:
                        self.values[sample.name] = max(self.values.get(sample.name, sample.value), sample.value)

    def run(self):
        while not self.done.wait(1.0):
            self.scrape()

    def stop(self):
        self.done.set()
        self.join(timeout=10)

    def wait_for(self, names: set, timeout_s: float = 30.0) -> None:
        """Keep scraping until every name in ``names`` was seen (or the timeout), then stop."""
        deadline = time.time() + timeout_s
        while time.time() < deadline and not names <= self.names:
            time.sleep(1)
        self.stop()


@pytest.fixture()
def prometheus_watch(ray_cluster):
    """``prometheus_watch(run=...)`` starts scraping the local Ray node's metrics endpoint every second."""
    watches = []

    def start(run: str = "") -> PrometheusWatch:
        watches.append(PrometheusWatch(ray_cluster, run))
        return watches[-1]

    yield start
    for w in watches:
        w.stop()
