"""The trainer core without any launcher: a one-process gloo group, DeepSpeed ZeRO-2, frozen vision tower."""
from pathlib import Path

import numpy as np
import pytest
import torch

from seedr1.config import AlgoConfig, TrainerConfig
from seedr1.data.pipeline import PromptRecord
from seedr1.data.prompts import user_message
from seedr1.train.policy import PolicyTrainer, TrainSample


def test_frozen_vision_is_not_trained_nor_synced(one_rank_group, tiny_model_dir):
    rng = np.random.default_rng(0)
    record = PromptRecord(sample_id="t0", kind="validation", gold_letter="A",
                          messages=user_message("What next?\nA. a\nB. b\nC. c\nD. d\n", True, True),
                          video=rng.integers(0, 255, (4, 56, 56, 3), dtype=np.uint8),
                          image=rng.integers(0, 255, (56, 56, 3), dtype=np.uint8))
    cfg = TrainerConfig(num_workers=1, zero_stage=2, lr=1e-2, micro_batch_size=2, freeze_vision=True)
    trainer = PolicyTrainer(tiny_model_dir, cfg, AlgoConfig(beta=0.0), grad_accum=1)
    assert trainer.ref is None  # beta == 0 loads no reference model
    module = trainer.engine.module
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    samples = [TrainSample(record, [10, 20, 30], 1.0), TrainSample(record, [11, 21], -1.0)]
    stats = trainer.train_step(samples)
    assert np.isfinite(stats["loss"]) and stats["entropy"] > 0
    changed = {n for n, p in module.named_parameters() if not torch.equal(p.detach(), before[n])}
    visual = {n for n in before if ".visual." in f".{n}"}
    assert visual and not (changed & visual)  # the vision tower stayed frozen
    assert changed  # the language model moved
    synced = trainer.full_state_dict(trainable_only=True)  # what the GRPO loop syncs
    assert synced and not (set(synced) & visual)  # only trainable parameters travel
    for n in synced:
        torch.testing.assert_close(synced[n], module.get_parameter(n).detach().float())


