"""seedr1 on real Ray clusters started with `ray start`, jobs sent with `ray job submit`, as the README's "Running on a
Ray cluster" section says: the commands below are the README's, plus only what keeps a test apart from anything
else on the machine (its own ports, temp dir and HOME, hence its own auth token and ~/seedr1).

- One machine: a 4-CPU head; a job too big for it fails within seconds with the resource message; the tiny GRPO job
  succeeds, its outputs under ~/seedr1/runs/grpo-tiny, its log short and without repeated lines.
- Two machines (two nodes on this one): rollout actors only on the node labelled rollout, trainer workers only on the
  node labelled trainer, as Ray's state API reports them.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's bin: `ray`, `python` (the README: "with the venv activated")

pytestmark = pytest.mark.slow


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Machine:
    """A test's own `ray start` processes, HOME and temp dir; stops exactly what it started."""

    def __init__(self, root: Path):
        self.root, self.home, self.temp = root, root / "home", Path("/tmp") / f"rt{os.getpid()}{root.name[-6:]}"
        self.home.mkdir(parents=True)
        self.temp.mkdir(parents=True, exist_ok=True)  # short: Ray's socket paths must stay under 107 bytes
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SEEDR1_HOME"))},
                    "HOME": str(self.home), "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "RAY_AUTH_MODE": "token",
                    "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
        self.env.setdefault("SEEDR1_CACHE", str(REPO / ".cache"))  # the tiny model and DeepSpeed's op, built once
        self.procs: list[subprocess.Popen] = []
        self.gcs_port, self.dashboard_port = _free_ports(2)
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"

    def run(self, *cmd: str, timeout: float = 600, cwd: Path = REPO) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=timeout)

    def _node_ports(self) -> list[str]:
        p = _free_ports(8)
        low = 20000 + (os.getpid() * 97 + len(self.procs) * 500) % 30000
        return [f"--node-manager-port={p[0]}", f"--object-manager-port={p[1]}", f"--metrics-export-port={p[2]}",
                f"--dashboard-agent-listen-port={p[3]}", f"--dashboard-agent-grpc-port={p[4]}",
                f"--runtime-env-agent-port={p[5]}", f"--min-worker-port={low}", f"--max-worker-port={low + 400}"]

    def start_head(self, *args: str) -> None:
        # README: ray get-auth-token --generate > /dev/null; ray start --head --num-cpus 4
        assert self.run("ray", "get-auth-token", "--generate").returncode == 0
        client = _free_ports(1)[0]
        self._start("ray", "start", "--head", *args, "--block", f"--port={self.gcs_port}",
                    f"--dashboard-port={self.dashboard_port}", f"--ray-client-server-port={client}",
                    f"--temp-dir={self.temp}", *self._node_ports())
        deadline = time.time() + 120
        while self.run("ray", "job", "list", "--address", self.dashboard, timeout=60).returncode != 0:
            assert time.time() < deadline, "the head did not come up"
            time.sleep(1)

    def add_node(self, *args: str) -> None:
        # README: ray start --address <head>:6379 ...
        before = self.node_count()
        self._start("ray", "start", f"--address=127.0.0.1:{self.gcs_port}", *args, "--block", *self._node_ports())
        deadline = time.time() + 120
        while self.node_count() <= before:
            assert time.time() < deadline, "the second node did not join"
            time.sleep(1)

    def _start(self, *cmd: str) -> None:
        log = open(self.root / f"ray-start-{len(self.procs)}.log", "w")
        self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))

    def state(self, code: str) -> object:
        """Run ``code`` (which sets ``out``) in a driver connected to this cluster; its JSON result."""
        script = ("import json, ray\nray.init(address='127.0.0.1:%d', log_to_driver=False)\n%s\nprint('OUT=' + "
                  "json.dumps(out))\n") % (self.gcs_port, code)
        done = self.run(sys.executable, "-c", script, timeout=120, cwd=self.root)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(next(line[4:] for line in done.stdout.splitlines() if line.startswith("OUT=")))

    def node_count(self) -> int:
        return self.state("out = sum(1 for n in ray.nodes() if n['Alive'])") if self.procs else 0

    def submit(self, *entrypoint: str, timeout: float = 600) -> subprocess.CompletedProcess:
        # README: ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/grpo.py ...
        return self.run("ray", "job", "submit", "--address", self.dashboard, "--working-dir", ".", "--",
                        *entrypoint, timeout=timeout)

    def stop(self, kill_tree) -> None:
        # SIGTERM to `ray start --block` alone lets it drain its node; what is still up after a few seconds (its
        # process tree and group: raylet, GCS, workers) is killed. Nothing else on the machine is touched.
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.time() + 5
        for p in reversed(self.procs):
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
            kill_tree(p)
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture()
def machine(tmp_path, grpo_job):
    m = Machine(tmp_path)
    yield m
    m.stop(grpo_job.kill_tree)


