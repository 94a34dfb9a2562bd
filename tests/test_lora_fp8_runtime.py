"""LoRAs on fp8 experts run beside the weight (exact), never rounded into it."""
import pytest
import torch
from safetensors.torch import save_file

from wan22duo.engine.checkpoint import load_dit
from wan22duo.engine.lora import apply_loras, remove_loras
from wan22duo.engine.tiny import write_tiny_dit

LAYER = "blocks.0.self_attn.q"
RANK = 4


@pytest.fixture(scope="module")
def fp8_dit(tmp_path_factory):
    return write_tiny_dit(tmp_path_factory.mktemp("fp8") / "dit.safetensors", storage="fp8_scaled", seed=3)


def lora_file(tmp_path, name, seed, alpha, layer=LAYER, size=256):
    g = torch.Generator().manual_seed(seed)
    down, up = torch.randn(RANK, size, generator=g) * 0.05, torch.randn(size, RANK, generator=g) * 0.05
    path = tmp_path / name
    save_file({f"diffusion_model.{layer}.lora_down.weight": down, f"diffusion_model.{layer}.lora_up.weight": up,
               f"diffusion_model.{layer}.alpha": torch.tensor(alpha)}, str(path))
    return path, down, up


def by_hand(layer, x, *deltas):
    """x @ (W_fp8 * scale + sum of deltas).T + b, all in float64."""
    weight = layer.weight.double() * layer.scale_weight.double()
    for delta in deltas:
        weight = weight + delta.double()
    return (x.double() @ weight.T + layer.bias.double()).float()


def test_fp8_layer_keeps_its_weight_and_the_output_is_exact(fp8_dit, tmp_path):
    model = load_dit(fp8_dit)
    layer = model.get_submodule(LAYER)
    weight, scale = layer.weight, layer.scale_weight
    stored, stored_scale = weight.detach().clone(), scale.clone()
    x = torch.randn(3, 256, generator=torch.Generator().manual_seed(0))
    before = layer(x)
    path, down, up = lora_file(tmp_path, "a.safetensors", 1, alpha=2.0)

    backup = apply_loras(model, [(path, 0.7)])
    assert layer.weight is weight and layer.scale_weight is scale  # not replaced
    assert torch.equal(weight, stored) and torch.equal(scale, stored_scale)  # not touched
    assert weight.dtype == torch.float8_e4m3fn
    want = by_hand(layer, x, 0.7 * (2.0 / RANK) * (up @ down))
    torch.testing.assert_close(layer(x), want, rtol=1e-5, atol=1e-5)
    assert (layer(x) - before).abs().max() > 1e-3  # the LoRA does something
    # Only the rank factors were added: r * (in + out) values, no full-size copy.
    assert layer.lora_down.numel() + layer.lora_up.numel() == RANK * (256 + 256)

    remove_loras(model, backup)
    assert layer.lora_down is None and layer.lora_up is None
    assert torch.equal(layer(x), before)


def test_fp8_runtime_loras_chain_additively(fp8_dit, tmp_path):
    model = load_dit(fp8_dit)
    layer = model.get_submodule(LAYER)
    x = torch.randn(2, 256, generator=torch.Generator().manual_seed(1))
    a, down_a, up_a = lora_file(tmp_path, "a.safetensors", 2, alpha=4.0)
    b, down_b, up_b = lora_file(tmp_path, "b.safetensors", 3, alpha=1.0)
    want = by_hand(layer, x, 1.0 * (4.0 / RANK) * (up_a @ down_a), -0.5 * (1.0 / RANK) * (up_b @ down_b))

    together = apply_loras(model, [(a, 1.0), (b, -0.5)])
    torch.testing.assert_close(layer(x), want, rtol=1e-5, atol=1e-5)
    remove_loras(model, together)

    first = apply_loras(model, [(a, 1.0)])
    second = apply_loras(model, [(b, -0.5)])  # a later call stacks on the first
    torch.testing.assert_close(layer(x), want, rtol=1e-5, atol=1e-5)
    remove_loras(model, second)
    remove_loras(model, first)
    assert layer.lora_down is None
