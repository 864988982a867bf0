"""Frame sampling rules and in-memory decoding of video (decord) and images (PIL), including corrupt inputs."""
from __future__ import annotations

import io
import math

import av
import numpy as np
import pytest
from PIL import Image

from seedr1.data.media import MediaError, decode_clip, decode_image, decode_video, frame_count, frame_indices

SIDE = 40  # note: decord mis-decodes some output sides (16, 24, 48, 72: dmlc/decord#336)
N_FRAMES, NATIVE_FPS = 30, 10  # a 3 s clip


def _grey(t: int) -> int:
    return 8 * t


def _mp4_bytes(n_frames: int = N_FRAMES, fps: int = NATIVE_FPS, side: int = SIDE) -> bytes:
    """Flat grey frames whose level encodes the frame index (so sampled indices can be read back)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=fps, options={"qmin": "2", "qmax": "2"})
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        for t in range(n_frames):
            frame = np.full((side, side, 3), _grey(t), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buf.getvalue()


@pytest.fixture(scope="module")
def mp4() -> bytes:
    return _mp4_bytes()


def _png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


# ---- frame_count ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_frames,native_fps,expected", [
    (16, 4.0, 8),     # 4 s at 2 fps
    (120, 30.0, 8),   # 4 s
    (300, 30.0, 16),  # 10 s -> 20, capped at 16
    (3000, 30.0, 16),  # 100 s, capped
    (30, 30.0, 4),    # 1 s -> 2, raised to min 4
    (3, 30.0, 2),     # min 4, but never more than the clip has: 3 -> down to even 2
    (5, 30.0, 4),
    (75, 30.0, 4),    # 2.5 s -> 5, down to even 4 (as the official smart_nframes)
    (105, 30.0, 6),   # 3.5 s -> 7 -> 6
    (135, 30.0, 8),   # 4.5 s -> 9 -> 8
    (165, 30.0, 10),  # 5.5 s -> 11 -> 10
    (225, 30.0, 14),  # 7.5 s -> 15 -> 14
    (100, 0.0, 4),    # unknown fps: duration 0 -> min
])
def test_frame_count_defaults(num_frames, native_fps, expected):
    assert frame_count(num_frames, native_fps, fps=2.0, min_frames=4, max_frames=16) == expected


def test_frame_count_odd_bounds_stay_even_and_within():
    # odd max: 15 would exceed nothing but is odd -> 14 (rounding up would pass the max)
    assert frame_count(3000, 30.0, 2.0, 4, 15) == 14
    # odd min: 5 -> 6
    assert frame_count(30, 30.0, 2.0, 5, 16) == 6
    # other sampling rates
    assert frame_count(300, 30.0, 1.0, 4, 16) == 10
    assert frame_count(300, 30.0, 0.5, 2, 16) == 4   # 10 s at 0.5 fps -> 5 -> 4
    with pytest.raises(ValueError, match="1 frame"):
        frame_count(1, 30.0, 2.0, 4, 16)  # the official code refuses it too


def _official_smart_nframes(total_frames, video_fps, fps, min_frames, max_frames):
    """SEED-Bench-R1's qwen-vl-utils smart_nframes (vision_process_egoplan.py), transcribed."""
    min_frames = math.ceil(min_frames / 2) * 2
    max_frames = math.floor(max_frames / 2) * 2
    nframes = total_frames / video_fps * fps
    nframes = min(min(max(nframes, min_frames), max_frames), total_frames)
    return math.floor(nframes / 2) * 2


def test_frame_count_is_the_official_rule_and_even_and_bounded():
    for num_frames in range(2, 700, 7):
        for native_fps in (1.0, 4.0, 24.0, 29.97, 30.0, 60.0):
            n = frame_count(num_frames, native_fps, 2.0, 4, 16)
            assert n == _official_smart_nframes(num_frames, native_fps, 2.0, 4, 16)
            assert n % 2 == 0 and 2 <= n <= min(16, num_frames), (num_frames, native_fps, n)


# ---- frame_indices --------------------------------------------------------------------------------------------------
def test_frame_indices_uniform():
    assert frame_indices(16, 8).tolist() == [0, 2, 4, 6, 9, 11, 13, 15]
    assert frame_indices(30, 6).tolist() == [0, 6, 12, 17, 23, 29]
    assert frame_indices(100, 4).tolist() == [0, 33, 66, 99]
    assert frame_indices(16, 8).dtype == np.int64


