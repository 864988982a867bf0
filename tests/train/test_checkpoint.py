"""Checkpoints of the trainer core: exact continuation, the COMPLETE marker, retention, S3."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seedr1.config import AlgoConfig, TrainerConfig
from seedr1.data.pipeline import PromptRecord
from seedr1.data.prompts import user_message
from seedr1.train import checkpoint as ckpt
from seedr1.train.policy import PolicyTrainer, TrainSample


def _record(i: int) -> PromptRecord:
    rng = np.random.default_rng(i)
    return PromptRecord(sample_id=f"t{i}", kind="validation", gold_letter="A",
                        messages=user_message("What next?\nA. a\nB. b\nC. c\nD. d\n", True, True),
                        video=rng.integers(0, 255, (4, 56, 56, 3), dtype=np.uint8),
                        image=rng.integers(0, 255, (56, 56, 3), dtype=np.uint8))


def _batch(step: int) -> list[TrainSample]:
    return [TrainSample(_record(step), [10 + step, 20, 30], 1.0), TrainSample(_record(step), [11, 21 + step], -1.0)]


def _trainer(model_dir, lr: float = 1e-2) -> PolicyTrainer:
    cfg = TrainerConfig(num_workers=1, zero_stage=2, lr=lr, warmup_steps=3, micro_batch_size=2)
    return PolicyTrainer(model_dir, cfg, AlgoConfig(beta=0.0), grad_accum=1)


def _params(trainer) -> dict:
    return {n: p.detach().clone() for n, p in trainer.engine.module.named_parameters()}


def test_resumed_trainer_continues_exactly(one_rank_group, tiny_model_dir, tmp_path):
    a = _trainer(tiny_model_dir)
    for step in range(2):
        a.train_step(_batch(step))
    uri = ckpt.save_checkpoint(a, str(tmp_path), 2, {"epoch": 0, "rows": 8})
    after_save = torch.rand(3)  # RNG draws after the save are replayed after the load
    a.train_step(_batch(2))
    expected, expected_lr = _params(a), a.engine.get_lr()[0]

    b = _trainer(tiny_model_dir)
    assert any(not torch.equal(p, _params(b)[n]) for n, p in expected.items())
    state = ckpt.load_checkpoint(b, uri)
    assert state["step"] == 2 and state["data_position"] == {"epoch": 0, "rows": 8}
    torch.testing.assert_close(torch.rand(3), after_save, rtol=0, atol=0)
    assert b.engine.get_lr()[0] == pytest.approx(1e-2)  # 3rd step of a 3-step warm-up: the scheduler resumed
    b.train_step(_batch(2))
    got = _params(b)
    for n, p in expected.items():  # same optimizer moments, same lr, same step: bit-identical parameters
        torch.testing.assert_close(got[n], p, rtol=0, atol=0, msg=n)
    assert b.engine.get_lr()[0] == expected_lr

    from transformers import AutoModelForImageTextToText  # the hf/ folder is a plain Hugging Face checkpoint

    hf = AutoModelForImageTextToText.from_pretrained(Path(uri) / "hf")
    assert (Path(uri) / "hf" / "tokenizer_config.json").exists()
    assert set(hf.state_dict()) >= {n for n in expected if "lm_head" not in n}


def test_a_resume_with_another_lr_trains_at_the_new_one(one_rank_group, tiny_model_dir, tmp_path):
    """LambdaLR's saved state holds the old peak; the resumed schedule is this run's trainer.lr, at the saved step."""
    a = _trainer(tiny_model_dir)
    a.train_step(_batch(0))
    uri = ckpt.save_checkpoint(a, str(tmp_path), 1, None)
    b = _trainer(tiny_model_dir, lr=5e-2)
    ckpt.load_checkpoint(b, uri)
    assert b.engine.get_lr()[0] == pytest.approx(5e-2 * 2 / 3)  # 2nd step of the 3-step warm-up, new peak
    b.train_step(_batch(1))
    assert b.engine.get_lr()[0] == pytest.approx(5e-2)


def test_resuming_with_another_worker_count_is_refused_before_anything_starts(tmp_path):
    """ZeRO shards the optimizer state per worker: DeepSpeed would refuse deep inside every worker's load."""
    from seedr1.config import ConfigError, GRPOConfig
    from seedr1.train.launch import prepare_run

    d = tmp_path / "run" / "checkpoints" / "step_00000004"
    d.mkdir(parents=True)
    (d / "trainer_state.json").write_text(json.dumps({"step": 4, "data_position": None, "world_size": 2}))
    (d / "COMPLETE").write_text("")

    def cfg(**trainer):
        c = GRPOConfig(run_dir=str(tmp_path / "run"), model=str(tmp_path / "model"))
        c.data.root = str(tmp_path / "data")
        for k, v in trainer.items():
            setattr(c.trainer, k, v)
        return c

    with pytest.raises(ConfigError, match=r"step_00000004 was written by 2 trainer workers and this run has "
                                          r"trainer.num_workers=1: ZeRO stage 2 .*Set trainer.num_workers=2"):
        prepare_run(cfg(num_workers=1), "grpo")
    prepare_run(cfg(num_workers=2), "grpo")  # the same count
    prepare_run(cfg(num_workers=1, zero_stage=0), "grpo")  # nothing sharded
    later = tmp_path / "run" / "checkpoints" / "step_00000008"  # an explicit resume refused moves nothing aside
    later.mkdir()
    (later / "COMPLETE").write_text("")
    explicit = cfg(num_workers=1)
    explicit.resume = str(d)
    with pytest.raises(ConfigError, match="was written by 2 trainer workers"):
        prepare_run(explicit, "grpo")
    assert later.exists() and not list((tmp_path / "run").glob("checkpoints.replaced-*"))


