"""Evaluation through an OpenAI-compatible HTTP endpoint (a stub server on loopback), and resume after a kill."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from seedr1.config import ConfigError, DataConfig, EvaluateConfig
from seedr1.data.annotations import read_annotations

REPO = Path(__file__).resolve().parents[2]
FILES = ["annotations/validation_L1.jsonl", "annotations/validation_L2.jsonl", "annotations/validation_L3.jsonl"]


class StubChat(BaseHTTPRequestHandler):
    """Answers every question with option A after ``delay`` seconds; remembers what it was asked. ``fail``:
    (predicate on the question text, HTTP status) to answer those questions with an error in OpenAI's shape.
    ``choices``: how many answers to return (default: the ``n`` asked for)."""

    requests: list = []
    delay = 0.0
    fail = None
    choices = None

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        StubChat.requests.append({"auth": self.headers.get("Authorization"), "body": body})
        time.sleep(StubChat.delay)
        status = 200
        reply = {"choices": [{"index": i, "message": {"role": "assistant",
                                                      "content": "<think>it is option A.</think><answer>A.</answer>"}}
                             for i in range(StubChat.choices or body.get("n", 1))]}
        if StubChat.fail and StubChat.fail[0](_question_of({"body": body})):
            status = StubChat.fail[1]
            reply = {"error": {"message": f"stub refuses this prompt ({status})", "type": "invalid_request_error",
                               "param": "messages", "code": "context_length_exceeded"}}
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def stub_server():
    StubChat.requests, StubChat.delay, StubChat.fail, StubChat.choices = [], 0.0, None, None
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubChat)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from seedr1.data.synthetic import SynthSpec, write_synthetic

    root = tmp_path_factory.mktemp("eval-data")
    write_synthetic(root, SynthSpec(train=4, l1=6, l2=4, l3=8))
    return str(root)


def _question_of(request: dict) -> str:
    return next(p["text"] for p in request["body"]["messages"][0]["content"] if p["type"] == "text")


def test_endpoint_target_scores_with_the_official_rule(stub_server, data_root, tmp_path):
    from seedr1.evaluate.run import run_evaluate

    cfg = EvaluateConfig(out_dir=str(tmp_path / "eval"), endpoint=stub_server, api_key="k-123", concurrency=3,
                         files=FILES, html_report=False, data=DataConfig(root=data_root, frame_size=56, image_size=56))
    summary = run_evaluate(cfg)
    samples = [s for f in FILES for s in read_annotations(f"{data_root}/{f}")]
    gold_a = sum(s.gold_letter == "A" for s in samples)
    assert summary["n"] == len(samples) == 18 and summary["correct"] == gold_a
    assert summary["accuracy"] == pytest.approx(gold_a / 18)
    for level in ("L1", "L2", "L3"):
        chosen = [s for s in samples if s.task_level == level]
        assert summary["by_level"][level]["correct"] == sum(s.gold_letter == "A" for s in chosen)
    assert summary["reasoning"]["consistency_rate"] == 1.0  # the think text concludes A, the answer is A
    # every question was asked once, with the key, the image and (when the record has one) the video inline
    assert len(StubChat.requests) == 18 and all(r["auth"] == "Bearer k-123" for r in StubChat.requests)
    kinds = [[p["type"] for p in r["body"]["messages"][0]["content"]] for r in StubChat.requests]
    assert all(k[-2:] == ["image_url", "text"] for k in kinds) and any(k[0] == "video_url" for k in kinds)
    video = next(r for r in StubChat.requests if r["body"]["messages"][0]["content"][0]["type"] == "video_url")
    assert video["body"]["messages"][0]["content"][0]["video_url"]["url"].startswith("data:video/jpeg;base64,")
    # the same numbers as scoring the predictions file with `seedr1 score`
    from seedr1.evaluate.scoring import score_files

    again = score_files([f"{data_root}/{f}" for f in FILES], str(tmp_path / "eval" / "predictions.jsonl"))
    assert again["accuracy"] == summary["accuracy"] and again["by_level"] == summary["by_level"]
    assert (tmp_path / "eval" / "table.md").read_text().count("|") > 10 and (tmp_path / "eval" / "chart.png").exists()
    assert "k-123" not in (tmp_path / "eval" / "config.yaml").read_text()  # the key is not saved with the run


def test_killed_evaluation_resumes_without_asking_twice(stub_server, data_root, tmp_path):
    StubChat.delay = 0.3  # slow enough to kill it half-way
    out = tmp_path / "eval"
    cmd = [sys.executable, str(REPO / "jobs" / "evaluate.py"), f"out_dir={out}", f"data.root={data_root}",
           "--endpoint", stub_server, "concurrency=1", "batch_size=2", "html_report=false"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "predictions.jsonl").exists() or \
            len((out / "predictions.jsonl").read_text().splitlines()) < 6:
        assert first.poll() is None, "finished before it could be killed"
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait()
    written = [json.loads(line)["sample_id"] for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert 6 <= len(written) < 18
    StubChat.delay = 0.0
    assert subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, timeout=300).returncode == 0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    ids = [r["sample_id"] for r in rows]
    assert len(ids) == len(set(ids)) == 18  # nothing evaluated twice, nothing left out
    asked = Counter(_question_of(r) for r in StubChat.requests)
    samples = {s.sample_id: s for f in FILES for s in read_annotations(f"{data_root}/{f}")}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 18 and summary["correct"] == sum(s.gold_letter == "A" for s in samples.values())
    assert summary["answered_this_run"] == 18 - len(written)  # the rerun asked only for what was missing
    assert sum(asked.values()) <= 18 + 2  # at most the batch in flight at the kill was asked again


def test_longvideobench_file_evaluates_through_the_same_path(stub_server, data_root, tmp_path):
    """A LongVideoBench-format file (JSON list: candidates, correct_choice, video_path; video only, no image)."""
    import shutil

    from seedr1.evaluate.run import run_evaluate

    lvb = tmp_path / "lvb"
    (lvb / "videos").mkdir(parents=True)
    mp4s = sorted(Path(data_root, "videos").rglob("*.mp4"))[:2]
    for i, src in enumerate(mp4s):
        shutil.copy(src, lvb / "videos" / f"clip{i}.mp4")
    records = [{"id": f"lvb-{i}", "question": f"What happens in clip {i % 2}?", "video_path": f"clip{i % 2}.mp4",
                "candidates": ["cut", "stir", "wash", "pour", "open"][:4 + i % 2], "correct_choice": i % 3,
                "duration_group": 15 if i < 3 else 60, "topic_category": "cooking"} for i in range(5)]
    (lvb / "lvb_val.json").write_text(json.dumps(records))
    cfg = EvaluateConfig(out_dir=str(tmp_path / "eval"), endpoint=stub_server, api_key="k", files=["lvb_val.json"],
                         html_report=False, data=DataConfig(root=str(lvb), frame_size=56, image_size=56))
    summary = run_evaluate(cfg)
    gold_a = [r["id"] for r in records if r["correct_choice"] == 0]  # the stub always answers A
    assert summary["n"] == 5 and summary["correct"] == len(gold_a) == 2
    # LongVideoBench's duration group stands in for the level
    assert {k: v["n"] for k, v in summary["by_level"].items()} == {"15": 3, "60": 2}
    assert summary["by_domain"]["cooking"]["correct"] == 2
    assert len(StubChat.requests) == 5
    for r in StubChat.requests:
        parts = r["body"]["messages"][0]["content"]
        assert [p["type"] for p in parts] == ["video_url", "text"]  # no current-observation image in this format
        assert parts[0]["video_url"]["url"].startswith("data:video/jpeg;base64,")
    five = next(_question_of(r) for r in StubChat.requests if "E. open" in _question_of(r))
    assert "A. cut\nB. stir\nC. wash\nD. pour\nE. open\n" in five


def _fails_on(sample):
    """A predicate on the prompt text that picks ``sample``'s question and options (and any with the same text)."""
    return lambda text: text.startswith(sample.question) and f"A. {sample.options[0]}\n" in text


