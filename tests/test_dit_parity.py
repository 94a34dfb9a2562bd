"""Our DiT against diffusers' WanTransformer3DModel on the same random weights (fp32).

The reference is an independent implementation: diffusers, fed the original weights
renamed per spec §6.3 (the mapping below is written from the spec's table) and the
context zero-padded to 512 rows as the official code does. Tolerance from spec §7:
relative L2 <= 1e-5, max abs <= 1e-4.
"""
import re

import pytest
import torch
from safetensors.torch import load_file

from wan22duo.engine.weights import checkpoint
from wan22duo.engine.model import dit
from wan22duo.engine.testing import tiny

from _deps import require

diffusers = require("diffusers")

# Sequential substring renames, original -> diffusers (spec §6.3). head.modulation must
# come before the generic modulation rule.
RENAMES = [
    ("text_embedding.0", "condition_embedder.text_embedder.linear_1"),
    ("text_embedding.2", "condition_embedder.text_embedder.linear_2"),
    ("time_embedding.0", "condition_embedder.time_embedder.linear_1"),
    ("time_embedding.2", "condition_embedder.time_embedder.linear_2"),
    ("time_projection.1", "condition_embedder.time_proj"),
    ("head.modulation", "scale_shift_table"),
    ("head.head", "proj_out"),
    (".modulation", ".scale_shift_table"),
    (".self_attn.o.", ".attn1.to_out.0."),
    (".cross_attn.o.", ".attn2.to_out.0."),
    (".self_attn.", ".attn1."),
    (".cross_attn.", ".attn2."),
    (".norm3.", ".norm2."),
    (".ffn.0.", ".ffn.net.0.proj."),
    (".ffn.2.", ".ffn.net.2."),
]


def to_diffusers_key(key: str) -> str:
    for old, new in RENAMES:
        key = key.replace(old, new)
    # attn{1,2}.{q,k,v} -> attn{1,2}.to_{q,k,v}
    return re.sub(r"\.attn([12])\.([qkv])\.", r".attn\1.to_\2.", key)


def dequantised_state_dict(path) -> dict:
    """The file's weights as float32, scaled fp8 multiplied out, read with safetensors itself."""
    raw = load_file(str(path))
    out = {}
    for key, value in raw.items():
        if key.endswith((".scale_weight", ".scale_input", ".weight_scale", ".input_scale", ".comfy_quant")):
            continue
        if key == "scaled_fp8":
            continue
        scale = raw.get(key[: -len(".weight")] + ".scale_weight") if key.endswith(".weight") else None
        out[key] = value.float() * scale.float() if scale is not None else value.float()
    return out


def diffusers_model(path, cfg: dit.WanConfig):
    from diffusers import WanTransformer3DModel

    model = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=cfg.num_heads, attention_head_dim=128, in_channels=cfg.in_dim,
        out_channels=cfg.out_dim, text_dim=cfg.text_dim, freq_dim=cfg.freq_dim, ffn_dim=cfg.ffn_dim,
        num_layers=cfg.num_layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6)
    sd = {to_diffusers_key(k): v for k, v in dequantised_state_dict(path).items()}
    model.load_state_dict(sd, strict=True)
    return model.eval()


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def pad512(context: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.pad(context, (0, 0, 0, max(0, 512 - context.shape[1])))

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(ours, diffusers) per variant, on the same fp32 file."""
    out = {}
    for i, variant in enumerate(("t2v_a14b", "i2v_a14b", "ti2v_5b")):
        path = tiny.write_tiny_dit(tmp_path_factory.mktemp(variant) / "dit.safetensors", variant, seed=i)
        ours = checkpoint.load_dit(path)
        out[variant] = (ours, diffusers_model(path, ours.config))
    return out


def compare(ours, ref, x, t, context, ref_t=None):
    with torch.no_grad():
        got = ours(x, t, context)
        want = ref(x, ref_t if ref_t is not None else t, pad512(context), return_dict=False)[0]
    assert got.shape == want.shape == (x.shape[0], ours.config.out_dim, *x.shape[2:])
    assert got.dtype == torch.float32
    assert want.std() > 0.3  # non-degenerate outputs, or the comparison says nothing
    assert rel_l2(got, want) <= 1e-5, rel_l2(got, want)
    assert (got - want).abs().max().item() <= 1e-4


def frame0_tokens(t: float, frames: int, h: int, w: int) -> torch.Tensor:
    """TI2V-5B's per-token timestep with frame 0 held at 0: mask[::2, ::2] * t (spec §3.3)."""
    mask = torch.ones(frames, h, w)
    mask[0] = 0
    return (mask[:, ::2, ::2].flatten() * t)[None]


@pytest.mark.parametrize("frames,h,w", [(3, 8, 12), (1, 6, 4), (5, 4, 10)])
def test_t2v_matches_diffusers(models, frames, h, w):
    ours, ref = models["t2v_a14b"]
    g = torch.Generator().manual_seed(frames)
    x = torch.randn(1, 16, frames, h, w, generator=g)
    compare(ours, ref, x, torch.tensor([937]), torch.randn(1, 7, 4096, generator=g))


def test_t2v_batch_of_two_timesteps(models):
    ours, ref = models["t2v_a14b"]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, 2, 6, 8, generator=g)
    compare(ours, ref, x, torch.tensor([999, 235]), torch.randn(2, 20, 4096, generator=g))


