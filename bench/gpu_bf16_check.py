"""GPU check of the trainer path: completion log-probs + GRPO loss + AdamW in fp32 and bf16 on the tiny model, then
one bf16 step of a 0.55 B Qwen2-VL-shaped model (``seedr1 model tiny --size 0.5b``) with and without gradient
checkpointing (``trainer.gradient_checkpointing``) and the peak GPU memory of each. Under 5 minutes on one GPU.

    PYTHONPATH=platform python bench/gpu_bf16_check.py   (needs a CUDA GPU, torch, transformers)
"""
import sys

import numpy as np
import torch
sys.path.insert(0, "platform")
import seedr1  # noqa: F401 - applies the torchvision fix before transformers imports it
from seedr1.config import TinyModelConfig
from seedr1.model.tiny import build_tiny_model
from seedr1.model.loading import load_model, load_processor
from seedr1.data.pipeline import PromptRecord
from seedr1.data.prompts import user_message
from seedr1.train.batch import build_batch, completion_logprobs
from seedr1.algo.losses import policy_loss
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0))
d = build_tiny_model("/tmp/tiny", TinyModelConfig())
proc = load_processor(str(d))
rng = np.random.default_rng(0)
recs = [PromptRecord(sample_id=f"s{i}", kind="validation", messages=user_message("What next?\nA. a\nB. b\nC. c\nD. d\n", True, True),
        video=rng.integers(0,255,(4,56,56,3),dtype=np.uint8), image=rng.integers(0,255,(56,56,3),dtype=np.uint8), gold_letter="A") for i in range(4)]
comps = [list(rng.integers(10, 300, 12)) for _ in range(4)]
batch = build_batch(proc, recs, comps)
res = {}
for dtype in (torch.float32, torch.bfloat16):
    m = load_model(str(d), dtype=dtype).cuda()
    b = {k: v.cuda() for k, v in batch.items()}
    # media stay fp32, as the trainer passes them: the model casts to its own dtype
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    logp, mask = completion_logprobs(m, b)
    res[dtype] = logp.detach().float().cpu()
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5], device="cuda")
    losses = []
    for step in range(5):
        logp, mask = completion_logprobs(m, b)
        loss, met = policy_loss(logp, logp.detach(), adv, mask, aggregation="seq_mean_token_mean")
        opt.zero_grad(); loss.backward(); opt.step(); torch.cuda.synchronize()
        with torch.no_grad():
            lp2, _ = completion_logprobs(m, b)
        losses.append(float((lp2.float()[mask].view(-1) ).mean()))
    gn = all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    # positive-advantage sequences should gain log-prob, negative ones lose
    with torch.no_grad():
        lp_end, _ = completion_logprobs(m, b)
    delta = ((lp_end.float() - res[dtype].cuda()) * mask).sum(1) / mask.sum(1)
    print(dtype, "finite grads", gn, "per-seq mean logp change", [round(x, 4) for x in delta.tolist()])
print("bf16 vs fp32 initial logp max abs diff", float((res[torch.bfloat16] - res[torch.float32]).abs().max()))


# A Qwen2-VL-shaped model of 0.55 B parameters, bf16, one GRPO step with and without gradient checkpointing: the same
# loss and gradients, less activation memory with it.
from seedr1.model.tiny import tiny_config
big = build_tiny_model("/tmp/tiny-0.5b", tiny_config("0.5b"))
frames = 16  # a longer clip than the tiny check's: activations dominate
recs = [PromptRecord(sample_id=f"b{i}", kind="validation", messages=user_message("What next?\nA. a\nB. b\nC. c\nD. d\n", True, True),
        video=rng.integers(0, 255, (frames, 112, 112, 3), dtype=np.uint8), image=rng.integers(0, 255, (112, 112, 3), dtype=np.uint8),
        gold_letter="A") for i in range(4)]
batch = {k: v.cuda() for k, v in build_batch(load_processor(str(big)), recs, comps).items()}
grads, peaks = {}, {}
for ckpt in (False, True):
    torch.manual_seed(0)
    m = load_model(str(big), dtype=torch.bfloat16).cuda()
    if ckpt:
        m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    m.train()
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    logp, mask = completion_logprobs(m, batch)
    loss, _ = policy_loss(logp, logp.detach(), torch.tensor([1.0, -1.0, 0.5, -0.5], device="cuda"), mask,
                          aggregation="seq_mean_token_mean")
    loss.backward(); torch.cuda.synchronize()
    peaks[ckpt] = (torch.cuda.max_memory_allocated() - base) / 2**30
    grads[ckpt] = torch.cat([p.grad.float().flatten() for p in m.parameters() if p.grad is not None]).cpu()
    print(f"0.5b bf16 gradient_checkpointing={ckpt}: loss {float(loss):.6f}, activation+grad peak {peaks[ckpt]:.2f} GiB")
    del m, logp, loss; torch.cuda.empty_cache()
rel = float((grads[True] - grads[False]).norm() / grads[False].norm())
print(f"gradient checkpointing: peak {peaks[True]:.2f} vs {peaks[False]:.2f} GiB ({peaks[True] / peaks[False]:.2f}x), "
      f"gradient relative difference {rel:.2e}")