ANSI = re.compile(r"\x1b\[[0-9;]*m")
PREFIX = re.compile(r"^\((\w+) pid=\d+(?:, ip=[\d.]+)?\) ")  # Ray's "(RayTrainWorker pid=123) " before a worker's line


def said(line: str) -> str:
    """What a log line says, without colours and the process prefix (the same line from two workers is a repeat)."""
    return PREFIX.sub(r"\1: ", ANSI.sub("", line)).strip()


def job_log_lines(output: str) -> list[str]:
    """The job's own log in `ray job submit`'s output (between the CLI's "Tailing logs" line and its status line),
    without Ray's multi-instance note (the state API of a Ray Train helper actor cannot tell which of several Ray
    clusters on one machine is its own: only when others run beside it, as in a test session)."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if "Tailing logs until the job exits" in line), 0) + 1
    end = next((i for i in range(len(lines) - 1, -1, -1) if "------------------------------------------" in lines[i]),
               len(lines))
    return [said(line) for line in lines[start:end]
            if said(line) and not said(line).endswith(":") and "PlacementGroupCleaner" not in line]


def test_one_machine_cluster_runs_the_readme_job_and_refuses_one_too_big(machine):
    machine.start_head("--num-cpus", "4")

    t0 = time.time()
    too_big = machine.submit("python", "jobs/grpo.py", "trainer.num_workers=4", timeout=300)
    took = time.time() - t0
    out = too_big.stdout + too_big.stderr
    assert too_big.returncode != 0 and took < 60, (took, out[-3000:])
    assert "the Ray cluster cannot hold this grpo job" in out and "4 x trainer worker" in out, out[-3000:]
    assert "fits with: trainer.num_workers=2" in out, out[-3000:]

    done = machine.submit("python", "jobs/grpo.py")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-5000:]
    run = machine.home / "seedr1" / "runs" / "grpo-tiny"  # README: relative run folders go under ~/seedr1
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert (run / "checkpoints" / "step_00000004" / "hf" / "config.json").exists()
    assert f"[grpo] outputs: {run}" in out and f"[grpo] done: run folder {run}" in out

    log = job_log_lines(done.stdout)  # the CLI's own notes go to stderr
    (machine.root / "job.log").write_text("\n".join(log))
    assert len(log) <= 80, "\n".join(log)
    repeated = {line: n for line, n in Counter(log).items() if n > 1}
    assert not repeated, repeated
    assert sum("[grpo] step " in line for line in log) == 4

    # the README's other jobs, the same way: SFT, then an evaluation of the GRPO policy on the GRPO run's data
    sft = machine.submit("python", "jobs/sft.py", "steps=2")
    assert sft.returncode == 0, (sft.stdout + sft.stderr)[-5000:]
    assert (machine.home / "seedr1" / "runs" / "sft-tiny" / "checkpoints" / "step_00000002" / "COMPLETE").exists()
    ev = machine.submit("python", "jobs/evaluate.py", "model=runs/grpo-tiny/checkpoints/step_00000004/hf")
    assert ev.returncode == 0, (ev.stdout + ev.stderr)[-5000:]
    summary = json.loads((machine.home / "seedr1" / "runs" / "eval-tiny" / "summary.json").read_text())
    assert summary["checkpoint"] == str(run / "checkpoints" / "step_00000004" / "hf") and summary["n"] > 0, summary


def test_two_nodes_rollout_and_trainer_each_on_their_own(machine):
    machine.start_head("--labels", "seedr1.io/group=rollout")  # each node as many CPUs as the machine has
    machine.add_node("--labels", "seedr1.io/group=trainer")
    done = machine.submit("python", "jobs/grpo.py", "steps=1", "checkpoint.every=0",
                          "rollout.node_labels={seedr1.io/group: rollout}",
                          "trainer.node_labels={seedr1.io/group: trainer}")
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    # the state API is given this cluster's address: on a machine with several Ray instances it would not guess
    placed = machine.state(
        "from ray.util.state import list_actors, list_nodes\n"
        f"where = {machine.dashboard!r}\n"
        "group = {n.node_id: n.labels.get('seedr1.io/group') for n in list_nodes(address=where, detail=True)}\n"
        "out = sorted({(a.class_name, group[a.node_id]) for a in list_actors(address=where, limit=1000, detail=True)\n"
        "              if a.class_name in ('RolloutWorker', 'RayTrainWorker')})")
    assert placed == [["RayTrainWorker", "trainer"], ["RolloutWorker", "rollout"]], placed
