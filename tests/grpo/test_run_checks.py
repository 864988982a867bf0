"""run_grpo refuses inconsistent configs before it starts anything (no Ray, no data, no model)."""
import pytest

from seedr1.config import ConfigError, GRPOConfig, RolloutConfig
from seedr1.grpo.run import run_grpo


@pytest.mark.parametrize("changes, message", [
    ({"overlap": True, "rollout": RolloutConfig(temperature=0.7)}, "overlap=true needs rollout.temperature=1"),
    ({"prompts_per_step": 3, "rollout": RolloutConfig(num_samples=3)}, "must divide evenly"),
    ({"rollout": RolloutConfig(engine="hf", weight_sync="collective")}, "collective needs rollout.engine=vllm"),
])
def test_inconsistent_configs_are_refused(changes, message, tmp_path):
    cfg = GRPOConfig(run_dir=str(tmp_path / "run"), **changes)
    with pytest.raises(ConfigError, match=message):
        run_grpo(cfg)
    assert not (tmp_path / "run").exists()  # refused before the run folder was made
