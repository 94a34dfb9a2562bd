"""LoRA key formats, the patch formula, exact unpatching, LoRAs on fp8 weights and bad files.

The expected weights and outputs are computed here by hand from the tensors the test
writes, with the layer names spelled out per format, independently of engine/weights/lora.py's key
mapping. fp8 Linears of the real DiT run LoRAs beside the weight (runtime branches); fp8
weights in other layers (the toy's plain Linears here) are merged and re-quantized.
"""
import copy
import logging

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from wan22duo.engine.weights.checkpoint import load_dit
from wan22duo.engine.weights.lora import LoraError, apply_loras, remove_loras
from wan22duo.engine.testing.tiny_lora import write_tiny_lora
from wan22duo.engine.model.ops import CastLinear
from wan22duo.engine.testing.tiny import write_tiny_dit

D, FFN, R = 8, 16, 4


class ScaledLinear(nn.Linear):
    """A Linear that stores ``scale_weight`` beside its weight, like engine/model/ops.py's layers."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("scale_weight", None)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.modulation = nn.Parameter(torch.randn(1, 6, D))
        self.self_attn = nn.Module()
        self.self_attn.q = ScaledLinear(D, D)
        self.self_attn.o = ScaledLinear(D, D)
        self.self_attn.norm_q = nn.RMSNorm(D)
        self.cross_attn = nn.Module()
        self.cross_attn.k = ScaledLinear(D, D)
        self.norm3 = nn.LayerNorm(D, elementwise_affine=True)
        self.ffn = nn.Sequential(ScaledLinear(D, FFN), nn.GELU(), ScaledLinear(FFN, D))


class Toy(nn.Module):
    """The Wan DiT's naming on a toy scale: module names equal checkpoint keys."""

    def __init__(self):
        super().__init__()
        self.patch_embedding = nn.Conv3d(4, D, (1, 2, 2), stride=(1, 2, 2))
        self.blocks = nn.ModuleList([Block(), Block()])
        self.head = nn.Module()
        self.head.head = ScaledLinear(D, 16)
        self.head.modulation = nn.Parameter(torch.randn(1, 2, D))
        with torch.no_grad():  # LayerNorm/RMSNorm start at exactly 1 and 0; make them random
            for p in self.parameters():
                p.copy_(torch.randn_like(p))


def toy(seed=0):
    torch.manual_seed(seed)
    return Toy()


def snapshot(model):
    return {k: v.clone() for k, v in list(model.named_parameters()) + list(model.named_buffers())}


def assert_identical(model, before):
    now = snapshot(model)
    assert now.keys() == before.keys()
    for key, value in before.items():
        assert now[key].dtype == value.dtype, key
        if value.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
            assert torch.equal(now[key].view(torch.uint8), value.view(torch.uint8)), key
        else:
            assert torch.equal(now[key], value), key


