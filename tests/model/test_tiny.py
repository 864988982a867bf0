import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from seedr1.config import TinyModelConfig, VLLMConfig
from seedr1.model.tiny import build_tiny_model, vision_token_ids


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path):
    a = build_tiny_model(tmp_path / "a", TinyModelConfig(seed=1))
    b = build_tiny_model(tmp_path / "b", TinyModelConfig(seed=1))
    c = build_tiny_model(tmp_path / "c", TinyModelConfig(seed=2))
    assert _digest(a) == _digest(b)
    assert _digest(a)["model.safetensors"] != _digest(c)["model.safetensors"]
    assert _digest(a)["tokenizer.json"] == _digest(c)["tokenizer.json"]


def _media(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 255, (4, 56, 56, 3), dtype=np.uint8), rng.integers(0, 255, (56, 56, 3), dtype=np.uint8))


@pytest.mark.parametrize("family", ["qwen2-vl", "qwen2.5-vl"])
def test_round_trip_with_auto_classes(tmp_path, family):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out = build_tiny_model(tmp_path / family, TinyModelConfig(family=family))
    model = AutoModelForImageTextToText.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 5_000_000
    expected = "Qwen2_5_VLForConditionalGeneration" if family == "qwen2.5-vl" else "Qwen2VLForConditionalGeneration"
    assert type(model).__name__ == expected
    tok = processor.tokenizer
    for t in ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|vision_start|>", "<|vision_end|>",
              "<|image_pad|>", "<|video_pad|>"]:
        assert len(tok.encode(t, add_special_tokens=False)) == 1, t
    video, image = _media()
    for content, kwargs in [({"type": "video"}, {"videos": [video]}), ({"type": "image"}, {"images": [image]})]:
        messages = [{"role": "user", "content": [content, {"type": "text", "text": "What next?"}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert text.endswith("<|im_start|>assistant\n")
        inputs = processor(text=[text], return_tensors="pt", **kwargs)
        assert inputs["mm_token_type_ids"].sum() > 0  # media positions flagged
        out_ids = model.generate(**inputs, max_new_tokens=5, do_sample=False,
                                 suppress_tokens=vision_token_ids(tok))
        assert out_ids.shape[1] > inputs["input_ids"].shape[1]
        # the same model and inputs give the same logits after a save/load round trip
        with torch.no_grad():
            again = AutoModelForImageTextToText.from_pretrained(out)(**inputs).logits
            first = model(**inputs).logits
        torch.testing.assert_close(first, again)


def test_cli_builds_a_model(tmp_path):
    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "seedr1.cli", "model", "tiny", "--out", str(out), "--seed", "5"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "model.safetensors").exists() and (out / "chat_template.jinja").exists()


def test_loads_in_vllm_and_generates_with_video_and_image(tiny_model_dir):
    from PIL import Image
    from vllm import SamplingParams

    from seedr1.model.loading import load_processor
    from seedr1.model.multimodal import chat_text
    from seedr1.rollout.vllm_engine_factory import build_llm

    llm = build_llm(tiny_model_dir, VLLMConfig(enforce_eager=True))
    processor = load_processor(tiny_model_dir)
    video, image = _media(1)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "image"}, {"type": "text", "text": "Hi"}]}]
    banned = set(vision_token_ids(processor.tokenizer))
    params = SamplingParams(n=3, max_tokens=6, temperature=1.0, seed=0,
                            allowed_token_ids=[i for i in range(len(processor.tokenizer)) if i not in banned])
    out = llm.generate([{"prompt": chat_text(processor, messages),
                         "multi_modal_data": {"video": video, "image": Image.fromarray(image)}}], params,
                       use_tqdm=False)[0]
    assert len(out.outputs) == 3
    for c in out.outputs:
        assert 0 < len(c.token_ids) <= 6 and not banned & set(c.token_ids)


def test_half_billion_preset_is_counted_without_weights():
    from seedr1.model.tiny import PRESETS, count_parameters, tiny_config

    cfg = tiny_config("0.5b")
    assert (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.intermediate_size) == \
        (896, 24, 14, 2, 4864)  # Qwen2-0.5B's text stack
    assert cfg.vision_embed_dim < 1280 and cfg.vision_depth < 32  # a smaller vision tower than Qwen2-VL-7B's
    assert tiny_config() == PRESETS["tiny"] == TinyModelConfig()
    assert 0.5e9 <= count_parameters(cfg) <= 1e9  # on the meta device: nothing allocated


def test_override_builds_and_loads_and_counts_match(tmp_path):
    from transformers import AutoModelForImageTextToText

    from seedr1.model.tiny import count_parameters, tiny_config

    cfg = tiny_config("tiny", ["num_layers=3"], seed=4)
    assert cfg.num_layers == 3 and cfg.seed == 4
    out = build_tiny_model(tmp_path / "three", cfg)
    model = AutoModelForImageTextToText.from_pretrained(out)
    assert model.config.text_config.num_hidden_layers == 3
    assert sum(p.numel() for p in model.parameters()) == count_parameters(cfg)


@pytest.mark.parametrize("bad", ["nope=1", "num_layers=x", "num_layers"])
def test_bad_override_is_a_config_error(bad):
    from seedr1.config import ConfigError
    from seedr1.model.tiny import tiny_config

    with pytest.raises(ConfigError):
        tiny_config("tiny", [bad])
    with pytest.raises(ConfigError, match="unknown model size"):
        tiny_config("7b")


def test_cli_size_and_set(tmp_path):
    out = tmp_path / "cli3"
    r = subprocess.run([sys.executable, "-m", "seedr1.cli", "model", "tiny", "--out", str(out), "--size", "tiny",
                        "--set", "num_layers=3"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(out).text_config.num_hidden_layers == 3
    r = subprocess.run([sys.executable, "-m", "seedr1.cli", "model", "tiny", "--out", str(tmp_path / "bad"),
                        "--set", "nope=1"], capture_output=True, text=True)
    assert r.returncode == 2 and "nope" in r.stderr
