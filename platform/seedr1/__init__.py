"""seedr1: GRPO / SFT post-training, evaluation and serving of video multimodal LLMs on Ray (SEED-Bench-R1)."""
from seedr1 import paths as _paths
from seedr1 import torchvision_compat as _torchvision_compat

# Every process that imports seedr1 (driver, Ray workers, vLLM actors, train functions) gets these.
_torchvision_compat.install()
_paths.set_default_env()

__version__ = "0.1.0"
