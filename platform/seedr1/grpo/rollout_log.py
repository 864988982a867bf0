"""``rollouts.jsonl``: what the policy wrote, step by step, as the official trainer logs it: each completion of a
logged step with its prompt id, text, each reward, the total, its advantage and its weight in the loss."""
from __future__ import annotations

import json
import os
from pathlib import Path


def logged(step: int, every: int) -> bool:
    """Whether step ``step`` (1-based) is written: the first, then every ``every``-th; never when ``every`` is 0."""
    return every > 0 and (step == 1 or step % every == 0)


def rollout_rows(step: int, records: list, groups: list, per_reward: dict, samples: list) -> list[dict]:
    """One row per completion, in the order ``score_rollouts`` flattened them (prompt by prompt)."""
    flat = [(r, i, c) for r, cs in zip(records, groups) for i, c in enumerate(cs)]
    return [{"step": step, "sample_id": r.sample_id, "completion": i, "text": c.text, "tokens": len(c.token_ids),
             "finish_reason": c.finish_reason, "rewards": {k: v[j] for k, v in per_reward.items()},
             "advantage": s.advantage, "weight": s.weight}
            for j, ((r, i, c), s) in enumerate(zip(flat, samples))]


class RolloutLog:
    def __init__(self, run_dir: str, resume_step: int = 0):
        """Rows of steps after ``resume_step`` are dropped: a resumed run redoes those steps."""
        self.path = Path(run_dir) / "rollouts.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            kept = []
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line).get("step", 0) <= resume_step:
                        kept.append(line + "\n")
                except json.JSONDecodeError:  # a line cut short by a killed run
                    continue
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(kept), encoding="utf-8")
            os.replace(tmp, self.path)  # atomic: the old file or the new one, never half of one
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, rows: list[dict]) -> None:
        self._file.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        self._file.flush()

    def close(self) -> None:
        self._file.close()
