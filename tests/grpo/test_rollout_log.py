"""rollouts.jsonl: which steps are written, what a row holds, and a resumed run redoing later steps."""
import json
from types import SimpleNamespace

from seedr1.grpo.loop import score_rollouts
from seedr1.grpo.rollout_log import RolloutLog, logged, rollout_rows
from seedr1.config import GRPOConfig, RolloutConfig
from seedr1.rollout.engine import Completion


def test_which_steps_are_logged():
    assert [s for s in range(1, 31) if logged(s, 10)] == [1, 10, 20, 30]
    assert [s for s in range(1, 4) if logged(s, 1)] == [1, 2, 3]
    assert not any(logged(s, 0) for s in range(1, 20))


def test_a_row_per_completion_with_its_rewards_and_advantage():
    cfg = GRPOConfig(rollout=RolloutConfig(num_samples=2))
    cfg.algo.rewards = {"accuracy": 1.0, "format": 1.0}
    records = [SimpleNamespace(gold_letter="A", sample_id="p1")]
    right = Completion(text="<think>t</think><answer>A.</answer>", token_ids=[1, 2, 3], finish_reason="stop")
    wrong = Completion(text="B", token_ids=[4], finish_reason="length")
    samples, info = score_rollouts(cfg, records, [[right, wrong]])
    rows = rollout_rows(7, records, [[right, wrong]], info["per_reward"], samples)
    assert [(r["step"], r["sample_id"], r["completion"], r["tokens"], r["finish_reason"]) for r in rows] == \
        [(7, "p1", 0, 3, "stop"), (7, "p1", 1, 1, "length")]
    assert rows[0]["rewards"] == {"accuracy": 1.0, "format": 1.0} and rows[1]["rewards"] == {"accuracy": 0.0,
                                                                                             "format": 0.0}
    assert rows[0]["advantage"] > 0 > rows[1]["advantage"] and rows[0]["text"] == right.text
    json.dumps(rows)  # a JSON line each


def test_a_resumed_run_drops_the_rows_of_steps_it_redoes(tmp_path):
    log = RolloutLog(str(tmp_path))
    log.write([{"step": s, "text": f"t{s}"} for s in (1, 10, 20)])
    log.close()
    with open(tmp_path / "rollouts.jsonl", "a") as f:
        f.write('{"step": 30, "te')  # a line cut short by a kill
    log = RolloutLog(str(tmp_path), resume_step=10)
    log.write([{"step": 20, "text": "again"}])
    log.close()
    rows = [json.loads(line) for line in (tmp_path / "rollouts.jsonl").read_text().splitlines()]
    assert [(r["step"], r["text"]) for r in rows] == [(1, "t1"), (10, "t10"), (20, "again")]
