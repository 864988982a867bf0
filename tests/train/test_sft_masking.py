"""SFT: only the assistant (target) tokens carry loss; prompt, media and padding positions get no gradient."""
import numpy as np
import torch

from seedr1.algo.losses import sft_loss
from seedr1.data.pipeline import PromptRecord
from seedr1.data.prompts import user_message
from seedr1.train.batch import build_batch, completion_logprobs


class LogitsCapture(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.module, self.logits = model, None  # "module", as a DeepSpeed engine names what it wraps

    def forward(self, **inputs):
        out = self.module(**inputs)
        out.logits.retain_grad()
        self.logits = out.logits
        return out


def test_gradient_reaches_only_positions_predicting_target_tokens(tiny_model_dir):
    from seedr1.model.loading import load_model, load_processor

    rng = np.random.default_rng(0)
    record = PromptRecord(sample_id="s0", kind="cot", gold_letter=None,
                          messages=user_message("Which?\nA. a\nB. b\nC. c\nD. d\n", True, True),
                          video=rng.integers(0, 255, (4, 56, 56, 3), dtype=np.uint8),
                          image=rng.integers(0, 255, (56, 56, 3), dtype=np.uint8))
    processor = load_processor(tiny_model_dir)
    model = LogitsCapture(load_model(tiny_model_dir))
    targets = [[11, 12, 13, 14, 15], [21, 22]]  # the second row is shorter: right padding
    batch = build_batch(processor, [record, record], targets)
    logp, mask = completion_logprobs(model, batch, shared_prefix=False)  # one forward of the full sequences
    sft_loss(logp, mask).backward()
    plen, T = int(batch["prompt_lens"][0]), batch["input_ids"].shape[1]
    # the LM head ran only on positions plen-1 .. T-2, the ones that predict a target token (no prompt logits)
    assert model.logits.shape[1] == T - plen
    touched = model.logits.grad.abs().sum(-1) > 0  # [B, window]: window position w is sequence position plen-1+w
    for row, target in enumerate(targets):
        expected = torch.zeros(touched.shape[1], dtype=torch.bool)
        expected[:len(target)] = True  # position p-1+j predicts target token j
        assert torch.equal(touched[row], expected), row
    assert not touched[1, 2:].any()  # padding after the short target: no loss