def test_a_refused_sample_counts_wrong_and_the_run_goes_on(stub_server, data_root, tmp_path):
    """One question the server refuses (400, e.g. a prompt over the model's length): that sample's answer is empty,
    counted wrong and keeps the error; every other question is answered and the run finishes."""
    from seedr1.evaluate.run import run_evaluate

    samples = [s for f in FILES for s in read_annotations(f"{data_root}/{f}")]
    picked = next(s for s in samples if s.gold_letter == "A")  # the stub's A would have been right
    StubChat.fail = (_fails_on(picked), 400)
    refused = {s.sample_id for s in samples if _fails_on(picked)(f"{s.question}\nA. {s.options[0]}\n")}
    cfg = EvaluateConfig(out_dir=str(tmp_path / "eval"), endpoint=stub_server, api_key="k", concurrency=3,
                         files=FILES, html_report=False, data=DataConfig(root=data_root, frame_size=56, image_size=56))
    summary = run_evaluate(cfg)
    lines = (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()
    rows = {r["sample_id"]: r for r in map(json.loads, lines)}
    assert summary["n"] == len(rows) == 18 and not summary["missing"] and picked.sample_id in refused
    for sid, row in rows.items():
        if sid in refused:
            assert row["response"] == "" and "stub refuses this prompt (400)" in row["error"]
        else:
            assert "error" not in row and row["response"]
    assert summary["correct"] == sum(s.gold_letter == "A" and s.sample_id not in refused for s in samples)
    assert len(StubChat.requests) == 18  # a refusal is not retried


def test_a_server_error_fails_the_run_after_writing_what_came_back(stub_server, data_root, tmp_path, monkeypatch):
    """A 5xx that outlasts the retries fails the run, but the batch's other answers are written; a rerun asks only
    for the failed questions."""
    import types

    from seedr1.evaluate import http_target
    from seedr1.evaluate.run import run_evaluate

    monkeypatch.setattr(http_target, "time", types.SimpleNamespace(sleep=lambda s: None))  # no backoff waits

    samples = [s for f in FILES for s in read_annotations(f"{data_root}/{f}")]
    failing = _fails_on(samples[0])
    StubChat.fail = (failing, 500)
    cfg = EvaluateConfig(out_dir=str(tmp_path / "eval"), endpoint=stub_server, api_key="k", concurrency=4,
                         files=FILES, html_report=False, data=DataConfig(root=data_root, frame_size=56, image_size=56))
    with pytest.raises(RuntimeError, match="HTTP 500"):
        run_evaluate(cfg)
    failed = {s.sample_id for s in samples if failing(f"{s.question}\nA. {s.options[0]}\n")}
    lines = (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()
    written = [json.loads(line)["sample_id"] for line in lines]
    assert sorted(written) == sorted(s.sample_id for s in samples if s.sample_id not in failed)  # one batch of 32
    StubChat.fail, StubChat.requests = None, []
    summary = run_evaluate(cfg)
    assert summary["n"] == 18 and not summary["missing"] and summary["answered_this_run"] == len(failed)
    assert len(StubChat.requests) == len(failed)


def test_video_is_sent_as_its_exact_frames_at_their_rate():
    """The clip travels as the sampled frames themselves (lossless PNGs in vLLM's frame-list form) with the rate they
    stand for; the server's parser reads back the very pixels, whatever the frame count."""
    import numpy as np

    from seedr1.config import ServeLimits
    from seedr1.data.pipeline import PromptRecord
    from seedr1.evaluate.http_target import chat_body
    from seedr1.serve.media import parse_chat

    rng = np.random.default_rng(0)
    for count, fps in ((8, 2.0), (4, 4.0), (16, 0.5)):
        frames = rng.integers(0, 255, (count, 32, 32, 3), dtype=np.uint8)
        record = PromptRecord(sample_id="s", kind="chat", video=frames, image=None, gold_letter=None, video_fps=fps,
                              messages=[{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "q"}]}])
        body = chat_body(record)
        assert body["messages"][0]["content"][0]["video_url"]["url"].startswith("data:video/jpeg;base64,")
        assert body["media_io_kwargs"]["video"]["fps"] == fps and body["media_io_kwargs"]["video"]["num_frames"] == -1
        back = parse_chat(body["messages"], ServeLimits(frame_size=32), frames_fps=fps)
        assert np.array_equal(back.video, frames) and back.video_fps == fps


