"""MetricsSink: metrics.jsonl, TensorBoard event files, progress lines, events, resume truncation, Ray gauges."""
import json
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from tensorboardX.proto.event_pb2 import SessionLog

from seedr1.metrics.catalog import flatten
from seedr1.metrics.sink import MetricsSink, prometheus_name, read_event_file


def event_files(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "tensorboard").glob("events.out.tfevents.*"))


def scalars(run_dir: Path) -> dict:
    """{(tag, step): value} over all event files (later files win)."""
    out = {}
    for path in event_files(run_dir):
        for event in read_event_file(path):
            for value in event.summary.value:
                out[(value.tag, event.step)] = value.simple_value
    return out


def make_row(step: int) -> dict:
    return {"step": step, "reward_mean": 0.5 + step / 100, "reward_std": 0.25, "reward/accuracy": 0.25,
            "reward/format": 1.0, "reward_failures/format": 0, "accuracy": 0.25, "format_rate": 1.0,
            "kl": 0.00125, "groups_dropped": 1, "lr": 1e-6, "note": "not a number",
            "seconds": {"rollout": 0.5, "update": 1.0, "step": 2.0}}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_log_writes_every_metric_before_close(tmp_path, capsys):
    sink = MetricsSink(tmp_path, job="grpo", total_steps=5, ray_metrics=False)
    rows = [make_row(s) for s in (1, 2, 3)]
    before = time.time()
    for row in rows:
        sink.log(row)
    # not closed yet: a killed run keeps what it logged, each row stamped with the wall clock (not in TensorBoard)
    written = read_jsonl(tmp_path / "metrics.jsonl")
    assert [{k: v for k, v in r.items() if k != "time"} for r in written] == rows
    stamps = [r["time"] for r in written]
    assert before - 1e-3 <= stamps[0] <= stamps[1] <= stamps[2] <= time.time() + 1e-3
    assert [list(r)[:2] for r in written] == [["step", "time"]] * 3
    got = scalars(tmp_path)
    expected = {(name, row["step"]): value for row in rows for name, value in flatten(row).items() if name != "step"}
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-6)  # TensorBoard keeps float32
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"[grpo] step {s}/5 reward {0.5 + s / 100:.3f} acc 0.250 fmt 1.000 kl 0.00125 lr 1.00e-06 "
                     f"2.00 s/step ETA {2 * (5 - s)} s" for s in (1, 2, 3)]
    sink.close()
    sink.close()  # idempotent


def test_progress_without_step_seconds_uses_wall_time(tmp_path, capsys, monkeypatch):
    clock = iter([100.0, 103.0, 104.0])  # sink created, first log, second log
    monkeypatch.setattr("seedr1.metrics.sink.time.perf_counter", lambda: next(clock))
    sink = MetricsSink(tmp_path, job="sft", total_steps=10, tensorboard=False, ray_metrics=False)
    sink.log({"step": 1, "loss": 2.0})
    sink.log({"step": 2, "loss": 1.0})
    sink.close()
    assert capsys.readouterr().out.splitlines() == [
        "[sft] step 1/10 loss 2.0000 3.00 s/step ETA 27 s",
        "[sft] step 2/10 loss 1.0000 1.00 s/step ETA 16 s",  # mean 2 s/step x 8 steps left
    ]
    assert not (tmp_path / "tensorboard").exists()


def test_events_are_appended_with_step_and_logged(tmp_path, capsys):
    sink = MetricsSink(tmp_path, total_steps=5, tensorboard=False, ray_metrics=False, progress=False)
    sink.log(make_row(2))
    sink.event("rollout_actor_restarted", actor=1, error="RayActorError", seconds=2.5)
    sink.event("resumed", checkpoint="s3://b/ckpt/step-7", step=7)
    sink.close()
    events = read_jsonl(tmp_path / "events.jsonl")
    assert [(e["kind"], e["step"]) for e in events] == [("rollout_actor_restarted", 2), ("resumed", 7)]
    assert events[0]["actor"] == 1 and events[0]["error"] == "RayActorError" and events[0]["seconds"] == 2.5
    assert events[1]["checkpoint"] == "s3://b/ckpt/step-7"
    assert all(abs(e["time"] - time.time()) < 60 for e in events)
    assert capsys.readouterr().out.splitlines() == [
        "[grpo] event rollout_actor_restarted at step 2: actor=1 error=RayActorError seconds=2.5",
        "[grpo] event resumed at step 7: checkpoint=s3://b/ckpt/step-7",
    ]


