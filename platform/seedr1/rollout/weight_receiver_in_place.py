"""The worker extension of a CPU engine core in a process of its own that loads synced weights in place.

vLLM imports a worker extension's module in the engine core's process before that process loads the model, so
importing this module there is the point where its Linear layers are set to keep their weights
(``vllm_cpu_weights.install_plain_linear_weights``). An in-process engine uses ``weight_receiver.WeightReceiver``
under ``vllm_cpu_weights.plain_linear_weights()`` instead, which leaves the caller's process as it was.
"""
from seedr1.rollout import vllm_cpu_weights
from seedr1.rollout.weight_receiver import WeightReceiver

vllm_cpu_weights.install_plain_linear_weights()


class InPlaceWeightReceiver(WeightReceiver):
    """``WeightReceiver`` in an engine core process whose Linear layers keep their weights."""
