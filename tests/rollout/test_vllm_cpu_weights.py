"""vLLM's CPU GEMM packs a copy of a Linear weight; built under ``keep_linear_weights`` the layer keeps the weight,
so a sync can load it in place, and ``repack`` makes the packed copy follow. Only for the architectures tested."""
import json

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
    from vllm import _custom_ops
    from vllm.model_executor.layers import utils
    from vllm.platforms import current_platform

    original = utils.dispatch_cpu_unquantized_gemm
    torch.manual_seed(0)
    w, x = torch.randn(96, 64), torch.randn(5, 64)
    model = _packed(w, keep=True)
    assert utils.dispatch_cpu_unquantized_gemm is original  # the context put vLLM's function back
    layer = model[0]
    assert vllm_cpu_weights.kept(model) and torch.equal(layer.weight, w)
    torch.testing.assert_close(layer.cpu_linear(x, layer.weight, None), x @ w.t(), atol=1e-4, rtol=1e-4)
    dropped = _packed(w, keep=False)
    assert dropped[0].weight.numel() == 0 and not vllm_cpu_weights.kept(dropped)  # vLLM's default: reload needed

    with torch.no_grad():
        layer.weight.mul_(-2.0)  # a sync's in-place load
    if _custom_ops._supports_onednn and not current_platform.is_zen_cpu():  # oneDNN packs a copy (other GEMMs may not)
        stale = layer.cpu_linear(x, layer.weight, None)
        torch.testing.assert_close(stale, x @ w.t(), atol=1e-4, rtol=1e-4)  # the packed copy did not follow
    vllm_cpu_weights.repack(model)
    torch.testing.assert_close(layer.cpu_linear(x, layer.weight, None), x @ (-2.0 * w).t(), atol=1e-4, rtol=1e-4)


def test_builds_in_two_threads_take_turns_and_leave_vllms_function_in_place():
    import threading

    from vllm.model_executor.layers import utils

    original = utils.dispatch_cpu_unquantized_gemm
    first_inside, first_may_leave, second_inside = threading.Event(), threading.Event(), threading.Event()

    def first():
        with vllm_cpu_weights.keep_linear_weights():
            first_inside.set()
            first_may_leave.wait(10)

    def second():
        first_inside.wait(10)
        with vllm_cpu_weights.keep_linear_weights():
            second_inside.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    assert first_inside.wait(10)
    assert not second_inside.wait(0.3)  # the second build waits while the first holds the patch
    first_may_leave.set()
    for t in threads:
        t.join(10)
    assert second_inside.is_set()
    assert utils.dispatch_cpu_unquantized_gemm is original  # unlocked, the second would restore the first's patch


def test_a_model_without_packed_layers_is_not_loaded_in_place():
    assert not vllm_cpu_weights.kept(torch.nn.Linear(4, 4))  # e.g. a GPU model: the receiver reloads


def test_only_unquantized_tested_architectures_keep_their_weights(tmp_path, tiny_model_dir):
    assert vllm_cpu_weights.in_place_capable(tiny_model_dir)
    with open(f"{tiny_model_dir}/config.json") as fh:
        config = json.load(fh)
    for name, change in [("quantized", {"quantization_config": {"quant_method": "fp8"}}),
                         ("moe", {"architectures": ["Qwen3VLMoeForConditionalGeneration"]})]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({**config, **change}))
        assert not vllm_cpu_weights.in_place_capable(str(tmp_path / name)), name
    assert not vllm_cpu_weights.in_place_capable("Qwen/Qwen2-VL-7B-Instruct")  # a hub id: vLLM's own way


def test_repack_follows_only_the_layers_that_loaded():
    """A sync that leaves a part out (a frozen vision tower is not sent) re-packs only the layers it loaded; the
    engine-level sync tests check that vLLM's loaded names map onto its layers."""
    torch.manual_seed(1)
    w0, w1, x = torch.randn(32, 16), torch.randn(32, 16), torch.randn(3, 16)
    a, b = _packed(w0, keep=True)[0], _packed(w1, keep=True)[0]
    model = torch.nn.Sequential(a, b)
    with torch.no_grad():
        a.weight.mul_(3.0)
    vllm_cpu_weights.repack(model, {"0.weight"})
    torch.testing.assert_close(a.cpu_linear(x, a.weight, None), x @ (3.0 * w0).t(), atol=1e-4, rtol=1e-4)
    before = b.cpu_linear
    vllm_cpu_weights.repack(model, {"0.weight"})
    assert b.cpu_linear is before  # layer 1 loaded nothing: its pack was not rebuilt
    vllm_cpu_weights.repack(model)  # nothing known: every layer
    assert b.cpu_linear is not before
