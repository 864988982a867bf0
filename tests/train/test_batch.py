"""Trainer batches: each distinct prompt's media are encoded once and shared by its completions, with the same
log-probs and gradients as transformers' own forward on per-completion media."""
import numpy as np
import torch

from seedr1.data.pipeline import PromptRecord
from seedr1.data.prompts import user_message
from seedr1.train.batch import build_batch, completion_logprobs, forward_inputs, rope_positions, unshared_inputs


def test_each_prompt_keeps_its_media_once(grouped_batch):
    assert len(grouped_batch["image_grid_thw"]) == 2 and len(grouped_batch["video_grid_thw"]) == 1
    assert grouped_batch["image_owner"].tolist() == [0, 1, 0, 1, 0, 1]
    assert grouped_batch["video_owner"].tolist() == [0, 0, 0]  # the video slots of a's three completions
    assert grouped_batch["prompt_owner"].tolist() == [0, 1, 0, 1, 0, 1]


def test_one_sample_in_two_epochs_keeps_each_epochs_prompt(model_and_processor, media_record):
    """Across an epoch boundary one batch can hold a sample twice, its options in another order: each copy gets its
    own prompt (keyed by sample_id alone, the second took the first's, under its own gold letter)."""
    rng = np.random.default_rng(1)
    first = media_record("s", rng, video=False)
    second = PromptRecord(**{**first.__dict__, "gold_letter": "C",
                             "messages": user_message("What next?\nA. c\nB. d\nC. a\nD. b\n", False, True)})
    batch = build_batch(model_and_processor[1], [first, second], [[11], [11]])
    ids = batch["input_ids"]
    assert not torch.equal(ids[0], ids[1]) and batch["prompt_owner"].tolist() == [0, 1]
    alone = build_batch(model_and_processor[1], [second], [[11]])["input_ids"][0]
    assert torch.equal(ids[1][:len(alone)], alone)


def test_shared_encoding_matches_per_completion_forward(model_and_processor, grouped_batch):
    model, _ = model_and_processor
    logp, mask = completion_logprobs(model, grouped_batch)
    model.zero_grad()
    (logp * mask).sum().backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters() if ".visual." in f".{n}"}
    model.zero_grad()
    ref_logp, ref_mask = completion_logprobs(model, grouped_batch, inputs=unshared_inputs(grouped_batch))
    (ref_logp * ref_mask).sum().backward()
    assert torch.equal(mask, ref_mask)
    torch.testing.assert_close(logp[mask], ref_logp[mask], rtol=1e-5, atol=1e-5)
    assert any(g.abs().sum() > 0 for g in ours.values())  # the vision tower is trained through the shared outputs
    for n, g in ours.items():
        torch.testing.assert_close(g, model.get_parameter(n).grad, rtol=1e-4, atol=1e-6)


def test_vision_tower_runs_once_per_distinct_prompt(model_and_processor, grouped_batch):
    model, _ = model_and_processor
    patches = []
    hook = model.model.visual.register_forward_hook(lambda m, args, out: patches.append(args[0].shape[0]))
    try:
        with torch.no_grad():
            completion_logprobs(model, grouped_batch)
    finally:
        hook.remove()
    distinct = int(grouped_batch["image_grid_thw"].prod(-1).sum() + grouped_batch["video_grid_thw"].prod(-1).sum())
    assert sum(patches) == distinct  # not 3x: the completions of a prompt share its encoding


def test_positions_are_shared_and_text_only_batches_need_none(model_and_processor, grouped_batch):
    model, processor = model_and_processor
    positions = rope_positions(model, grouped_batch)
    assert positions.shape == (3, *grouped_batch["input_ids"].shape)
    assert forward_inputs(model, grouped_batch, positions=positions)["position_ids"] is positions
    text_only = PromptRecord(sample_id="t", kind="train", gold_letter="A", video=None, image=None,
                             messages=[{"role": "user", "content": [{"type": "text", "text": "Hi"}]}])
    batch = build_batch(processor, [text_only, text_only], [[5, 6], [7]])
    assert rope_positions(model, batch) is None and "position_ids" not in forward_inputs(model, batch)


def test_logprobs_equal_a_full_forward_read_by_hand(model_and_processor, grouped_batch):
    """Prompts of different lengths (a has a video, b not): the kept logit window still covers every completion."""
    model, _ = model_and_processor
    plen, clen = grouped_batch["prompt_lens"].tolist(), grouped_batch["completion_lens"].tolist()
    assert len(set(plen)) == 2
    with torch.no_grad():
        logp, mask = completion_logprobs(model, grouped_batch)
        full = model(**unshared_inputs(grouped_batch)).logits.log_softmax(-1)  # [B, T, V]: every position
    ids = grouped_batch["input_ids"]
    for i in range(len(plen)):
        expected = torch.stack([full[i, plen[i] - 1 + j, ids[i, plen[i] + j]] for j in range(clen[i])])
        torch.testing.assert_close(logp[i][mask[i]], expected, rtol=1e-5, atol=1e-5)


