"""vLLM's CPU GEMM packs a copy of a Linear weight; built under ``keep_linear_weights`` the layer keeps the weight,
so a sync can load it in place, and ``repack`` makes the packed copy follow."""
import torch

from seedr1.rollout import vllm_cpu_weights


class _Linear(torch.nn.Module):
    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = torch.nn.Parameter(weight.clone(), requires_grad=False)


def _packed(weight, keep: bool) -> torch.nn.Module:
    from vllm.model_executor.layers import utils

    model = torch.nn.Sequential(_Linear(weight))
    with vllm_cpu_weights.keep_linear_weights() if keep else torch.no_grad():
        utils.dispatch_cpu_unquantized_gemm(model[0], remove_weight=True)  # what vLLM's Linear layers call on CPU
    return model


def test_weights_are_kept_only_under_the_context_and_repack_follows_an_in_place_load():
    torch.manual_seed(0)
    w, x = torch.randn(96, 64), torch.randn(5, 64)
    dropped = _packed(w, keep=False)
    assert dropped[0].weight.numel() == 0 and not vllm_cpu_weights.kept(dropped)  # vLLM's default: reload needed
    model = _packed(w, keep=True)
    layer = model[0]
    assert vllm_cpu_weights.kept(model) and torch.equal(layer.weight, w)
    torch.testing.assert_close(layer.cpu_linear(x, layer.weight, None), x @ w.t(), atol=1e-4, rtol=1e-4)

    with torch.no_grad():
        layer.weight.mul_(-2.0)  # a sync's in-place load
    stale = layer.cpu_linear(x, layer.weight, None)
    torch.testing.assert_close(stale, x @ w.t(), atol=1e-4, rtol=1e-4)  # the packed copy did not follow
    vllm_cpu_weights.repack(model)
    torch.testing.assert_close(layer.cpu_linear(x, layer.weight, None), x @ (-2.0 * w).t(), atol=1e-4, rtol=1e-4)


def test_a_model_without_packed_layers_is_not_loaded_in_place():
    assert not vllm_cpu_weights.kept(torch.nn.Linear(4, 4))  # e.g. a GPU model: the receiver reloads