def test_warmup_schedule_trains_from_the_first_step():
    from seedr1.train.policy import warmup_schedule

    assert [warmup_schedule(4)(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_schedule(0)(0) == 1.0


def test_linear_schedule_is_hugging_faces():
    """schedule=linear, as the official GRPO script gets it from the HF Trainer: by hand, and against transformers'
    get_linear_schedule_with_warmup step by step."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    from seedr1.config import TrainerConfig
    from seedr1.train.policy import linear_schedule, lr_schedule

    assert [linear_schedule(2, 6)(s) for s in range(7)] == [0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0]
    assert [linear_schedule(0, 4)(s) for s in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    for warmup, total in ((0, 10), (3, 10), (10, 10), (5, 750)):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        hf = get_linear_schedule_with_warmup(opt, warmup, total)
        ours = lr_schedule(TrainerConfig(schedule="linear", warmup_steps=warmup), total)
        for step in range(total + 1):
            assert abs(ours(step) - opt.param_groups[0]["lr"]) < 1e-12, (warmup, total, step)
            opt.step()
            hf.step()


def test_engine_gap_compares_completion_tokens_only():
    from seedr1.train.policy import TrainSample, _add_engine_gap

    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.25, 0.0]])
    mask = torch.tensor([[False, True, True], [True, False, False]])
    chunk = [TrainSample(None, [7, 8], 0.0, engine_logprobs=[-2.5, -2.0]),
             TrainSample(None, [9], 0.0)]  # no engine log-probs (e.g. SFT): not counted
    gap = [0.0, 0]
    _add_engine_gap(gap, chunk, logp, mask)
    assert gap == [1.5, 2]  # |-2 - -2.5| + |-3 - -2|


def _image_record_and_trainer(model_dir: str, algo: AlgoConfig, micro_batches: int):
    """An image + text prompt, and a trainer taking one sample per micro-batch."""
    rng = np.random.default_rng(1)
    record = PromptRecord(sample_id="t1", kind="validation", gold_letter="A",
                          messages=user_message("What next?\nA. a\nB. b\nC. c\nD. d\n", False, True),
                          video=None, image=rng.integers(0, 255, (56, 56, 3), dtype=np.uint8))
    cfg = TrainerConfig(num_workers=1, zero_stage=2, lr=1e-3, micro_batch_size=1)
    return record, PolicyTrainer(model_dir, cfg, algo, grad_accum=micro_batches)


def test_loss_normalised_over_the_whole_batch_not_per_micro_batch(one_rank_group, tiny_model_dir):
    # token_mean (DAPO) over 4 micro-batches of one sample: on-policy with beta 0 every token's loss is -advantage,
    # so the step's loss is -(3*1 + 1*(-1) + 2*0.5) / 6 tokens = -0.5; the weight-0 sample (a dropped group) is
    # neither in the sum nor in the count. Per micro-batch means would give -(1 - 1 + 0.5 + 0) / 4 = -0.125.
    record, trainer = _image_record_and_trainer(tiny_model_dir, AlgoConfig(beta=0.0, aggregation="token_mean"), 4)
    samples = [TrainSample(record, [10, 20, 30], 1.0), TrainSample(record, [11], -1.0),
               TrainSample(record, [12, 22], 0.5), TrainSample(record, [13, 23], 2.0, weight=0.0)]
    stats = trainer.train_step(samples)
    assert stats["loss"] == pytest.approx(-0.5, abs=1e-5)


def test_update_uses_the_sampling_temperature(one_rank_group, tiny_model_dir):
    """The step's entropy is the tempered policy's (what the rollouts sampled from), computed by hand here."""
    from seedr1.algo.losses import masked_mean
    from seedr1.train.batch import build_batch, completion_logprobs

    record, trainer = _image_record_and_trainer(tiny_model_dir, AlgoConfig(beta=0.0), 1)
    trainer.temperature = 2.0
    tokens = [10, 20, 30]
    with torch.no_grad():
        batch = build_batch(trainer.processor, [record], [tokens])
        _, mask, hot = completion_logprobs(trainer.engine.module, batch, with_entropy=True, temperature=2.0)
        _, _, cold = completion_logprobs(trainer.engine.module, batch, with_entropy=True)
    expected = float(masked_mean(hot, mask))
    assert abs(expected - float(masked_mean(cold, mask))) > 1e-2
    assert trainer.train_step([TrainSample(record, tokens, 1.0)])["entropy"] == pytest.approx(expected, rel=1e-4)


def test_sft_loss_is_the_whole_batch_token_mean(one_rank_group, tiny_model_dir):
    # Targets of 4 and 1 tokens in two micro-batches: the step's loss is the mean NLL over the 5 tokens (what one
    # forward of the whole batch gives), not the mean of the two micro-batch means.
    from seedr1.algo.losses import sft_loss
    from seedr1.train.batch import build_batch, completion_logprobs

    record, trainer = _image_record_and_trainer(tiny_model_dir, AlgoConfig(beta=0.0), 2)
    targets = [[10, 20, 30, 40], [11]]
    with torch.no_grad():
        whole = build_batch(trainer.processor, [record, record], targets)
        logp, mask = completion_logprobs(trainer.engine.module, whole)
        expected = float(sft_loss(logp, mask))
        per_row = [float(sft_loss(logp[i:i + 1], mask[i:i + 1])) for i in range(2)]
    assert abs(expected - sum(per_row) / 2) > 1e-3  # the two weightings differ here
    assert trainer.sft_step([record, record], targets)["loss"] == pytest.approx(expected, rel=1e-4)


def test_trainer_fetches_an_s3_model_with_the_jobs_config(one_rank_group, tiny_model_on_s3, no_aws_env):
    """GRPO and SFT hand the job's data.s3 to the trainer: an s3:// start model loads without AWS variables."""
    uri, s3 = tiny_model_on_s3
    trainer = PolicyTrainer(uri, TrainerConfig(num_workers=1, zero_stage=2, micro_batch_size=1), AlgoConfig(beta=0.0),
                            grad_accum=1, s3=s3)
    assert no_aws_env in Path(trainer.processor.tokenizer.name_or_path).parents


def test_a_step_on_shared_prompts_equals_one_on_full_sequences(one_rank_group, tiny_model_dir, interleaved_samples):
    """Two GRPO steps with the KL term, two prompts x 3 interleaved over 2 micro-batches: the shared-prompt path
    (``trainer.shared_prefix``) leaves the same parameters and statistics as full sequences, and DeepSpeed's
    backward bookkeeping stays balanced (one engine forward per backward)."""
    samples = interleaved_samples(4)
    results = {}
    for shared in (True, False):
        cfg = TrainerConfig(num_workers=1, zero_stage=2, lr=1e-3, micro_batch_size=3, shared_prefix=shared)
        trainer = PolicyTrainer(tiny_model_dir, cfg, AlgoConfig(beta=0.1), grad_accum=2)
        stats = [trainer.train_step(samples) for _ in range(2)]
        assert trainer.engine.optimizer._backward_active_depth == 0
        results[shared] = stats, trainer.full_state_dict(trainable_only=False)
    (ours, ours_state), (theirs, theirs_state) = results[True], results[False]
    for mine, other in zip(ours, theirs):
        for key in ("loss", "kl", "entropy"):
            assert mine[key] == pytest.approx(other[key], rel=1e-4, abs=1e-6), key
    assert ours[1]["kl"] > 0  # the first step moved the policy away from the reference
    for name, value in ours_state.items():
        torch.testing.assert_close(value, theirs_state[name], rtol=0, atol=1e-4, msg=name)  # lr 1e-3: a wrong
        # gradient moves an Adam step by up to 2e-3; rounding differences move a near-zero one by ~1e-5


def test_zero3_memory_settings_follow_the_model_and_the_dtype_option():
    """ZeRO-3's buckets and live-parameter limits are sized from the hidden size (DeepSpeed's defaults kept a 0.55 B
    model gathered whole on every CPU rank), the optimizer is torch's fused AdamW (no partition-sized temporaries),
    and trainer.dtype turns DeepSpeed's bf16 on (fp32 master weights) on any device."""
    from seedr1.train.policy import deepspeed_config

    ds = deepspeed_config(TrainerConfig(zero_stage=3), 2, bf16=False, hidden_size=896)
    zero = ds["zero_optimization"]
    assert zero["stage"] == 3 and zero["reduce_bucket_size"] == 896 * 896 == 802816
    assert zero["stage3_max_live_parameters"] == zero["stage3_max_reuse_distance"] == 30 * 802816
    assert zero["stage3_param_persistence_threshold"] == 8960 and zero["sub_group_size"] == 300 * 802816
    assert ds["optimizer"]["params"]["fused"] is True and ds["bf16"] == {"enabled": False}
    assert deepspeed_config(TrainerConfig(zero_stage=2), 2, bf16=True, hidden_size=896)["zero_optimization"] == \
        {"stage": 2}  # ZeRO-2 keeps DeepSpeed's own settings
    assert deepspeed_config(TrainerConfig(zero_stage=2), 2, bf16=True)["bf16"] == {"enabled": True}


def test_bf16_trainer_on_cpu_holds_bf16_weights_and_steps(one_rank_group, tiny_model_dir, media_record):
    """trainer.dtype=bfloat16 on a CPU: the module's weights are bf16 (what a sync sends), a step runs and moves them."""
    trainer = PolicyTrainer(tiny_model_dir, TrainerConfig(micro_batch_size=2, lr=1e-2, dtype="bfloat16"),
                            AlgoConfig(beta=0.0), grad_accum=1)
    params = [p for p in trainer.engine.module.parameters() if p.requires_grad]
    assert {p.dtype for p in params} == {torch.bfloat16}
    before = [p.detach().clone() for p in params]
    record = media_record("s0", np.random.default_rng(0), video=True)
    trainer.train_step([TrainSample(record, [11, 12, 13], 1.0), TrainSample(record, [21, 22], -1.0)])
    assert any(not torch.equal(b, p.detach()) for b, p in zip(before, params))
