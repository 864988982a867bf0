"""E2E helpers: run `jobs/grpo.py` as its own process (its own embedded Ray), as a user would, so tests can kill it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def start_job(run_dir: Path, overrides: list[str], extra_env: dict | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1", **(extra_env or {}))
    log = open(run_dir.parent / f"{run_dir.name}.log", "ab")
    return subprocess.Popen([sys.executable, str(REPO / "jobs" / "grpo.py"), f"run_dir={run_dir}", *overrides],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def log_tail(run_dir: Path, n: int = 4000) -> str:
    path = run_dir.parent / f"{run_dir.name}.log"
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


def wait_for(predicate, proc: subprocess.Popen, run_dir: Path, timeout_s: float, what: str) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"job exited ({proc.returncode}) before {what}:\n{log_tail(run_dir)}")
        time.sleep(0.2)
    kill_tree(proc)
    raise AssertionError(f"timed out waiting for {what}:\n{log_tail(run_dir)}")


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the job and everything it started (its embedded Ray included)."""
    import psutil

    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    for p in [psutil.Process(proc.pid)] + children if proc.poll() is None else children:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
    psutil.wait_procs(children, timeout=30)


def metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def events(run_dir: Path) -> list[dict]:
    path = run_dir / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


@pytest.fixture()
def grpo_job():
    """Start, watch and kill `jobs/grpo.py` processes."""
    return types.SimpleNamespace(start=start_job, wait_for=wait_for, kill_tree=kill_tree, metrics=metrics,
                                 events=events, log_tail=log_tail)
