"""serve/media.py: OpenAI chat content -> PromptRecord, refused inputs (status, OpenAI error shape, param) and safe
media fetching (data:, s3:// on a loopback moto server, http:// from a local http.server). No Ray, no vLLM."""
import base64
import io
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from seedr1.config import ServeLimits
from seedr1.serve.errors import APIError, bad_request, too_large, unauthorized
from seedr1.serve.media import fetch, host_allowed, parse_chat

LIMITS = ServeLimits(max_frames=8, frame_size=32, image_size=48, min_frames=4, sampled_max_frames=8, fps=2.0)


def png(size=40, colour=(200, 30, 60), fmt="PNG", seed=None) -> bytes:
    from PIL import Image

    if seed is None:
        arr = np.full((size, size, 3), colour, dtype=np.uint8)
    else:
        arr = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt)
    return buf.getvalue()


def data_url(data: bytes, media_type="image/png") -> str:
    return f"data:{media_type};base64," + base64.b64encode(data).decode()


def mp4(frames=8, size=64, fps=4) -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for t in range(frames):
            arr = np.full((size, size, 3), (30 * t) % 255, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def user(*parts):
    return [{"role": "user", "content": list(parts)}]


def img(url):
    return {"type": "image_url", "image_url": {"url": url}}


TEXT = {"type": "text", "text": "What next?"}


# ----------------------------------------------------------------------------------------------------------------
# Local HTTP server
# ----------------------------------------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    routes: dict = {}

    def do_GET(self):  # noqa: N802 - http.server's name
        status, headers, body, delay = self.routes.get(self.path, (404, {}, b"not found", 0))
        if delay:
            time.sleep(delay)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def http_host():
    """'127.0.0.1:<port>' of a loopback server with /img.png, /big.bin, /redirect, /slow.png, /clip.mp4."""
    _Handler.routes = {
        "/img.png": (200, {"Content-Type": "image/png"}, png(colour=(10, 220, 40)), 0),
        "/big.bin": (200, {}, b"\0" * 5000, 0),
        "/redirect": (302, {"Location": "/img.png"}, b"", 0),
        "/slow.png": (200, {}, png(), 5.0),
        "/clip.mp4": (200, {"Content-Type": "video/mp4"}, mp4(), 0),
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# ----------------------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------------------
def test_error_shape_and_helpers():
    e = bad_request("nope", param="messages", code="x")
    assert (e.status, e.type) == (400, "invalid_request_error")
    assert e.body() == {"error": {"message": "nope", "type": "invalid_request_error", "param": "messages", "code": "x"}}
    assert unauthorized("no key").status == 401 and unauthorized("no key").type == "authentication_error"
    assert too_large("big").status == 413 and too_large("big").body()["error"]["param"] is None
    assert APIError(429, "slow down", "rate_limit_error").body()["error"]["type"] == "rate_limit_error"


# ----------------------------------------------------------------------------------------------------------------
# Refused inputs: (name, messages, limits, status, param, message fragment)
# ----------------------------------------------------------------------------------------------------------------
P0 = "messages[0].content[0]"
WILD = replace(LIMITS, allow_hosts=["*"])
BAD = [
    ("messages not a list", {"role": "user"}, LIMITS, 400, "messages", "non-empty list"),
    ("empty messages", [], LIMITS, 400, "messages", "non-empty list"),
    ("message not an object", ["hi"], LIMITS, 400, "messages[0]", "object"),
    ("unknown role", [{"role": "tool", "content": "x"}], LIMITS, 400, "messages[0].role", "role"),
    ("content not str or list", [{"role": "user", "content": 3}], LIMITS, 400, "messages[0].content", "content"),
    ("empty content list", [{"role": "user", "content": []}], LIMITS, 400, "messages[0].content", "content"),
    ("part not an object", user("hi"), LIMITS, 400, P0, "content part"),
    ("unknown content type", user({"type": "audio_url", "audio_url": {"url": "x"}}), LIMITS, 400, f"{P0}.type",
     "audio_url"),
    ("text not a string", user({"type": "text", "text": 5}), LIMITS, 400, f"{P0}.text", "string"),
    # valid JSON ("\ud800"), not UTF-8: the tokenizer would raise TypeError (a 500 for the whole engine batch)
    ("lone surrogate in a text part", user({"type": "text", "text": "a\ud800"}), LIMITS, 400, f"{P0}.text",
     "surrogate"),
    ("lone surrogate in string content", [{"role": "system", "content": "\udfff"}] + user(TEXT), LIMITS, 400,
     "messages[0].content", "surrogate"),
    ("null content in a user turn", [{"role": "user", "content": None}], LIMITS, 400, "messages[0].content",
     "content"),
    ("media in a system turn", [{"role": "system", "content": [img(data_url(png()))]}] + user(TEXT), LIMITS, 400,
     f"{P0}.type", "only allowed in user"),
    ("media in an assistant turn", user(TEXT) + [{"role": "assistant", "content": [
        {"type": "video", "video": [data_url(png())] * 2}]}], LIMITS, 400, "messages[1].content[0].type", "user"),
    ("image_url without url", user({"type": "image_url", "image_url": {"detail": "low"}}), LIMITS, 400,
     f"{P0}.image_url.url", "url"),
    ("malformed data URL (base64)", user(img("data:image/png;base64,@@@")), LIMITS, 400, f"{P0}.image_url.url",
     "base64"),
    ("data URL without comma", user(img("data:image/png;base64")), LIMITS, 400, f"{P0}.image_url.url", "','"),
    ("data URL wrong media type", user(img(data_url(png(), "text/plain"))), LIMITS, 400, f"{P0}.image_url.url",
     "media type"),
    ("data URL not base64", user(img("data:image/png,abcd")), LIMITS, 400, f"{P0}.image_url.url", "base64"),
    ("empty data URL", user(img("data:image/png;base64,")), LIMITS, 400, f"{P0}.image_url.url", "empty"),
    ("non-image bytes in an image data URL", user(img(data_url(b"%!PS-Adobe-3.0 EPSF-3.0\n" + b"x" * 200))), LIMITS,
     400, f"{P0}.image_url.url", "not a supported image"),
    ("truncated png", user(img(data_url(png(seed=1)[:120]))), LIMITS, 400, f"{P0}.image_url.url", "image"),
    ("too many frames", user({"type": "video", "video": [data_url(png())] * 9}), LIMITS, 400, f"{P0}.video",
     "at most 8"),
    ("empty frame list", user({"type": "video", "video": []}), LIMITS, 400, f"{P0}.video", "non-empty"),
    ("frame not a string", user({"type": "video", "video": [data_url(png()), 7]}), LIMITS, 400, f"{P0}.video[1]",
     "frame"),
    ("bad frame data", user({"type": "video", "video": [data_url(png()), data_url(b"junk")]}), LIMITS, 400,
     f"{P0}.video[1]", "not a supported image"),
    ("too many images", user(img(data_url(png())), img(data_url(png()))), LIMITS, 400, "messages[0].content[1]",
     "at most 1 image"),
    ("too many images across turns", user(img(data_url(png()))) + [{"role": "assistant", "content": "ok"}]
     + user(img(data_url(png()))), LIMITS, 400, "messages[2].content[0]", "at most 1 image"),
    ("too many videos", user({"type": "video", "video": [data_url(png())]},
                             {"type": "video_url", "video_url": {"url": data_url(mp4(), "video/mp4")}}), LIMITS, 400,
     "messages[0].content[1]", "at most 1 video"),
    ("images off", user(img(data_url(png()))), replace(LIMITS, max_images=0), 400, P0, "at most 0 image"),
    ("file URL", user(img("file:///etc/passwd")), LIMITS, 400, f"{P0}.image_url.url", "scheme"),
    ("gopher URL", user(img("gopher://example.com/x")), LIMITS, 400, f"{P0}.image_url.url", "scheme"),
    ("loopback, no allow list", user(img("http://127.0.0.1:1/x.png")), LIMITS, 400, f"{P0}.image_url.url",
     "allow list"),
    ("loopback under a wildcard", user(img("http://127.0.0.1:1/x.png")), WILD, 400, f"{P0}.image_url.url",
     "loopback"),
    ("link-local metadata", user(img("http://169.254.169.254/latest")), WILD, 400, f"{P0}.image_url.url",
     "link-local"),
    ("private under a wildcard", user(img("http://10.1.2.3/x.png")), WILD, 400, f"{P0}.image_url.url", "private"),
    ("unspecified under a wildcard", user(img("http://0.0.0.0/x.png")), WILD, 400, f"{P0}.image_url.url",
     "unspecified"),
    ("shared address space under a wildcard", user(img("http://100.64.0.1/x.png")), WILD, 400,
     f"{P0}.image_url.url", "address"),
    ("v4-mapped loopback under a wildcard", user(img("http://[::ffff:127.0.0.1]/x.png")), WILD, 400,
     f"{P0}.image_url.url", "loopback"),
    ("v6 loopback under a wildcard", user(img("http://[::1]/x.png")), WILD, 400, f"{P0}.image_url.url", "loopback"),
    ("localhost under a subdomain wildcard", user(img("http://localhost/x.png")),
     replace(LIMITS, allow_hosts=["*.example.com"]), 400, f"{P0}.image_url.url", "allow list"),
    ("host not on the allow list", user(img("https://example.com/a.png")),
     replace(LIMITS, allow_hosts=["media.example.org"]), 400, f"{P0}.image_url.url", "allow list"),
    ("credentials in URL", user(img("http://user@media.example.org/a.png")),
     replace(LIMITS, allow_hosts=["media.example.org"]), 400, f"{P0}.image_url.url", "credentials"),
    ("oversized image (pixels)", user(img(data_url(png(size=100)))), replace(LIMITS, max_image_pixels=50 * 50), 400,
     f"{P0}.image_url.url", "pixels"),
    ("oversized data URL (bytes)", user(img(data_url(png(seed=2, size=64)))), replace(LIMITS, max_fetch_bytes=1000),
     413, f"{P0}.image_url.url", "bytes"),
    ("video data URL with image type", user({"type": "video_url", "video_url": {"url": data_url(mp4())}}), LIMITS,
     400, f"{P0}.video_url.url", "media type"),
    ("corrupt video", user({"type": "video_url", "video_url": data_url(b"\0\0\0\x18ftypmp42" + b"x" * 500,
                                                                          "video/mp4")}), LIMITS, 400,
     f"{P0}.video_url", "video"),
    ("video too long", user({"type": "video_url", "video_url": {"url": data_url(mp4(), "video/mp4")}}),
     replace(LIMITS, max_video_seconds=1.0), 400, f"{P0}.video_url.url", "at most 1 s"),
    ("video frames too large", user({"type": "video_url", "video_url": {"url": data_url(mp4(), "video/mp4")}}),
     replace(LIMITS, max_image_pixels=32 * 32), 400, f"{P0}.video_url.url", "pixels"),
]


@pytest.mark.parametrize("name,messages,limits,status,param,fragment", BAD, ids=[b[0] for b in BAD])
def test_refused(name, messages, limits, status, param, fragment):
    with pytest.raises(APIError) as info:
        parse_chat(messages, limits)
    e = info.value
    body = e.body()
    assert e.status == status, (name, body)
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"] == param, body
    assert fragment.lower() in body["error"]["message"].lower(), body


def test_nothing_is_fetched_before_the_counts_are_checked(monkeypatch):
    import seedr1.serve.media as media

    monkeypatch.setattr(media, "fetch", lambda *a, **k: pytest.fail("fetched before validation"))
    with pytest.raises(APIError, match="at most 1 image"):
        parse_chat(user(img("http://127.0.0.1:1/a.png"), img("http://127.0.0.1:1/b.png")), LIMITS)


def test_unexpected_failure_is_a_500_api_error(monkeypatch):
    import seedr1.serve.media as media

    monkeypatch.setattr(media, "decode_image_checked", lambda *a, **k: 1 / 0)
    with pytest.raises(APIError) as info:
        parse_chat(user(img(data_url(png()))), LIMITS)
    assert info.value.status == 500 and info.value.type == "server_error"


# ----------------------------------------------------------------------------------------------------------------
# Accepted inputs
# ----------------------------------------------------------------------------------------------------------------
def test_frames_padded_to_even_and_resized():
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    record = parse_chat(user({"type": "video", "video": [data_url(png(colour=c)) for c in colours]}, TEXT), LIMITS)
    assert (record.sample_id, record.kind, record.image) == ("request", "chat", None)
    assert record.video.shape == (4, 32, 32, 3) and record.video.dtype == np.uint8
    assert np.array_equal(record.video[3], record.video[2])
    assert tuple(record.video[0, 5, 5]) == (255, 0, 0) and tuple(record.video[2, 5, 5]) == (0, 0, 255)
    assert record.messages == [{"role": "user", "content": [{"type": "video"}, TEXT]}]


def test_single_frame_becomes_two():
    record = parse_chat(user({"type": "video", "video": [data_url(png())]}), LIMITS)
    assert record.video.shape == (2, 32, 32, 3)


def test_image_data_url_as_in_the_data_pipeline():
    from seedr1.data.media import decode_image

    raw = png(seed=3, size=70)
    record = parse_chat(user(TEXT, {"type": "image_url", "image_url": data_url(raw)}), LIMITS)  # string form
    assert record.video is None and record.image.shape == (48, 48, 3)
    assert np.array_equal(record.image, decode_image(raw, size=48))  # same conversion as training
    assert record.messages[0]["content"] == [TEXT, {"type": "image"}]


def test_jpeg_image():
    record = parse_chat(user(img(data_url(png(fmt="JPEG"), "image/jpeg"))), LIMITS)
    assert record.image.shape == (48, 48, 3) and abs(int(record.image[10, 10, 0]) - 200) < 8


def test_video_url_data_mp4():
    record = parse_chat(user({"type": "video_url", "video_url": {"url": data_url(mp4(), "video/mp4")}}, TEXT),
                        LIMITS)
    # 8 frames at 4 fps = 2 s; sampled at 2 fps -> 4 frames (min_frames 4), resized to frame_size
    assert record.video.shape == (4, 32, 32, 3) and record.video.dtype == np.uint8
    assert record.messages[0]["content"] == [{"type": "video"}, TEXT]


def crashing_mp4() -> bytes:
    """An mp4 whose sample table gives one frame a size far past the end of the file (decord 0.6 segfaults)."""
    data = bytearray(mp4())
    at = data.index(b"stsz") + 16 + 4 * 4  # box type, version/flags, sample_size, count; then the 5th entry
    data[at:at + 4] = (0x00810042).to_bytes(4, "big")
    return bytes(data)


def test_decoder_crash_is_a_400_and_the_next_video_decodes():
    bad = user({"type": "video_url", "video_url": {"url": data_url(crashing_mp4(), "video/mp4")}})
    with pytest.raises(APIError) as info:
        parse_chat(bad, LIMITS)
    assert info.value.status == 400 and info.value.code == "invalid_video"
    assert info.value.param == "messages[0].content[0].video_url.url"
    good = user({"type": "video_url", "video_url": {"url": data_url(mp4(), "video/mp4")}})
    assert parse_chat(good, LIMITS).video.shape == (4, 32, 32, 3)


def test_hung_decoder_is_killed(monkeypatch):
    import seedr1.serve.media as media

    monkeypatch.setattr(media, "VIDEO_DECODE_TIMEOUT_S", 0.001)
    good = user({"type": "video_url", "video_url": {"url": data_url(mp4(), "video/mp4")}})
    with pytest.raises(APIError, match="to decode") as info:
        parse_chat(good, LIMITS)
    assert info.value.status == 400
    monkeypatch.setattr(media, "VIDEO_DECODE_TIMEOUT_S", 120.0)
    assert parse_chat(good, LIMITS).video.shape == (4, 32, 32, 3)


def sleepy_video_job(data: bytes, limits) -> tuple:
    """Stands in for media._video_job in the decoder process (imported there by name): sleeps float(data) s."""
    time.sleep(float(data))
    return ("ok", (np.zeros((2, 4, 4, 3), np.uint8), 1.0))


@pytest.fixture()
def sleepy_decoders(monkeypatch):
    """Fresh decoder slots running sleepy_video_job, the decoder started; their processes are stopped afterwards."""
    import seedr1.serve.media as media

    monkeypatch.setattr(media, "_video_job", sleepy_video_job)
    monkeypatch.setattr(media, "_FREE", None)
    media.decode_video_checked(b"0", LIMITS)  # the decoder's start is not timed as a decode
    yield media
    while media._FREE is not None and not media._FREE.empty():
        pool = media._FREE.get_nowait()
        if pool is not None:
            media._stop_decoder(pool)


def _decode_together(media, delays: list[float], stagger_s: float = 0.0) -> list:
    """decode_video_checked of each delay at once (a thread each): frames' shape or the APIError."""
    from concurrent.futures import ThreadPoolExecutor

    def one(k):
        time.sleep(k * stagger_s)
        try:
            return media.decode_video_checked(str(delays[k]).encode(), LIMITS, param=f"v{k}")[0].shape
        except APIError as e:
            return e

    with ThreadPoolExecutor(len(delays)) as pool:
        return list(pool.map(one, range(len(delays))))


def test_queued_videos_are_not_timed_while_they_wait(sleepy_decoders, monkeypatch):
    """One decoder; three videos of 1 s each sent together, the decode limit 1.8 s: each decode is timed alone, so
    the second and third (waiting 1 s and 2 s for the decoder) still decode, and nobody's decoder is killed."""
    monkeypatch.setattr(sleepy_decoders, "VIDEO_DECODE_TIMEOUT_S", 1.8)
    assert _decode_together(sleepy_decoders, [1.0, 1.0, 1.0]) == [(2, 4, 4, 3)] * 3


def test_no_free_decoder_is_a_503_and_the_running_decode_is_left_alone(sleepy_decoders, monkeypatch):
    """A request that cannot get a decoder within VIDEO_WAIT_TIMEOUT_S is told the server is busy (503, not a 400
    blaming its video), and the decode it waited behind finishes."""
    monkeypatch.setattr(sleepy_decoders, "VIDEO_WAIT_TIMEOUT_S", 0.3)
    first, second = _decode_together(sleepy_decoders, [1.5, 0.0], stagger_s=0.2)
    assert first == (2, 4, 4, 3)
    assert isinstance(second, APIError) and second.status == 503 and second.param == "v1"
    assert second.body()["error"]["type"] == "server_error" and second.code == "server_busy"


def test_a_decoder_that_died_while_idle_is_replaced_not_blamed_on_the_next_video():
    import time

    from seedr1.serve import media

    data = mp4()
    expected, _ = media.decode_video_checked(data, LIMITS)  # starts a decoder, then leaves it idle in the queue
    pool = media._free_decoders().queue[0]
    for proc in list(pool._processes.values()):  # say the OOM killer took it
        proc.kill()
        proc.join()
    deadline = time.time() + 10
    while not pool._broken and time.time() < deadline:  # the pool notices its worker is gone
        time.sleep(0.05)
    assert pool._broken
    frames, _ = media.decode_video_checked(data, LIMITS)  # a fresh decoder, not a 400 "crashed on it"
    assert np.array_equal(frames, expected)


def test_in_process_decoding_matches():
    from seedr1.serve.media import decode_video_checked

    data = mp4()
    (here, here_fps), (isolated, isolated_fps) = decode_video_checked(data, LIMITS, isolate=False), \
        decode_video_checked(data, LIMITS)
    assert np.array_equal(here, isolated) and here_fps == isolated_fps


def test_multi_turn_kept_in_order():
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "video", "video": [data_url(png())] * 2}, TEXT]},
                {"role": "assistant", "content": [{"type": "text", "text": "A"}], "refusal": None},
                {"role": "user", "content": [img(data_url(png())), {"type": "text", "text": "And now?"}]}]
    record = parse_chat(messages, LIMITS)
    assert record.messages == [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "video"}, TEXT]},
        {"role": "assistant", "content": [{"type": "text", "text": "A"}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "And now?"}]}]
    assert record.video.shape == (2, 32, 32, 3) and record.image.shape == (48, 48, 3)


