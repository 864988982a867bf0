"""One rank of tests/train/test_zero3_reference.py: a 2-rank gloo group, PolicyTrainer under ZeRO-3 with a KL term.

Usage: python zero3_worker.py MODEL_DIR OUT_DIR RANK WORLD PORT. Writes OUT_DIR/rank{RANK}.json with what the test
checks: how the reference's parameters are partitioned, its log-probs against an unsharded copy's (the
micro-batches differ on purpose between the ranks: media kinds, shared prompts or not, one-token completions),
the per-layer-group gathers of full_state_dict, and a train step's statistics."""
import json
import os
import sys

import numpy as np
import torch
import torch.distributed as dist


def _record(sample_id, rng, video):
    from seedr1.data.pipeline import PromptRecord
    from seedr1.data.prompts import user_message

    return PromptRecord(sample_id=sample_id, kind="train", gold_letter="A",
                        messages=user_message("What next?\nA. a\nB. b\nC. c\nD. d\n", video, True),
                        video=rng.integers(0, 255, (4, 56, 56, 3), dtype=np.uint8) if video else None,
                        image=rng.integers(0, 255, (56, 56, 3), dtype=np.uint8))


def _micro_batches(rank: int):
    """(records, completions) per micro-batch, 3 rows each; rank 0 and rank 1 differ in what matters to the forward."""
    rng = np.random.default_rng(100 + rank)
    a, b, c = _record(f"a{rank}", rng, True), _record(f"b{rank}", rng, False), _record(f"c{rank}", rng, False)
    if rank == 0:
        return [([a, a, b], [[11, 12, 13], [21, 22], [31]]),  # shared prompt, video + image
                ([a, a, a], [[41, 42], [51, 52, 53, 54], [61]]),  # shared, video + image
                ([a, b, b], [[71], [81], [91]])]  # shared, one token each
    return [([b, b, c], [[15, 16], [25], [35, 36, 37]]),  # shared, images only: fewer media kinds than rank 0
            ([b, c, a], [[45, 46], [55], [65, 66]]),  # no prompt repeats: the full-sequence path
            ([b, b, c], [[75, 76], [85], [95]])]  # shared, longer completions


def main():
    model_dir, out_dir, rank, world, port = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    import deepspeed

    from seedr1.config import AlgoConfig, TrainerConfig
    from seedr1.model.loading import load_model
    from seedr1.train.batch import build_batch, completion_logprobs, rope_positions
    from seedr1.train.policy import PolicyTrainer, TrainSample

    cfg = TrainerConfig(num_workers=world, zero_stage=3, lr=1e-3, micro_batch_size=3, shared_prefix=True)
    trainer = PolicyTrainer(model_dir, cfg, AlgoConfig(beta=0.1), grad_accum=1)
    out = {}
    # 1. the reference is a ZeRO-3 engine: each rank holds a shard of each large parameter
    ref_params = list(trainer.ref.module.parameters())
    out["ref_is_engine"] = type(trainer.ref).__name__
    out["ref_total"] = sum(p.ds_numel for p in ref_params)
    out["ref_local"] = sum(p.ds_tensor.numel() for p in ref_params)
    out["ref_partitioned"] = sum(p.data.numel() == 0 for p in ref_params)
    out["ref_params"] = len(ref_params)
    # 2. its log-probs equal an unsharded copy's, shared-prompt path and full sequences alike
    plain = load_model(model_dir, trainable=False)
    diffs, paths = [], []
    from seedr1.train.shared_prefix import can_share_prefix
    for records, completions in _micro_batches(rank):
        batch = build_batch(trainer.processor, records, completions)
        positions = rope_positions(trainer.engine, batch)
        sharded = trainer.reference_logprobs(batch, positions)
        paths.append(can_share_prefix(plain, batch))
        with torch.no_grad():
            for shared in (True, False):
                logp, mask = completion_logprobs(plain, batch, positions=positions, shared_prefix=shared)
                diffs.append(float((sharded - logp)[mask].abs().max()))
    out["ref_max_diff"], out["could_share"] = max(diffs), paths
    # 3. full_state_dict gathers one layer group at a time and keeps the dtype
    calls = []
    real = deepspeed.zero.GatheredParameters

    def spy(params, *args, **kwargs):
        calls.append(sum(p.ds_numel for p in params))
        return real(params, *args, **kwargs)

    deepspeed.zero.GatheredParameters = spy
    try:
        state = trainer.full_state_dict(trainable_only=False)
    finally:
        deepspeed.zero.GatheredParameters = real
    out["gathers"], out["model_numel"] = calls, sum(p.ds_numel for p in trainer.engine.module.parameters())
    if rank == 0:
        expected = dict(plain.named_parameters())
        out["state_keys_match"] = set(state) == set(expected)
        out["state_max_diff"] = max(float((state[n] - expected[n].detach()).abs().max()) for n in state)
        out["state_dtypes"] = sorted({str(v.dtype) for v in state.values()})
    else:
        out["state_is_none"] = state is None
    # 4. a train step with the sharded reference, each rank on its own samples
    (records, completions), *_ = _micro_batches(rank)
    samples = [TrainSample(r, c, float(i) - 1.0) for i, (r, c) in enumerate(zip(records, completions))]
    stats = trainer.train_step(samples, batch_denominator=6.0)
    out["loss"], out["kl"] = stats["loss"], stats["kl"]
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(out, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    try:
        main()
    except BaseException:  # print it now and leave: the other rank would wait in a collective for this one
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