def test_logprobs_at_a_temperature_are_those_of_the_tempered_softmax(model_and_processor, grouped_batch):
    """The policy the rollouts sampled from at T: log softmax(logits / T), read by hand (and its entropy)."""
    model, _ = model_and_processor
    plen, clen = grouped_batch["prompt_lens"].tolist(), grouped_batch["completion_lens"].tolist()
    with torch.no_grad():
        logp, mask, entropy = completion_logprobs(model, grouped_batch, with_entropy=True, temperature=2.0)
        at_one = completion_logprobs(model, grouped_batch)[0]
        logits = model(**unshared_inputs(grouped_batch)).logits / 2.0
    full = logits.log_softmax(-1)
    ids = grouped_batch["input_ids"]
    for i in range(len(plen)):
        rows = [plen[i] - 1 + j for j in range(clen[i])]
        expected = torch.stack([full[i, r, ids[i, r + 1]] for r in rows])
        torch.testing.assert_close(logp[i][mask[i]], expected, rtol=1e-5, atol=1e-5)
        expected_entropy = torch.stack([-(full[i, r].exp() * full[i, r]).sum() for r in rows])
        torch.testing.assert_close(entropy[i][mask[i]], expected_entropy, rtol=1e-4, atol=1e-4)
    assert (logp[mask] - at_one[mask]).abs().max() > 1e-2  # T matters for these logits


def test_mrope_positions_resume_after_a_media_block_at_its_largest_id():
    # 2 text, an image (grid 1x4x4, merge 2: 1x2x2 tokens), 1 text, a video of 4 temporal patches (4x4x4: 4x2x2),
    # 2 text. After the video the text resumes at its largest id + 1 (the temporal axis reaches 3 there), as vLLM
    # computes it; transformers 5.19 would resume at max(h, w) = 2 and put those tokens 2 positions earlier.
    from seedr1.train.batch import mrope_positions

    kinds = [0, 0] + [1] * 4 + [0] + [2] * 16 + [0, 0]
    types = torch.tensor([kinds + [0]])  # one padding position at the end
    mask = torch.tensor([[1] * len(kinds) + [0]])
    pos = mrope_positions(types, mask, 2, image_grid_thw=torch.tensor([[1, 4, 4]]),
                          video_grid_thw=torch.tensor([[4, 4, 4]]))
    t, h, w = pos[:, 0].tolist()
    assert t[:7] == [0, 1, 2, 2, 2, 2, 4] and h[:7] == [0, 1, 2, 2, 3, 3, 4] and w[:7] == [0, 1, 2, 3, 2, 3, 4]
    assert t[7:23] == [5] * 4 + [6] * 4 + [7] * 4 + [8] * 4 and h[7:11] == [5, 5, 6, 6] and w[7:11] == [5, 6, 5, 6]
    assert [t[23], t[24]] == [9, 10] and [h[23], w[24]] == [9, 10]  # 8 (the video's largest id) + 1, not 5 + 2
    assert [t[25], h[25], w[25]] == [0, 0, 0]  # padding


def test_mrope_positions_space_video_time_by_its_scale():
    # Qwen2.5-VL: a video's temporal ids step by tokens_per_second x seconds per temporal patch, truncated (vLLM's
    # int64 cast); the text after it resumes at the block's largest id + 1. 1 text, a video of 3 temporal patches
    # (3x2x2 grid, merge 2: 3 tokens of 1x1), 1 text; scale 2.5 -> temporal ids 1 + [0, 2, 5].
    from seedr1.train.batch import mrope_positions

    types, mask = torch.tensor([[0, 2, 2, 2, 0]]), torch.ones(1, 5, dtype=torch.long)
    pos = mrope_positions(types, mask, 2, video_grid_thw=torch.tensor([[3, 2, 2]]), video_time_scale=[2.5])
    assert pos[0, 0].tolist() == [0, 1, 3, 6, 7] and pos[1, 0].tolist() == [0, 1, 1, 1, 7]
    assert mrope_positions(types, mask, 2, video_grid_thw=torch.tensor([[3, 2, 2]]))[0, 0].tolist() == [0, 1, 2, 3, 4]
