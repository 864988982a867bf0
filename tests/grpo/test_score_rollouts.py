"""score_rollouts: rewards -> advantages -> train samples and the step's reward metrics, numbers by hand."""
from types import SimpleNamespace

import pytest

from seedr1.config import GRPOConfig, RolloutConfig
from seedr1.grpo.loop import score_rollouts
from seedr1.rollout.engine import Completion

RIGHT = "<think>red</think><answer>A.</answer>"
WRONG_FORMAT = "<answer>B</answer>"  # no think part: format 0, wrong letter
RIGHT_NO_FORMAT = "A is it <answer>A</answer>"


def _completion(text: str, logprobs=(-0.5, -0.25)) -> Completion:
    return Completion(text=text, token_ids=[1, 2], logprobs=list(logprobs), finish_reason="stop", prompt_tokens=9)


def test_metrics_and_advantages_with_accuracy_reward_only():
    cfg = GRPOConfig(rollout=RolloutConfig(num_samples=2))
    cfg.algo.rewards = {"accuracy": 1.0}
    records = [SimpleNamespace(gold_letter="A", sample_id="s1"), SimpleNamespace(gold_letter="B", sample_id="s2")]
    groups = [[_completion(RIGHT), _completion(WRONG_FORMAT)], [_completion(RIGHT_NO_FORMAT), _completion(RIGHT)]]
    samples, info = score_rollouts(cfg, records, groups)
    # rewards [1, 0 | 0, 0]: group 1 is informative, group 2 has equal rewards (advantage 0 either way)
    assert info["reward_mean"] == pytest.approx(0.25)
    assert info["accuracy"] == pytest.approx(0.25)
    assert info["format_rate"] == pytest.approx(0.5)  # measured though not rewarded: RIGHT twice out of 4
    assert [s.advantage > 0 for s in samples[:2]] == [True, False] and samples[2].advantage == samples[3].advantage == 0
    assert samples[0].engine_logprobs == [-0.5, -0.25]  # kept for the trainer's engine_logprob_gap
    assert samples[0].behaviour_logprobs is None  # on-policy: the ratio uses the trainer's own log-probs
    assert info["response_length"] == 2


def test_engine_logprobs_are_compared_only_at_temperature_one():
    """The engines report T=1 log-probs; the trainer's are the tempered policy's, so at T != 1 there is nothing to
    compare (no engine_logprob_gap), and greedy rollouts (T=0) train the T=1 policy."""
    from seedr1.grpo.loop import train_temperature

    records = [SimpleNamespace(gold_letter="A", sample_id="s1")]
    for temperature, comparable in ((1.0, True), (0.7, False), (0.0, True)):
        cfg = GRPOConfig(rollout=RolloutConfig(num_samples=2, temperature=temperature))
        samples, _ = score_rollouts(cfg, records, [[_completion(RIGHT), _completion(WRONG_FORMAT)]])
        assert (samples[0].engine_logprobs is not None) == comparable
    assert [train_temperature(GRPOConfig(rollout=RolloutConfig(temperature=t))) for t in (0.7, 0.0)] == [0.7, 1.0]


def test_rank_shards_keep_a_prompts_completions_together():
    from seedr1.grpo.loop import rank_shard

    samples = [f"p{p}c{c}" for p in range(4) for c in range(4)]  # 4 prompts x G 4, in prompt order
    shards = [rank_shard(samples, r, 2) for r in range(2)]
    assert shards == [samples[:8], samples[8:]]  # each micro-batch of 4 is one prompt's group
    uneven = [rank_shard(list(range(7)), r, 3) for r in range(3)]
    assert sum(uneven, []) == list(range(7)) and sorted(map(len, uneven)) == [2, 2, 3]


def test_dropped_groups_get_weight_zero():
    cfg = GRPOConfig(rollout=RolloutConfig(num_samples=2))
    cfg.algo.rewards, cfg.algo.drop_uninformative = {"accuracy": 1.0}, True
    records = [SimpleNamespace(gold_letter="A", sample_id="s1"), SimpleNamespace(gold_letter="B", sample_id="s2")]
    groups = [[_completion(RIGHT), _completion(WRONG_FORMAT)], [_completion(RIGHT_NO_FORMAT), _completion(RIGHT)]]
    samples, info = score_rollouts(cfg, records, groups)
    assert [s.weight for s in samples] == [1.0, 1.0, 0.0, 0.0] and info["groups_dropped"] == 1
    cfg.algo.drop_uninformative = False
    assert [s.weight for s in score_rollouts(cfg, records, groups)[0]] == [1.0] * 4


def test_overlap_refuses_completions_without_sampling_logprobs():
    cfg = GRPOConfig(rollout=RolloutConfig(num_samples=2), overlap=True)
    records = [SimpleNamespace(gold_letter="A", sample_id="s1")]
    samples, _ = score_rollouts(cfg, records, [[_completion(RIGHT), _completion(WRONG_FORMAT)]])
    assert samples[0].behaviour_logprobs == [-0.5, -0.25]  # the importance ratio's denominator
    with pytest.raises(RuntimeError, match="log-prob"):  # a ratio of 1 would silently train stale samples on-policy
        score_rollouts(cfg, records, [[_completion(RIGHT, logprobs=()), _completion(WRONG_FORMAT)]])


def test_truncated_completions_can_be_left_out_of_the_loss():
    cfg = GRPOConfig(rollout=RolloutConfig(num_samples=2))
    cfg.algo.rewards = {"accuracy": 1.0}
    records = [SimpleNamespace(gold_letter="A", sample_id="s1")]
    cut = Completion(text=WRONG_FORMAT, token_ids=[1, 2], logprobs=[-0.5, -0.25], finish_reason="length",
                     prompt_tokens=9)
    unmasked, info = score_rollouts(cfg, records, [[_completion(RIGHT), cut]])
    assert [s.weight for s in unmasked] == [1.0, 1.0] and info["truncated_rate"] == 0.5
    cfg.algo.mask_truncated_completions = True
    masked, _ = score_rollouts(cfg, records, [[_completion(RIGHT), cut]])
    assert [s.weight for s in masked] == [1.0, 0.0]
    # the cut completion's reward still shaped its group: the kept one's advantage is the unmasked run's
    assert masked[0].advantage == unmasked[0].advantage > 0
