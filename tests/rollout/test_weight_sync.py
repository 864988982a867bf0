"""After a weight sync, the vLLM engine and the trainer agree on the log-probs of a fixed completion."""
import numpy as np
import pytest
import torch
from safetensors.torch import save

from seedr1.config import VLLMConfig
from seedr1.data.pipeline import PromptRecord
from seedr1.data.prompts import user_message
from seedr1.model.loading import load_model, load_processor
from seedr1.rollout.engine import Sampling
from seedr1.train.batch import build_batch, completion_logprobs


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from seedr1.rollout.vllm_engine import VLLMEngine

    return VLLMEngine(tiny_model_dir, VLLMConfig())


def _record(seed=0) -> PromptRecord:
    rng = np.random.default_rng(seed)
    return PromptRecord(sample_id="s0", kind="validation",
                        messages=user_message("What next?\nA. a\nB. b\nC. c\nD. d\n", True, True),
                        video=rng.integers(0, 255, (4, 56, 56, 3), dtype=np.uint8),
                        image=rng.integers(0, 255, (56, 56, 3), dtype=np.uint8), gold_letter="A")


def _trainer_logprobs(model, processor, record, tokens):
    with torch.no_grad():
        logp, mask = completion_logprobs(model, build_batch(processor, [record], [tokens]))
    return logp[0][mask[0]].numpy()


def test_sync_makes_engine_and_trainer_agree(engine, tiny_model_dir):
    record = _record()
    processor = load_processor(tiny_model_dir)
    completion = engine.generate([record], Sampling(n=1, max_tokens=8, temperature=1.0, seed=3))[0][0]
    tokens = completion.token_ids
    assert len(tokens) > 0

    model = load_model(tiny_model_dir, trainable=False)
    before = _trainer_logprobs(model, processor, record, tokens)
    # sampling log-probs and scoring agree with the trainer on the same (initial) weights
    np.testing.assert_allclose(engine.score([record], [tokens])[0], before, atol=1e-4)
    np.testing.assert_allclose(completion.logprobs, before, atol=1e-4)

    torch.manual_seed(1)
    with torch.no_grad():  # a "training step": every weight moves
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    after = _trainer_logprobs(model, processor, record, tokens)
    assert np.abs(after - before).max() > 1e-2  # the change is visible, so agreement below is not luck

    engine.update_weights(save({n: p.contiguous() for n, p in model.named_parameters()}))
    np.testing.assert_allclose(engine.score([record], [tokens])[0], after, atol=1e-4)
    # the encoder cache was reset: a new video request after the sync still works
    again = engine.generate([_record(5)], Sampling(n=2, max_tokens=4, temperature=1.0, seed=0))[0]
    assert len(again) == 2