def test_cut_off_checkpoints_are_never_resumed_and_old_ones_pruned(one_rank_group, tiny_model_dir, tmp_path):
    t = _trainer(tiny_model_dir)
    root = str(tmp_path)
    for step in (1, 2, 3):
        ckpt.save_checkpoint(t, root, step, {"epoch": 0, "rows": step}, keep=2)
    assert ckpt.complete_steps(root) == [2, 3]  # keep=2 deleted step 1
    # a save of step 4 killed half-way: files but no COMPLETE marker
    cut = Path(ckpt.step_uri(root, 4))
    (cut / "hf").mkdir(parents=True)
    (cut / "hf" / "config.json").write_text("{}")
    assert ckpt.latest_complete(root) == ckpt.step_uri(root, 3)
    with pytest.raises(FileNotFoundError, match="cut off"):
        ckpt.load_checkpoint(t, str(cut))
    # saving step 4 again replaces the leftovers; the marker comes last
    ckpt.save_checkpoint(t, root, 4, {"epoch": 0, "rows": 4}, keep=2)
    assert ckpt.complete_steps(root) == [3, 4]
    assert json.loads((cut / "trainer_state.json").read_text())["data_position"]["rows"] == 4


def test_checkpoint_on_s3(one_rank_group, tiny_model_dir, s3_env):
    import boto3

    boto3.client("s3").create_bucket(Bucket="ckpt-test")
    root = "s3://ckpt-test/run1/checkpoints"
    a = _trainer(tiny_model_dir)
    a.train_step(_batch(0))
    uri = ckpt.save_checkpoint(a, root, 1, {"epoch": 0, "rows": 2})
    assert ckpt.latest_complete(root) == uri and uri.startswith("s3://")
    b = _trainer(tiny_model_dir)
    assert ckpt.load_checkpoint(b, uri)["step"] == 1
    for n, p in _params(a).items():
        torch.testing.assert_close(_params(b)[n], p, rtol=0, atol=0)
    with pytest.raises(ValueError, match="earlier run"):  # no cheap move on s3: resume=never refuses, deletes nothing
        ckpt.set_aside_for_fresh_start(root)
    assert ckpt.latest_complete(root) == uri


def test_a_restarted_launch_finds_its_own_checkpoint(one_rank_group, tiny_model_dir, tmp_path):
    t = _trainer(tiny_model_dir)
    root = str(tmp_path)
    uri = ckpt.save_checkpoint(t, root, 1, {"epoch": 0, "rows": 2}, launch_id="launch-a")
    assert ckpt.resume_point("never", root, launch_id="launch-a") == uri  # the same launch, restarted
    assert ckpt.resume_point("never", root, launch_id="launch-b") is None  # a new launch with resume=never
    assert ckpt.resume_point("auto", root, launch_id="launch-b") == uri


