"""`python jobs/smoke.py` works from any working directory and reports what it did."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_smoke_job(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "jobs" / "smoke.py"), f"run_dir={tmp_path}", "max_tokens=6"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "smoke.json").read_text())
    assert len(report["vllm_completions"]) == 2
    assert all(0 < c["tokens"] <= 6 for c in report["vllm_completions"])
    assert report["forward_logits_shape"][0] == 1 and report["parameters"] < 5_000_000
    assert (tmp_path / "config.yaml").exists()