# ---- resume safety, failed requests, rejected media ------------------------------------------------------------------
def _cfg(url: str, root: str, out, **kw) -> EvaluateConfig:
    return EvaluateConfig(out_dir=str(out), endpoint=url, api_key="k", files=FILES, html_report=False,
                          data=DataConfig(**{"root": root, "frame_size": 56, "image_size": 56, **kw.pop("data", {})}),
                          **kw)


def test_a_rerun_with_other_settings_is_refused(stub_server, data_root, tmp_path):
    """Answers of one model (or sampling, data, prompt) are never scored under another's name: a rerun in the same
    out_dir with other settings stops before asking anything, naming what changed and how to start afresh."""
    from seedr1.config import ConfigError
    from seedr1.evaluate.run import run_evaluate

    out = tmp_path / "eval"
    run_evaluate(_cfg(stub_server, data_root, out, served_model="model-a", max_tokens=256))
    config = (out / "config.yaml").read_text()
    StubChat.requests = []
    with pytest.raises(ConfigError) as info:
        run_evaluate(_cfg(stub_server, data_root, out, served_model="model-b", max_tokens=16))
    message = str(info.value)
    assert "served_model: 'model-a' -> 'model-b'" in message and "max_tokens: 256 -> 16" in message
    assert "another out_dir" in message and f"delete {out / 'predictions.jsonl'}" in message
    # one greedy draw, then three sampled ones: a settings change too (draw 0 would be greedy, 1 and 2 sampled)
    with pytest.raises(ConfigError, match=r"samples: 1 -> 3; temperature: 0.0 -> 0.7"):
        run_evaluate(_cfg(stub_server, data_root, out, served_model="model-a", samples=3, temperature=0.7))
    with pytest.raises(ConfigError, match=r"data.frame_size: 56 -> 28"):
        run_evaluate(_cfg(stub_server, data_root, out, served_model="model-a", data={"frame_size": 28}))
    assert StubChat.requests == [] and (out / "config.yaml").read_text() == config  # still the answers' config
    # the same settings resume (the row name is not one of them); without the predictions, a fresh start
    assert run_evaluate(_cfg(stub_server, data_root, out, served_model="model-a", name="A"))["answered_this_run"] == 0
    (out / "predictions.jsonl").unlink()
    assert run_evaluate(_cfg(stub_server, data_root, out, served_model="model-b"))["answered_this_run"] == 18
    # answers from before the settings were recorded resume on trust, and the settings are recorded from then on
    (out / "predictions.settings.json").unlink()
    assert run_evaluate(_cfg(stub_server, data_root, out, served_model="model-c"))["answered_this_run"] == 0
    assert json.loads((out / "predictions.settings.json").read_text())["served_model"] == "model-c"
    (out / "predictions.settings.json").write_text('{"served_model": "mod')  # cut short (written atomically now)
    with pytest.raises(ConfigError, match=r"predictions\.settings\.json is unreadable .*another out_dir"):
        run_evaluate(_cfg(stub_server, data_root, out, served_model="model-c"))


