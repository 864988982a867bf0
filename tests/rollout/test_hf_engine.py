"""The transformers engine behind the same interface: n completions with media, no vision tokens, scoring."""
import numpy as np
import torch
from safetensors.torch import save

from seedr1.data.pipeline import PromptRecord
from seedr1.data.prompts import user_message
from seedr1.model.tiny import vision_token_ids
from seedr1.rollout.engine import Sampling, array_state
from seedr1.rollout.hf_engine import HFEngine


def test_hf_engine_generates_scores_and_updates(tiny_model_dir):
    rng = np.random.default_rng(0)
    record = PromptRecord(sample_id="h0", kind="validation", gold_letter="A",
                          messages=user_message("What next?\nA. a\nB. b\nC. c\nD. d\n", True, True),
                          # 8 frames: more temporal patches than rows, where transformers' own M-RoPE layout
                          # differs from the trainer's (and vLLM's): the agreement below needs the engine's fix
                          video=rng.integers(0, 255, (8, 56, 56, 3), dtype=np.uint8),
                          image=rng.integers(0, 255, (56, 56, 3), dtype=np.uint8))
    engine = HFEngine(tiny_model_dir)
    completions = engine.generate([record], Sampling(n=3, max_tokens=6, temperature=1.0, seed=0))[0]
    assert len(completions) == 3
    banned = set(vision_token_ids(engine.processor.tokenizer))
    for c in completions:
        assert 0 < len(c.token_ids) <= 6 and not banned & set(c.token_ids)
    scores = engine.score([record] * 3, [c.token_ids for c in completions])
    assert [len(s) for s in scores] == [len(c.token_ids) for c in completions]
    assert all(np.isfinite(s).all() and max(s) <= 0 for s in scores)
    # The sampling log-probs are the behaviour policy's (one-step off-policy training's importance ratio needs
    # them): the same numbers the trainer-side forward gives for the same tokens.
    for c, s in zip(completions, scores):
        np.testing.assert_allclose(c.logprobs, s, atol=1e-4)

    original = {n: p.detach().clone() for n, p in engine.model.named_parameters()}
    state = {n: (p + 0.05 * torch.randn_like(p)).contiguous() for n, p in engine.model.named_parameters()}
    engine.update_weights(save(state))
    moved = engine.score([record], [completions[0].token_ids])[0]
    assert np.abs(np.array(moved) - np.array(scores[0])).max() > 1e-3
    # back to the first weights, as read-only numpy arrays (what the object store hands an actor)
    arrays = array_state(original)
    for a in arrays.values():
        a.flags.writeable = False
    engine.update_weights(arrays)
    np.testing.assert_allclose(engine.score([record], [completions[0].token_ids])[0], scores[0], atol=1e-6)


def test_completion_texts_drop_a_trailing_partial_character(tiny_model_dir):
    """Both engines report text this way; a sample cut inside a multi-byte character must not end in U+FFFD."""
    from seedr1.model.loading import load_processor
    from seedr1.rollout.engine import completion_texts

    tok = load_processor(tiny_model_dir).tokenizer
    ids = tok.encode("A é", add_special_tokens=False)
    assert tok.decode(ids[:-1]).endswith("\ufffd")  # the last byte of "é" is its own token here
    assert completion_texts(tok, [ids[:-1], ids, ids + [tok.eos_token_id]]) == ["A ", "A é", "A é"]


