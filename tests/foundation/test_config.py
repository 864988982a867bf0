from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import pytest

from seedr1.config import (ConfigError, SmokeConfig, describe, doc, load_config, parse_job_args, save_config)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@dataclass
class Inner:
    lr: float = doc(1e-3, "learning rate")
    steps: int = doc(10, "steps")
    mode: Literal["a", "b"] = doc("a", "mode")


@dataclass
class Outer:
    name: str = doc("x", "name")
    tags: list[str] = doc([], "tags")
    limit: Optional[int] = doc(None, "optional limit")
    flag: bool = doc(False, "a flag")
    inner: Inner = doc(Inner, "inner section")


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("name: run1\ninner:\n  lr: 1e-6\n  steps: 3\n")
    cfg = load_config(Outer, f, ["inner.steps=7", "flag=true", "tags=[a, b]", "limit=5", "inner.mode=b"])
    assert cfg.name == "run1"
    assert cfg.inner.lr == pytest.approx(1e-6)  # YAML 1.1 reads 1e-6 as a string; float fields accept it
    assert cfg.inner.steps == 7 and cfg.inner.mode == "b"
    assert cfg.flag is True and cfg.tags == ["a", "b"] and cfg.limit == 5


def test_defaults_are_independent():
    a, b = Outer(), Outer()
    a.tags.append("x")
    assert b.tags == [] and a.inner is not b.inner


@pytest.mark.parametrize("override, fragment", [
    (["inner.lrr=1"], "unknown config key 'inner.lrr'"),
    (["nope=1"], "unknown config key 'nope'"),
    (["inner.steps=abc"], "inner.steps: expected int"),
    (["inner.lr=fast"], "inner.lr: expected float"),
    (["flag=maybe"], "flag: expected bool"),
    (["inner.mode=c"], "inner.mode: 'c' is not one of"),
    (["inner=3"], "inner: expected a mapping"),
    (["limit=x"], "limit"),
    (["justakey"], "must look like key=value"),
])
def test_errors_name_the_key(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(Outer, None, override)
    assert fragment in str(e.value)


@pytest.mark.parametrize("override, fragment", [
    ("trainer.zero_stage=7", "trainer.zero_stage: 7 is out of range, must be between 0 and 3"),
    ("trainer.micro_batch_size=0", "trainer.micro_batch_size: 0 is out of range, must be >= 1"),
    ("prompts_per_step=0", "prompts_per_step: 0"),
    ("rollout.num_actors=0", "rollout.num_actors: 0"),
    ("rollout.num_samples=1", "rollout.num_samples: 1"),  # group-relative advantages of one sample are all 0
    ("algo.beta=-1", "algo.beta: -1.0 is out of range, must be >= 0.0"),
    ("data.max_bad_fraction=1.5", "data.max_bad_fraction: 1.5"),
])
def test_out_of_range_values_fail_at_load_naming_the_key(override, fragment):
    from seedr1.config import GRPOConfig

    with pytest.raises(ConfigError) as e:
        load_config(GRPOConfig, None, [override])
    assert fragment in str(e.value)
    key = override.split("=")[0]
    assert any(line.startswith(key + " ") and "[" in line for line in describe(GRPOConfig))  # --help shows the range


def test_every_shipped_config_is_in_range():
    from pathlib import Path

    from seedr1.config import EvaluateConfig, GRPOConfig, ServeConfig, SFTConfig, SmokeConfig, StudyConfig

    kinds = {"grpo": GRPOConfig, "sft": SFTConfig, "evaluate": EvaluateConfig, "serve": ServeConfig,
             "smoke": SmokeConfig, "study": StudyConfig}
    files = sorted(Path(__file__).resolve().parents[2].glob("configs/*/*.yaml"))
    assert files
    for f in files:
        if f.parent.name in kinds:
            load_config(kinds[f.parent.name], f)


def test_bad_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping at top level"):
        load_config(Outer, tmp_path / "list.yaml")


def test_every_field_has_a_doc():
    for line in describe(SmokeConfig):
        assert line.split(": ", 1)[1].strip(), f"field without doc: {line}"


def test_job_args_print_and_save(tmp_path, capsys):
    cfg = parse_job_args(SmokeConfig, ["run_dir=" + str(tmp_path), "model.seed=4", "vllm.max_model_len=1536"])
    assert cfg.model.seed == 4
    out = capsys.readouterr().out  # only what differs from the defaults, one dotted key a line
    assert "2 settings differ" not in out and "3 settings differ from the defaults" in out
    assert "#   model.seed = 4\n" in out and "#   vllm.max_model_len = 1536\n" in out and "frame_size" not in out
    saved = save_config(cfg, tmp_path)
    assert load_config(SmokeConfig, saved) == cfg  # round trip
    with pytest.raises(SystemExit) as e:
        parse_job_args(SmokeConfig, ["model.sed=4"])
    assert e.value.code == 2


def test_secrets_are_masked_in_the_printed_settings(capsys):
    from seedr1.config import EvaluateConfig

    parse_job_args(EvaluateConfig, ["api_key=sk-123", "data.s3.secret_key=abc", "data.s3.region=eu-west-1"])
    out = capsys.readouterr().out
    assert "sk-123" not in out and "abc" not in out
    assert '#   api_key = "***"' in out and '#   data.s3.region = "eu-west-1"' in out


def test_flag_overrides_work_before_after_and_between_dotted_ones(tmp_path):
    """--endpoint URL first (the README's order) used to hand the URL to the positional overrides."""
    from seedr1.config import EvaluateConfig

    url = "http://localhost:8000/v1"
    for argv in (["--endpoint", url, "--api-key", "k1", "max_tokens=9"],  # the order the README gives
                 ["max_tokens=9", "--endpoint", url, "--api-key=k1"],
                 ["--endpoint=" + url, "max_tokens=9", "--api-key", "k1"],
                 ["top_p=0.5", "--endpoint", url, "--config", str(CONFIGS / "evaluate" / "tiny.yaml"),
                  "max_tokens=9", "--api-key", "k1"]):  # overrides on both sides of --config
        cfg = parse_job_args(EvaluateConfig, argv)
        assert (cfg.endpoint, cfg.api_key, cfg.max_tokens) == (url, "k1", 9), argv
        assert cfg.top_p == (0.5 if "top_p=0.5" in argv else 1.0)
    with pytest.raises(SystemExit) as e:
        parse_job_args(EvaluateConfig, ["max_tokens=9", "--endpoint"])
    assert e.value.code == 2


def test_an_override_that_is_not_yaml_is_its_text():
    from seedr1.config import GRPOConfig

    cfg = load_config(GRPOConfig, None, ["data.instruction=Answer in {braces"])  # a template, not a YAML mapping
    assert cfg.data.instruction == "Answer in {braces"
    with pytest.raises(ConfigError, match="trainer.lr: expected float"):
        load_config(GRPOConfig, None, ["trainer.lr=["])


def test_a_jobs_own_config_check_exits_2_with_the_message_not_a_traceback(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    job = Path(__file__).resolve().parents[2] / "jobs" / "sft.py"
    res = subprocess.run([sys.executable, str(job), "batch_size=7", f"run_dir={tmp_path}"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "config error: batch_size 7 must split into trainer.num_workers = 2" in res.stderr
    assert "Traceback" not in res.stderr
