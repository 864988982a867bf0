from seedr1.data.pipeline import PromptRecord
from seedr1.evaluate.greedy import greedy_accuracy
from seedr1.rollout.engine import Completion, RolloutEngine


class FixedEngine(RolloutEngine):
    """Returns given texts; records the sampling it was asked for."""

    def __init__(self, texts):
        self.texts, self.sampling = texts, None

    def generate(self, prompts, sampling):
        self.sampling = sampling
        return [[Completion(text=t, token_ids=[1])] for t in self.texts[:len(prompts)]]

    def update_weights(self, payload):
        pass

    def reset_caches(self):
        pass

    def score(self, prompts, completions):
        return []


def test_greedy_accuracy_uses_the_official_rule():
    records = [PromptRecord(sample_id=str(i), kind="validation", messages=[], video=None, image=None, gold_letter=g)
               for i, g in enumerate("ABCD")]
    engine = FixedEngine(["<answer> A. blue</answer>", "<answer>b</answer>", "C", "<think/><answer>D.</answer>"])
    result = greedy_accuracy(engine, records, max_tokens=7)
    # A: correct (stripped, first char); b: wrong (case); "C": no tag; D: correct
    assert result == {"accuracy": 0.5, "n": 4, "correct": 2, "answers": {"A": 1, "b": 1, "": 1, "D": 1}}
    assert engine.sampling.temperature == 0.0 and engine.sampling.n == 1 and engine.sampling.max_tokens == 7
