"""The smoke demo: tiny model -> one vLLM generation with video + image -> one transformers forward."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from seedr1.config import SmokeConfig, save_config


def _demo_media(cfg: SmokeConfig) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(cfg.model.seed)
    video = rng.integers(0, 255, (cfg.num_frames, cfg.frame_size, cfg.frame_size, 3), dtype=np.uint8)
    image = rng.integers(0, 255, (cfg.frame_size, cfg.frame_size, 3), dtype=np.uint8)
    return video, image


def run_smoke(cfg: SmokeConfig) -> dict:
    import torch

    from seedr1.data.pipeline import PromptRecord
    from seedr1.data.prompts import user_message
    from seedr1.model.loading import load_model, load_processor
    from seedr1.model.multimodal import record_inputs
    from seedr1.model.tiny import build_tiny_model
    from seedr1.rollout.engine import Sampling
    from seedr1.rollout.vllm_engine import VLLMEngine

    from seedr1.cluster.outputs import output_path

    run_dir = Path(output_path(cfg.run_dir))  # never inside Ray's unpacked working directory
    save_config(cfg, run_dir)
    report: dict = {}

    t0 = time.perf_counter()
    model_dir = str(build_tiny_model(run_dir / "model", cfg.model))
    report["model_dir"] = model_dir
    report["build_s"] = round(time.perf_counter() - t0, 2)
    print(f"[smoke] built tiny {cfg.model.family} model in {report['build_s']} s -> {model_dir}", flush=True)

    video, image = _demo_media(cfg)
    record = PromptRecord(sample_id="smoke", kind="validation", video=video, image=image, gold_letter=None,
                          messages=user_message("What is the next action?\nA. a\nB. b\nC. c\nD. d\n", True, True))

    t0 = time.perf_counter()
    engine = VLLMEngine(model_dir, cfg.vllm)  # the rollout engine itself, vision tokens banned as in training
    report["vllm_start_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    completions = engine.generate([record], Sampling(n=2, max_tokens=cfg.max_tokens, temperature=1.0,
                                                     seed=cfg.vllm.seed))[0]
    report["vllm_generate_s"] = round(time.perf_counter() - t0, 3)
    report["vllm_completions"] = [{"text": c.text, "tokens": len(c.token_ids)} for c in completions]
    print(f"[smoke] vLLM engine up in {report['vllm_start_s']} s; generated {len(completions)} completions "
          f"({sum(len(c.token_ids) for c in completions)} tokens) from a {video.shape[0]}-frame video + image "
          f"in {report['vllm_generate_s']} s", flush=True)

    processor = load_processor(model_dir)
    model = load_model(model_dir, trainable=False)
    inputs = record_inputs(processor, record)
    with torch.no_grad():
        logits = model(**inputs).logits
    report["forward_logits_shape"] = list(logits.shape)
    report["parameters"] = sum(p.numel() for p in model.parameters())
    print(f"[smoke] transformers forward: {report['parameters']:,} parameters, "
          f"{inputs['input_ids'].shape[1]} prompt tokens (media expanded), logits {tuple(logits.shape)}", flush=True)
    (run_dir / "smoke.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"[smoke] report: {run_dir / 'smoke.json'}")
    return report
