"""After a weight sync, the vLLM engine and the trainer agree on the log-probs of a fixed completion."""
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


def _loads_in_place(worker) -> bool:
    from seedr1.rollout.vllm_cpu_weights import loads_in_place

    return loads_in_place(worker.model_runner.model)


def _replays(worker) -> bool:
    replay = getattr(worker, "_seedr1_replay", None)
    return replay is not None and replay.enabled and bool(replay.plan)


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

    assert engine.in_process  # the CPU build's engine core: payloads reach the workers as they are, arrays included
    # on CPU the engine's Linear layers compute from their own weights: the sync loads in place (vllm_cpu_weights)
    assert engine.llm.collective_rpc(_loads_in_place) == [True]
    engine.update_weights(save({n: p.contiguous() for n, p in model.named_parameters()}))
    np.testing.assert_allclose(engine.score([record], [tokens])[0], after, atol=1e-4)
    # the next sync repeats the first one's loader calls (vllm_cpu_weights.LoaderReplay) and lands the same way
    assert engine.llm.collective_rpc(_replays) == [True]
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


def test_buckets_keep_layers_whole_and_round_trip():
    from seedr1.rollout.weight_sync import flatten, layer_of, plan_buckets, unflatten

    assert layer_of("model.language_model.layers.3.self_attn.q_proj.weight") == "model.language_model.layers.3"
    assert layer_of("model.visual.merger.mlp.0.bias") == "model.visual.merger.mlp.0"
    assert layer_of("lm_head.weight") == "lm_head"
    state = {"emb.weight": torch.ones(10),  # 40 B
             "layers.0.q.weight": torch.full((2, 3), 2.0), "layers.0.k.weight": torch.full((2,), 2.5),  # 32 B
             "layers.1.q.weight": torch.arange(40, dtype=torch.float32),  # 160 B
             "layers.1.q.bias": torch.zeros(4, dtype=torch.bfloat16),
             "norm.weight": torch.full((5,), 3.0)}
    buckets = plan_buckets(state, bucket_bytes=64)
    # emb + layer 0 fit in 64 B (72 would not: layer 0 moves whole); layer 1 is larger than a bucket and goes alone
    assert [[m.name for m in b] for b in buckets] == [
        ["emb.weight"], ["layers.0.q.weight", "layers.0.k.weight"], ["layers.1.q.weight", "layers.1.q.bias"],
        ["norm.weight"]]
    assert buckets[2][1].dtype == "bfloat16"
    for b in buckets:
        flat = flatten(state, b, "cpu")
        for name, t in unflatten(flat, [tuple(m) for m in b]):  # plain tuples, as after an RPC
            assert torch.equal(t, state[name]) and t.dtype == state[name].dtype
    assert flatten(state, buckets[2], "cpu").dtype == torch.float32  # the widest dtype carries the bucket


def test_collective_sync_over_gloo_makes_engine_and_trainer_agree(engine, tiny_model_dir):
    """The GPU path's code on CPU: trainer rank 0 broadcasts buckets over a gloo group, the engine's worker
    receives and loads each one; small buckets so the weights arrive in many partial loads."""
    import threading

    from vllm.utils.network_utils import get_open_port

    from seedr1.rollout.weight_sync import broadcast, flatten, join_group, leave_group, plan_buckets

    record, processor = _record(7), load_processor(tiny_model_dir)
    tokens = engine.generate([record], Sampling(n=1, max_tokens=8, temperature=1.0, seed=4))[0][0].token_ids
    model = load_model(tiny_model_dir, trainable=False)
    torch.manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    want = _trainer_logprobs(model, processor, record, tokens)
    assert np.abs(np.asarray(engine.score([record], [tokens])[0]) - want).max() > 1e-2

    state = {n: p.detach().contiguous() for n, p in model.named_parameters()}
    buckets = plan_buckets(state, bucket_bytes=256 << 10)
    assert len(buckets) > 3
    port, box = get_open_port(), {}

    def trainer_rank0():  # a thread stands in for the trainer process: gloo ranks only need their own sockets
        pg = join_group("127.0.0.1", port, 0, 2, "gloo", 60)
        for b in buckets:
            broadcast(pg, flatten(state, b, "cpu"))
        box["pg"] = pg

    sender = threading.Thread(target=trainer_rank0)
    sender.start()
    assert engine.weight_group_size() == 1
    engine.join_weight_group("127.0.0.1", port, 1, 2, "gloo", 60)
    engine.receive_weights(buckets)
    sender.join(timeout=60)
    leave_group(box["pg"])
    np.testing.assert_allclose(engine.score([record], [tokens])[0], want, atol=1e-4)
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
