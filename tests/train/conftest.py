"""A one-process gloo group: the trainer core runs without any launcher; the tiny model and a grouped batch."""
import os

import numpy as np
import pytest
import torch.distributed as dist

from seedr1.data.pipeline import PromptRecord
from seedr1.data.prompts import user_message


@pytest.fixture(scope="session")
def one_rank_group():
    # Once per session: DeepSpeed caches the process group it first sees, so a destroyed and re-created
    # group would break the next trainer.
    # The variables DeepSpeed reads, also when the group already exists: an in-process vLLM engine in an earlier
    # test (tests/model/test_tiny.py) makes one without them, and tests/model then tests/train failed with
    # "DeepSpeed requires the LOCAL_RANK environment variable".
    for key, value in dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(29500 + os.getpid() % 1000), RANK="0",
                           WORLD_SIZE="1", LOCAL_RANK="0").items():
        os.environ.setdefault(key, value)
    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=0, world_size=1)
    yield


def _media_record(sample_id: str, rng, video: bool) -> PromptRecord:
    return PromptRecord(sample_id=sample_id, kind="train", gold_letter="A",
                        messages=user_message("What next?\nA. a\nB. b\nC. c\nD. d\n", video, True),
                        video=rng.integers(0, 255, (4, 56, 56, 3), dtype=np.uint8) if video else None,
                        image=rng.integers(0, 255, (56, 56, 3), dtype=np.uint8))


@pytest.fixture
def media_record():
    """A prompt record with an image (and a 4-frame video when asked) of random pixels."""
    return _media_record


def _interleaved_samples(seed: int) -> list:
    """Two prompts (one with a video, one without) x 3 completions of 2-7 tokens, interleaved, advantages -1/0/1."""
    from seedr1.train.policy import TrainSample

    rng = np.random.default_rng(seed)
    a, b = _media_record("a", rng, True), _media_record("b", rng, False)
    return [TrainSample(r, rng.integers(11, 200, 2 + i).tolist(), float(i % 3) - 1.0)
            for i, r in enumerate([a, b, a, b, a, b])]


@pytest.fixture
def interleaved_samples():
    """``_interleaved_samples(seed)``: the step both trainer-equivalence tests compare two ways."""
    return _interleaved_samples


@pytest.fixture(scope="module")
def model_and_processor(tiny_model_dir):
    from seedr1.model.loading import load_model, load_processor

    return load_model(tiny_model_dir), load_processor(tiny_model_dir)


@pytest.fixture(scope="module")
def grouped_batch(model_and_processor):
    """Two prompts x 3 completions, interleaved; the second has no task-progress video (image + text only)."""
    from seedr1.train.batch import build_batch

    rng = np.random.default_rng(0)
    a, b = _media_record("a", rng, video=True), _media_record("b", rng, video=False)
    records = [a, b, a, b, a, b]
    completions = [[11, 12, 13], [21, 22], [31, 32, 33, 34], [41], [51, 52], [61, 62, 63]]
    return build_batch(model_and_processor[1], records, completions)