def test_developer_is_system_and_null_assistant_content_is_empty_text():
    """As OpenAI takes them: `developer` is its newer name for `system`; an assistant turn may have null content."""
    record = parse_chat([{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "hi"},
                         {"role": "assistant", "content": None}, {"role": "user", "content": "again"}], LIMITS)
    assert [m["role"] for m in record.messages] == ["system", "user", "assistant", "user"]
    assert record.messages[0]["content"] == [{"type": "text", "text": "Be brief."}]
    assert record.messages[2]["content"] == [{"type": "text", "text": ""}]
    with pytest.raises(APIError) as info:  # still text only
        parse_chat([{"role": "developer", "content": [img(data_url(png()))]}] + user(TEXT), LIMITS)
    assert info.value.param == "messages[0].content[0].type" and "developer" in info.value.message


def test_text_only():
    record = parse_chat([{"role": "user", "content": "hello"}], LIMITS)
    assert record.video is None and record.image is None
    assert record.messages == [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]


# ----------------------------------------------------------------------------------------------------------------
# http(s)
# ----------------------------------------------------------------------------------------------------------------
def test_allow_listed_loopback_http(http_host):
    limits = replace(LIMITS, allow_hosts=[http_host])
    record = parse_chat(user(img(f"http://{http_host}/img.png")), limits)
    assert record.image.shape == (48, 48, 3) and tuple(record.image[5, 5]) == (10, 220, 40)
    record = parse_chat(user({"type": "video_url", "video_url": {"url": f"http://{http_host}/clip.mp4"}}), limits)
    assert record.video.shape == (4, 32, 32, 3)
    # the host alone (any port) is an explicit entry too
    host_only = replace(LIMITS, allow_hosts=["127.0.0.1"])
    assert parse_chat(user(img(f"http://{http_host}/img.png")), host_only).image is not None


