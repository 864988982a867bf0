"""vLLM's CPU GEMM packs a copy of a Linear weight and drops the weight; built under ``plain_linear_weights`` the
layer keeps its weight and computes with it, so a sync can load it in place. Only for the architectures tested."""
import json

import torch

from seedr1.rollout import vllm_cpu_weights


class _Linear(torch.nn.Module):
    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = torch.nn.Parameter(weight.clone(), requires_grad=False)


def _dispatched(weight, plain: bool) -> torch.nn.Module:
    from vllm.model_executor.layers import utils

    model = torch.nn.Sequential(_Linear(weight))
    with vllm_cpu_weights.plain_linear_weights() if plain else torch.no_grad():
        utils.dispatch_cpu_unquantized_gemm(model[0], remove_weight=True)  # what vLLM's Linear layers call on CPU
    return model


def test_layers_keep_their_weights_only_under_the_context_and_an_in_place_load_shows_at_once():
    from vllm.model_executor.layers import utils

    original = utils.dispatch_cpu_unquantized_gemm
    torch.manual_seed(0)
    w, b, x = torch.randn(96, 64), torch.randn(96), torch.randn(5, 64)
    model = _dispatched(w, plain=True)
    assert utils.dispatch_cpu_unquantized_gemm is original  # the context put vLLM's function back
    layer = model[0]
    assert vllm_cpu_weights.loads_in_place(model) and torch.equal(layer.weight, w)
    torch.testing.assert_close(layer.cpu_linear(x, layer.weight, b), x @ w.t() + b, atol=1e-4, rtol=1e-4)
    dropped = _dispatched(w, plain=False)
    assert dropped[0].weight.numel() == 0 and not vllm_cpu_weights.loads_in_place(dropped)  # vLLM's default: reload

    with torch.no_grad():
        layer.weight.mul_(-2.0)  # a sync's in-place load: nothing to re-pack
    torch.testing.assert_close(layer.cpu_linear(x, layer.weight, None), x @ (-2.0 * w).t(), atol=1e-4, rtol=1e-4)


def test_only_2d_weights_are_taken_from_vllms_dispatch(monkeypatch):
    from vllm.model_executor.layers import utils

    handed = []
    monkeypatch.setattr(utils, "dispatch_cpu_unquantized_gemm", lambda layer, remove_weight=True: handed.append(layer))
    conv, meta, linear = (_Linear(torch.randn(8, 1, 4)),  # e.g. a causal-conv weight
                          _Linear(torch.empty(4, 4, device="meta")), _Linear(torch.randn(4, 4)))
    with vllm_cpu_weights.plain_linear_weights():
        for layer in (conv, meta, linear):
            utils.dispatch_cpu_unquantized_gemm(layer, remove_weight=True)
    assert handed == [conv, meta]  # vLLM's own handling for what is not a Linear weight
    assert linear.cpu_linear is vllm_cpu_weights._torch_linear and linear.weight.numel() == 16


def test_one_packed_layer_means_the_model_does_not_load_in_place():
    """A model with a layer vLLM packed (built outside the context, or dispatched again by vLLM's layerwise reload)
    must reload: an in-place load would leave that layer computing with its old pack."""
    torch.manual_seed(2)
    plain, packed = _dispatched(torch.randn(8, 4), plain=True)[0], _dispatched(torch.randn(8, 4), plain=False)[0]
    assert vllm_cpu_weights.loads_in_place(torch.nn.Sequential(plain))
    assert not vllm_cpu_weights.loads_in_place(torch.nn.Sequential(plain, packed))
    skipped = _Linear(torch.randn(8, 4))
    skipped.cpu_linear, skipped._cpu_skip_gemm_dispatch = (lambda x, w, b: x), True  # vLLM computes it otherwise
    assert vllm_cpu_weights.loads_in_place(torch.nn.Sequential(plain, skipped))


def test_builds_in_two_threads_take_turns_and_leave_vllms_function_in_place():
    import threading

    from vllm.model_executor.layers import utils

    original = utils.dispatch_cpu_unquantized_gemm
    first_inside, first_may_leave, second_inside = threading.Event(), threading.Event(), threading.Event()

    def first():
        with vllm_cpu_weights.plain_linear_weights():
            first_inside.set()
            first_may_leave.wait(10)

    def second():
        first_inside.wait(10)
        with vllm_cpu_weights.plain_linear_weights():
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
    assert not vllm_cpu_weights.loads_in_place(torch.nn.Linear(4, 4))  # e.g. a GPU model: the receiver reloads


