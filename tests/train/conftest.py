"""A one-process gloo group: the trainer core runs without any launcher."""
import os

import pytest
import torch.distributed as dist


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