def test_truncate_after_drops_later_rows_and_hides_later_tensorboard_steps(tmp_path):
    first = MetricsSink(tmp_path, total_steps=6, ray_metrics=False, progress=False)
    for step in range(1, 6):
        first.log(make_row(step))
    first.event("checkpoint", checkpoint="ckpt/step-3", step=3)
    first.event("rollout_actor_restarted", actor=0)  # at step 5: after the checkpoint
    first.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "reward_me')  # the run was killed mid-line

    resumed = MetricsSink(tmp_path, total_steps=6, ray_metrics=False, progress=False)
    resumed.truncate_after(3)
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3]
    assert not (tmp_path / "metrics.jsonl.tmp").exists()
    assert [e["step"] for e in read_jsonl(tmp_path / "events.jsonl")] == [3, 5]  # events are history

    redo = dict(make_row(4), reward_mean=-1.0)
    resumed.log(redo)
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4]
    assert read_jsonl(tmp_path / "metrics.jsonl")[-1]["reward_mean"] == -1.0
    resumed.close()

    # The resumed run's event file starts with TensorBoard's restart marker at step 4, so steps >= 4 of the older
    # file are dropped when TensorBoard loads the folder; its own step 4 holds the new value.
    files = event_files(tmp_path)
    assert len(files) == 2
    marker = [e for e in read_event_file(files[-1]) if e.HasField("session_log")]
    assert [(e.step, e.session_log.status) for e in marker] == [(4, SessionLog.START)]
    assert scalars(tmp_path)[("reward_mean", 4)] == -1.0


def test_prometheus_name_is_safe():
    assert prometheus_name("grpo", "seconds/step") == "seedr1_grpo_seconds_step"
    assert prometheus_name("grpo", "reward_std/my-fn.v2") == "seedr1_grpo_reward_std_my_fn_v2"


def metrics_page() -> str:
    import ray

    node = ray.nodes()[0]
    url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    return urllib.request.urlopen(url, timeout=5).read().decode()


def test_gauges_set_in_an_actor_reach_the_prometheus_endpoint(ray_cluster, tmp_path):
    ray = ray_cluster
    run = f"metrics-test-{uuid.uuid4().hex[:8]}"

    @ray.remote(num_cpus=0)
    class RankZero:  # as the job's rank-0 train worker logs
        def log(self, run_dir: str, run: str) -> None:
            from seedr1.metrics.sink import MetricsSink

            self.sink = MetricsSink(run_dir, total_steps=3, run_name=run, tensorboard=False, progress=False)
            self.sink.log({"step": 1, "reward_mean": 0.75, "reward/format": 1.0, "seconds": {"step": 2.5}})
            self.sink.event("rollout_actor_restarted", actor=0)

    actor = RankZero.remote()
    ray.get(actor.log.remote(str(tmp_path), run))
    wanted = {"ray_seedr1_grpo_reward_mean": "0.75", "ray_seedr1_grpo_reward_format": "1.0",
              "ray_seedr1_grpo_seconds_step": "2.5", "ray_seedr1_grpo_step": "1.0",
              "ray_seedr1_grpo_events_total": "1.0"}
    found = {}
    deadline = time.time() + 30  # Ray exports every ~10 s by default
    while time.time() < deadline and len(found) < len(wanted):
        for line in metrics_page().splitlines():
            name = line.split("{", 1)[0]
            if name in wanted and f'run="{run}"' in line:
                found[name] = line.rsplit(" ", 1)[1]
        time.sleep(0.5)
    ray.kill(actor)
    assert found == wanted
    page = metrics_page()
    assert "# HELP ray_seedr1_grpo_reward_mean Mean total (weighted) reward" in page
    assert 'kind="rollout_actor_restarted"' in page


def test_events_carry_the_step_in_progress(tmp_path):
    import json

    from seedr1.metrics.sink import MetricsSink

    sink = MetricsSink(tmp_path, job="grpo", total_steps=5, tensorboard=False, ray_metrics=False, progress=False)
    sink.log({"step": 3, "loss": 0.1})
    sink.event("before")  # between steps: the last logged one
    sink.begin_step(4)
    sink.event("rollout_actor_restarted", actor=0)  # during step 4, before its row
    sink.event("checkpoint", step=2)  # an explicit step wins
    sink.close()
    steps = [(e["kind"], e["step"]) for e in map(json.loads, (tmp_path / "events.jsonl").read_text().splitlines())]
    assert steps == [("before", 3), ("rollout_actor_restarted", 4), ("checkpoint", 2)]
