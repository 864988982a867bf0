"""What every engine shares: per-prompt sampling seeds."""
from seedr1.config import GRPOConfig
from seedr1.grpo.loop import sampling_seed
from seedr1.rollout.engine import prompt_seeds


def test_no_two_samples_share_a_random_stream():
    # vLLM seeds sample j of a prompt with seed + j. Over 3 steps x 2 actors (seed + k) x 8 prompts x n 8, every
    # sample gets its own seed; one seed per call would give sample j of all 8 prompts the same numbers.
    cfg, n = GRPOConfig(), 8
    streams = [s + j for step in range(3) for k in range(2)
               for s in prompt_seeds(sampling_seed(cfg, step) + k, 8, n) for j in range(n)]
    assert len(streams) == len(set(streams)) == 3 * 2 * 8 * n
    assert prompt_seeds(5, 3, 4) == [5000015, 5000019, 5000023]  # 5 x 1000003 + i x 4
