"""After a weight sync, the vLLM engine and the trainer agree on the log-probs of a fixed completion.

The engine core runs in its own process (vLLM's default, the shape GPUs run); syncs go through vLLM's weight-transfer
worker methods with seedr1's engine (rollout.weight_transfer) and trainer side (train.weight_sync)."""
import numpy as np
import pytest
import torch
from safetensors.torch import save

from seedr1.config import VLLMConfig
from seedr1.data.pipeline import PromptRecord
from seedr1.data.prompts import user_message
from seedr1.model.loading import load_model, load_processor
from seedr1.rollout.engine import Sampling, array_state
from seedr1.train.batch import build_batch, completion_logprobs


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from seedr1.rollout.vllm_engine import VLLMEngine

    # compiled (vLLM's default; the e2e jobs run the tiny configs' eager engine): the in-place loads must reach the
    # compiled model
    engine = VLLMEngine(tiny_model_dir, VLLMConfig(enforce_eager=False))
    assert engine.llm.llm_engine.vllm_config.compilation_config.mode > 0
    return engine


def _record(seed=0) -> PromptRecord:
    rng = np.random.default_rng(seed)
    return PromptRecord(sample_id="s0", kind="validation",
                        messages=user_message("What next?\nA. a\nB. b\nC. c\nD. d\n", True, True),
                        # 8 frames: 4 temporal patches, more than the 2 rows of patches, the case where M-RoPE
                        # layouts can disagree after the video (see seedr1.train.batch.mrope_positions)
                        video=rng.integers(0, 255, (8, 56, 56, 3), dtype=np.uint8),
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

    assert not engine.in_process  # its own process: payloads reach the workers as safetensors bytes
    # on CPU the engine's Linear layers compute from their own weights: the sync loads in place (vllm_cpu_weights)
    assert engine.loads_in_place() == [True]
    engine.update_weights(save({n: p.contiguous() for n, p in model.named_parameters()}))
    np.testing.assert_allclose(engine.score([record], [tokens])[0], after, atol=1e-4)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    again_moved = _trainer_logprobs(model, processor, record, tokens)
    assert np.abs(again_moved - after).max() > 1e-2
    arrays = array_state(dict(model.named_parameters()))  # what the object store carries: numpy, read-only there
    for a in arrays.values():
        a.flags.writeable = False
    engine.update_weights(arrays)
    np.testing.assert_allclose(engine.score([record], [tokens])[0], again_moved, atol=1e-4)
    # the encoder cache was reset: a new video request after the sync still works
    again = engine.generate([_record(5)], Sampling(n=2, max_tokens=4, temperature=1.0, seed=0))[0]
    assert len(again) == 2


def test_buckets_are_cut_the_same_on_both_sides_and_round_trip():
    import torch

    from seedr1.rollout.weight_transfer import bucket_bounds, tensor_nbytes, unpack

    # at most 64 B a bucket; a tensor larger than a bucket goes alone
    assert bucket_bounds([40, 24, 8, 160, 8, 20], 64) == [(0, 2), (2, 3), (3, 4), (4, 6)]
    assert bucket_bounds([], 64) == [] and bucket_bounds([100], 64) == [(0, 1)]
    state = {"a": torch.arange(6, dtype=torch.float32).view(2, 3), "b": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
             "c": torch.full((3,), 7.0)}
    names, shapes = list(state), [list(t.shape) for t in state.values()]
    dtypes = [str(t.dtype).removeprefix("torch.") for t in state.values()]
    assert [tensor_nbytes(sh, d) for sh, d in zip(shapes, dtypes)] == [24, 4, 12]
    packed = torch.cat([t.contiguous().view(-1).view(torch.uint8) for t in state.values()])
    for name, t in unpack(packed, names, shapes, dtypes):
        assert torch.equal(t, state[name]) and t.dtype == state[name].dtype


class EngineClient:
    """vLLM's weight-sync client protocol straight onto one engine, as ``RolloutActorsClient`` does through Ray for
    each actor; it records the calls."""

    def __init__(self, engine):
        self.engine, self.calls, self.world_size, self.version, self.engine_seconds = engine, [], 2, None, 0.0

    def init_weight_transfer_engine(self, info):
        self.engine.init_weight_transfer({**info, "rank_offset": 1})

    def start_weight_update(self):
        self.calls.append("start")
        self.engine.start_weight_update()

    def update_weights(self, info):
        self.calls.append("update")
        if "ref" in info:  # what RolloutWorker does with a bucket from the object store
            import ray

            info = {**{k: v for k, v in info.items() if k != "ref"}, "packed": ray.get(info["ref"]).tobytes()}
        self.engine.update_weight_chunk(info)

    def finish_weight_update(self, weight_version=None):
        self.calls.append("finish")
        self.engine.finish_weight_update()


def _moved_model(tiny_model_dir, seed):
    model = load_model(tiny_model_dir, trainable=False)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _sync_through_transfer_api(engine, model, wire, bucket_bytes):
    from seedr1.train.weight_sync import SeedR1TrainerEngine, ZeroWeightSource

    client = EngineClient(engine)
    sender = SeedR1TrainerEngine(client, ZeroWeightSource(model, trainable_only=False), True, wire, bucket_bytes, 60,
                                 host="127.0.0.1")
    sender.connect()
    stats = {"bytes": 0, "largest_message": 0, "buckets": 0}
    sender.send_weights(stats)
    sender.shutdown()
    return client.calls, stats


@pytest.mark.parametrize("wire", ["gloo", "object_store"])
def test_a_sync_is_one_weight_update_in_buckets_and_engine_and_trainer_agree(engine, tiny_model_dir, wire, request):
    """The model split into many buckets: one start/finish on the engine, no message larger than a bucket, and the
    engine's log-probs equal the trainer's to 1e-6 (fp32)."""
    if wire == "object_store":
        request.getfixturevalue("ray_cluster")  # the buckets go through Ray's object store
    record, processor = _record(7), load_processor(tiny_model_dir)
    tokens = engine.generate([record], Sampling(n=1, max_tokens=8, temperature=1.0, seed=4))[0][0].token_ids
    model = _moved_model(tiny_model_dir, 2 if wire == "gloo" else 3)
    want = _trainer_logprobs(model, processor, record, tokens)
    assert np.abs(np.asarray(engine.score([record], [tokens])[0]) - want).max() > 1e-2

    bucket = 320 << 10  # the largest tensor (the embedding, 294 KiB) fits; the model (2.4 MB) is many buckets
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    calls, stats = _sync_through_transfer_api(engine, model, wire, bucket)
    seen = engine.transfer_stats()[0]  # what the engine's worker (in the engine core process) received
    # one weight update whatever the number of buckets (gloo: every bucket inside one update_weights call)
    assert calls == ["start", "update", "finish"] if wire == "gloo" else \
        calls == ["start"] + ["update"] * stats["buckets"] + ["finish"]
    assert stats["buckets"] == seen["buckets"] >= 3 and stats["bytes"] == model_bytes
    assert stats["largest_message"] == seen["largest_bucket"] <= bucket
    assert seen["replays"]  # loaded in place, by the loader calls recorded at the first load (LoaderReplay)
    # 1e-6 relative: ~2e-6 nats at |log p| ~ 7.6, a few fp32 rounding steps of two different kernels
    np.testing.assert_allclose(engine.score([record], [tokens])[0], want, atol=0, rtol=1e-6)
    assert len(engine.generate([_record(8)], Sampling(n=2, max_tokens=4, temperature=1.0, seed=0))[0]) == 2


def test_vision_tokens_are_never_sampled(engine, tiny_model_dir):
    """Weights that make <|image_pad|> and the other vision tokens by far the most likely next token: the trainer's
    forward confirms it, and the engine still never samples them (a sampled one breaks the next forward)."""
    from seedr1.model.tiny import vision_token_ids

    record, processor = _record(9), load_processor(tiny_model_dir)
    banned = vision_token_ids(processor.tokenizer)
    model = load_model(tiny_model_dir, trainable=False)
    seen = {}
    hook = model.lm_head.register_forward_hook(lambda m, args, out: seen.update(h=args[0][0, -1].detach().clone()))
    with torch.no_grad():  # the trainer's forward on the prompt alone
        completion_logprobs(model, build_batch(processor, [record], [[]]))
    hook.remove()
    h = seen["h"]
    with torch.no_grad():  # logit of each vision token at the first answer position: 30, far above the rest
        model.lm_head.weight[banned] = 30.0 * h / h.dot(h)
        logits = model.lm_head(h)
    assert int(logits.argmax()) in banned and float(logits[banned].min() - logits.max()) > -1e-3
    assert float(torch.log_softmax(logits, -1)[banned].logsumexp(0)) > -1e-3  # unbanned: ~always a vision token
    engine.update_weights(save({n: p.contiguous() for n, p in model.named_parameters()}))
    out = engine.generate([record], Sampling(n=16, max_tokens=3, temperature=1.0, seed=0))[0]
    assert len(out) == 16 and all(c.token_ids and not set(banned) & set(c.token_ids) for c in out)


def test_completion_text_is_what_vllm_would_detokenize(engine, tiny_model_dir):
    """Without stop strings the engine decodes the text itself (vLLM's detokenizer off, for speed); with them vLLM
    detokenizes. Either way a completion's text is its token ids decoded without special tokens, less a trailing
    incomplete UTF-8 character (random weights sample plenty of byte tokens), and the log-probs cover every token."""
    tok = load_processor(tiny_model_dir).tokenizer
    for stop in (None, ["\x00never"]):  # a stop string that never occurs turns vLLM's detokenizer on
        out = engine.generate([_record(11), _record(12)], Sampling(n=8, max_tokens=12, temperature=1.0, stop=stop))
        completions = [c for group in out for c in group]
        assert len(completions) == 16 and len({tuple(c.token_ids) for c in completions}) > 1
        for c in completions:
            assert c.text == tok.decode(c.token_ids, skip_special_tokens=True).rstrip("\ufffd"), (stop, c.token_ids)
            assert len(c.logprobs) == len(c.token_ids) and all(lp <= 0.0 for lp in c.logprobs)


def test_stop_strings_cut_the_text(engine):
    """Stop strings still work (they need vLLM's detokenizer): every letter is a stop string, so no text keeps one,
    and completions that would have had letters end early with finish_reason "stop"."""
    letters = list("abcdefghijklmnopqrstuvwxyz")
    out = engine.generate([_record(13)] * 4, Sampling(n=8, max_tokens=12, temperature=1.0, stop=letters))
    completions = [c for group in out for c in group]
    assert not any(set(c.text) & set(letters) for c in completions)
    assert sum(c.finish_reason == "stop" and len(c.token_ids) < 12 for c in completions) >= 8


def test_an_engine_that_cannot_load_in_place_runs_one_layerwise_reload_per_sync(tiny_model_dir, monkeypatch):
    """The GPU engines' way (and any architecture without in-place loads): vLLM's CPU backend packs the Linear
    weights, so the buckets load through vLLM's layerwise reload, started once and finished once per sync however
    many buckets arrive, and the engine follows the trainer to fp32 precision."""
    from seedr1.rollout import vllm_engine_factory
    from seedr1.rollout.vllm_engine import VLLMEngine

    monkeypatch.setattr(vllm_engine_factory, "in_place_capable", lambda model_dir: False)
    engine = VLLMEngine(tiny_model_dir, VLLMConfig(enforce_eager=True))
    assert engine.loads_in_place() == [False]
    record, processor = _record(21), load_processor(tiny_model_dir)
    tokens = engine.generate([record], Sampling(n=1, max_tokens=8, temperature=1.0, seed=5))[0][0].token_ids
    for seed in (4, 5):  # twice: the second reload starts from the first one's packed layers
        model = _moved_model(tiny_model_dir, seed)
        want = _trainer_logprobs(model, processor, record, tokens)
        assert np.abs(np.asarray(engine.score([record], [tokens])[0]) - want).max() > 1e-2
        calls, stats = _sync_through_transfer_api(engine, model, "gloo", 320 << 10)
        seen = engine.transfer_stats()[0]
        assert calls == ["start", "update", "finish"] and stats["buckets"] == seen["buckets"] >= 3
        assert not seen["replays"]  # vLLM's layerwise reload, not seedr1's in-place loader replay
        np.testing.assert_allclose(engine.score([record], [tokens])[0], want, atol=0, rtol=1e-6)
    assert len(engine.generate([_record(22)], Sampling(n=2, max_tokens=4, temperature=1.0, seed=0))[0]) == 2
    engine.llm.llm_engine.engine_core.shutdown()  # its engine core process, not left to the end of the session


def test_top_k_1_samples_the_greedy_answer(engine):
    """rollout.top_k reaches vLLM's sampler: at temperature 1 with k=1 every sample is the greedy completion;
    without it the samples differ."""
    from seedr1.rollout.engine import Sampling

    record = _record(7)
    greedy = engine.generate([record], Sampling(n=1, max_tokens=8, temperature=0.0))[0][0].token_ids
    top1 = engine.generate([record], Sampling(n=4, max_tokens=8, temperature=1.0, top_k=1))[0]
    assert all(c.token_ids == greedy for c in top1)
    free = engine.generate([record], Sampling(n=4, max_tokens=8, temperature=1.0))[0]
    assert any(c.token_ids != greedy for c in free)
