"""The served tiny model, driven with the official `openai` client: video frames + image, a video on S3,
streaming, n=2; a table of bad requests (each a 4xx in OpenAI's shape, the server still answers after); load."""
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_url(seed: int, size: int = 56) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def mp4_bytes() -> bytes:
    from seedr1.evaluate.http_target import mp4_data_url

    frames = np.random.default_rng(1).integers(0, 255, (8, 56, 56, 3), dtype=np.uint8)
    return base64.b64decode(mp4_data_url(frames, fps=4).split(",", 1)[1])


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


def test_streaming_chunks(client):
    stream = client.chat.completions.create(model="seedr1", max_tokens=6, temperature=0.0, stream=True,
                                            stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": [QUESTION]}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish and chunks[-1].usage.completion_tokens > 0
    full = client.chat.completions.create(model="seedr1", max_tokens=6, temperature=0.0,
                                          messages=[{"role": "user", "content": [QUESTION]}])
    assert text == full.choices[0].message.content  # same greedy answer, streamed


def _post(url: str, body, key=KEY, raw: bytes | None = None):
    data = raw if raw is not None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    req = urllib.request.Request(url + "/chat/completions", data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


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


def test_values_openai_accepts_and_vllm_refuses(server):
    """n > 1 greedy (n copies of the one greedy answer), top_p=0 (greedy), a developer message, an assistant turn
    with null content, and a lowercase auth scheme are all answered."""
    code, out = _post(server, {**_msg(QUESTION), "n": 2, "temperature": 0})
    assert code == 200, out
    assert [c["index"] for c in out["choices"]] == [0, 1]
    assert len({c["message"]["content"] for c in out["choices"]}) == 1
    code, top_p0 = _post(server, {**_msg(QUESTION), "top_p": 0})
    assert code == 200 and top_p0["choices"][0]["message"]["content"] == out["choices"][0]["message"]["content"]
    turns = {"model": "seedr1", "max_tokens": 4, "messages": [
        {"role": "developer", "content": "Be brief."}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None}, {"role": "user", "content": [QUESTION]}]}
    assert _post(server, turns)[0] == 200
    req = urllib.request.Request(server + "/models", headers={"Authorization": f"bearer {KEY}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200


def test_health_and_models(server):
    with urllib.request.urlopen(server.rsplit("/v1", 1)[0] + "/health", timeout=30) as r:
        assert json.loads(r.read()) == {"status": "ok"}
    req = urllib.request.Request(server + "/models", headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert [m["id"] for m in json.loads(r.read())["data"]] == ["seedr1"]
    for path, status in (("/nope", 404), ("/chat/completions", 405)):  # FastAPI's own errors, in OpenAI's shape
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(server + path, timeout=30)
        assert e.value.code == status
        assert set(json.loads(e.value.read())["error"]) == {"message", "type", "param", "code"}


def test_a_too_long_prompt_is_400_and_requests_beside_it_succeed(server):
    """A prompt over max_model_len (1024 here) is OpenAI's context_length_exceeded; requests sent with it (batched
    into the same engine call when they arrive together) are answered."""
    bodies = [_msg({"type": "text", "text": "word " * 3000})] + [_msg(QUESTION)] * 3
    with ThreadPoolExecutor(4) as pool:
        (code, body), *rest = pool.map(lambda b: _post(server, b), bodies)
    assert code == 400 and body["error"]["code"] == "context_length_exceeded", body
    assert [c for c, _ in rest] == [200] * 3


def test_32_concurrent_requests(server, client):
    def one(i):
        return client.chat.completions.create(model="seedr1", max_tokens=4, temperature=1.0, seed=i, messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": png_url(i)}}, QUESTION]}])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(32)))
    assert len(results) == 32 and all(r.choices for r in results)
    with urllib.request.urlopen(server.rsplit("/v1", 1)[0] + "/health", timeout=30) as r:
        assert r.status == 200  # the replica is alive


def test_evaluation_job_endpoint_mode_against_the_served_model(server, client, tmp_path):
    """jobs/evaluate.py's --endpoint target, pointed at this app: every question answered, scored by the one rule,
    and each answer the same text a direct greedy call gets (the evaluation sends what the data pipeline built)."""
    from seedr1.config import DataConfig, EvaluateConfig
    from seedr1.data.synthetic import SynthSpec, write_synthetic
    from seedr1.evaluate.http_target import chat_messages
    from seedr1.evaluate.run import run_evaluate
    from seedr1.evaluate.scoring import score_files

    write_synthetic(tmp_path / "data", SynthSpec(train=2, l1=3, l2=2, l3=4))
    files = [f"annotations/validation_{lv}.jsonl" for lv in ("L1", "L2", "L3")]
    data = DataConfig(root=str(tmp_path / "data"), frame_size=56, image_size=56)
    cfg = EvaluateConfig(out_dir=str(tmp_path / "eval"), endpoint=server, api_key=KEY, concurrency=4, files=files,
                         max_tokens=8, html_report=False, data=data)
    summary = run_evaluate(cfg)
    assert summary["n"] == 9 and not summary["missing"] and set(summary["by_level"]) == {"L1", "L2", "L3"}
    rows = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 9 and all(isinstance(r["response"], str) for r in rows)
    again = score_files([str(tmp_path / "data" / f) for f in files], str(tmp_path / "eval" / "predictions.jsonl"))
    assert again["correct"] == summary["correct"]
    from seedr1.data.pipeline import RecordStream, iter_local

    first = next(iter(RecordStream(iter_local(data, files[:1]), data)))
    direct = client.chat.completions.create(model="seedr1", max_tokens=8, temperature=0.0,
                                            messages=chat_messages(first))
    assert direct.choices[0].message.content == next(r["response"] for r in rows if r["sample_id"] == first.sample_id)


def test_serving_and_evaluation_dashboards_have_data(server, client, prometheus_watch):
    """After the requests above (and the endpoint evaluation), every metric the serving and evaluation dashboards
    query is on Ray's Prometheus endpoint."""
    from seedr1.metrics.dashboards import build_dashboards, queried_metrics

    dash = build_dashboards(include_ray=False)
    wanted = queried_metrics(dash["seedr1-serving.json"]) | queried_metrics(dash["seedr1-evaluation.json"])
    client.chat.completions.create(model="seedr1", max_tokens=2, messages=[{"role": "user", "content": [QUESTION]}])
    scraped = prometheus_watch()
    scraped.wait_for(wanted)
    assert wanted <= scraped.names, sorted(wanted - scraped.names)


def test_api_keys_reach_replicas_as_digests_not_in_the_runtime_env(server):
    """The server fixture set the keys in this driver after the Ray cluster started, so the replicas' own
    environment lacks them: the authenticated requests above work from the digests the driver handed over."""
    from seedr1.config import ServeConfig
    from seedr1.serve.app import deployment_options, key_digest

    assert KEY in os.environ["SEEDR1_API_KEYS"]
    env = deployment_options(ServeConfig(model="unused"))["ray_actor_options"]["runtime_env"]["env_vars"]
    assert "SEEDR1_API_KEYS" not in env and KEY not in json.dumps(env)
    assert key_digest(KEY) == hashlib.sha256(KEY.encode()).hexdigest() and KEY not in key_digest(KEY)


def test_refuses_to_start_without_keys(monkeypatch):
    from seedr1.config import ConfigError, ServeConfig
    from seedr1.serve.app import build

    monkeypatch.delenv("SEEDR1_API_KEYS", raising=False)
    with pytest.raises(ConfigError, match="no API key"):
        build(ServeConfig(model="unused"))


# --- the request layer without Ray Serve: sampling parameters, body parsing, batching, FastAPI's own errors ---------

def _sampling_of(**params):
    from seedr1.config import ServeConfig, ServeLimits
    from seedr1.serve.app import _sampling

    return _sampling({"messages": [], **params}, ServeConfig(model="unused", limits=ServeLimits(max_tokens=64)))[0]


def _vllm_accepts(sampling) -> None:
    from vllm import SamplingParams

    SamplingParams(n=sampling.n, max_tokens=sampling.max_tokens, temperature=sampling.temperature,
                   top_p=sampling.top_p, stop=sampling.stop)


@pytest.mark.parametrize("raw,param", [
    ('{"temperature": NaN}', "temperature"), ('{"top_p": Infinity}', "top_p"), ('{"max_tokens": 1e400}', "max_tokens"),
    ('{"n": -Infinity}', "n"), ('{"max_completion_tokens": NaN}', "max_completion_tokens"),
    ('{"seed": 18446744073709551616}', "seed"), ('{"seed": -9223372036854775809}', "seed"),
    ('{"max_completion_tokens": 65}', "max_completion_tokens"),
    ('{"max_completion_tokens": 8, "max_tokens": 9}', "max_completion_tokens"),
    ('{"stop": [""]}', "stop"), ('{"stop": ["end", ""]}', "stop"), ('{"stop": ""}', "stop"),
])
def test_bad_sampling_parameters_are_400_naming_the_parameter(raw, param):
    from seedr1.serve.errors import APIError

    with pytest.raises(APIError) as e:
        _sampling_of(**json.loads(raw))  # json.loads reads NaN, Infinity and 1e400 (inf)
    assert e.value.status == 400 and e.value.param == param


def test_openai_sampling_values_vllm_refuses_are_mapped():
    """n > 1 with greedy decoding: one completion, copied n times (vLLM refuses n > 1 there); top_p=0 is greedy
    (vLLM wants top_p in (0, 1]). What _sampling returns, vLLM takes."""
    from seedr1.config import ServeConfig, ServeLimits
    from seedr1.serve.app import _sampling

    cfg = ServeConfig(model="unused", limits=ServeLimits(max_tokens=64))
    for params, n, temperature, copies in [
        (dict(n=3, temperature=0), 1, 0.0, 3), (dict(n=2, top_p=0), 1, 0.0, 2), (dict(top_p=0), 1, 0.0, 1),
        (dict(n=2, temperature=0.7), 2, 0.7, 1), (dict(temperature=0), 1, 0.0, 1),
    ]:
        sampling, k = _sampling(params, cfg)
        assert (sampling.n, sampling.temperature, k) == (n, temperature, copies), params
        _vllm_accepts(sampling)


def test_max_completion_tokens_is_read_and_seed_has_vllms_bounds():
    assert _sampling_of(max_completion_tokens=7).max_tokens == 7
    assert _sampling_of(max_completion_tokens=7, max_tokens=7).max_tokens == 7
    assert _sampling_of(max_tokens=5).max_tokens == 5 and _sampling_of().max_tokens == 64
    assert _sampling_of(seed=2 ** 64 - 1).seed == 2 ** 64 - 1 and _sampling_of(seed=-2 ** 63).seed == -2 ** 63


def _server_method(name: str, **attrs):
    """A ChatServer method bound to ``attrs`` alone (no __init__: no engine, no Ray)."""
    import functools
    import types

    from seedr1.serve.app import ChatServer

    return functools.partial(getattr(ChatServer.func_or_class, name), types.SimpleNamespace(**attrs))


@pytest.mark.parametrize("raw", [b"[" * 100_000 + b"]" * 100_000, b'{"n": 1' + b"1" * 5000 + b"}", b"\xff\xfe"])
def test_unparseable_bodies_are_400(raw):
    import asyncio

    from seedr1.config import ServeConfig
    from seedr1.serve.errors import APIError

    class Req:
        headers = {"content-length": str(len(raw))}

        async def stream(self):
            yield raw

    with pytest.raises(APIError) as e:  # deep nesting: RecursionError; 5000 digits: over Python's int limit
        asyncio.run(_server_method("_body", cfg=ServeConfig(model="unused"))(Req()))
    assert e.value.status == 400


def test_a_chunked_body_over_the_limit_is_refused_as_it_streams_in():
    """No Content-Length (chunked upload): the 413 comes once the limit is passed, not after buffering it all."""
    import asyncio

    from seedr1.config import ServeConfig, ServeLimits
    from seedr1.serve.errors import APIError

    class Req:
        headers = {}
        read = 0

        async def stream(self):
            while True:  # an endless upload
                Req.read += 1 << 16
                yield b" " * (1 << 16)

    cfg = ServeConfig(model="unused", limits=ServeLimits(max_body_bytes=1 << 20))
    with pytest.raises(APIError) as e:
        asyncio.run(asyncio.wait_for(_server_method("_body", cfg=cfg)(Req()), timeout=30))
    assert e.value.status == 413 and Req.read <= (1 << 20) + (1 << 16)


def test_auth_scheme_is_case_insensitive():
    from seedr1.config import ServeConfig
    from seedr1.serve.app import key_digest
    from seedr1.serve.errors import APIError

    check = _server_method("_check_auth", cfg=ServeConfig(model="unused"), key_digests={key_digest("k1")})
    for header in ("Bearer k1", "bearer k1", "BEARER  k1 "):
        check(type("Req", (), {"headers": {"authorization": header}})())
    for header in ("Basic k1", "bearer", "bearerk1", "Bearer k2", ""):
        with pytest.raises(APIError) as e:
            check(type("Req", (), {"headers": {"authorization": header}})())
        assert e.value.status == 401, header


@pytest.mark.parametrize("params,param", [
    (dict(stream="false"), "stream"), (dict(stream=1), "stream"),
    (dict(stream=True, stream_options="yes"), "stream_options"),
    (dict(stream=True, stream_options=[]), "stream_options"),
    (dict(stream_options={"include_usage": True}), "stream_options"),  # OpenAI: only with stream
    (dict(stream=True, stream_options={"include_usage": "yes"}), "stream_options.include_usage"),
])
def test_bad_stream_parameters_are_400_before_generating(params, param):
    from seedr1.serve.app import _stream_options
    from seedr1.serve.errors import APIError

    with pytest.raises(APIError) as e:
        _stream_options(params)
    assert e.value.status == 400 and e.value.param == param


@pytest.mark.parametrize("params, param", [
    ({"logprobs": True}, "logprobs"), ({"top_logprobs": 3}, "top_logprobs"), ({"tools": [{"type": "function"}]}, "tools"),
    ({"response_format": {"type": "json_object"}}, "response_format"), ({"frequency_penalty": 0.5}, "frequency_penalty"),
    ({"logit_bias": {"42": 100}}, "logit_bias"), ({"modalities": ["text", "audio"]}, "modalities")])
def test_parameters_the_server_does_not_implement_are_400_not_ignored(params, param):
    from seedr1.serve.app import _check_unsupported
    from seedr1.serve.errors import APIError

    with pytest.raises(APIError) as e:
        _check_unsupported(params)
    assert (e.value.status, e.value.param, e.value.code) == (400, param, "unsupported_parameter")


def test_the_off_values_of_unimplemented_parameters_are_accepted():
    from seedr1.serve.app import _check_unsupported

    _check_unsupported({"logprobs": False, "tools": [], "tool_choice": "none", "response_format": {"type": "text"},
                        "frequency_penalty": 0, "presence_penalty": 0.0, "modalities": ["text"], "logit_bias": {},
                        "top_logprobs": None, "temperature": 0.5})


def test_stream_parameters():
    from seedr1.serve.app import _stream_options

    for body in ({}, {"stream": None}, {"stream": False}):
        assert _stream_options(body) == (False, False)
    assert _stream_options({"stream": True}) == _stream_options({"stream": True, "stream_options": None}) \
        == (True, False)
    assert _stream_options({"stream": True, "stream_options": {"include_usage": True}}) == (True, True)


TOO_LONG = [  # what vLLM raises for the whole call: its renderer (token count), its input processor
    dict(message="This model's maximum context length is 1024 tokens. However, your prompt contains at least 1025 "
                 "input tokens, which exceeds this limit even without any output tokens.", parameter="input_tokens"),
    dict(message="The decoder prompt (length 5000) is longer than the maximum model length of 1024. Make sure that "
                 "`max_model_len` is no smaller than the number of text tokens plus multimodal tokens."),
]


@pytest.mark.parametrize("error", TOO_LONG, ids=["renderer", "input_processor"])
def test_a_too_long_prompt_fails_alone_in_its_batch(error):
    import threading

    from vllm.exceptions import VLLMValidationError

    from seedr1.rollout.engine import Completion, Sampling

    class Engine:
        calls = []

        def generate(self, prompts, sampling):
            Engine.calls.append(list(prompts))
            if "long" in prompts:
                raise VLLMValidationError(**error)
            return [[Completion(text=f"{p}-{k}", token_ids=[1], logprobs=[0.0]) for k in range(sampling.n)]
                    for p in prompts]

    run_batch = _server_method("_run_batch", engine=Engine(), lock=threading.Lock(), dead=False)
    greedy, two = Sampling(n=1, temperature=0.0), Sampling(n=2)
    out = run_batch([("a", greedy), ("long", greedy), ("b", greedy), ("c", two)])
    assert [c.text for c in out[0]] == ["a-0"] and [c.text for c in out[2]] == ["b-0"]
    assert [c.text for c in out[3]] == ["c-0", "c-1"]  # another sampling group: one call, untouched
    assert out[1].status == 400 and out[1].code == "context_length_exceeded" and out[1].param == "messages"
    assert error["message"] in out[1].message
    assert Engine.calls == [["a", "long", "b"], ["a"], ["long"], ["b"], ["c"]]


def test_any_engine_error_fails_only_its_own_request():
    """Not only vLLM's refusals: any error of a batched call (e.g. the tokenizer's TypeError) is retried one request
    at a time, and only the failing request gets it (a 500); the ones beside it are answered."""
    import threading

    from seedr1.rollout.engine import Completion, Sampling

    class Engine:
        calls = []

        def generate(self, prompts, sampling):
            Engine.calls.append(list(prompts))
            if "bad" in prompts:
                raise TypeError("TextEncodeInput must be Union[...]")
            return [[Completion(text=p, token_ids=[1])] for p in prompts]

    run = _server_method("_run_batch", engine=Engine(), lock=threading.Lock(), dead=False)
    greedy = Sampling(n=1, temperature=0.0)
    out = run([("a", greedy), ("bad", greedy), ("b", greedy)])
    assert [c.text for c in out[0]] == ["a"] and [c.text for c in out[2]] == ["b"]
    assert isinstance(out[1], TypeError) and not run.args[0].dead  # not an engine death
    assert Engine.calls == [["a", "bad", "b"], ["a"], ["bad"], ["b"]]
    assert isinstance(run([("bad", greedy)])[0], TypeError)  # alone: not retried
    assert Engine.calls[-1] == ["bad"] and len(Engine.calls) == 5


def test_a_seeded_request_keeps_its_own_seed_in_a_batch():
    """Two identical requests with seed 7 batched together both sample from seed 7 (the engine would otherwise
    derive seeds from their place in the batch); unseeded requests leave the seeds to the engine."""
    import threading

    from seedr1.rollout.engine import Completion, Sampling

    class Engine:
        seen = []

        def generate(self, prompts, sampling):
            Engine.seen.append(sampling)
            return [[Completion(text=p, token_ids=[1])] for p in prompts]

    run = _server_method("_run_batch", engine=Engine(), lock=threading.Lock(), dead=False)
    seeded = Sampling(n=2, temperature=1.0, seed=7)
    run([("q", seeded), ("q", seeded), ("r", Sampling(n=2, temperature=1.0))])
    assert [s.seeds for s in Engine.seen] == [[7, 7], None]


def test_a_dead_engine_fails_the_health_check():
    """After vLLM's EngineDeadError (or with its engine-dead flag up), check_health raises, so Ray Serve replaces
    the replica, and /health says so; the batch is not retried request by request on a dead engine."""
    import threading
    import types

    from vllm.v1.engine.exceptions import EngineDeadError

    from seedr1.rollout.engine import Sampling
    from seedr1.serve.app import ChatServer

    class Engine:
        calls = 0

        def generate(self, prompts, sampling):
            Engine.calls += 1
            raise EngineDeadError()

    server = types.SimpleNamespace(engine=Engine(), lock=threading.Lock(), dead=False)
    for name in ("check_health", "health", "_run_batch"):
        setattr(server, name, getattr(ChatServer.func_or_class, name).__get__(server))
    server.check_health()
    assert server.health() == {"status": "ok"}
    out = server._run_batch([("a", Sampling()), ("b", Sampling())])
    assert all(isinstance(o, EngineDeadError) for o in out) and Engine.calls == 1
    with pytest.raises(RuntimeError, match="dead"):
        server.check_health()
    assert server.health().status_code == 503
    resources = types.SimpleNamespace(engine_dead=True)  # vLLM's own flag, e.g. its engine core process died
    flagged = types.SimpleNamespace(llm=types.SimpleNamespace(llm_engine=types.SimpleNamespace(
        engine_core=types.SimpleNamespace(resources=resources))))
    with pytest.raises(RuntimeError):
        _server_method("check_health", engine=flagged, dead=False)()
    resources.engine_dead = False
    _server_method("check_health", engine=flagged, dead=False)()


def test_fastapis_own_errors_are_in_openais_shape():
    from fastapi.testclient import TestClient

    from seedr1.serve.app import api

    client = TestClient(api)
    for response, status in ((client.get("/v1/nope"), 404), (client.get("/v1/chat/completions"), 405)):
        assert response.status_code == status
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert response.headers["allow"] == "POST"


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
