"""Loading Wan 2.2 DiT files: every dtype / prefix / fp8_scaled form, and every bad input."""
import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from wan22duo.engine.weights import checkpoint
from wan22duo.engine.testing import tiny
from wan22duo.engine.weights.checkpoint import CheckpointError, describe_file, detect_dit, load_dit

SMALL = dict(dim=128, ffn_dim=256, num_layers=2, text_dim=64)  # fast; the real head dim of 128
PREFIXES = ["", "model.diffusion_model.", "diffusion_model."]
STORED = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp8_e4m3fn": torch.float8_e4m3fn,
          "fp8_e5m2": torch.float8_e5m2, "fp8_scaled": torch.float8_e4m3fn, "fp8_e5m2_scaled": torch.float8_e5m2}


def write(tmp_path, name="dit.safetensors", **kwargs):
    return tiny.write_tiny_dit(tmp_path / name, **{**SMALL, **kwargs})


def rewrite(path, edit):
    """Apply ``edit(dict)`` to a file's tensors and save it back."""
    sd = load_file(str(path))
    edit(sd)
    save_file(sd, str(path))
    return path


def file_weight(raw: dict, key: str) -> torch.Tensor:
    """A Linear weight as float32 from the raw file, scales multiplied out (independent of the loader)."""
    layer = key[: -len(".weight")]
    scale = raw.get(layer + ".scale_weight", raw.get(layer + ".weight_scale"))
    w = raw[key].float()
    return w * scale.float() if scale is not None else w


# ---------------------------------------------------------------- good files


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("storage", list(STORED))
def test_every_storage_and_prefix_loads_as_stored(tmp_path, storage, prefix):
    path = write(tmp_path, variant="ti2v_5b", storage=storage, prefix=prefix)
    raw = {k[len(prefix):]: v for k, v in load_file(str(path)).items()}
    model = load_dit(path)
    assert model.config == tiny.tiny_config("ti2v_5b", **SMALL)
    params = dict(model.named_parameters())
    assert set(params) == {k for k in raw if not k.endswith((".scale_weight", "scaled_fp8"))}
    q = model.blocks[1].self_attn.q
    assert q.weight.dtype == STORED[storage]
    assert (q.scale_weight is not None) == storage.endswith("_scaled")
    for key in ("blocks.1.self_attn.q.weight", "head.head.weight", "blocks.0.modulation", "patch_embedding.weight"):
        module, attr = key.rsplit(".", 1)
        mod = model.get_submodule(module)
        got = getattr(mod, attr).float() * (mod.scale_weight if getattr(mod, "scale_weight", None) is not None else 1)
        want = file_weight(raw, key) if key.endswith(".weight") else raw[key].float()
        assert torch.equal(got, want), key


@pytest.mark.parametrize("scale_input", [False, True])
def test_newer_weight_scale_form_with_comfy_quant_and_input_scale(tmp_path, scale_input):
    path = write(tmp_path, variant="i2v_a14b", storage="fp8_scaled", scale_format="weight_scale",
                 scale_input=scale_input, prefix="model.diffusion_model.")
    raw = {k.removeprefix("model.diffusion_model."): v for k, v in load_file(str(path)).items()}
    assert "blocks.0.ffn.0.comfy_quant" in raw and ("blocks.0.ffn.0.input_scale" in raw) == scale_input
    model = load_dit(path)
    ffn = model.blocks[0].ffn[0]
    assert ffn.weight.dtype == torch.float8_e4m3fn
    assert torch.equal(ffn.weight.float() * ffn.scale_weight, file_weight(raw, "blocks.0.ffn.0.weight"))


def test_legacy_scaled_fp8_with_scale_input_and_unprefixed_marker(tmp_path):
    path = write(tmp_path, storage="fp8_scaled", scale_input=True, prefix="model.diffusion_model.")

    def unprefix_marker(sd):
        sd["scaled_fp8"] = sd.pop("model.diffusion_model.scaled_fp8")
    rewrite(path, unprefix_marker)
    model = load_dit(path)
    assert model.head.head.scale_weight is not None and model.head.head.scale_weight.dtype == torch.float32


@pytest.mark.parametrize("variant", ["t2v_a14b", "i2v_a14b", "ti2v_5b"])
def test_detect_dit_reads_the_config_from_shapes(tmp_path, variant):
    path = write(tmp_path, variant=variant, storage="bf16", num_layers=3)
    cfg = detect_dit(path)
    assert cfg == tiny.tiny_config(variant, **{**SMALL, "num_layers": 3})
    assert cfg.variant == variant and cfg.num_heads == 1
    assert variant in describe_file(path) and "bf16" in describe_file(path)


def test_weights_are_views_of_one_memory_map(tmp_path):
    path = write(tmp_path, storage="fp32")
    model = load_dit(path)
    storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    assert len(storages) == 1
    assert next(model.parameters()).untyped_storage().nbytes() == path.stat().st_size