@pytest.mark.parametrize("frames,h,w", [(2, 6, 10), (4, 10, 6)])
def test_i2v_matches_diffusers(models, frames, h, w):
    ours, ref = models["i2v_a14b"]
    g = torch.Generator().manual_seed(frames)
    x = torch.randn(1, 36, frames, h, w, generator=g)
    compare(ours, ref, x, torch.tensor([902]), torch.randn(1, 12, 4096, generator=g))


@pytest.mark.parametrize("frames,h,w", [(3, 8, 12), (2, 4, 6), (5, 6, 4)])
def test_ti2v_per_token_frame0_matches_diffusers(models, frames, h, w):
    ours, ref = models["ti2v_5b"]
    g = torch.Generator().manual_seed(frames)
    x = torch.randn(1, 48, frames, h, w, generator=g)
    t = frame0_tokens(978.0, frames, h, w)
    assert t.shape == (1, frames * h * w // 4) and t[0, 0] == 0 and t[0, -1] == 978
    compare(ours, ref, x, t, torch.randn(1, 9, 4096, generator=g))


def test_ti2v_per_token_pattern_not_per_frame(models):
    """An arbitrary per-token timestep (not constant within frames) takes the general path."""
    ours, ref = models["ti2v_5b"]
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 48, 2, 6, 8, generator=g)
    t = torch.randint(0, 1000, (1, 2 * 3 * 4), generator=g)
    compare(ours, ref, x, t, torch.randn(1, 5, 4096, generator=g))


def test_ti2v_scalar_timestep_and_chunked_ffn(models):
    ours, ref = models["ti2v_5b"]
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 48, 3, 6, 10, generator=g)
    t = frame0_tokens(500.0, 3, 6, 10)
    context = torch.randn(1, 7, 4096, generator=g)
    ours.ffn_chunk = 7  # rounds to whole frames of 15 tokens with per-frame t; any cut with uniform t
    try:
        compare(ours, ref, x, t, context)
        compare(ours, ref, x, torch.tensor([500]), context)
    finally:
        ours.ffn_chunk = None


def test_float_timestep_is_used_as_given(models):
    ours, ref = models["t2v_a14b"]
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 16, 2, 4, 6, generator=g)
    compare(ours, ref, x, torch.tensor([937.6]), torch.randn(1, 7, 4096, generator=g))


def test_context_longer_than_512_is_used_whole(models):
    """Decision: >512 text rows (ComfyUI does not truncate) are all attended to, never cut."""
    ours, ref = models["t2v_a14b"]
    g = torch.Generator().manual_seed(6)
    x = torch.randn(1, 16, 2, 4, 6, generator=g)
    context = torch.randn(1, 600, 4096, generator=g)
    compare(ours, ref, x, torch.tensor([500]), context)
    with torch.no_grad():
        cut = ours(x, torch.tensor([500]), context[:, :512])
        whole = ours(x, torch.tensor([500]), context)
    assert rel_l2(cut, whole) > 1e-3


def test_zero_padding_to_512_matters(models):
    """The padded rows take part in attention (reference behaviour), so padding is not a no-op."""
    ours, ref = models["t2v_a14b"]
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, 16, 2, 4, 6, generator=g)
    context = torch.randn(1, 7, 4096, generator=g)
    with torch.no_grad():
        unpadded_ref = ref(x, torch.tensor([500]), context, return_dict=False)[0]
        got = ours(x, torch.tensor([500]), context)
    assert rel_l2(got, unpadded_ref) > 1e-3


@pytest.mark.parametrize("storage", ["fp8_scaled", "fp8_e5m2", "bf16"])
def test_stored_dtypes_match_diffusers_on_dequantised_weights(tmp_path, storage):
    path = tiny.write_tiny_dit(tmp_path / "dit.safetensors", "i2v_a14b", storage, seed=11)
    ours = checkpoint.load_dit(path)
    ref = diffusers_model(path, ours.config)
    assert ours.blocks[0].ffn[0].weight.dtype == {"fp8_scaled": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2,
                                                  "bf16": torch.bfloat16}[storage]
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 36, 2, 6, 4, generator=g)
    compare(ours, ref, x, torch.tensor([900]), torch.randn(1, 7, 4096, generator=g))