def test_a_seeded_prompt_draws_the_same_samples_alone_or_behind_another(tiny_model_dir):
    rng = np.random.default_rng(1)

    def record(sid):
        return PromptRecord(sample_id=sid, kind="validation", gold_letter="A",
                            messages=user_message("What next?\nA. a\nB. b\nC. c\nD. d\n", False, True),
                            video=None, image=rng.integers(0, 255, (56, 56, 3), dtype=np.uint8))

    first, second = record("s0"), record("s1")
    engine = HFEngine(tiny_model_dir)
    sampling = Sampling(n=2, max_tokens=6, temperature=1.0, seed=3)
    alone = engine.generate([second], sampling)[0]
    behind = engine.generate([first, second], sampling)[1]  # a resumed or re-batched evaluation
    assert [c.token_ids for c in alone] == [c.token_ids for c in behind]
    other = engine.generate([second], Sampling(n=2, max_tokens=6, temperature=1.0, seed=4))[0]
    assert [c.token_ids for c in other] != [c.token_ids for c in alone]  # the seed does reach the sampler


def test_engine_device_is_the_actors_gpu_in_bf16_else_cpu_fp32(monkeypatch):
    from seedr1.rollout import hf_engine

    assert hf_engine.engine_device() == (torch.device("cpu"), torch.float32)  # no GPU here
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert hf_engine.engine_device() == (torch.device("cuda", 0), torch.bfloat16)


def test_hf_engine_runs_in_the_chosen_dtype_with_inputs_on_the_models_device(tiny_model_dir, monkeypatch):
    """The engine loads in engine_device()'s dtype (bf16 here stands in for a GPU's) and hands generate and the
    scoring forward tensors on the model's device; on CPU the default stays fp32."""
    from seedr1.rollout import hf_engine

    assert {p.dtype for p in HFEngine(tiny_model_dir).model.parameters()} == {torch.float32}
    monkeypatch.setattr(hf_engine, "engine_device", lambda: (torch.device("cpu"), torch.bfloat16))
    engine = HFEngine(tiny_model_dir)
    assert {p.dtype for p in engine.model.parameters()} == {torch.bfloat16}
    moved = []
    real_to = hf_engine._to

    def spy(inputs, device):
        out = real_to(inputs, device)
        moved.append({v.device for v in out.values() if isinstance(v, torch.Tensor)})
        return out

    monkeypatch.setattr(hf_engine, "_to", spy)
    rng = np.random.default_rng(3)
    record = PromptRecord(sample_id="d0", kind="validation", gold_letter="A",
                          messages=user_message("What next?\nA. a\nB. b\nC. c\nD. d\n", True, True),
                          video=rng.integers(0, 255, (4, 56, 56, 3), dtype=np.uint8),
                          image=rng.integers(0, 255, (56, 56, 3), dtype=np.uint8))
    completions = engine.generate([record], Sampling(n=2, max_tokens=4, temperature=1.0, seed=0))[0]
    scores = engine.score([record] * 2, [c.token_ids for c in completions])
    assert moved and all(devices == {engine.device} for devices in moved)
    for c, s in zip(completions, scores):  # bf16: the sampling and scoring forwards agree to bf16's precision
        assert len(s) == len(c.token_ids) and np.isfinite(s).all()
        np.testing.assert_allclose(c.logprobs, s, atol=0.1)


def test_top_k_1_samples_the_greedy_answer(tiny_model_dir):
    """top_k reaches the sampler: at temperature 1 with k=1 every sample is the greedy completion; without it the
    samples differ."""
    record = PromptRecord(sample_id="k0", kind="validation", gold_letter="A",
                          messages=user_message("What next?\nA. a\nB. b\nC. c\nD. d\n", False, True), video=None,
                          image=np.random.default_rng(2).integers(0, 255, (56, 56, 3), dtype=np.uint8))
    engine = HFEngine(tiny_model_dir)
    greedy = engine.generate([record], Sampling(n=1, max_tokens=8, temperature=0.0))[0][0].token_ids
    top1 = engine.generate([record], Sampling(n=4, max_tokens=8, temperature=1.0, top_k=1, seed=5))[0]
    assert all(c.token_ids == greedy for c in top1)
    free = engine.generate([record], Sampling(n=4, max_tokens=8, temperature=1.0, seed=5))[0]
    assert any(c.token_ids != greedy for c in free)