def low_rank(out_features, in_features, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(out_features, R, generator=g), torch.randn(R, in_features, generator=g)


def write(tmp_path, tensors, name="lora.safetensors"):
    path = tmp_path / name
    save_file({k: v.clone().contiguous() for k, v in tensors.items()}, str(path))
    return str(path)


# Per format: the names it uses for block 0's q and o, the FFN's first layer and the head.
FORMATS = {
    "comfy": ("diffusion_model.{}.lora_down.weight", "diffusion_model.{}.lora_up.weight", "diffusion_model.{}.alpha",
              {"q": "blocks.0.self_attn.q", "o": "blocks.0.self_attn.o", "ffn": "blocks.0.ffn.0", "head": "head.head"}),
    "kohya": ("lora_unet_{}.lora_down.weight", "lora_unet_{}.lora_up.weight", "lora_unet_{}.alpha",
              {"q": "blocks_0_self_attn_q", "o": "blocks_0_self_attn_o", "ffn": "blocks_0_ffn_0",
               "head": "head_head"}),
    "peft": ("diffusion_model.{}.lora_A.weight", "diffusion_model.{}.lora_B.weight", None,
             {"q": "blocks.0.self_attn.q", "o": "blocks.0.self_attn.o", "ffn": "blocks.0.ffn.0",
              "head": "head.head"}),
    "diffusers": ("transformer.{}.lora_A.weight", "transformer.{}.lora_B.weight", None,
                  {"q": "blocks.0.attn1.to_q", "o": "blocks.0.attn1.to_out.0", "ffn": "blocks.0.ffn.net.0.proj",
                   "head": "proj_out"}),
}
MODEL_NAMES = {"q": "blocks.0.self_attn.q", "o": "blocks.0.self_attn.o", "ffn": "blocks.0.ffn.0", "head": "head.head"}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_low_rank_formats_follow_the_formula_and_unpatch_exactly(tmp_path, fmt):
    down_key, up_key, alpha_key, names = FORMATS[fmt]
    model, strength, alpha = toy(), 0.7, 2.0
    tensors, expected = {}, {}
    params = dict(model.named_parameters())
    for i, (short, lora_name) in enumerate(names.items()):
        weight = params[MODEL_NAMES[short] + ".weight"]
        up, down = low_rank(weight.shape[0], weight.shape[1], seed=i)
        tensors[down_key.format(lora_name)] = down
        tensors[up_key.format(lora_name)] = up
        scale = 1.0
        if alpha_key:
            tensors[alpha_key.format(lora_name)] = torch.tensor(alpha)
            scale = alpha / R
        expected[MODEL_NAMES[short] + ".weight"] = weight.detach() + strength * scale * (up @ down)
    path = write(tmp_path, tensors)
    before = snapshot(model)

    backup = apply_loras(model, [(path, strength)])
    params = dict(model.named_parameters())
    for name, want in expected.items():
        torch.testing.assert_close(params[name], want, rtol=1e-6, atol=1e-6)
    untouched = set(before) - set(expected)
    assert all(torch.equal(snapshot(model)[k], before[k]) for k in untouched)

    remove_loras(model, backup)
    assert_identical(model, before)


def test_full_deltas_of_lightning_loras(tmp_path):
    """diff (norm weights, conv weights), diff_b (biases), diff_m (block modulation)."""
    model, strength = toy(), 1.5
    g = torch.Generator().manual_seed(3)
    block = model.blocks[1]
    tensors = {
        "diffusion_model.blocks.1.norm3.diff": torch.randn(D, generator=g),
        "diffusion_model.blocks.1.norm3.diff_b": torch.randn(D, generator=g),
        "diffusion_model.blocks.1.self_attn.norm_q.diff": torch.randn(D, generator=g),
        "diffusion_model.blocks.1.cross_attn.k.diff_b": torch.randn(D, generator=g),
        "diffusion_model.blocks.1.diff_m": torch.randn(1, 6, D, generator=g),
        "diffusion_model.patch_embedding.diff": torch.randn(D, 4, 1, 2, 2, generator=g),
    }
    expected = {
        "blocks.1.norm3.weight": block.norm3.weight + strength * tensors["diffusion_model.blocks.1.norm3.diff"],
        "blocks.1.norm3.bias": block.norm3.bias + strength * tensors["diffusion_model.blocks.1.norm3.diff_b"],
        "blocks.1.self_attn.norm_q.weight":
            block.self_attn.norm_q.weight + strength * tensors["diffusion_model.blocks.1.self_attn.norm_q.diff"],
        "blocks.1.cross_attn.k.bias":
            block.cross_attn.k.bias + strength * tensors["diffusion_model.blocks.1.cross_attn.k.diff_b"],
        "blocks.1.modulation": block.modulation + strength * tensors["diffusion_model.blocks.1.diff_m"],
        "patch_embedding.weight":
            model.patch_embedding.weight + strength * tensors["diffusion_model.patch_embedding.diff"],
    }
    expected = {k: v.detach().clone() for k, v in expected.items()}
    before = snapshot(model)
    backup = apply_loras(model, [(write(tmp_path, tensors), strength)])
    params = dict(model.named_parameters())
    for name, want in expected.items():
        torch.testing.assert_close(params[name], want, rtol=1e-6, atol=1e-6)
    remove_loras(model, backup)
    assert_identical(model, before)


def test_diffusers_names_map_back_including_the_swapped_norm(tmp_path):
    model = toy()
    g = torch.Generator().manual_seed(4)
    tensors = {
        "transformer.blocks.0.norm2.diff": torch.randn(D, generator=g),  # diffusers norm2 = original norm3
        "transformer.blocks.0.scale_shift_table.diff": torch.randn(1, 6, D, generator=g),
        "transformer.scale_shift_table.diff": torch.randn(1, 2, D, generator=g),
        "transformer.blocks.0.attn1.to_q.lora_B.bias": torch.randn(D, generator=g),
    }
    expected = {
        "blocks.0.norm3.weight": model.blocks[0].norm3.weight + tensors["transformer.blocks.0.norm2.diff"],
        "blocks.0.modulation": model.blocks[0].modulation + tensors["transformer.blocks.0.scale_shift_table.diff"],
        "head.modulation": model.head.modulation + tensors["transformer.scale_shift_table.diff"],
        "blocks.0.self_attn.q.bias":
            model.blocks[0].self_attn.q.bias + tensors["transformer.blocks.0.attn1.to_q.lora_B.bias"],
    }
    expected = {k: v.detach().clone() for k, v in expected.items()}
    apply_loras(model, [(write(tmp_path, tensors), 1.0)])
    params = dict(model.named_parameters())
    for name, want in expected.items():
        torch.testing.assert_close(params[name], want, rtol=1e-6, atol=1e-6)


def test_conv_low_rank_on_patch_embedding(tmp_path):
    model = toy()
    g = torch.Generator().manual_seed(5)
    down, up = torch.randn(R, 4, 1, 2, 2, generator=g), torch.randn(D, R, 1, 1, 1, generator=g)
    tensors = {"diffusion_model.patch_embedding.lora_down.weight": down,
               "diffusion_model.patch_embedding.lora_up.weight": up,
               "diffusion_model.patch_embedding.alpha": torch.tensor(1.0)}
    delta = (up.reshape(D, R) @ down.reshape(R, 16)).reshape(D, 4, 1, 2, 2) * (1.0 / R)
    want = model.patch_embedding.weight.detach() + 0.5 * delta
    apply_loras(model, [(write(tmp_path, tensors), 0.5)])
    torch.testing.assert_close(model.patch_embedding.weight, want, rtol=1e-6, atol=1e-6)


def test_two_loras_add_up(tmp_path):
    model = toy()
    weight = model.blocks[0].self_attn.q.weight.detach().clone()
    up_a, down_a = low_rank(D, D, seed=10)
    up_b, down_b = low_rank(D, D, seed=11)
    a = write(tmp_path, {"diffusion_model.blocks.0.self_attn.q.lora_down.weight": down_a,
                         "diffusion_model.blocks.0.self_attn.q.lora_up.weight": up_a}, "a.safetensors")
    b = write(tmp_path, {"lora_unet_blocks_0_self_attn_q.lora_down.weight": down_b,
                         "lora_unet_blocks_0_self_attn_q.lora_up.weight": up_b,
                         "lora_unet_blocks_0_self_attn_q.alpha": torch.tensor(8.0)}, "b.safetensors")
    before = snapshot(model)
    backup = apply_loras(model, [(a, 1.0), (b, -0.5)])
    want = weight + up_a @ down_a - 0.5 * (8.0 / R) * (up_b @ down_b)
    torch.testing.assert_close(model.blocks[0].self_attn.q.weight, want, rtol=1e-6, atol=1e-6)
    remove_loras(model, backup)
    assert_identical(model, before)


@pytest.mark.parametrize("fp8", [torch.float8_e4m3fn, torch.float8_e5m2])
@pytest.mark.parametrize("scaled", [True, False])
def test_fp8_weights_without_branches_are_requantized_and_unpatch_bit_for_bit(tmp_path, fp8, scaled):
    """A plain Linear cannot run a LoRA beside its weight: merged, rounded once to fp8."""
    model = toy()
    layer = model.blocks[0].ffn[0]
    with torch.no_grad():
        real = layer.weight.detach().clone()
        scale = real.abs().max() / torch.finfo(fp8).max if scaled else torch.tensor(1.0)
        layer.weight = nn.Parameter((real / scale).to(fp8), requires_grad=False)
        if scaled:
            layer.scale_weight = scale.float()
    base = layer.weight.float() * (layer.scale_weight if scaled else 1.0)
    up, down = low_rank(FFN, D, seed=7)
    path = write(tmp_path, {"diffusion_model.blocks.0.ffn.0.lora_down.weight": down,
                            "diffusion_model.blocks.0.ffn.0.lora_up.weight": up,
                            "diffusion_model.blocks.0.ffn.0.alpha": torch.tensor(2.0)})
    want = base + 0.3 * (2.0 / R) * (up @ down)
    before = snapshot(model)

    backup = apply_loras(model, [(path, 0.3)])
    assert layer.weight.dtype == fp8 and layer.scale_weight is not None
    got = layer.weight.float() * layer.scale_weight
    # one round-to-nearest: at most half a step, i.e. eps/2 relative (2**-4 e4m3fn, 2**-3 e5m2),
    # or half a subnormal step (smallest_normal * eps / 2, in units of the scale) near zero
    half_step = torch.finfo(fp8).eps / 2
    bound = want.abs() * half_step + layer.scale_weight * torch.finfo(fp8).smallest_normal * half_step
    assert ((got - want).abs() <= bound).all()
    assert got.abs().max() <= want.abs().max() * (1 + half_step)

    remove_loras(model, backup)
    assert_identical(model, before)
    assert (layer.scale_weight is None) == (not scaled)


def test_fp8_weight_that_grows_past_the_old_range_does_not_saturate(tmp_path):
    model = toy()
    layer = model.blocks[0].self_attn.o
    fmax = torch.finfo(torch.float8_e4m3fn).max
    with torch.no_grad():
        scale = layer.weight.abs().max() / fmax
        layer.weight = nn.Parameter((layer.weight / scale).to(torch.float8_e4m3fn), requires_grad=False)
        layer.scale_weight = scale.float()
    base = layer.weight.float() * layer.scale_weight
    diff = torch.zeros(D, D)
    diff[0, 0] = 10 * base.abs().max()  # ten times the old largest weight: needs a new scale
    apply_loras(model, [(write(tmp_path, {"diffusion_model.blocks.0.self_attn.o.diff": diff}), 1.0)])
    got = layer.weight.float() * layer.scale_weight
    assert got[0, 0].item() == pytest.approx((base[0, 0] + diff[0, 0]).item(), rel=2 ** -4)


def test_zero_strength_changes_nothing(tmp_path):
    model = toy()
    up, down = low_rank(D, D, seed=1)
    path = write(tmp_path, {"diffusion_model.blocks.0.self_attn.q.lora_down.weight": down,
                            "diffusion_model.blocks.0.self_attn.q.lora_up.weight": up})
    before = snapshot(model)
    apply_loras(model, [(path, 0.0)])
    assert_identical(model, before)


# ---------------------------------------------------------------- fp8 Linears: runtime branches

FP8_LAYER = "blocks.0.self_attn.q"
FP8_DIM = 128


@pytest.fixture(scope="module")
def fp8_dit(tmp_path_factory):
    """A tiny DiT stored as ComfyUI's fp8_scaled: every Linear weight e4m3fn with a scale, the rest fp16."""
    return write_tiny_dit(tmp_path_factory.mktemp("fp8") / "dit.safetensors", storage="fp8_scaled", seed=3,
                          dim=FP8_DIM, ffn_dim=256, num_layers=1)


def fp8_lora(tmp_path, name, seed, alpha, layer=FP8_LAYER, rank=R):
    g = torch.Generator().manual_seed(seed)
    down = torch.randn(rank, FP8_DIM, generator=g) * 0.05
    up = torch.randn(FP8_DIM, rank, generator=g) * 0.05
    path = write(tmp_path, {f"diffusion_model.{layer}.lora_down.weight": down,
                            f"diffusion_model.{layer}.lora_up.weight": up,
                            f"diffusion_model.{layer}.alpha": torch.tensor(alpha)}, name)
    return path, down, up


def by_hand(layer, x, *deltas):
    """x @ (W_fp8 * scale + sum of deltas).T + b, in float64."""
    weight = layer.weight.double() * layer.scale_weight.double()
    for delta in deltas:
        weight = weight + delta.double()
    return (x.double() @ weight.T + layer.bias.double()).float()


def fp8_inputs(seed, rows=3):
    return torch.randn(rows, FP8_DIM, generator=torch.Generator().manual_seed(seed))


def test_fp8_low_rank_runs_beside_the_untouched_weight_exactly(fp8_dit, tmp_path):
    model = load_dit(fp8_dit)
    layer = model.get_submodule(FP8_LAYER)
    weight, scale = layer.weight, layer.scale_weight
    stored, stored_scale = weight.detach().clone(), scale.clone()
    assert weight.dtype == torch.float8_e4m3fn and isinstance(layer, CastLinear)
    x = fp8_inputs(0)
    before = layer(x)
    path, down, up = fp8_lora(tmp_path, "a.safetensors", 1, alpha=2.0)

    backup = apply_loras(model, [(path, 0.7)])
    assert layer.weight is weight and layer.scale_weight is scale  # same objects...
    assert torch.equal(weight.view(torch.uint8), stored.view(torch.uint8))  # ...same bits
    assert torch.equal(scale, stored_scale)
    want = by_hand(layer, x, 0.7 * (2.0 / R) * (up @ down))
    torch.testing.assert_close(layer(x), want, rtol=1e-5, atol=1e-5)
    assert (want - before).abs().max() > 1e-2  # the LoRA's effect is well above the tolerance
    x3 = x.reshape(1, 3, FP8_DIM)  # the model calls its Linears on [B, L, dim]
    torch.testing.assert_close(layer(x3), want.reshape(1, 3, -1), rtol=1e-5, atol=1e-5)

    remove_loras(model, backup)
    assert layer.lora_branches == ()
    assert torch.equal(layer(x), before)


def test_fp8_full_diff_runs_as_a_full_rank_branch(fp8_dit, tmp_path):
    model = load_dit(fp8_dit)
    layer = model.get_submodule(FP8_LAYER)
    weight = layer.weight
    diff = torch.randn(FP8_DIM, FP8_DIM, generator=torch.Generator().manual_seed(9)) * 1e-3  # far below an fp8 step
    path = write(tmp_path, {f"diffusion_model.{FP8_LAYER}.diff": diff})
    x = fp8_inputs(1)
    backup = apply_loras(model, [(path, 1.5)])
    assert layer.weight is weight
    torch.testing.assert_close(layer(x), by_hand(layer, x, 1.5 * diff), rtol=1e-5, atol=1e-6)
    assert sum(branch.numel() for branch in layer.lora_branches) == FP8_DIM * FP8_DIM
    remove_loras(model, backup)
    assert layer.lora_branches == ()


def test_fp8_loras_chain_additively_in_one_call_or_two(fp8_dit, tmp_path):
    model = load_dit(fp8_dit)
    layer = model.get_submodule(FP8_LAYER)
    x = fp8_inputs(2, rows=2)
    before = snapshot(model)
    a, down_a, up_a = fp8_lora(tmp_path, "a.safetensors", 2, alpha=4.0)
    b, down_b, up_b = fp8_lora(tmp_path, "b.safetensors", 3, alpha=1.0)
    want = by_hand(layer, x, 1.0 * (4.0 / R) * (up_a @ down_a), -0.5 * (1.0 / R) * (up_b @ down_b))

    together = apply_loras(model, [(a, 1.0), (b, -0.5)])
    torch.testing.assert_close(layer(x), want, rtol=1e-5, atol=1e-5)
    remove_loras(model, together)
    assert layer.lora_branches == ()

    first = apply_loras(model, [(a, 1.0)])
    second = apply_loras(model, [(b, -0.5)])  # a later call stacks on the first
    assert len(layer.lora_branches) == 2
    torch.testing.assert_close(layer(x), want, rtol=1e-5, atol=1e-5)
    remove_loras(model, second)
    assert len(layer.lora_branches) == 1
    remove_loras(model, first)
    assert layer.lora_branches == ()
    assert_identical(model, before)


def test_a_whole_lora_on_an_fp8_model_adds_only_its_rank_matrices(fp8_dit, tmp_path):
    """Every fp8 Linear gets branches holding exactly the file's factors; nothing full-size is added;
    the fp16 biases, norms and modulations merge; unpatching restores every tensor bit for bit."""
    model = load_dit(fp8_dit)
    tensors = write_tiny_lora(tmp_path / "all.safetensors", fp8_dit, "comfy", rank=R, alpha=2.0, full_deltas=True)
    factor_numel = sum(v.numel() for k, v in tensors.items() if k.endswith(("lora_down.weight", "lora_up.weight")))
    fp8_layers = {name: m for name, m in model.named_modules()
                  if isinstance(m, CastLinear) and m.weight.dtype == torch.float8_e4m3fn}
    assert len(fp8_layers) == 16  # 6 top-level + 8 attention + 2 FFN: every Linear is fp8
    originals = {name: (m.weight, m.scale_weight) for name, m in fp8_layers.items()}
    before = snapshot(model)

    backup = apply_loras(model, [(str(tmp_path / "all.safetensors"), 1.0)])
    branch_numel = sum(b.numel() for m in fp8_layers.values() for b in m.lora_branches)
    assert branch_numel == factor_numel
    for name, m in fp8_layers.items():
        assert (m.weight, m.scale_weight) == originals[name]
        assert [b.numel() for b in m.lora_branches] == [R * (m.in_features + m.out_features)]
    changed = {k for k, v in snapshot(model).items() if not torch.equal(v, before[k])}
    assert changed and all(not k.endswith(".weight") or "norm" in k for k in changed)  # merged fp16 tensors only

    remove_loras(model, backup)
    assert_identical(model, before)
    assert all(m.lora_branches == () for m in fp8_layers.values())


def test_branches_follow_the_layer_when_it_moves(fp8_dit, tmp_path):
    model = load_dit(fp8_dit)
    path, _, _ = fp8_lora(tmp_path, "a.safetensors", 4, alpha=1.0)
    apply_loras(model, [(path, 1.0)])
    layer = copy.deepcopy(model.get_submodule(FP8_LAYER)).to("meta")
    assert layer.weight.is_meta
    assert all(b.up.is_meta and b.down.is_meta for b in layer.lora_branches)
    assert "lora" not in " ".join(model.state_dict())  # never saved with the model


def test_branches_in_bf16_without_bias_on_3d_inputs():
    """CastLinear's branch path alone: no bias, [B, L, in] input, low- and full-rank branches, bf16
    compute. Its error may be bf16 rounding only: no larger than the unpatched layer's own."""
    from wan22duo.engine.model.ops import LoraBranch, quantize_fp8

    g = torch.Generator().manual_seed(12)
    layer = CastLinear(64, 48, bias=False)
    q, scale = quantize_fp8(torch.randn(48, 64, generator=g) * 0.1, torch.float8_e4m3fn)
    layer.weight, layer.scale_weight = nn.Parameter(q, requires_grad=False), scale
    up, down, diff = (torch.randn(48, 4, generator=g) * 0.1, torch.randn(4, 64, generator=g) * 0.1,
                      torch.randn(48, 64, generator=g) * 0.005)
    x = torch.randn(2, 5, 64, generator=g).bfloat16()
    w = q.double() * scale.double()
    exact_base = x.double() @ w.T
    base_error = (layer(x).double() - exact_base).norm()
    layer.lora_branches = (LoraBranch(up, down, 0.5), LoraBranch(diff.bfloat16(), None, -2.0))
    exact = x.double() @ (w + 0.5 * up.double() @ down.double() - 2.0 * diff.bfloat16().double()).T
    got = layer(x)
    assert got.dtype == torch.bfloat16 and got.shape == (2, 5, 48)
    assert (exact - exact_base).norm() > 20 * base_error  # the branches' effect dwarfs bf16 rounding
    assert (got.double() - exact).norm() <= 1.1 * base_error


# ---------------------------------------------------------------- bad files


def test_unknown_keys_are_listed_in_a_warning(tmp_path, caplog):
    up, down = low_rank(D, D, seed=1)
    path = write(tmp_path, {"diffusion_model.blocks.0.self_attn.q.lora_down.weight": down,
                            "diffusion_model.blocks.0.self_attn.q.lora_up.weight": up,
                            "diffusion_model.blocks.0.cross_attn.k_img.lora_down.weight": down,
                            "diffusion_model.blocks.0.cross_attn.k_img.lora_up.weight": up})
    with caplog.at_level(logging.WARNING):
        apply_loras(toy(), [(path, 1.0)])
    assert "blocks.0.cross_attn.k_img.lora_down.weight" in caplog.text
    assert "2 of 4" in caplog.text


def test_lora_for_another_model_is_an_error(tmp_path):
    up, down = low_rank(D, D, seed=1)
    path = write(tmp_path, {"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": down,
                            "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": up})
    with pytest.raises(LoraError, match="matches no layer.*another model family"):
        apply_loras(toy(), [(path, 1.0)])


def test_text_encoder_lora_is_an_error_that_says_so(tmp_path):
    up, down = low_rank(D, D, seed=1)
    path = write(tmp_path, {"lora_te_encoder_block_0_layer_0_SelfAttention_q.lora_down.weight": down,
                            "lora_te_encoder_block_0_layer_0_SelfAttention_q.lora_up.weight": up})
    with pytest.raises(LoraError, match="text-encoder LoRA"):
        apply_loras(toy(), [(path, 1.0)])


def test_a_dit_checkpoint_is_not_a_lora(tmp_path):
    model = toy()
    path = write(tmp_path, {k: v.detach().contiguous() for k, v in model.state_dict().items() if v is not None})
    with pytest.raises(LoraError, match="is not a LoRA.*full Wan model checkpoint"):
        apply_loras(model, [(path, 1.0)])


def test_shape_mismatch_names_the_key_and_both_shapes(tmp_path):
    up, down = low_rank(2 * D, 2 * D, seed=1)
    path = write(tmp_path, {"diffusion_model.blocks.0.self_attn.q.lora_down.weight": down,
                            "diffusion_model.blocks.0.self_attn.q.lora_up.weight": up})
    with pytest.raises(LoraError) as info:
        apply_loras(toy(), [(path, 1.0)])
    message = str(info.value)
    assert "diffusion_model.blocks.0.self_attn.q.lora_up.weight" in message
    assert "(16, 16)" in message and "(8, 8)" in message


def test_non_safetensors_file_is_an_error(tmp_path):
    path = tmp_path / "lora.pt"
    torch.save({"a.lora_up.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(LoraError, match="not a readable safetensors file"):
        apply_loras(toy(), [(str(path), 1.0)])


def test_a_gguf_file_as_a_lora_says_it_is_gguf_and_where_loras_come_from(tmp_path):
    from wan22duo.engine.testing.tiny_gguf import write_tiny_gguf
    from wan22duo.engine.weights.lora import read_lora_header

    path = write_tiny_gguf(tmp_path / "wan22_lightx2v_lora.safetensors", dim=256, ffn_dim=512, num_layers=1,
                           text_dim=256)  # a GGUF whatever its name says
    for read in (lambda: apply_loras(toy(), [(str(path), 1.0)]), lambda: read_lora_header(path)):
        with pytest.raises(LoraError, match=r"^wan22_lightx2v_lora\.safetensors is a GGUF file; LoRAs are read from "
                                            r"\.safetensors files .*Wan22DuoExpertLoader"):
            read()


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(LoraError, match="does not exist"):
        apply_loras(toy(), [(str(tmp_path / "nope.safetensors"), 1.0)])


def test_half_a_low_rank_pair_is_an_error(tmp_path):
    up, _ = low_rank(D, D, seed=1)
    path = write(tmp_path, {"diffusion_model.blocks.0.self_attn.q.lora_up.weight": up})
    with pytest.raises(LoraError, match="lack their down"):
        apply_loras(toy(), [(path, 1.0)])


def test_a_failure_midway_leaves_the_model_unpatched(tmp_path):
    """An fp8 weight whose layer cannot hold a scale cannot be re-quantized: error, nothing changed."""
    model = toy()
    with torch.no_grad():
        model.head.head = nn.Linear(D, 16)  # a plain Linear: no scale_weight
        model.head.head.weight = nn.Parameter(torch.randn(16, D).to(torch.float8_e4m3fn), requires_grad=False)
    up, down = low_rank(D, D, seed=1)
    head_up, head_down = low_rank(16, D, seed=2)
    tensors = {"diffusion_model.blocks.0.self_attn.q.lora_down.weight": down,  # patched first,
               "diffusion_model.blocks.0.self_attn.q.lora_up.weight": up,
               "diffusion_model.head.head.lora_down.weight": head_down,  # then this one fails
               "diffusion_model.head.head.lora_up.weight": head_up}
    before = snapshot(model)
    with pytest.raises(LoraError, match="no scale_weight"):
        apply_loras(model, [(write(tmp_path, tensors), 1.0)])
    assert_identical(model, before)
