"""The study's orchestration, with the runs themselves stubbed (they have their own tests)."""
from pathlib import Path


def test_each_repetition_seeds_the_data_order_too(tmp_path, monkeypatch):
    # The ± over seeds must include data order and option shuffles, which follow data.seed, not the job's seed.
    import seedr1.grpo.run
    import seedr1.model.loading
    import seedr1.sft.run
    from seedr1.config import StudyConfig
    from seedr1.study import run as study

    seen = {}
    monkeypatch.setattr(seedr1.model.loading, "resolve_checkpoint", lambda m, s3=None: "base-model")
    monkeypatch.setattr(seedr1.sft.run, "run_sft", lambda cfg: seen.setdefault("sft", cfg))
    monkeypatch.setattr(seedr1.grpo.run, "run_grpo", lambda cfg: seen.setdefault("grpo", cfg))
    monkeypatch.setattr(study, "_evaluate", lambda cfg, model, out_dir, name: {"accuracy": 0.0})
    monkeypatch.setattr(study, "_final_hf", lambda run_dir, cfg: str(Path(run_dir) / "hf"))
    cfg = StudyConfig(perception_warmup=False)
    study.run_seed(cfg, 2, tmp_path)
    assert (seen["sft"].seed, seen["sft"].data.seed) == (2, 2)
    assert (seen["grpo"].seed, seen["grpo"].data.seed) == (2, 2)
    assert cfg.data.seed == 0  # the study's own config is untouched
    # without the warm-up the base model goes to the jobs as given (an s3:// one is fetched by each node's workers
    # with data.s3), not as this driver's cache folder, which other nodes do not have
    assert seen["sft"].model == seen["grpo"].model == cfg.base_model


def test_a_grpo_setting_that_cannot_work_stops_the_study_before_its_first_stage(tmp_path):
    """Not after the base evaluation and the whole SFT stage, when run_grpo would refuse it."""
    import pytest

    from seedr1.config import ConfigError, StudyConfig
    from seedr1.study import run as study

    cfg = StudyConfig(out_dir=str(tmp_path / "study"), perception_warmup=False)
    cfg.grpo.rollout.temperature = 0.0
    with pytest.raises(ConfigError, match="every advantage is 0"):
        study.run_study(cfg)
    assert not (tmp_path / "study").exists()