def test_an_endpoint_refusing_most_requests_stops_the_run(stub_server, data_root, tmp_path):
    """Every request refused (say max_tokens over the server's limit): an error quoting the server, not a score of
    0; the refusals are kept, and a rerun asks for them again (with other settings too: nothing was answered)."""
    from seedr1.evaluate.run import run_evaluate
    from seedr1.evaluate.scoring import score_files

    StubChat.fail = (lambda text: True, 400)
    cfg = _cfg(stub_server, data_root, tmp_path / "eval", batch_size=4)
    with pytest.raises(RuntimeError, match=r"^12 of the 12 questions this run asked failed at the endpoint: "
                                           r"stopped\. "
                                           r"The first \(syn-L1-00001\): HTTP 400: stub refuses this prompt \(400\)"):
        run_evaluate(cfg)  # stops after 3 batches of 4: at least 10 asked
    path = tmp_path / "eval" / "predictions.jsonl"
    assert all("error" in json.loads(line) for line in path.read_text().splitlines())
    StubChat.fail, StubChat.requests = None, []
    summary = run_evaluate(_cfg(stub_server, data_root, tmp_path / "eval", batch_size=4, max_tokens=64))
    assert len(StubChat.requests) == 18 and summary["errors"] == 0 and summary["answered_this_run"] == 18
    assert len(path.read_text().splitlines()) == 18  # the refusals were replaced, not added to
    assert score_files([f"{data_root}/{f}" for f in FILES], str(path))["accuracy"] == summary["accuracy"]


