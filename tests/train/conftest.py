"""A one-process gloo group: the trainer core runs without any launcher."""
import os

import pytest
import torch.distributed as dist


@pytest.fixture(scope="session")
def one_rank_group():
    # Once per session: DeepSpeed caches the process group it first sees, so a destroyed and re-created
    # group would break the next trainer.
    if not dist.is_initialized():
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(29500 + os.getpid() % 1000), RANK="0",
                          WORLD_SIZE="1", LOCAL_RANK="0")
        dist.init_process_group("gloo", rank=0, world_size=1)
    yield
