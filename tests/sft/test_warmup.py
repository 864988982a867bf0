import random
import subprocess
import sys

from safetensors.torch import load_file

from seedr1.sft.warmup import randomise_letter


def test_randomise_letter_keeps_the_cue_and_draws_letters():
    rng = random.Random(0)
    response = "<think>I see the red object.</think><answer>C.</answer>"
    outs = [randomise_letter(response, rng) for _ in range(200)]
    assert all(o.startswith("<think>I see the red object.</think><answer>") and o.endswith(".</answer>") for o in outs)
    letters = {o[len("<think>I see the red object.</think><answer>")] for o in outs}
    assert letters == {"A", "B", "C", "D"}
    # only the first answer is replaced
    assert randomise_letter("<answer>A.</answer><answer>B.</answer>", random.Random(1)).endswith("<answer>B.</answer>")


def test_warmup_cli_trains_and_writes_a_checkpoint(tmp_path, tiny_model_dir):
    from seedr1.data.synthetic import SynthSpec, write_synthetic

    write_synthetic(tmp_path / "data", SynthSpec(train=8, l1=4, l2=4, l3=4))
    out = tmp_path / "warm"
    r = subprocess.run([sys.executable, "-m", "seedr1.cli", "model", "warmup", "--model", tiny_model_dir,
                        "--data", str(tmp_path / "data"), "--out", str(out), "--steps", "3", "--batch-size", "4"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    before = load_file(f"{tiny_model_dir}/model.safetensors")
    after = load_file(out / "model.safetensors")
    assert before.keys() == after.keys()
    assert any(not (before[k] == after[k]).all() for k in before)  # the weights moved
    assert (out / "chat_template.jinja").exists()


def test_warmup_killed_while_saving_leaves_no_folder_a_rerun_would_reuse(tmp_path, tiny_model_dir, monkeypatch):
    # The study skips the warm-up when <out>/config.json exists; transformers writes it before the weights and the
    # processor comes after them, so a save must appear in <out> whole or not at all.
    from transformers import ProcessorMixin

    from seedr1.config import WarmupConfig
    from seedr1.data.synthetic import SynthSpec, write_synthetic
    from seedr1.sft.warmup import perception_warmup

    write_synthetic(tmp_path / "data", SynthSpec(train=4, l1=1, l2=1, l3=1))

    def killed(self, *a, **k):
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(ProcessorMixin, "save_pretrained", killed)
    out = tmp_path / "warm"
    try:
        perception_warmup(tiny_model_dir, str(tmp_path / "data"), out, WarmupConfig(steps=1, batch_size=2))
    except KeyboardInterrupt:
        pass
    assert not (out / "config.json").exists()