@pytest.mark.parametrize("path,limits_kw,status,fragment", [
    ("/big.bin", dict(max_fetch_bytes=1000), 413, "1000 bytes"),
    ("/redirect", {}, 400, "redirect"),
    ("/missing.png", {}, 400, "HTTP 404"),
    ("/slow.png", dict(fetch_timeout_s=0.3), 400, "timed out"),
    ("/big.bin", {}, 400, "not a supported image"),
])
def test_http_refusals(http_host, path, limits_kw, status, fragment):
    limits = replace(LIMITS, allow_hosts=[http_host], **limits_kw)
    t0 = time.monotonic()
    with pytest.raises(APIError) as info:
        parse_chat(user(img(f"http://{http_host}{path}")), limits)
    assert time.monotonic() - t0 < 3.0  # the timeout holds (the slow response takes 5 s; slack for a busy CI box)
    assert info.value.status == status and fragment in info.value.message, info.value.body()
    assert info.value.param == "messages[0].content[0].image_url.url"


def test_other_port_not_allowed(http_host):
    host, port = http_host.split(":")
    with pytest.raises(APIError, match="allow list"):
        parse_chat(user(img(f"http://{host}:{int(port) + 1}/img.png")),
                   replace(LIMITS, allow_hosts=[f"{host}:{port}"]))


