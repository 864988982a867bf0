"""trainer.gradient_checkpointing: the same loss, log-probs and gradients as without (the shared-prompt path steps
aside under it while training: transformers drops the cache then); HF checkpoints keep the policy's dtype."""
import json

import pytest
import torch
from safetensors import safe_open

from seedr1.config import AlgoConfig, TrainerConfig
from seedr1.train.batch import completion_logprobs, rope_positions
from seedr1.train.policy import PolicyTrainer
from seedr1.train.shared_prefix import can_share_prefix


def _grads(model, batch):
    """Log-probs and every parameter's gradient of sum(log-probs), the shared-prompt path asked for."""
    model.zero_grad(set_to_none=True)
    logp, mask = completion_logprobs(model, batch, positions=rope_positions(model, batch), shared_prefix=True)
    (logp * mask).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return logp.detach()[mask], grads


def test_checkpointed_forward_gives_the_same_log_probs_and_gradients(tiny_model_dir, grouped_batch):
    from seedr1.model.loading import load_model

    plain, checkpointed = load_model(tiny_model_dir), load_model(tiny_model_dir)
    checkpointed.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert can_share_prefix(plain, grouped_batch) and not can_share_prefix(checkpointed, grouped_batch)
    (logp, grads), (ref_logp, ref_grads) = _grads(checkpointed, grouped_batch), _grads(plain, grouped_batch)
    torch.testing.assert_close(logp, ref_logp, rtol=1e-5, atol=1e-5)
    assert grads.keys() == ref_grads.keys() and len(grads) > 0
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    checkpointed.eval()  # not training: the cache survives, the shared-prompt path runs again
    assert can_share_prefix(checkpointed, grouped_batch)


def test_a_step_with_gradient_checkpointing_equals_one_without(one_rank_group, tiny_model_dir, interleaved_samples):
    """One GRPO step (KL term, shared prompts) with trainer.gradient_checkpointing: same statistics and parameters."""
    samples = interleaved_samples(7)
    results = {}
    for checkpointing in (True, False):
        cfg = TrainerConfig(num_workers=1, zero_stage=2, lr=1e-3, micro_batch_size=3,
                            gradient_checkpointing=checkpointing)
        trainer = PolicyTrainer(tiny_model_dir, cfg, AlgoConfig(beta=0.1), grad_accum=2)
        assert trainer.engine.module.is_gradient_checkpointing == checkpointing
        stats = trainer.train_step(samples)
        results[checkpointing] = stats, trainer.full_state_dict(trainable_only=False)
    (ours, ours_state), (theirs, theirs_state) = results[True], results[False]
    for key in ("loss", "kl", "entropy"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-7), key
    for name, value in ours_state.items():  # lr 1e-3: a wrong gradient moves an Adam step by up to 2e-3, rounding ~1e-5
        torch.testing.assert_close(value, theirs_state[name], rtol=0, atol=1e-4, msg=name)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_hf_checkpoint_keeps_the_policys_dtype(one_rank_group, tiny_model_dir, tmp_path, dtype):
    """bf16 on GPU: the policy module in bf16 (here cast on CPU) saves bf16 safetensors, fp32 stays fp32."""
    cfg = TrainerConfig(num_workers=1, zero_stage=2, micro_batch_size=1)
    trainer = PolicyTrainer(tiny_model_dir, cfg, AlgoConfig(beta=0.0), grad_accum=1)
    trainer.engine.module.to(dtype)
    state = trainer.full_state_dict(trainable_only=False)
    assert {v.dtype for v in state.values()} == {dtype} and {v.device.type for v in state.values()} == {"cpu"}
    trainer.save_pretrained(tmp_path / "hf")
    files = list((tmp_path / "hf").glob("*.safetensors"))
    assert files
    saved = {}
    for f in files:
        with safe_open(str(f), "pt") as st:
            saved.update({k: st.get_tensor(k) for k in st.keys()})
    assert saved and {v.dtype for v in saved.values()} == {dtype}
    module = dict(trainer.engine.module.named_parameters())
    for name, value in saved.items():
        if name in module:
            assert torch.equal(value, module[name].detach())
    assert json.loads((tmp_path / "hf" / "config.json").read_text()).get("dtype", str(dtype)[6:]) == str(dtype)[6:]
