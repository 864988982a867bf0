"""run_grpo refuses inconsistent configs before it starts anything (no Ray, no data, no model)."""
import pytest

from seedr1.config import AlgoConfig, ConfigError, GRPOConfig, RolloutConfig, TrainerConfig, VLLMConfig
from seedr1.grpo.run import run_grpo


@pytest.mark.parametrize("changes, message", [
    ({"overlap": True, "rollout": RolloutConfig(temperature=0.7)}, "overlap=true needs rollout.temperature=1"),
    ({"prompts_per_step": 3, "rollout": RolloutConfig(num_samples=3)}, "must divide evenly"),
    ({"rollout": RolloutConfig(engine="hf", weight_sync="collective")}, "collective needs rollout.engine=vllm"),
    ({"rollout": RolloutConfig(temperature=0.0)}, "every advantage is 0 and nothing is learned"),
    ({"rollout": RolloutConfig(max_tokens=1024, vllm=VLLMConfig(max_model_len=1024))}, "leaves no room for the prompt"),
    ({"algo": AlgoConfig(rewards={"accuracy": 1.0, "formt": 1.0})}, r"algo.rewards: unknown reward 'formt'"),
    ({"algo": AlgoConfig(rewards={"accuracy": 0.0})}, "no reward with a nonzero weight"),
    ({"algo": AlgoConfig(rewards={"no_such_pkg.rewards:f": 1.0})}, "cannot import f from no_such_pkg.rewards"),
])
def test_inconsistent_configs_are_refused(changes, message, tmp_path):
    cfg = GRPOConfig(run_dir=str(tmp_path / "run"), **changes)
    with pytest.raises(ConfigError, match=message):
        run_grpo(cfg)
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


@pytest.mark.parametrize("changes, message", [
    ({"trainer": TrainerConfig(gpus_per_worker=0.5)},
     r"trainer.gpus_per_worker = 0.5 must be 0 \(CPU\) or 1 .*two NCCL ranks on one GPU"),
    ({"trainer": TrainerConfig(gpus_per_worker=2)}, r"trainer.gpus_per_worker = 2 must be 0 \(CPU\) or 1"),
    ({"rollout": RolloutConfig(gpus_per_actor=0.5)},  # the default utilization 0.85, twice on one GPU
     r"rollout.gpus_per_actor = 0.5 puts 2 engines on one GPU and each claims rollout.vllm.gpu_memory_utilization = "
     r"0.85 .*1.70 > 0.95.*Set rollout.vllm.gpu_memory_utilization <= 0.47 .*or rollout.gpus_per_actor = 1"),
    ({"rollout": RolloutConfig(gpus_per_actor=0.3, vllm=VLLMConfig(gpu_memory_utilization=0.4))},
     r"puts 3 engines on one GPU .*<= 0.31"),
    ({"rollout": RolloutConfig(gpus_per_actor=1.5)}, r"rollout.gpus_per_actor = 1.5: .*a whole number of GPUs"),
    ({"rollout": RolloutConfig(engine="hf", gpus_per_actor=2.5)}, r"rollout.gpus_per_actor = 2.5"),
])
def test_gpu_requests_that_cannot_work_are_refused(changes, message, tmp_path):
    cfg = GRPOConfig(run_dir=str(tmp_path / "run"), **changes)
    with pytest.raises(ConfigError, match=message):
        run_grpo(cfg)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("trainer_gpus, actor_gpus, utilization, engine", [
    (0, 0, 0.85, "vllm"),  # CPU
    (1, 1, 0.85, "vllm"),  # one GPU each
    (1, 2, 0.9, "vllm"),  # a whole number of GPUs per engine
    (1, 0.5, 0.45, "vllm"),  # two engines on a GPU, 0.90 of it together
    (1, 0.25, 0.23, "vllm"),  # four, 0.92
    (1, 0.5, 0.85, "hf"),  # transformers takes what it uses, not a share of the GPU
])
def test_gpu_requests_that_work_pass(trainer_gpus, actor_gpus, utilization, engine):
    from seedr1.grpo.run import check_grpo

    check_grpo(GRPOConfig(trainer=TrainerConfig(gpus_per_worker=trainer_gpus),
                          rollout=RolloutConfig(engine=engine, gpus_per_actor=actor_gpus,
                                                vllm=VLLMConfig(gpu_memory_utilization=utilization))))


def test_sft_evaluate_and_serve_refuse_gpu_requests_that_cannot_work(tmp_path):
    from seedr1.config import DataConfig, EvaluateConfig, ServeConfig, SFTConfig
    from seedr1.evaluate.run import run_evaluate
    from seedr1.serve.app import build
    from seedr1.sft.run import run_sft

    with pytest.raises(ConfigError, match=r"trainer.gpus_per_worker = 0.5 must be 0 \(CPU\) or 1"):
        run_sft(SFTConfig(run_dir=str(tmp_path / "sft"), trainer=TrainerConfig(gpus_per_worker=0.5)))
    assert not (tmp_path / "sft").exists()
    with pytest.raises(ConfigError, match=r"gpus_per_actor = 0.5 puts 2 engines on one GPU and each claims "
                                          r"vllm.gpu_memory_utilization = 0.85"):
        run_evaluate(EvaluateConfig(out_dir=str(tmp_path / "eval"), gpus_per_actor=0.5,
                                    data=DataConfig(root=str(tmp_path))))
    with pytest.raises(ConfigError, match=r"gpus_per_replica = 1.5: .*a whole number of GPUs"):
        build(ServeConfig(auth="none", gpus_per_replica=1.5))
    with pytest.raises(ConfigError, match=r"gpus_per_replica = 0.5 puts 2 engines"):
        build(ServeConfig(auth="none", gpus_per_replica=0.5))