def test_a_few_refusals_are_counted_and_asked_again(stub_server, data_root, tmp_path, capsys):
    from seedr1.evaluate.run import run_evaluate

    samples = [s for f in FILES for s in read_annotations(f"{data_root}/{f}")]
    StubChat.fail = (_fails_on(samples[0]), 400)
    refused = {s.sample_id for s in samples if _fails_on(samples[0])(f"{s.question}\nA. {s.options[0]}\n")}
    cfg = _cfg(stub_server, data_root, tmp_path / "eval")
    summary = run_evaluate(cfg)
    assert summary["errors"] == len(refused) >= 1 and summary["n"] == 18
    assert f"over 18 questions ({len(refused)} failed at the endpoint, " in capsys.readouterr().out
    StubChat.fail, StubChat.requests = None, []
    summary = run_evaluate(cfg)
    assert len(StubChat.requests) == len(refused) and summary["errors"] == 0


def test_more_than_half_refused_stops_at_the_end_not_before(stub_server, data_root, tmp_path):
    """Refusals bunched in the first files (records come file by file) do not stop the run part-way; more than half
    of the run's questions refused, it stops at the end, with every answer kept."""
    from seedr1.evaluate.run import run_evaluate

    samples = [s for f in FILES for s in read_annotations(f"{data_root}/{f}")]
    picks = [_fails_on(s) for s in samples if s.task_level in ("L1", "L2")]
    StubChat.fail = (lambda text: any(p(text) for p in picks), 400)
    refused = sum(StubChat.fail[0](f"{s.question}\nA. {s.options[0]}\n") for s in samples)
    assert 9 < refused < 18  # more than half, not all
    with pytest.raises(RuntimeError, match=rf"^{refused} of the 18 questions this run asked failed"):
        run_evaluate(_cfg(stub_server, data_root, tmp_path / "eval", batch_size=4))
    assert len(StubChat.requests) == 18  # the first batches, all refused, did not stop it
    assert len((tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()) == 18


def test_fewer_choices_than_asked_are_an_error(stub_server, data_root, tmp_path):
    """A server that ignores n: the missing draws are not silently counted wrong."""
    from seedr1.evaluate.run import run_evaluate

    StubChat.choices = 1
    with pytest.raises(RuntimeError, match=r"asked for n=3 answers, the server returned 1"):
        run_evaluate(_cfg(stub_server, data_root, tmp_path / "eval", samples=3, temperature=0.7))


def test_a_sample_id_in_two_annotation_files_stops_before_generation(stub_server, data_root, tmp_path):
    import shutil

    from seedr1.data.annotations import AnnotationError
    from seedr1.evaluate.run import run_evaluate

    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    l1, l2 = root / FILES[0], root / FILES[1]
    rows = [json.loads(line) for line in l2.read_text().splitlines()]
    rows[1]["sample_id"] = json.loads(l1.read_text().splitlines()[2])["sample_id"]
    l2.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(AnnotationError) as info:
        run_evaluate(_cfg(stub_server, str(root), tmp_path / "eval"))
    assert str(info.value) == (f"{l2}:2 (sample_id {rows[1]['sample_id']}): field 'sample_id': also in {l1}:3")
    assert StubChat.requests == [] and not (tmp_path / "eval" / "predictions.jsonl").exists()


@pytest.fixture()
def broken_root(data_root, tmp_path):
    """A copy of the data whose first L3 record's current-observation image is not a PNG."""
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(data_root, root)
    record = json.loads((root / FILES[2]).read_text().splitlines()[0])
    (root / "images" / record["video_source"] / record["current_observation_basename"]).write_bytes(b"not a png")
    return str(root), record["sample_id"]


def _in_process_shards(monkeypatch):
    """``data.shards`` (and ``data.root``) read by the pipeline's own code in this process: Ray Data's transport is
    not what is tested, and starting Ray costs more than the whole test."""
    from seedr1.data import pipeline
    from seedr1.data.shards import read_manifest

    def rows(args):
        cfg, files = args
        if not cfg.shards:  # a root, read through Ray Data when a test before this one started Ray
            yield from pipeline.iter_local(cfg, files)
            return
        for shard in read_manifest(cfg.shards)["shards"]:
            path = f"{cfg.shards}/{shard['name']}"
            yield from pipeline._shard_rows(Path(path).read_bytes(), path, [Path(f).name for f in files], cfg, 0)

    monkeypatch.setattr(pipeline, "build_dataset", lambda cfg, files: (cfg, files))
    monkeypatch.setattr(pipeline, "dataset_rows", rows)


def test_rejected_media_count_wrong_and_are_listed_from_either_source(stub_server, broken_root, tmp_path,
                                                                      monkeypatch):
    from seedr1.data.shards import pack
    from seedr1.evaluate.run import run_evaluate

    root, broken = broken_root
    pack(root, str(tmp_path / "shards"), log=lambda *a: None)
    _in_process_shards(monkeypatch)
    from_root = run_evaluate(_cfg(stub_server, root, tmp_path / "by-root"))
    from_shards = run_evaluate(_cfg(stub_server, "", tmp_path / "by-shards", data={"shards": str(tmp_path / "shards")}))
    for out, summary in (("by-root", from_root), ("by-shards", from_shards)):
        assert summary["n"] == 18 and summary["by_level"]["L3"]["n"] == 8, out  # the rejected one counts, wrong
        assert summary["missing"] == [] and [r["sample_id"] for r in summary["rejected"]] == [broken], out
        reject = summary["rejected"][0]
        assert reject["file"] == "validation_L3.jsonl" and reject["field"] == "current_observation_basename", out
        assert reject["reason"], out
        rows = [json.loads(line) for line in (tmp_path / out / "rejects.jsonl").read_text().splitlines()]
        assert rows == summary["rejected"], out
    assert from_shards["correct"] == from_root["correct"] and from_shards["accuracy"] == from_root["accuracy"]
    # a rerun writes the rejects again, not twice
    run_evaluate(_cfg(stub_server, root, tmp_path / "by-root"))
    assert len((tmp_path / "by-root" / "rejects.jsonl").read_text().splitlines()) == 1


def test_an_answer_stands_when_its_media_fail_only_on_a_rerun(stub_server, data_root, tmp_path, monkeypatch):
    """A record answered by an earlier run whose media cannot be read now (a storage hiccup, a file replaced): the
    answer is not lost, from the root or from shards, and the record is not listed as rejected."""
    import shutil

    from seedr1.data.shards import pack
    from seedr1.evaluate.run import run_evaluate

    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    pack(str(root), str(tmp_path / "shards"), log=lambda *a: None)
    _in_process_shards(monkeypatch)
    by_shards = _cfg(stub_server, "", tmp_path / "by-shards", data={"shards": str(tmp_path / "shards")})
    first = {"root": run_evaluate(_cfg(stub_server, str(root), tmp_path / "by-root")),
             "shards": run_evaluate(by_shards)}
    record = json.loads((root / FILES[2]).read_text().splitlines()[0])
    (root / "images" / record["video_source"] / record["current_observation_basename"]).write_bytes(b"not a png")
    pack(str(root), str(tmp_path / "shards"), log=lambda *a: None)  # the shard holding it is written again
    again = {"root": run_evaluate(_cfg(stub_server, str(root), tmp_path / "by-root")),
             "shards": run_evaluate(by_shards)}
    for source in ("root", "shards"):
        assert again[source]["answered_this_run"] == 0 and again[source]["rejected"] == [], source
        assert (again[source]["n"], again[source]["correct"]) == (first[source]["n"], first[source]["correct"]), source
        assert again[source]["by_level"]["L3"] == first[source]["by_level"]["L3"], source
    assert len((tmp_path / "by-root" / "rejects.jsonl").read_text().splitlines()) == 1  # this run's reject, logged



def test_top_k_is_sent_only_when_asked_for(stub_server):
    """evaluate.top_k goes to the endpoint as vLLM's sampling extra; off, the request is plain OpenAI."""
    from seedr1.data.pipeline import PromptRecord
    from seedr1.evaluate.http_target import EndpointTarget

    record = PromptRecord(sample_id="k", kind="validation", video=None, image=None, gold_letter="A",
                          messages=[{"role": "user", "content": [{"type": "text", "text": "q"}]}])
    target = EndpointTarget(stub_server, "seedr1", "k")
    target.answer(record, 1, 1.0, 1.0, 8, top_k=50)
    target.answer(record, 1, 1.0, 1.0, 8)
    assert StubChat.requests[0]["body"]["top_k"] == 50 and "top_k" not in StubChat.requests[1]["body"]