def test_resume_never_sets_the_earlier_runs_checkpoints_aside(tmp_path):
    """Left in place, an earlier run's step_150 would prune this run's step_2 (keep goes by step) and win resume=auto."""
    from seedr1.config import GRPOConfig
    from seedr1.train.launch import prepare_run

    root = tmp_path / "run" / "checkpoints"
    for step in (100, 150):
        (root / f"step_{step:08d}").mkdir(parents=True)
        (root / f"step_{step:08d}" / "COMPLETE").write_text("")
    cfg = GRPOConfig(run_dir=str(tmp_path / "run"), model=str(tmp_path / "model"), resume="never")
    cfg.data.root = str(tmp_path / "data")
    prepare_run(cfg, "grpo")
    assert ckpt.complete_steps(str(root)) == []
    moved = [p for p in (tmp_path / "run").iterdir() if p.name.startswith("checkpoints.replaced-")]
    assert len(moved) == 1 and ckpt.complete_steps(str(moved[0])) == [100, 150]  # kept, not deleted
    cfg.resume = "auto"  # resume=auto leaves everything where it is
    (root / "step_00000002").mkdir(parents=True)
    (root / "step_00000002" / "COMPLETE").write_text("")
    prepare_run(cfg, "grpo")
    assert ckpt.complete_steps(str(root)) == [2]


def _fake_checkpoint(root: Path, step: int, launch_id: str = "") -> str:
    d = root / f"step_{step:08d}"
    d.mkdir(parents=True)
    (d / "trainer_state.json").write_text(json.dumps({"step": step, "data_position": None, "launch_id": launch_id}))
    (d / "COMPLETE").write_text("")
    return str(d)


def test_resume_from_an_explicit_checkpoint_sets_later_steps_aside(tmp_path, monkeypatch):
    """Left in place, the abandoned line's step 20 would prune the resumed run's step 10 (keep goes by step) and win a
    later resume=auto. Relative paths are made absolute: Ray Train workers run in a session folder of their own."""
    from seedr1.config import GRPOConfig
    from seedr1.train.launch import prepare_run

    monkeypatch.chdir(tmp_path)
    root = tmp_path / "ckpts"
    for step in (5, 20):
        _fake_checkpoint(root, step)
    (root / "step_00000030").mkdir()  # a cut-off save of the old line goes too
    cfg = GRPOConfig(run_dir="run", model=str(tmp_path / "model"), resume="ckpts/step_00000005")
    cfg.data.root, cfg.checkpoint.dir = "data", "ckpts"
    prepare_run(cfg, "grpo")
    assert (cfg.checkpoint.dir, cfg.resume) == (str(root), str(root / "step_00000005"))
    assert ckpt.complete_steps(str(root)) == [5] and not (root / "step_00000030").exists()
    (moved,) = [p for p in tmp_path.iterdir() if p.name.startswith("ckpts.replaced-")]
    assert sorted(p.name for p in moved.iterdir()) == ["step_00000020", "step_00000030"]  # kept, not deleted
    cfg.resume = str(root / "step_00000007")  # not a checkpoint: refused before anything starts
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        prepare_run(cfg, "grpo")


def test_a_restart_prefers_this_launchs_newest_checkpoint_over_a_pruned_pointer(tmp_path, monkeypatch):
    """A worker died after saving step 10 (which pruned step 5, keep=1) but before reporting it: Ray Train's pointer
    still names step 5, which is gone."""
    root = tmp_path / "ckpts"
    newest = _fake_checkpoint(root, 10, launch_id="launch-a")
    monkeypatch.setattr(ckpt, "ray_train_pointer", lambda: str(root / "step_00000005"))
    assert ckpt.resume_point("auto", str(root), launch_id="launch-a") == newest
    monkeypatch.setattr(ckpt, "ray_train_pointer", lambda: "s3://elsewhere/step_00000003")
    assert ckpt.resume_point("auto", str(root), launch_id="launch-b") == "s3://elsewhere/step_00000003"
