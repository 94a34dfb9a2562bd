"""Wan22DuoLoraLoader on a tiny DiT: lazy handles, chaining, branches, every key format, fp8."""
import logging

import pytest
import torch

from wan22duo.engine.weights.checkpoint import detect_dit, load_dit
from wan22duo.engine.weights.lora import LoraError
from wan22duo.engine.testing.tiny_lora import FORMATS, write_tiny_lora
from wan22duo.engine.model.ops import CastLinear
from wan22duo.engine.memory.residency import ModelHandle
from wan22duo.engine.testing.tiny import write_tiny_dit
from wan22duo.nodes.lora import NODE_CLASS_MAPPINGS, Wan22DuoLoraLoader

Q = "blocks.0.self_attn.q"
SMALL = dict(dim=128, ffn_dim=256, num_layers=1)  # one head of the real head dim keeps the tests fast


@pytest.fixture(scope="module")
def dit_path(tmp_path_factory):
    return write_tiny_dit(tmp_path_factory.mktemp("dit") / "tiny_t2v.safetensors", **SMALL)


def handle_for(path, weight_dtype=None):
    path = str(path)
    return ModelHandle(lambda device: load_dit(path, device=device, weight_dtype=weight_dtype), "cpu",
                       torch.float32, {"config": detect_dit(path), "path": path})


def velocity(model):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, model.config.in_dim, 1, 4, 4, generator=g)
    context = torch.randn(1, 6, model.config.text_dim, generator=g)
    with torch.no_grad():
        return model(x, torch.tensor([900.0]), context)


def weight(handle, name=Q):
    module = handle.acquire().get_submodule(name)
    w = module.weight.float()
    return w * module.scale_weight if module.scale_weight is not None else w


def low_rank_delta(tensors, down_key, up_key, alpha=None):
    down, up = tensors[down_key], tensors[up_key]
    return up @ down * (1.0 if alpha is None else alpha / down.shape[0])


def apply_node(handle, path, strength):
    (out,) = Wan22DuoLoraLoader().load_lora(handle, str(path), strength)
    return out


def test_node_returns_a_new_patched_handle_and_leaves_its_input_alone(dit_path, tmp_path):
    lora_path = tmp_path / "lightning_like.safetensors"
    write_tiny_lora(lora_path, dit_path, "comfy", full_deltas=True, alpha=2.0, seed=1)
    base = handle_for(dit_path)
    base_velocity = velocity(base.acquire())

    patched = apply_node(base, lora_path, 1.0)
    assert patched is not base and not patched.loaded  # lazy: nothing loaded yet
    assert "loras" not in base.info
    patched_velocity = velocity(patched.acquire())
    assert (patched_velocity - base_velocity).abs().max() > 1e-3
    assert torch.equal(velocity(base.acquire()), base_velocity)
    assert torch.equal(velocity(handle_for(dit_path).acquire()), base_velocity)


def test_patched_weight_follows_the_formula(dit_path, tmp_path):
    lora_path = tmp_path / "a.safetensors"
    tensors = write_tiny_lora(lora_path, dit_path, "comfy", alpha=8.0, seed=2)
    base = handle_for(dit_path)
    want = weight(base) + 0.6 * low_rank_delta(
        tensors, f"diffusion_model.{Q}.lora_down.weight", f"diffusion_model.{Q}.lora_up.weight", alpha=8.0)
    torch.testing.assert_close(weight(apply_node(base, lora_path, 0.6)), want, rtol=1e-6, atol=1e-6)


