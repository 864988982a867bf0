"""Greedy accuracy of a rollout engine on prompt records, scored with the official rule (the accuracy reward's)."""
from __future__ import annotations

from collections import Counter
from typing import Sequence

from seedr1.algo.rewards import extract_answer, is_correct
from seedr1.rollout.engine import RolloutEngine, Sampling


def greedy_accuracy(engine: RolloutEngine, records: Sequence, max_tokens: int = 32) -> dict:
    """{'accuracy', 'n', 'correct', 'answers'}: one greedy completion per record."""
    outs = engine.generate(list(records), Sampling(n=1, max_tokens=max_tokens, temperature=0.0))
    texts = [o[0].text for o in outs]
    correct = sum(is_correct(t, r.gold_letter) for t, r in zip(texts, records))
    answers = Counter((extract_answer(t) or "")[:1] for t in texts)
    return {"accuracy": correct / max(len(records), 1), "n": len(records), "correct": correct,
            "answers": dict(answers)}
