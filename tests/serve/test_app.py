"""The served tiny model on Ray Serve LLM, driven with the official `openai` client: video frames + image, a video on
S3, token streaming, logprobs, JSON mode, legacy completions; a table of bad requests (each a 4xx in OpenAI's shape,
the server still answers after); load; the evaluation job over HTTP answering as it does in process; the OpenAPI
schema fuzzed; a replica whose engine dies replaced."""
import base64
import hashlib
import io
import json
import os
import socket
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

KEY = "test-key-1"
SERVED_MODEL = []  # the served checkpoint's folder, once the server started


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_url(seed: int, size: int = 56) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def mp4_bytes(count: int = 8, size: int = 56, fps: int = 4) -> bytes:
    """A small H.264 clip."""
    import av

    frames = np.random.default_rng(1).integers(0, 255, (count, size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height = stream.width = size
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


QUESTION = {"type": "text", "text": "What is the next action?\nA. a\nB. b\nC. c\nD. d\n"}


@pytest.fixture(scope="module")
def server(ray_cluster, tiny_model_dir, s3_server):
    from ray import serve

    from seedr1.config import ServeConfig, ServeLimits, VLLMConfig
    from seedr1.serve.run import start

    os.environ.update(SEEDR1_API_KEYS=f"{KEY},other-key", AWS_ENDPOINT_URL=s3_server, AWS_ACCESS_KEY_ID="testing",
                      AWS_SECRET_ACCESS_KEY="testing", AWS_REGION="us-east-1")
    import boto3

    boto3.client("s3").create_bucket(Bucket="serve-media")
    boto3.client("s3").put_object(Bucket="serve-media", Key="clip.mp4", Body=mp4_bytes())
    cfg = ServeConfig(model=tiny_model_dir, port=_free_port(), vllm=VLLMConfig(max_model_len=1024, enforce_eager=True),
                      limits=ServeLimits(max_body_bytes=2_000_000, max_frames=8, frame_size=56, image_size=56,
                                         max_tokens=64, allow_s3_buckets=["serve-media"]))
    url = start(cfg)
    SERVED_MODEL[:] = [tiny_model_dir]
    yield url
    serve.delete("seedr1")
    for k in ("SEEDR1_API_KEYS", "AWS_ENDPOINT_URL"):
        os.environ.pop(k, None)


@pytest.fixture()
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server, api_key=KEY, max_retries=0, timeout=120)


def test_frames_image_and_text(client):
    out = client.chat.completions.create(model="seedr1", max_tokens=8, temperature=0.0, messages=[{"role": "user", "content": [
        {"type": "video", "video": [png_url(i) for i in range(4)]},
        {"type": "image_url", "image_url": {"url": png_url(9)}}, QUESTION]}])
    assert len(out.choices) == 1 and out.choices[0].finish_reason in ("stop", "length")
    assert out.usage.completion_tokens > 0 and out.usage.prompt_tokens > 20  # media tokens counted
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


def test_video_url_on_s3_and_n2(client):
    out = client.chat.completions.create(model="seedr1", max_tokens=6, temperature=1.0, n=2, seed=3, messages=[
        {"role": "user", "content": [{"type": "video_url", "video_url": {"url": "s3://serve-media/clip.mp4"}},
                                     {"type": "image_url", "image_url": {"url": png_url(2)}}, QUESTION]}])
    assert [c.index for c in out.choices] == [0, 1]


def test_streaming_arrives_token_by_token(client):
    stream = client.chat.completions.create(model="seedr1", max_tokens=12, temperature=0.0, stream=True,
                                            stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": [QUESTION]}])
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    used = chunks[-1].usage.completion_tokens
    assert len(pieces) > 1 and finish and 0 < used <= 12 and (finish[0] == "stop" or used == 12)
    full = client.chat.completions.create(model="seedr1", max_tokens=12, temperature=0.0,
                                          messages=[{"role": "user", "content": [QUESTION]}])
    assert "".join(pieces) == full.choices[0].message.content  # the same greedy answer, streamed


def test_logprobs_json_mode_and_legacy_completions(client):
    out = client.chat.completions.create(model="seedr1", max_tokens=5, temperature=0.0, logprobs=True, top_logprobs=2,
                                         messages=[{"role": "user", "content": [QUESTION]}])
    content = out.choices[0].logprobs.content
    assert len(content) == out.usage.completion_tokens and all(len(t.top_logprobs) == 2 for t in content)
    assert all(t.logprob <= 0 and t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob for t in content)
    js = client.chat.completions.create(model="seedr1", max_tokens=40, temperature=0.0,
                                        response_format={"type": "json_object"},
                                        messages=[{"role": "user", "content": "Reply in JSON."}])
    text = js.choices[0].message.content
    assert text.lstrip().startswith("{")  # the grammar forces JSON (40 tokens may cut it short of closing)
    if js.choices[0].finish_reason == "stop":
        json.loads(text)
    legacy = client.completions.create(model="seedr1", prompt="The next action is", max_tokens=6, temperature=0.0)
    assert legacy.object == "text_completion" and legacy.usage.completion_tokens == 6
    assert isinstance(legacy.choices[0].text, str)


def test_wrong_or_missing_key_is_401(server):
    from openai import AuthenticationError, OpenAI

    for key in ("nope", "test-key-"):  # no key at all: the BAD table (this client refuses to send none)
        with pytest.raises(AuthenticationError):
            OpenAI(base_url=server, api_key=key, max_retries=0).chat.completions.create(
                model="seedr1", max_tokens=2, messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(AuthenticationError):
            OpenAI(base_url=server, api_key=key, max_retries=0).completions.create(model="seedr1", prompt="x",
                                                                                   max_tokens=2)


def _post(url: str, body, key=KEY, raw: bytes | None = None, path: str = "/chat/completions"):
    data = raw if raw is not None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    req = urllib.request.Request(url + path, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, json.loads(text)
        except ValueError:  # not OpenAI's shape: the assertions on it say so
            return e.code, text.decode(errors="replace")


def _msg(*parts):
    return {"model": "seedr1", "max_tokens": 4, "messages": [{"role": "user", "content": list(parts)}]}


BAD = [
    ("no key", dict(body=_msg(QUESTION), key=None), 401),
    ("wrong key", dict(body=_msg(QUESTION), key="nope"), 401),
    ("oversized body", dict(body=None, raw=b"{" + b" " * 2_100_000 + b"}"), 413),
    ("too many frames", dict(body=_msg({"type": "video", "video": [png_url(i) for i in range(10)]}, QUESTION)), 400),
    ("unknown content type", dict(body=_msg({"type": "audio_url", "audio_url": {"url": "x"}}, QUESTION)), 400),
    ("malformed data URL", dict(body=_msg({"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}},
                                          QUESTION)), 400),
    ("non-JSON body", dict(body=None, raw=b"this is not json"), 400),
    ("file URL", dict(body=_msg({"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}, QUESTION)), 400),
    ("loopback URL", dict(body=_msg({"type": "image_url", "image_url": {"url": "http://127.0.0.1:1/a.png"}},
                                    QUESTION)), 400),
    ("max_tokens over the limit", dict(body={**_msg(QUESTION), "max_tokens": 10_000}), 400),
    ("deeply nested JSON", dict(body=None, raw=b"[" * 100_000 + b"]" * 100_000), 400),
    ("NaN temperature", dict(body=None, raw=json.dumps({**_msg(QUESTION), "temperature": float("nan")}).encode()), 400),
    ("stream as a string", dict(body={**_msg(QUESTION), "stream": "false"}), 400),
    ("stream_options not an object", dict(body={**_msg(QUESTION), "stream": True, "stream_options": "yes"}), 400),
    ("unknown parameter", dict(body={**_msg(QUESTION), "chat_template": "{{ 7 * 7 }}"}), 400),
    ("media_io_kwargs beyond a frame rate", dict(body={**_msg(QUESTION), "media_io_kwargs": {"video": {"backend": "x"}}}),
     400),
    ("n over the limit", dict(body={**_msg(QUESTION), "n": 99}), 400),
    ("unknown model", dict(body={**_msg(QUESTION), "model": "gpt-4"}), 404),
    ("lone surrogate in text", dict(body=None, raw=json.dumps(_msg({"type": "text", "text": "a\ud800"})).encode()),
     400),
]


@pytest.mark.parametrize("name,request_kwargs,status", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_are_4xx_and_the_server_lives_on(server, name, request_kwargs, status):
    code, body = _post(server, **request_kwargs)
    assert code == status, (name, body)
    assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["message"]
    ok, answer = _post(server, _msg(QUESTION))
    assert ok == 200 and answer["choices"][0]["message"]["content"] is not None




def test_health_models_and_the_routes_that_are_not_served(server):
    base = server.rsplit("/v1", 1)[0]
    with urllib.request.urlopen(base + "/health", timeout=30) as r:
        assert r.status == 200
    req = urllib.request.Request(server + "/models", headers={"Authorization": f"bearer {KEY}"})  # any case
    with urllib.request.urlopen(req, timeout=30) as r:
        assert [m["id"] for m in json.loads(r.read())["data"]] == ["seedr1"]
    # vLLM's other routes (tokenizer, render, admin, scaling) are not served, with or without a key
    for path in ("/tokenize", "/v1/responses", "/scale_elastic_ep", "/inference/v1/generate", "/nope",
                 "/v1/chat/completions/render", "/v1/completions/render"):
        req = urllib.request.Request(base + path, data=b"{}", headers={"Authorization": f"Bearer {KEY}"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=30)
        assert e.value.code == 404 and set(json.loads(e.value.read())["error"]) == {"message", "type", "param", "code"}
    req = urllib.request.Request(server + "/chat/completions", headers={"Authorization": f"Bearer {KEY}"})
    with pytest.raises(urllib.error.HTTPError) as e:  # GET on a generate route: vLLM's 405, nothing generated
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 405
    req = urllib.request.Request(base + "/health", headers={"serve_multiplexed_model_id": "lora-x"})
    with pytest.raises(urllib.error.HTTPError) as e:  # Ray's LoRA header: no adapters here, a 400, not a traceback
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 400


def test_a_too_long_prompt_is_400_and_requests_beside_it_succeed(server):
    bodies = [_msg({"type": "text", "text": "word " * 3000})] + [_msg(QUESTION)] * 3
    with ThreadPoolExecutor(4) as pool:
        (code, body), *rest = pool.map(lambda b: _post(server, b), bodies)
    assert code == 400 and "context" in body["error"]["message"].lower() + str(body["error"]["param"]), body
    assert [c for c, _ in rest] == [200] * 3


def test_32_concurrent_requests(server, client):
    def one(i):
        return client.chat.completions.create(model="seedr1", max_tokens=4, temperature=1.0, seed=i, messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": png_url(i)}}, QUESTION]}])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(32)))
    assert len(results) == 32 and all(r.choices for r in results)


def test_served_answers_equal_the_evaluation_jobs(server, tmp_path):
    """The mini set evaluated twice, greedy: by jobs/evaluate.py's own vLLM engine and over HTTP by its endpoint
    target. Every answer is the same text: the server sees the clip's frames and the image as the engine does."""
    from seedr1.config import DataConfig, EvaluateConfig
    from seedr1.data.synthetic import SynthSpec, write_synthetic
    from seedr1.evaluate.run import run_evaluate
    from seedr1.evaluate.scoring import score_files

    write_synthetic(tmp_path / "data", SynthSpec(train=2, l1=4, l2=3, l3=5))
    files = [f"annotations/validation_{lv}.jsonl" for lv in ("L1", "L2", "L3")]
    data = DataConfig(root=str(tmp_path / "data"), frame_size=56, image_size=56)
    common = dict(files=files, max_tokens=16, temperature=0.0, html_report=False, data=data)
    served = run_evaluate(EvaluateConfig(out_dir=str(tmp_path / "http"), endpoint=server, api_key=KEY, concurrency=4,
                                         **common))
    local = run_evaluate(EvaluateConfig(out_dir=str(tmp_path / "local"), model=SERVED_MODEL[0], num_actors=1,
                                        **common))
    assert served["n"] == local["n"] == 12 and not served["missing"]

    def answers(folder):
        rows = [json.loads(line) for line in (tmp_path / folder / "predictions.jsonl").read_text().splitlines()]
        return {r["sample_id"]: r["response"] for r in rows}

    assert answers("http") == answers("local")
    assert len(set(answers("http").values())) > 1  # not one constant answer
    again = score_files([str(tmp_path / "data" / f) for f in files], str(tmp_path / "http" / "predictions.jsonl"))
    assert again["correct"] == served["correct"] == local["correct"]


def test_serving_and_evaluation_dashboards_have_data(server, client, prometheus_watch):
    """After the requests above, every metric the serving and evaluation dashboards query is on Ray's Prometheus
    endpoint."""
    from seedr1.metrics.dashboards import build_dashboards, queried_metrics

    dash = build_dashboards(include_ray=False)
    wanted = queried_metrics(dash["seedr1-serving.json"]) | queried_metrics(dash["seedr1-evaluation.json"])
    client.chat.completions.create(model="seedr1", max_tokens=2, messages=[{"role": "user", "content": [QUESTION]}])
    scraped = prometheus_watch()
    scraped.wait_for(wanted)
    assert wanted <= scraped.names, sorted(wanted - scraped.names)


def test_the_access_log_writes_a_json_line_per_request(server, ray_cluster):
    """One JSON line per request, with Ray's request id, in seedr1-access-<pid>.log among Ray Serve's logs."""
    import glob
    import time

    req = urllib.request.Request(server + "/chat/completions", data=json.dumps(_msg(QUESTION)).encode(),
                                 headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json",
                                          "X-Request-Id": "access-log-probe-1"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 200
    logs = ray_cluster._private.worker._global_node.get_logs_dir_path()
    for _ in range(30):
        lines = [json.loads(line) for f in glob.glob(f"{logs}/serve/seedr1-access-*.log") for line in open(f)
                 if "access-log-probe-1" in line]
        if lines:
            break
        time.sleep(1)
    assert lines and lines[0]["status"] == 200 and lines[0]["path"] == "/v1/chat/completions"
    assert lines[0]["completion_tokens"] == 4 and lines[0]["prompt_tokens"] > 0
    assert 0 < lines[0]["gate_ms"] < lines[0]["ms"]


def test_the_openapi_schema_documents_bodies_and_errors_and_a_fuzz_finds_no_5xx(server):
    """/openapi.json has the chat request body and the error responses; schemathesis, from that schema alone,
    sends bounded generated requests to the chat and completions endpoints: none gets a 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    base = server.rsplit("/v1", 1)[0]
    schema_doc = json.loads(urllib.request.urlopen(base + "/openapi.json", timeout=30).read())
    chat = schema_doc["paths"]["/v1/chat/completions"]["post"]
    assert "requestBody" in chat and {"400", "401", "413"} <= set(chat["responses"])
    assert set(schema_doc["paths"]) == {"/health", "/v1/models", "/v1/models/{model}", "/v1/chat/completions",
                                        "/v1/completions"}
    schema = schemathesis.openapi.from_url(base + "/openapi.json")
    failures = []
    for path in ("/v1/chat/completions", "/v1/completions"):
        operation = schema[path]["POST"]

        @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def fuzz(case):
            code, answer = _post(server, case.body, path=path.removeprefix("/v1"))  # the generated body, as sent
            if code >= 500:
                failures.append((path, case.body, code, answer))

        fuzz()
    assert not failures, failures[:3]


def test_api_keys_reach_replicas_as_digests_not_in_the_runtime_env(server):
    """The server fixture set the keys in this driver after the Ray cluster started, so the replicas' own
    environment lacks them: the authenticated requests above work from the digests the driver handed over."""
    from seedr1.config import ServeConfig
    from seedr1.serve.app import llm_config
    from seedr1.serve.gate import key_digest

    assert KEY in os.environ["SEEDR1_API_KEYS"]
    config = llm_config(ServeConfig(model="unused"))
    shown = json.dumps([config.runtime_env, config.engine_kwargs, config.deployment_config], default=str)
    assert "SEEDR1_API_KEYS" not in config.runtime_env["env_vars"] and KEY not in shown
    assert key_digest(KEY) == hashlib.sha256(KEY.encode()).hexdigest() and KEY not in key_digest(KEY)


def _replica_pids() -> set[int]:
    import psutil

    return {p.pid for p in psutil.process_iter(["cmdline"])
            if "ServeReplica:seedr1:" in " ".join(p.info["cmdline"] or [])}


def test_a_replica_whose_engine_dies_is_replaced(server, client):
    """The engine core process killed: Serve's health check fails the replica and starts another, which answers."""
    import signal
    import time

    import psutil

    (replica,) = _replica_pids()
    cores = [p for p in psutil.Process(replica).children(recursive=True) if "EngineCore" in " ".join(p.cmdline())]
    assert cores, [p.cmdline() for p in psutil.Process(replica).children(recursive=True)]
    for p in cores:
        p.send_signal(signal.SIGKILL)
    deadline = time.time() + 240
    while time.time() < deadline:
        if _replica_pids() - {replica}:
            try:
                out = client.chat.completions.create(model="seedr1", max_tokens=2,
                                                     messages=[{"role": "user", "content": "hi"}])
                if out.choices:
                    return
            except Exception:  # noqa: BLE001 - the new replica may still be starting
                pass
        time.sleep(2)
    raise AssertionError("no new replica answered within 240 s")


def test_refuses_to_start_without_keys(monkeypatch):
    from seedr1.config import ConfigError, ServeConfig
    from seedr1.serve.app import build

    monkeypatch.delenv("SEEDR1_API_KEYS", raising=False)
    with pytest.raises(ConfigError, match="no API key"):
        build(ServeConfig(model="unused"))


def test_build_app_takes_a_settings_mapping_as_it_is():
    """The chart's serveConfigV2 passes the whole config as ``settings``: typed values are not read as YAML again
    (key=value strings are: "on" would become true, "s3://b/x #1" would lose its "#1")."""
    from unittest import mock

    import seedr1.serve.app as serve_app
    from seedr1.config import ConfigError

    with mock.patch.object(serve_app, "build", lambda cfg: cfg):
        cfg = serve_app.build_app({"settings": {"served_model_name": "on", "model": "s3://b/x #1",
                                                "limits": {"max_tokens": 64}}})
        assert (cfg.served_model_name, cfg.model, cfg.limits.max_tokens) == ("on", "s3://b/x #1", 64)
        assert serve_app.build_app({"model": "m", "limits.max_tokens": "32"}).limits.max_tokens == 32  # serve run
        with pytest.raises(ConfigError, match="give it alone"):
            serve_app.build_app({"settings": {"model": "m"}, "auth": "none"})
        with pytest.raises(ConfigError, match="expected str"):
            serve_app.build_app({"settings": {"served_model_name": True}})