def test_connection_refused_is_400():
    with pytest.raises(APIError) as info:
        fetch("http://127.0.0.1:1/x.png", replace(LIMITS, allow_hosts=["127.0.0.1:1"]))
    assert info.value.status == 400 and "cannot fetch" in info.value.message


def test_host_allowed_rules():
    assert host_allowed("Media.Example.org", 443, ["media.example.org"]) == "explicit"
    assert host_allowed("media.example.org", 443, ["media.example.org:8443"]) is None
    assert host_allowed("a.example.com", 80, ["*.example.com"]) == "wildcard"
    assert host_allowed("example.com", 80, ["*.example.com"]) is None
    assert host_allowed("evilexample.com", 80, ["*.example.com"]) is None
    assert host_allowed("::1", 8080, ["[::1]:8080"]) == "explicit"
    assert host_allowed("0:0::1", 80, ["::1"]) == "explicit"
    assert host_allowed("x.org", 80, []) is None


# ----------------------------------------------------------------------------------------------------------------
# s3
# ----------------------------------------------------------------------------------------------------------------
def test_s3_image_and_video(s3_env):
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="media-test")
    s3.put_object(Bucket="media-test", Key="img.png", Body=png(colour=(1, 2, 250)))
    s3.put_object(Bucket="media-test", Key="clip.mp4", Body=mp4())
    allowed = replace(LIMITS, allow_s3_buckets=["media-*", "no-such-bucket"])
    record = parse_chat(user({"type": "video_url", "video_url": {"url": "s3://media-test/clip.mp4"}},
                             img("s3://media-test/img.png"), TEXT), allowed)
    assert record.video.shape == (4, 32, 32, 3) and tuple(record.image[3, 3]) == (1, 2, 250)

    for url, limits, status, fragment in [
        ("s3://media-test/nope.png", allowed, 400, "does not exist"),
        ("s3://media-test/img.png", replace(allowed, max_fetch_bytes=10), 413, "10 bytes"),
        ("s3://media-test", allowed, 400, "s3://bucket/key"),
        ("s3://no-such-bucket/x.png", allowed, 400, "no-such-bucket"),
        ("s3://media-test/img.png", LIMITS, 400, "not on this server's allow_s3_buckets"),  # default: none
        ("s3://other/img.png", allowed, 400, "'other' is not on"),
    ]:
        with pytest.raises(APIError) as info:
            parse_chat(user(img(url)), limits)
        assert info.value.status == status and fragment in info.value.message, (url, info.value.body())
        assert info.value.param == "messages[0].content[0].image_url.url"


def test_video_rate_travels_with_the_frames():
    """Qwen2.5-VL's temporal positions depend on the rate the frames stand for: a 1 s clip sampled to the 4-frame
    minimum stands for 4 fps, not the serving rate; frames sent as images are taken at the serving rate."""
    short = user({"type": "video_url", "video_url": {"url": data_url(mp4(frames=8, fps=8), "video/mp4")}})
    record = parse_chat(short, LIMITS)
    assert record.video.shape[0] == 4 and record.video_fps == pytest.approx(4.0)
    at_rate = user({"type": "video_url", "video_url": {"url": data_url(mp4(frames=8, fps=4), "video/mp4")}})
    assert parse_chat(at_rate, LIMITS).video_fps == pytest.approx(LIMITS.fps)
    frames = user({"type": "video", "video": [data_url(png(seed=k)) for k in range(4)]})
    assert parse_chat(frames, LIMITS).video_fps == LIMITS.fps