def test_only_unquantized_tested_architectures_load_in_place(tmp_path, tiny_model_dir):
    assert vllm_cpu_weights.in_place_capable(tiny_model_dir)
    with open(f"{tiny_model_dir}/config.json") as fh:
        config = json.load(fh)
    for name, change in [("quantized", {"quantization_config": {"quant_method": "fp8"}}),
                         ("moe", {"architectures": ["Qwen3VLMoeForConditionalGeneration"]})]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({**config, **change}))
        assert not vllm_cpu_weights.in_place_capable(str(tmp_path / name)), name
    assert not vllm_cpu_weights.in_place_capable("Qwen/Qwen2-VL-7B-Instruct")  # a hub id: vLLM's own way


class _Fused(torch.nn.Module):
    """vLLM's shape of things: a fused parameter filled from two checkpoint names through a sharded loader, and a
    plain one through the default loader."""

    def __init__(self):
        super().__init__()
        self.qk = torch.nn.Parameter(torch.zeros(4, 3), requires_grad=False)
        self.qk.weight_loader = self._sharded
        self.norm = torch.nn.Parameter(torch.zeros(3), requires_grad=False)
        self.walks = 0
        self.convert = False

    @staticmethod
    def _sharded(param, loaded_weight, shard):
        param.data[2 * shard:2 * shard + 2].copy_(loaded_weight)

    def load_weights(self, weights):
        """The slow generic walk vLLM does; a sharded name is sliced (a view), a plain one passed as it is."""
        from vllm.model_executor.model_loader.weight_utils import default_weight_loader

        self.walks += 1
        for name, w in weights:
            if name in ("q", "k"):
                self.qk.weight_loader(self.qk, w[:2] if name == "q" else w[1:], 0 if name == "q" else 1)
            elif name == "norm":  # any other name is skipped, as vLLM skips a tied head's
                getattr(self.norm, "weight_loader", default_weight_loader)(
                    self.norm, w.to(torch.float64).float() if self.convert else w)


def _tensors(seed):
    g = torch.Generator().manual_seed(seed)
    return [("q", torch.randn(3, 3, generator=g)), ("k", torch.randn(3, 3, generator=g)),
            ("norm", torch.randn(3, generator=g))]


def test_the_first_load_is_recorded_and_later_ones_replay_it():
    model, replay = _Fused(), vllm_cpu_weights.LoaderReplay()
    replay.load(model, _tensors(0), model.load_weights)
    assert model.walks == 1 and replay.enabled
    assert not hasattr(model.norm, "weight_loader") and model.qk.weight_loader == _Fused._sharded  # put back
    replay.load(model, _tensors(1), model.load_weights)  # replayed: no walk
    assert model.walks == 1
    expected = _Fused()
    expected.load_weights(_tensors(1))
    assert torch.equal(model.qk, expected.qk) and torch.equal(model.norm, expected.norm)
    replay.load(model, _tensors(2)[:1], model.load_weights)  # a bucket with part of the names: replayed too
    assert model.walks == 1 and torch.equal(model.qk[:2], _tensors(2)[0][1][:2])
    replay.load(model, [("q", torch.ones(2, 3))], model.load_weights)  # another shape: recorded again, not replayed
    assert model.walks == 2 and replay.enabled and torch.equal(model.qk[:2], torch.ones(2, 3))
    replay.load(model, [("q", torch.full((3, 2), 2.0).t())], model.load_weights)  # another layout: the same
    assert model.walks == 3 and torch.equal(model.qk[:2], torch.full((2, 3), 2.0))


def test_a_converted_weight_or_a_name_without_a_loader_call_turns_the_replay_off():
    model, replay = _Fused(), vllm_cpu_weights.LoaderReplay()
    model.convert = True  # the loader gets a copy, not a view: the replay could not follow a new tensor
    replay.load(model, _tensors(0), model.load_weights)
    assert not replay.enabled
    replay.load(model, _tensors(1), model.load_weights)
    assert model.walks == 2 and torch.equal(model.norm, _tensors(1)[2][1])

    model, replay = _Fused(), vllm_cpu_weights.LoaderReplay()
    replay.load(model, [*_tensors(0), ("skipped", torch.ones(2))], model.load_weights)  # e.g. a tied head
    assert not replay.enabled


class _ReadOnlyLoader(torch.nn.Parameter):
    """A parameter class whose loader cannot be replaced (no setter)."""

    @property
    def weight_loader(self):
        from vllm.model_executor.model_loader.weight_utils import default_weight_loader

        return default_weight_loader


def test_a_loader_that_cannot_be_wrapped_still_loads_and_turns_the_replay_off():
    model, replay = _Fused(), vllm_cpu_weights.LoaderReplay()
    model.norm = _ReadOnlyLoader(torch.zeros(3), requires_grad=False)  # wrapped after qk, which records already
    replay.load(model, _tensors(0), model.load_weights)
    assert not replay.enabled and torch.equal(model.norm, _tensors(0)[2][1])
    assert model.qk.weight_loader == _Fused._sharded  # put back
