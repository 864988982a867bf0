"""Qwen2.5-VL with video: vLLM needs to be told what the frames are (already sampled, at ``video_fps``), and the
trainer must space the video's temporal positions by that rate and lay them out as vLLM does, or the log-probs the
engine sampled with are not the ones the trainer computes (transformers 5.19's own layout is ~2e-3 apart)."""
import dataclasses

import numpy as np
import pytest
import torch

from seedr1.config import TinyModelConfig, VLLMConfig
from seedr1.data.pipeline import PromptRecord
from seedr1.data.prompts import user_message
from seedr1.model.loading import load_model, load_processor
from seedr1.rollout.engine import Sampling
from seedr1.train.batch import build_batch, completion_logprobs, forward_inputs


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from seedr1.model.tiny import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny25") / "qwen2.5-vl", TinyModelConfig(family="qwen2.5-vl")))


@pytest.fixture(scope="module")
def engine(model_dir):
    from seedr1.rollout.vllm_engine import VLLMEngine

    return VLLMEngine(model_dir, VLLMConfig(enforce_eager=True))


def _record(fps: float) -> PromptRecord:
    rng = np.random.default_rng(0)
    return PromptRecord(sample_id=f"v{fps}", kind="validation", gold_letter="A", video_fps=fps,
                        messages=user_message("What next?\nA. a\nB. b\nC. c\nD. d\n", True, True),
                        video=rng.integers(0, 255, (8, 56, 56, 3), dtype=np.uint8),
                        image=rng.integers(0, 255, (56, 56, 3), dtype=np.uint8))


@pytest.mark.parametrize("fps", [2.0, 1.5])
def test_engine_and_trainer_agree_on_a_qwen25_video(engine, model_dir, fps):
    record = _record(fps)
    completion = engine.generate([record], Sampling(n=1, max_tokens=8, temperature=1.0))[0][0]
    assert completion.token_ids
    processor, model = load_processor(model_dir), load_model(model_dir, trainable=False)
    batch = build_batch(processor, [record], [completion.token_ids])
    # the rate reached the processor: seconds per temporal patch of 2 frames
    assert batch["second_per_grid_ts"].tolist() == pytest.approx([2 / fps])
    with torch.no_grad():
        logp, mask = completion_logprobs(model, batch)
        trainer = logp[0][mask[0]].numpy()
        np.testing.assert_allclose(completion.logprobs, trainer, atol=1e-4)
        np.testing.assert_allclose(engine.score([record], [completion.token_ids])[0], trainer, atol=1e-4)
        # transformers' own positions for the same batch are what the agreement above depends on not using
        theirs, _ = model.model.get_rope_index(batch["input_ids"], batch["mm_token_type_ids"],
                                               image_grid_thw=batch["image_grid_thw"],
                                               video_grid_thw=batch["video_grid_thw"],
                                               second_per_grid_ts=batch["second_per_grid_ts"],
                                               attention_mask=batch["attention_mask"])
        other, other_mask = completion_logprobs(model, batch,
                                                inputs={**forward_inputs(model, batch), "position_ids": theirs})
    assert np.abs(other[0][other_mask[0]].numpy() - trainer).max() > 1e-4


def test_the_rate_changes_the_positions(model_dir):
    """Same frames, another rate: other temporal positions, so other log-probs (the rate is not decoration)."""
    processor, model = load_processor(model_dir), load_model(model_dir, trainable=False)
    tokens = [11, 12, 13, 14]
    with torch.no_grad():
        a = completion_logprobs(model, build_batch(processor, [_record(2.0)], [tokens]))[0]
        b = completion_logprobs(model, build_batch(processor, [dataclasses.replace(_record(2.0), video_fps=0.5)],
                                                   [tokens]))[0]
    assert (a - b).abs().max() > 1e-4


def test_a_group_scored_on_its_shared_prompt_gets_the_engines_logprobs(engine, model_dir):
    """A GRPO group: the trainer runs the prompt once and the G completions on its cache (``train/shared_prefix.py``),
    with Qwen2.5-VL's scaled video time, and still gets what the engine sampled with."""
    from seedr1.train.shared_prefix import can_share_prefix

    record = _record(1.5)
    group = engine.generate([record], Sampling(n=3, max_tokens=8, temperature=1.0))[0]
    processor, model = load_processor(model_dir), load_model(model_dir, trainable=False)
    batch = build_batch(processor, [record] * 3, [c.token_ids for c in group])
    assert can_share_prefix(model, batch)
    with torch.no_grad():
        logp, mask = completion_logprobs(model, batch)
    for i, completion in enumerate(group):
        np.testing.assert_allclose(completion.logprobs, logp[i][mask[i]].numpy(), atol=1e-4)


def test_a_weight_sync_loads_in_place_and_the_engine_follows(engine, model_dir):
    """Qwen2.5-VL is one of the architectures whose CPU engine loads synced weights in place
    (``seedr1.rollout.vllm_cpu_weights``): after a sync of moved weights, engine and trainer agree again."""
    from safetensors.torch import save

    assert engine.loads_in_place() == [True]  # asked in the engine core's own process
    record = _record(2.0)
    tokens = engine.generate([record], Sampling(n=1, max_tokens=8, temperature=1.0))[0][0].token_ids
    processor, model = load_processor(model_dir), load_model(model_dir, trainable=False)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        logp, mask = completion_logprobs(model, build_batch(processor, [record], [tokens]))
    want = logp[0][mask[0]].numpy()
    assert np.abs(np.asarray(engine.score([record], [tokens])[0]) - want).max() > 1e-2
    engine.update_weights(save({n: p.contiguous() for n, p in model.named_parameters()}))
    np.testing.assert_allclose(engine.score([record], [tokens])[0], want, atol=1e-4)