def test_chained_nodes_add_up_and_branches_stay_independent(dit_path, tmp_path):
    a_path, b_path = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    a = write_tiny_lora(a_path, dit_path, "comfy", seed=3)
    b = write_tiny_lora(b_path, dit_path, "kohya", seed=4, alpha=2.0)
    delta_a = low_rank_delta(a, f"diffusion_model.{Q}.lora_down.weight", f"diffusion_model.{Q}.lora_up.weight")
    kohya = "lora_unet_" + Q.replace(".", "_")
    delta_b = low_rank_delta(b, f"{kohya}.lora_down.weight", f"{kohya}.lora_up.weight", alpha=2.0)
    base = handle_for(dit_path)
    w0 = weight(base)

    only_a = apply_node(base, a_path, 1.0)
    only_b = apply_node(base, b_path, -0.5)  # a second branch from the same loader
    both = apply_node(only_a, b_path, -0.5)
    torch.testing.assert_close(weight(both), w0 + delta_a - 0.5 * delta_b, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(weight(only_a), w0 + delta_a, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(weight(only_b), w0 - 0.5 * delta_b, rtol=1e-6, atol=1e-6)
    assert torch.equal(weight(base), w0)
    assert [s for _, s in both.info["loras"]] == [1.0, -0.5]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_reaches_every_layer_of_the_real_model(dit_path, tmp_path, fmt, caplog):
    lora_path = tmp_path / f"{fmt}.safetensors"
    write_tiny_lora(lora_path, dit_path, fmt, full_deltas=True, seed=5)
    base = handle_for(dit_path)
    before = {k: v.clone() for k, v in base.acquire().state_dict().items()}
    with caplog.at_level(logging.WARNING):
        after = apply_node(base, lora_path, 1.0).acquire().state_dict()
    assert "ignored" not in caplog.text  # every tensor of the file found its layer
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    # everything but the patch-embedding conv weight and head.modulation (no deltas written for them)
    assert changed == set(before) - {"patch_embedding.weight", "head.modulation"}


def test_fp8_expert_stays_fp8_and_changes_its_output(dit_path, tmp_path):
    lora_path = tmp_path / "a.safetensors"
    write_tiny_lora(lora_path, dit_path, "comfy", seed=6, magnitude=0.2)
    base = handle_for(dit_path, weight_dtype="fp8_e4m3fn")
    base_velocity = velocity(base.acquire())
    patched = apply_node(base, lora_path, 1.0).acquire()
    assert patched.get_submodule(Q).weight.dtype == torch.float8_e4m3fn
    assert (velocity(patched) - base_velocity).abs().max() > 1e-3
    assert torch.equal(velocity(base.acquire()), base_velocity)


@pytest.fixture(scope="module")
def fp8_dit_path(tmp_path_factory):
    return write_tiny_dit(tmp_path_factory.mktemp("fp8") / "tiny_fp8_scaled.safetensors", storage="fp8_scaled",
                          seed=11, **SMALL)


def test_lora_on_an_fp8_scaled_expert_runs_beside_the_weights_exactly(fp8_dit_path, tmp_path):
    """The common ComfyUI setup: a Lightning-style LoRA on an fp8_scaled expert."""
    lora_path = tmp_path / "lightning_like.safetensors"
    tensors = write_tiny_lora(lora_path, fp8_dit_path, "comfy", full_deltas=True, alpha=2.0, seed=8)
    base = handle_for(fp8_dit_path)
    plain = base.acquire()
    patched = apply_node(base, lora_path, 0.8).acquire()

    linears = [name for name, m in patched.named_modules() if isinstance(m, CastLinear)]
    for name in linears:  # every fp8 weight and scale is the file's, bit for bit
        got, stored = patched.get_submodule(name), plain.get_submodule(name)
        assert got.weight.dtype == torch.float8_e4m3fn
        assert torch.equal(got.weight.view(torch.uint8), stored.weight.view(torch.uint8))
        assert torch.equal(got.scale_weight, stored.scale_weight)
        assert len(got.lora_branches) == 1
    assert plain.get_submodule(Q).lora_branches == ()

    layer = patched.get_submodule(Q)
    x = torch.randn(5, SMALL["dim"], generator=torch.Generator().manual_seed(1))
    delta = 0.8 * low_rank_delta(
        tensors, f"diffusion_model.{Q}.lora_down.weight", f"diffusion_model.{Q}.lora_up.weight", alpha=2.0)
    w = layer.weight.double() * layer.scale_weight.double() + delta.double()
    bias = layer.bias.double()  # fp16, with the LoRA's diff_b merged
    torch.testing.assert_close(layer(x).double(), x.double() @ w.T + bias, rtol=1e-5, atol=1e-5)

    # The whole model against the same file dequantized to fp32 with the LoRA merged there.
    reference = apply_node(handle_for(fp8_dit_path, weight_dtype="fp32"), lora_path, 0.8).acquire()
    assert reference.get_submodule(Q).weight.dtype == torch.float32
    torch.testing.assert_close(velocity(patched), velocity(reference), rtol=1e-4, atol=1e-5)
    assert (velocity(patched) - velocity(plain)).abs().max() > 1e-2


def test_zero_strength_returns_the_input_handle(dit_path, tmp_path):
    base = handle_for(dit_path)
    assert apply_node(base, tmp_path / "never_read.safetensors", 0.0) is base


def test_a_lora_for_another_model_size_fails_at_the_node(dit_path, tmp_path):
    other_dit = write_tiny_dit(tmp_path / "tiny_5b.safetensors", variant="ti2v_5b", **SMALL)
    lora_path = tmp_path / "for_5b.safetensors"
    write_tiny_lora(lora_path, other_dit, "comfy")
    base = handle_for(dit_path)
    with pytest.raises(LoraError, match=r"head\.head.*\(192, 128\).*\(64, 128\)"):
        apply_node(base, lora_path, 1.0)
    assert not base.loaded  # checked from the header and the config, without loading the model


def test_a_dit_file_given_as_lora_fails_at_the_node(dit_path):
    with pytest.raises(LoraError, match="full Wan model checkpoint"):
        apply_node(handle_for(dit_path), dit_path, 1.0)


def test_a_bare_name_without_comfyui_asks_for_a_full_path(dit_path):
    with pytest.raises(FileNotFoundError, match="full path"):
        apply_node(handle_for(dit_path), "some_lora.safetensors", 1.0)


def test_node_schema():
    assert NODE_CLASS_MAPPINGS["Wan22DuoLoraLoader"] is Wan22DuoLoraLoader
    required = Wan22DuoLoraLoader.INPUT_TYPES()["required"]
    assert list(required) == ["model", "lora_name", "strength"]
    assert required["model"][0] == "WAN22DUO_MODEL"
    assert required["strength"][0] == "FLOAT"
    options = required["strength"][1]
    assert (options["default"], options["min"], options["max"], options["step"]) == (1.0, -10.0, 10.0, 0.01)
    assert all("tooltip" in spec[1] for spec in required.values())
    assert Wan22DuoLoraLoader.RETURN_TYPES == ("WAN22DUO_MODEL",)
    assert Wan22DuoLoraLoader.RETURN_NAMES == ("model",)
    assert Wan22DuoLoraLoader.CATEGORY == "Wan22Duo/loaders"
    assert Wan22DuoLoraLoader.DESCRIPTION


def test_expert_loader_node_then_lora_node(dit_path, tmp_path):
    from wan22duo.nodes.loaders import Wan22DuoExpertLoader

    lora_path = tmp_path / "high.safetensors"
    write_tiny_lora(lora_path, dit_path, "comfy", full_deltas=True, seed=7)
    (expert,) = Wan22DuoExpertLoader().load(str(dit_path), "high_noise", "default", "fp32", "cpu")
    patched = apply_node(expert, lora_path, 1.0)
    assert patched.info["role"] == "high_noise" and patched.device == expert.device
    base_velocity = velocity(expert.acquire())
    assert (velocity(patched.acquire()) - base_velocity).abs().max() > 1e-3
    assert torch.equal(velocity(expert.acquire()), base_velocity)
