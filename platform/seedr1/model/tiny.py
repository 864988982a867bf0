"""A tiny model of the real Qwen2-VL / Qwen2.5-VL architecture, built offline (random weights, local tokenizer).

The CPU stand-in for Qwen2-VL-7B-Instruct in tests and demos: the same classes, the same processor, the same chat
template and special tokens, so every code path (transformers, vLLM, DeepSpeed) runs the real thing, only small.
Same config (seed included), same bytes.

Larger shapes for rehearsing scale on CPU: ``PRESETS`` names TinyModelConfig instances (``"0.5b"``: a text stack
like Qwen2-0.5B's and a smaller vision tower, ~0.55 B parameters with the tiny tokenizer's ~400-token vocabulary),
``tiny_config(size, overrides)`` applies ``key=value`` overrides to one, and ``count_parameters(cfg)`` counts a
config's parameters without allocating its weights.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from seedr1.config import ConfigError, TinyModelConfig, from_dict, parse_override, to_dict
from seedr1.data.prompt_text import OFFICIAL_INSTRUCTION
from seedr1.data.synthetic_vocab import corpus_lines

SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>",
]
VISION_SPECIAL_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")

# Qwen2-VL-7B-Instruct's chat template (media become <|vision_start|><|image_pad|><|vision_end|>).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# Named sizes. "tiny" is TinyModelConfig's defaults (what tests and demos build). "0.5b": Qwen2-0.5B's text stack
# (hidden 896, 24 layers, 14 heads, 2 key/value heads, MLP 4864; head_dim 64) with the tiny tokenizer, so its
# embeddings are ~0.7 M parameters instead of Qwen2-0.5B's 136 M, and a Qwen2-VL vision tower cut to 20 blocks of
# width 1024 (Qwen2-VL-7B's: 32 of 1280): ~0.55 B parameters in all, 2.2 GB in fp32.
PRESETS: dict[str, TinyModelConfig] = {
    "tiny": TinyModelConfig(),
    "0.5b": TinyModelConfig(hidden_size=896, num_layers=24, num_heads=14, num_kv_heads=2, intermediate_size=4864,
                            vision_depth=20, vision_embed_dim=1024, vision_heads=16),
}


def tiny_config(size: str = "tiny", overrides: list[str] | tuple[str, ...] = (), **fields) -> TinyModelConfig:
    """The preset ``size`` with ``key=value`` ``overrides`` (TinyModelConfig field names, e.g. ``num_layers=3``) and
    then keyword ``fields`` applied; unknown sizes, keys and ill-typed values raise ConfigError."""
    if size not in PRESETS:
        raise ConfigError(f"unknown model size {size!r} (known: {', '.join(PRESETS)})")
    data = to_dict(PRESETS[size])
    for text in overrides:
        key, value = parse_override(text)
        data[key] = value
    data.update(fields)
    return from_dict(TinyModelConfig, data, prefix="model")


def count_parameters(cfg: TinyModelConfig) -> int:
    """Parameters of the model ``build_tiny_model(_, cfg)`` writes, counted on the meta device (no weights)."""
    tokenizer = build_tokenizer(cfg)
    config = build_config(tokenizer, cfg)
    with torch.device("meta"):
        model = _model_class(cfg)(config)
    return sum(p.numel() for p in model.parameters())


def _model_class(cfg: TinyModelConfig):
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration if cfg.family == "qwen2.5-vl" else Qwen2VLForConditionalGeneration


def _tokenizer_corpus() -> list[str]:
    base = [OFFICIAL_INSTRUCTION, "system", "user", "assistant", "You are a helpful assistant.",
            "<think>", "</think>", "<answer>", "</answer>", "A.", "B.", "C.", "D.", "A", "B", "C", "D",
            "The answer is", "next action", "I think the answer is"]
    return (base + corpus_lines()) * 4


def build_tokenizer(cfg: TinyModelConfig):
    """Byte-level BPE trained on the synthetic benchmark's text, with Qwen's special tokens and chat template."""
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=cfg.vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None,
        unk_token=None, additional_special_tokens=SPECIAL_TOKENS[1:], model_max_length=32768,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def build_processor(tokenizer, cfg: TinyModelConfig):
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    size = {"shortest_edge": cfg.min_pixels, "longest_edge": cfg.max_pixels}
    image_processor = Qwen2VLImageProcessor(size=size, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels)
    video_processor = Qwen2VLVideoProcessor(size=size, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels,
                                            cap_pixels_per_frame=False)
    if cfg.family == "qwen2.5-vl":
        from transformers import Qwen2_5_VLProcessor as processor_cls
    else:
        processor_cls = Qwen2VLProcessor
    return processor_cls(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
                         chat_template=CHAT_TEMPLATE)


def build_config(tokenizer, cfg: TinyModelConfig):
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    head_dim = cfg.hidden_size // cfg.num_heads
    if head_dim % 2:
        raise ValueError(f"head_dim {head_dim} must be even (hidden_size / num_heads)")
    half = head_dim // 2  # mrope_section (temporal, height, width) must sum to head_dim / 2
    mrope = [half - 2 * (half // 3), half // 3, half // 3]
    text = dict(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=4096, rms_norm_eps=1e-6, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope},
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    )
    media_ids = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                     vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    if cfg.family == "qwen2.5-vl":
        from transformers import Qwen2_5_VLConfig

        vision = dict(depth=cfg.vision_depth, hidden_size=cfg.vision_embed_dim,
                      intermediate_size=2 * cfg.vision_embed_dim, num_heads=cfg.vision_heads,
                      out_hidden_size=cfg.hidden_size, fullatt_block_indexes=[cfg.vision_depth - 1],
                      window_size=112, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **media_ids)
    from transformers import Qwen2VLConfig

    vision = dict(depth=cfg.vision_depth, embed_dim=cfg.vision_embed_dim, hidden_size=cfg.hidden_size,
                  mlp_ratio=2, num_heads=cfg.vision_heads, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2)
    return Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **media_ids)


def build_tiny_model(out_dir: str | os.PathLike, cfg: TinyModelConfig | None = None) -> Path:
    """Write a complete Hugging Face checkpoint (model, tokenizer, processor, chat template) to ``out_dir``."""
    from transformers import GenerationConfig

    cfg = cfg or TinyModelConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(cfg)
    processor = build_processor(tokenizer, cfg)
    config = build_config(tokenizer, cfg)
    torch.manual_seed(cfg.seed)
    model = _model_class(cfg)(config).to(torch.float32)
    eos = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=eos[1], bos_token_id=eos[1],
                                               do_sample=False)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "seedr1_tiny.json").write_text(json.dumps({"family": cfg.family, "seed": cfg.seed,
                                                      "parameters": sum(p.numel() for p in model.parameters())},
                                                     indent=2) + "\n")
    return out


def vision_token_ids(tokenizer) -> list[int]:
    """Ids that must never be sampled (a sampled <|image_pad|> breaks the next forward)."""
    return [tokenizer.convert_tokens_to_ids(t) for t in VISION_SPECIAL_TOKENS]
