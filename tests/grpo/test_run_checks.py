"""run_grpo refuses inconsistent configs before it starts anything (no Ray, no data, no model)."""
import pytest

from seedr1.config import AlgoConfig, ConfigError, GRPOConfig, RolloutConfig, VLLMConfig
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
