"""A batch's G completions of a prompt run on one forward of the prompt (its cached keys and values): the same
log-probs, entropies and gradients as one full sequence per completion, with each prompt through the language
model once."""
import numpy as np
import pytest
import torch

from seedr1.data.pipeline import PromptRecord
from seedr1.train.batch import build_batch, completion_logprobs, rope_positions
from seedr1.train.shared_prefix import can_share_prefix


def _run(model, batch, shared: bool, temperature: float = 1.0):
    """Log-probs, mask, entropies and every parameter's gradient of ``sum(log-probs)``."""
    model.zero_grad(set_to_none=True)
    logp, mask, entropy = completion_logprobs(model, batch, with_entropy=True, temperature=temperature,
                                              positions=rope_positions(model, batch), shared_prefix=shared)
    (logp * mask).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return logp.detach(), mask, entropy, grads


def _assert_same(ours, theirs):
    (logp, mask, entropy, grads), (ref_logp, ref_mask, ref_entropy, ref_grads) = ours, theirs
    assert torch.equal(mask, ref_mask) and logp.shape == ref_logp.shape
    torch.testing.assert_close(logp[mask], ref_logp[mask], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(entropy[mask], ref_entropy[mask], rtol=1e-5, atol=1e-5)
    assert grads.keys() == ref_grads.keys() and len(grads) > 0
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def _language_model_calls(model, batch, shared: bool) -> list[tuple[int, int]]:
    """(rows, tokens) of each pass through the language model."""
    calls = []
    hook = model.model.language_model.register_forward_pre_hook(
        lambda m, args, kwargs: calls.append(tuple(kwargs["inputs_embeds"].shape[:2])), with_kwargs=True)
    try:
        with torch.no_grad():
            completion_logprobs(model, batch, shared_prefix=shared)
    finally:
        hook.remove()
    return calls


def test_shared_prefix_equals_full_sequences(model_and_processor, grouped_batch):
    """Interleaved prompts of two lengths (one with a video), completions of 1-4 tokens, at a temperature: the
    gradients of every parameter, vision tower included, match."""
    model, _ = model_and_processor
    assert can_share_prefix(model, grouped_batch)
    _assert_same(_run(model, grouped_batch, True, 0.7), _run(model, grouped_batch, False, 0.7))


def test_each_prompt_goes_through_the_language_model_once(model_and_processor, grouped_batch):
    model, _ = model_and_processor
    plen, clen = grouped_batch["prompt_lens"], grouped_batch["completion_lens"]
    assert _language_model_calls(model, grouped_batch, shared=True) == [(2, int(plen.max())), (6, int(clen.max()))]
    assert _language_model_calls(model, grouped_batch, shared=False) == [tuple(grouped_batch["input_ids"].shape)]


def test_distinct_prompts_run_as_full_sequences(model_and_processor, media_record):
    """Nothing to share (e.g. SFT): one forward of the full sequences."""
    model, processor = model_and_processor
    rng = np.random.default_rng(2)
    batch = build_batch(processor, [media_record("x", rng, False), media_record("y", rng, False)], [[15, 16], [17]])
    assert not can_share_prefix(model, batch)
    assert _language_model_calls(model, batch, shared=True) == [tuple(batch["input_ids"].shape)]


@pytest.mark.parametrize("completions", [[[15, 16], [17], []], [[15], [17]]], ids=["with-an-empty-one", "one-token-each"])
def test_text_only_prompts_and_short_completions(model_and_processor, completions):
    """No media (positions count up, computed by the shared path itself); an empty completion; completions of one
    token, whose only logits come from the prompt's forward (no second forward)."""
    model, processor = model_and_processor
    text = PromptRecord(sample_id="t", kind="train", gold_letter="A", video=None, image=None,
                        messages=[{"role": "user", "content": [{"type": "text", "text": "Hi there"}]}])
    batch = build_batch(processor, [text] * len(completions), completions)
    assert rope_positions(model, batch) is None and can_share_prefix(model, batch)
    _assert_same(_run(model, batch, True), _run(model, batch, False))
    calls = _language_model_calls(model, batch, shared=True)
    assert len(calls) == (1 if max(map(len, completions)) == 1 else 2)


def test_not_under_gradient_checkpointing_while_training(tiny_model_dir, grouped_batch):
    """Checkpointed layers drop the cache during training: such a model runs full sequences instead."""
    from seedr1.model.loading import load_model

    model = load_model(tiny_model_dir)
    model.gradient_checkpointing_enable()
    model.train()
    assert not can_share_prefix(model, grouped_batch)
    model.eval()
    assert can_share_prefix(model, grouped_batch)