def test_frame_indices_short_clip_repeats():
    assert frame_indices(3, 4).tolist() == [0, 1, 1, 2]
    assert frame_indices(1, 4).tolist() == [0, 0, 0, 0]


# ---- decode_video ---------------------------------------------------------------------------------------------------
def test_decode_video_shape_dtype_and_sampled_frames(mp4):
    frames = decode_video(mp4, "clip.mp4", fps=2.0, min_frames=4, max_frames=16, size=32)
    assert frames.dtype == np.uint8 and frames.shape == (6, 32, 32, 3)  # 3 s at 2 fps
    assert frames.flags["C_CONTIGUOUS"]
    # the grey level encodes the frame index: the sampled frames are frame_indices(30, 6)
    levels = frames.reshape(6, -1).mean(1)
    expected = [_grey(i) for i in frame_indices(N_FRAMES, 6)]
    assert np.allclose(levels, expected, atol=3), (levels, expected)


def test_decode_video_native_size_and_frame_limits(mp4):
    frames = decode_video(mp4, "clip.mp4", size=None)
    assert frames.shape == (6, SIDE, SIDE, 3)
    assert decode_video(mp4, "clip.mp4", fps=10.0, max_frames=16, size=32).shape == (16, 32, 32, 3)
    assert decode_video(mp4, "clip.mp4", fps=0.5, min_frames=4, size=32).shape == (4, 32, 32, 3)


def test_decode_clip_gives_the_rate_the_frames_stand_for(mp4):
    """Frames per second of the 3 s clip as sampled: the asked rate, unless the frame limits changed the count."""
    for fps, max_frames, count, rate in ((2.0, 16, 6, 2.0), (10.0, 16, 16, 16 / 3), (0.5, 16, 4, 4 / 3)):
        frames, got = decode_clip(mp4, "clip.mp4", fps=fps, min_frames=4, max_frames=max_frames, size=32)
        assert len(frames) == count and got == pytest.approx(rate)


def test_decode_video_truncated_names_the_file(mp4):
    with pytest.raises(MediaError, match=r"videos/Ego4D/broken\.mp4"):
        decode_video(mp4[: len(mp4) // 2], "videos/Ego4D/broken.mp4", size=32)


def test_decode_video_empty_bytes():
    with pytest.raises(MediaError, match=r"empty\.mp4: empty video"):
        decode_video(b"", "empty.mp4")


def test_decode_video_garbage_bytes():
    with pytest.raises(MediaError, match=r"junk\.mp4: cannot decode video"):
        decode_video(b"this is not a video at all" * 50, "junk.mp4", size=32)


def test_decode_video_error_with_an_empty_message(monkeypatch):
    import decord

    def fail(*args, **kwargs):
        raise RuntimeError("")

    monkeypatch.setattr(decord, "VideoReader", fail)
    with pytest.raises(MediaError, match=r"^odd\.mp4: cannot decode video \(RuntimeError\)$"):
        decode_video(b"bytes", "odd.mp4")


# ---- decode_image ---------------------------------------------------------------------------------------------------
def test_decode_image_exact_pixels_and_resize():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    data = _png_bytes(array)
    assert np.array_equal(decode_image(data, "x.png", size=None), array)
    resized = decode_image(data, "x.png", size=24)
    assert resized.shape == (24, 24, 3) and resized.dtype == np.uint8


def test_decode_image_converts_to_rgb():
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    out = decode_image(_png_bytes(rgba, "RGBA"), "a.png", size=None)
    assert out.shape == (8, 8, 3) and (out[..., 0] == 200).all() and (out[..., 1:] == 0).all()
    grey = decode_image(_png_bytes(np.full((8, 8), 77, dtype=np.uint8)), "g.png", size=None)
    assert grey.shape == (8, 8, 3) and (grey == 77).all()


def test_decode_image_garbage_and_empty():
    with pytest.raises(MediaError, match=r"images/EpicKitchens/bad\.png: cannot decode image"):
        decode_image(b"\x89PNG not really", "images/EpicKitchens/bad.png")
    png = _png_bytes(np.zeros((16, 16, 3), dtype=np.uint8))
    with pytest.raises(MediaError, match=r"half\.png"):
        decode_image(png[: len(png) // 2], "half.png")
    with pytest.raises(MediaError, match=r"none\.png: empty image"):
        decode_image(b"", "none.png")