def test_misaligned_tensor_offset_is_copied_correctly(tmp_path):
    # A hand-built file: 1 byte of uint8, then float32 data starting at an odd offset.
    values = torch.tensor([1.5, -2.25, 3.0])
    header = json.dumps({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
                         "b": {"dtype": "F32", "shape": [3], "data_offsets": [1, 13]}}).encode()
    header += b" " * (-len(header) % 8)
    path = tmp_path / "odd.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\x07" + values.numpy().tobytes())
    head = checkpoint.read_header(path)
    storage = checkpoint.map_file(head)
    assert torch.equal(checkpoint.tensor_view(storage, head.tensors["b"]), values)
    assert checkpoint.tensor_view(storage, head.tensors["a"]).item() == 7


@pytest.mark.parametrize("target,dtype", [("fp8_e4m3fn", torch.float8_e4m3fn), ("fp8_e5m2", torch.float8_e5m2),
                                          ("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)])
@pytest.mark.parametrize("storage", ["fp32", "fp8_scaled"])
def test_weight_dtype_converts_linear_weights(tmp_path, storage, target, dtype):
    path = write(tmp_path, storage=storage)
    raw = load_file(str(path))
    model = load_dit(path, weight_dtype=target)
    layer = model.blocks[0].cross_attn.k
    assert layer.weight.dtype == dtype
    got = layer.weight.float() * (layer.scale_weight if layer.scale_weight is not None else 1)
    want = file_weight(raw, "blocks.0.cross_attn.k.weight")
    tol = {torch.float8_e4m3fn: 0.07, torch.float8_e5m2: 0.14, torch.bfloat16: 4e-3, torch.float16: 5e-4}.get(dtype, 0)
    assert ((got - want).norm() / want.norm()).item() <= tol
    assert model.blocks[0].norm3.weight.dtype == raw["blocks.0.norm3.weight"].dtype  # non-Linear: as stored
    if storage == "fp8_scaled" and dtype == torch.float8_e4m3fn:
        assert torch.equal(layer.weight.view(torch.uint8), raw["blocks.0.cross_attn.k.weight"].view(torch.uint8))


def test_dtype_arguments_accept_names_and_reject_others(tmp_path):
    path = write(tmp_path)
    assert load_dit(path, compute_dtype="bf16").compute_dtype == torch.bfloat16
    assert load_dit(path, compute_dtype=torch.float16, weight_dtype="default").compute_dtype == torch.float16
    with pytest.raises(ValueError, match="compute_dtype 'fp8_e4m3fn'"):
        load_dit(path, compute_dtype="fp8_e4m3fn")
    with pytest.raises(ValueError, match="weight_dtype 'int8'"):
        load_dit(path, weight_dtype="int8")


def test_to_device_keeps_fp8_and_scales(tmp_path):
    model = load_dit(write(tmp_path, storage="fp8_scaled")).to("meta")
    assert model.blocks[0].ffn[2].weight.dtype == torch.float8_e4m3fn
    assert model.blocks[0].ffn[2].scale_weight.device.type == "meta"


# ---------------------------------------------------------------- bad files


def raises(path, *needles):
    with pytest.raises(CheckpointError) as info:
        load_dit(path)
    message = str(info.value)
    for needle in needles:
        assert needle in message, message
    assert describe_file(path) == message  # describe_file reports the same diagnosis without raising
    return message


def test_missing_key_is_named(tmp_path):
    path = rewrite(write(tmp_path), lambda sd: sd.pop("blocks.1.cross_attn.norm_k.weight"))
    raises(path, "missing keys", "blocks.1.cross_attn.norm_k.weight", "wan2.2_t2v_high_noise_14B_fp16.safetensors")


def test_unexpected_key_is_named(tmp_path):
    path = rewrite(write(tmp_path), lambda sd: sd.__setitem__("blocks.0.extra.weight", torch.zeros(3)))
    raises(path, "unexpected keys", "blocks.0.extra.weight")


def test_misshaped_key_is_named(tmp_path):
    path = rewrite(write(tmp_path), lambda sd: sd.__setitem__("blocks.1.ffn.0.weight", torch.zeros(200, 128)))
    raises(path, "mis-shaped", "blocks.1.ffn.0.weight is [200, 128], expected [256, 128]")


def test_scale_on_a_non_linear_tensor_is_unexpected(tmp_path):
    path = rewrite(write(tmp_path, storage="fp8_scaled"),
                   lambda sd: sd.__setitem__("blocks.0.norm3.scale_weight", torch.ones(())))
    raises(path, "unexpected keys", "blocks.0.norm3.scale_weight")


def test_per_channel_scale_is_rejected(tmp_path):
    path = rewrite(write(tmp_path, storage="fp8_scaled"),
                   lambda sd: sd.__setitem__("blocks.0.ffn.0.scale_weight", torch.ones(256, 1)))
    raises(path, "blocks.0.ffn.0.scale_weight", "per-tensor")


def test_unsupported_quant_format_is_named(tmp_path):
    def nvfp4(sd):
        sd["blocks.0.ffn.0.comfy_quant"] = torch.tensor(list(b'{"format": "nvfp4"}'), dtype=torch.uint8)
    raises(rewrite(write(tmp_path, storage="fp8_scaled", scale_format="weight_scale"), nvfp4), "nvfp4", "fp8")


def test_wan21_i2v_with_img_emb(tmp_path):
    def add_img_emb(sd):
        sd["img_emb.proj.0.weight"] = torch.ones(1280)
        sd["img_emb.proj.1.weight"] = torch.zeros(128, 1280)
    path = rewrite(write(tmp_path, variant="i2v_a14b", prefix="model.diffusion_model."), add_img_emb)
    raises(path, "Wan 2.1 image-to-video", "img_emb", "wan2.2_i2v_high_noise_14B_fp16.safetensors")


def test_unknown_channel_counts(tmp_path):
    path = rewrite(write(tmp_path), lambda sd: sd.__setitem__("patch_embedding.weight", torch.zeros(128, 20, 1, 2, 2)))
    raises(path, "in_dim 20", "out_dim 16", "ti2v_5b")


def fake(tmp_path, name, keys):
    path = tmp_path / name
    save_file({k: torch.zeros(2) for k in keys}, str(path))
    return path


@pytest.mark.parametrize("name,keys,needles", [
    ("wan_2.1_vae.safetensors", ["encoder.conv1.weight", "decoder.middle.0.residual.0.gamma"],
     ["the Wan 2.1 VAE", "Wan22DuoVAELoader", "vae folder"]),
    ("wan2.2_vae.safetensors",
     ["decoder.middle.0.residual.0.gamma", "decoder.upsamples.0.upsamples.0.residual.2.weight"],
     ["the Wan 2.2 VAE", "Wan22DuoVAELoader"]),
    ("umt5_xxl_fp16.safetensors", ["encoder.block.0.layer.0.SelfAttention.q.weight", "shared.weight"],
     ["text encoder", "CLIPLoader", "text_encoders"]),
    ("flux1-dev.safetensors", ["double_blocks.0.img_attn.qkv.weight", "img_in.weight"], ["FLUX"]),
    ("some_lora.safetensors", ["diffusion_model.blocks.0.self_attn.q.lora_down.weight"],
     ["LoRA", "Wan22DuoLoraLoader"]),
    ("diffusion_pytorch_model.safetensors", ["blocks.0.attn1.to_q.weight", "condition_embedder.time_proj.weight"],
     ["diffusers-format WanTransformer3DModel"]),
    ("wan2.1_vace_14B.safetensors", ["head.modulation", "vace_blocks.0.before_proj.weight"], ["VACE"]),
    ("mystery.safetensors", ["foo.weight", "bar.bias"], ["not a model this loader recognises", "foo.weight"]),
])
def test_other_files_say_what_they_are(tmp_path, name, keys, needles):
    raises(fake(tmp_path, name, keys), name, *needles, "wan2.2_ti2v_5B_fp16.safetensors")


def test_shard_of_sharded_checkpoint(tmp_path):
    path = rewrite(write(tmp_path, name="diffusion_pytorch_model-00002-of-00006.safetensors"),
                   lambda sd: [sd.pop(k) for k in list(sd) if not k.startswith("blocks.1.")])
    raises(path, "shard", "head.modulation")


def test_truncated_file(tmp_path):
    path = write(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    raises(path, "truncated", "Download it again")
    path.write_bytes(data[:100])
    raises(path, "truncated")


@pytest.mark.parametrize("content,needle", [
    (b"PK\x03\x04" + b"\0" * 64, "PyTorch .pt/.pth/.ckpt"),
    (b"GGUF\x03\0\0\0" + b"\0" * 64, "GGUF"),
    (b"<html>Not Found</html>" + b" " * 64, "text (JSON/HTML)"),
    (b"\x13\x37" * 40, "not a .safetensors file"),
    (b"", "not a .safetensors file"),
])
def test_not_safetensors(tmp_path, content, needle):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    raises(path, needle, "wan2.2_t2v_high_noise_14B_fp16.safetensors")


def test_real_torch_pickle_and_missing_path(tmp_path):
    path = tmp_path / "Wan2.1_VAE.pth"
    torch.save({"a": torch.zeros(2)}, path)
    raises(path, "not a .safetensors file", "PyTorch")
    raises(tmp_path / "nope.safetensors", "no such file")
