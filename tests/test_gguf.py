"""GGUF experts: the torch decoders against gguf's numpy reference, loading, forward, LoRA, bad files.

Reference values come from the ``gguf`` package (``GGUFReader`` + ``gguf.quants.dequantize``),
never from the code under test; the tiny files are written with gguf's writer
(``engine.testing.tiny_gguf``).
"""
import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from _exact import resident_copies
from wan22duo.engine.weights import ggml
from wan22duo.engine.testing import tiny_gguf
from wan22duo.engine.weights.checkpoint import CheckpointError, describe_file, detect_dit, load_dit
from wan22duo.engine.weights.gguf import GGUFError, UnsupportedQuantization, gguf_weight_bytes, is_gguf
from wan22duo.engine.weights.lora import LoraError, apply_loras, remove_loras
from wan22duo.engine.testing.tiny_lora import make_tiny_lora
from wan22duo.engine.model.ops import CastLinear

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZES = dict(dim=256, ffn_dim=512, num_layers=2, text_dim=256)  # every in-dim a whole number of 256-blocks
QUANTIZED = tuple(ggml.BLOCK_TYPES)
CHANNELS = {"t2v_a14b": 16, "i2v_a14b": 36, "ti2v_5b": 48}


def write(tmp_path, name="expert.gguf", **kwargs):
    return tiny_gguf.write_tiny_gguf(tmp_path / name, **{**SIZES, **kwargs})


def reference_state_dict(path) -> dict[str, torch.Tensor]:
    """Every tensor of a GGUF file decoded by gguf's numpy reference, float32, in its real shape."""
    reader = gguf.GGUFReader(path)
    out = {}
    for t in reader.tensors:
        field = reader.get_field(f"comfy.gguf.orig_shape.{t.name}")
        shape = (tuple(int(field.parts[i][0]) for i in field.data) if field is not None
                 else tuple(int(n) for n in reversed(t.shape.tolist())))
        out[t.name] = torch.from_numpy(gguf.quants.dequantize(t.data, t.tensor_type).copy()).reshape(shape)
    return out


def inputs(variant="t2v_a14b", seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, CHANNELS[variant], 2, 4, 4, generator=g)
    return x, torch.tensor([700.0]), torch.randn(1, 12, SIZES["text_dim"], generator=g)


def forward(model, variant="t2v_a14b"):
    with torch.no_grad():
        return model(*inputs(variant))


def random_data(kind: str, rows: int, cols: int, rng) -> np.ndarray:
    """GGUF data of ``kind`` for a [rows, cols] tensor: real quantizations, or random valid K blocks."""
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    if kind == "BF16":
        return gguf.quants.quantize(w, gguf.GGMLQuantizationType.BF16)
    return tiny_gguf.encode(w, kind, rng)


# ---------------------------------------------------------------- decoders


@pytest.mark.parametrize("kind", ggml.SUPPORTED)
def test_decoder_equals_numpy_reference_exactly(kind):
    rng = np.random.default_rng(1)
    data = random_data(kind, 6, 512, rng)
    ref = gguf.quants.dequantize(data, gguf.GGMLQuantizationType[kind]).reshape(6, 512)
    raw = torch.from_numpy(np.ascontiguousarray(data).view(np.uint8))
    ours = ggml.dequantize(raw, kind, (6, 512), torch.float32)
    assert ours.dtype == torch.float32 and ours.shape == (6, 512)
    assert torch.equal(ours, torch.from_numpy(ref))  # bit for bit in float32
    # in bf16 / fp16: the reference rounded once (no double rounding through another dtype)
    for dtype in (torch.bfloat16, torch.float16):
        assert torch.equal(ggml.dequantize(raw, kind, (6, 512), dtype), torch.from_numpy(ref).to(dtype))


@pytest.mark.parametrize("kind", QUANTIZED)
def test_decoder_on_arbitrary_bytes_with_finite_scales(kind):
    """Every code / sub-scale bit pattern, not just what our writer makes: random bytes, finite f16 scales."""
    t = ggml.BLOCK_TYPES[kind]
    rng = np.random.default_rng(2)
    blocks = rng.integers(0, 256, size=(40, t.size), dtype=np.uint8)
    d_fields = {"Q2_K": (80, 82), "Q3_K": (108,), "Q6_K": (208,), "Q4_K": (0, 2), "Q5_K": (0, 2),
                "Q4_1": (0, 2), "Q5_1": (0, 2)}.get(kind, (0,))
    for at in d_fields:
        blocks[:, at:at + 2] = rng.standard_normal(40).astype(np.float16).view(np.uint8).reshape(40, 2)
    raw = blocks.reshape(-1, 10 * t.size if t.block == 32 else 2 * t.size)
    ref = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[kind])
    ours = ggml.dequantize(torch.from_numpy(raw.copy()), kind, ref.shape, torch.float32)
    assert torch.equal(ours, torch.from_numpy(ref))


def test_decoding_in_slices_gives_the_same(monkeypatch):
    rng = np.random.default_rng(3)
    raw = torch.from_numpy(random_data("Q4_K", 8, 1024, rng))
    whole = ggml.dequantize(raw, "Q4_K", (8, 1024), torch.float32)
    monkeypatch.setattr(ggml, "CHUNK_ELEMENTS", 700)  # slices of 2 blocks, the last one short
    assert torch.equal(ggml.dequantize(raw, "Q4_K", (8, 1024), torch.float32), whole)


def test_decoder_rejects_bytes_that_do_not_fit_the_shape():
    with pytest.raises(ValueError, match="does not encode a tensor of shape"):
        ggml.dequantize(torch.zeros(33, dtype=torch.uint8), "Q8_0", (1, 32), torch.float32)


# ---------------------------------------------------------------- loading


@pytest.mark.parametrize("variant", list(CHANNELS))
@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K"])
def test_every_variant_loads_quantized_and_memory_mapped(tmp_path, variant, qtype):
    path = write(tmp_path, variant=variant, qtype=qtype)
    assert is_gguf(path) and detect_dit(path).variant == variant
    assert qtype in describe_file(path) and variant in describe_file(path)
    model = load_dit(path)
    q = model.blocks[0].self_attn.q
    assert q.weight.dtype == torch.uint8 and q.weight_format.name == qtype and q.weight_format.shape == (256, 256)
    assert model.patch_embedding.weight_format is None and model.patch_embedding.weight.dtype == torch.float32
    # every tensor is a view of one private mapping of the whole file: the file is the host copy
    storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    assert len(storages) == 1
    assert next(model.parameters()).untyped_storage().nbytes() == path.stat().st_size
    held = sum(p.numel() * p.element_size() for p in model.parameters())
    assert held == gguf_weight_bytes(path) and 0.95 < held / path.stat().st_size <= 1.0


@pytest.mark.parametrize("patch", ["5d", "orig_shape"])
def test_patch_embedding_in_both_city96_layouts(tmp_path, patch):
    path = write(tmp_path, patch=patch, qtype="Q8_0")
    model = load_dit(path)
    ref = reference_state_dict(path)["patch_embedding.weight"]
    assert model.patch_embedding.weight.shape == (256, 16, 1, 2, 2)
    assert torch.equal(model.patch_embedding.weight.float(), ref)


def test_quantized_patch_embedding_is_decoded_by_the_conv(tmp_path):
    """city96 keeps it F32; a converter that flattens and quantizes it still loads, and a LoRA on it is refused."""
    path = write(tmp_path, patch="orig_shape", types={"patch_embedding.weight": "Q8_0"}, qtype="Q8_0")
    model = load_dit(path)
    conv = model.patch_embedding
    assert conv.weight.dtype == torch.uint8 and conv.weight_format.shape == (256, 16, 1, 2, 2)
    dense = tmp_path / "dequantized.safetensors"
    ref = reference_state_dict(path)
    save_file(ref, str(dense))
    # Exact: the decode itself (bit for bit the reference decoder's values).
    assert torch.equal(conv.weight_format.dequantize(conv.weight, torch.float32), ref["patch_embedding.weight"])
    # Not exact: the CPU's conv kernel may take another path (layout, alignment, instruction set) for the
    # freshly decoded weight than for the mapped file's, so sums run in another order (seen on AMD EPYC).
    # fp32 reordering of this tiny model's sums moves outputs of magnitude ~3 by a few ulps: 1e-5 bounds it.
    torch.testing.assert_close(forward(model), forward(load_dit(dense)), rtol=1e-5, atol=1e-5)
    lora = {"patch_embedding.lora_down.weight": torch.ones(2, 16, 1, 2, 2),
            "patch_embedding.lora_up.weight": torch.ones(256, 2, 1, 1, 1)}
    with pytest.raises(LoraError, match="patch_embedding.weight.*weight_dtype"):
        apply_loras(model, [(lora, 1.0)])
    assert conv.weight.dtype == torch.uint8  # nothing half-patched


def test_prefixed_names_load(tmp_path):
    path = write(tmp_path, prefix="model.diffusion_model.", qtype="Q5_K")
    prefixed, plain = load_dit(path), load_dit(write(tmp_path, "plain.gguf", qtype="Q5_K"))
    # Bit for bit over fresh copies of both: the longer names shift the data section, so the F32 tensors viewed in
    # the two mappings may be aligned differently and meet other CPU kernel paths (tests/_exact.py).
    assert torch.equal(resident_copies(prefixed, lambda: forward(prefixed)),
                       resident_copies(plain, lambda: forward(plain)))


def test_mixed_types_and_weight_dtype_decoding_at_load(tmp_path):
    types = {"blocks.0.ffn.2.weight": "Q6_K", "head.head.weight": "F16"}
    path = write(tmp_path, qtype="Q4_K", types=types)
    assert "Q4_K (24), Q6_K (1), F16 (1), F32 (1)" in describe_file(path)
    model = load_dit(path)
    assert model.blocks[0].ffn[2].weight_format.name == "Q6_K"
    assert model.head.head.weight_format is None and model.head.head.weight.dtype == torch.float16
    ref = reference_state_dict(path)
    bf16 = load_dit(path, weight_dtype="bf16")
    assert bf16.blocks[0].ffn[0].weight_format is None
    assert torch.equal(bf16.blocks[0].ffn[0].weight, ref["blocks.0.ffn.0.weight"].bfloat16())
    fp8 = load_dit(path, weight_dtype="fp8_e4m3fn")
    layer = fp8.blocks[0].ffn[0]
    assert layer.weight.dtype == torch.float8_e4m3fn and layer.scale_weight is not None
    assert gguf_weight_bytes(path, torch.bfloat16) == sum(2 * v.numel() for v in ref.values())


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K"])
@pytest.mark.parametrize("variant", ["t2v_a14b", "ti2v_5b"])
def test_forward_equals_fp32_model_on_reference_dequantized_weights(tmp_path, qtype, variant):
    path = write(tmp_path, variant=variant, qtype=qtype)
    dense = tmp_path / "dequantized.safetensors"
    save_file(reference_state_dict(path), str(dense))
    ours, ref = forward(load_dit(path), variant), forward(load_dit(dense), variant)
    # same float32 weights, same float32 kernels: equal up to fp32 rounding (in practice bit for bit)
    assert torch.allclose(ours, ref, rtol=0, atol=1e-6 * ref.abs().max().item())


def test_q8_0_error_against_the_original_weights_is_the_quantization_error(tmp_path):
    """Q8_0 rounds each weight to d/2 = amax/254 of its 32-block; measured here on the tiny expert:
    weight error (relative RMS) 0.54 %, output error (relative RMS) 0.82 % (seed 0, t2v, fp32)."""
    path = write(tmp_path, qtype="Q8_0")
    original = tiny_gguf.tiny_state_dict("t2v_a14b", 0, **SIZES)
    decoded = reference_state_dict(path)
    worst_block = 0.0
    errs = []
    for key, w in original.items():
        if decoded[key].dtype == torch.float32 and w.ndim == 2 and w.numel() > tiny_gguf.SMALL:
            blocks_w, blocks_q = w.reshape(-1, 32), decoded[key].reshape(-1, 32)
            step = blocks_w.abs().amax(1, keepdim=True) / 127
            worst_block = max(worst_block, float(((blocks_q - blocks_w).abs() / step).max()))
            errs.append(float((decoded[key] - w).norm() / w.norm()))
    # half a step from rounding the code, plus |q| <= 127 times the float16 rounding of the step (2^-11)
    assert 0.45 < worst_block <= 0.5 + 127 * 2.0 ** -11
    weight_err = max(errs)
    assert 1e-3 < weight_err < 6e-3
    dense = tmp_path / "original.safetensors"
    save_file(original, str(dense))
    ours, exact = forward(load_dit(path)), forward(load_dit(dense))
    out_err = float((ours - exact).norm() / exact.norm())
    assert out_err < 1e-2 and out_err < 3 * weight_err


def test_compute_dtype_bf16_decodes_into_bf16(tmp_path):
    path = write(tmp_path, qtype="Q4_K")
    model = load_dit(path, compute_dtype="bf16")
    layer = model.blocks[0].ffn[0]
    ref = reference_state_dict(path)["blocks.0.ffn.0.weight"]
    x = torch.randn(3, 256, dtype=torch.bfloat16)
    with torch.no_grad():
        expected = torch.nn.functional.linear(x, ref.bfloat16(), layer.bias.bfloat16())
        assert torch.equal(layer(x), expected)
    assert torch.isfinite(forward(model)).all()


def test_moving_keeps_the_bytes_and_the_format(tmp_path):
    model = load_dit(write(tmp_path, qtype="Q4_K"))
    layer = model.blocks[1].cross_attn.k
    raw = layer.weight.clone()
    model.half()  # floating casts leave the quantized bytes alone
    assert layer.weight.dtype == torch.uint8 and torch.equal(layer.weight, raw)
    model.to("meta")
    assert layer.weight.device.type == "meta" and layer.weight.dtype == torch.uint8
    assert layer.weight_format.name == "Q4_K" and "gguf Q4_K" in repr(layer)


# ---------------------------------------------------------------- LoRA


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K"])
def test_lora_runs_beside_the_quantized_weight(tmp_path, qtype):
    path = write(tmp_path, qtype=qtype)
    model = load_dit(path)
    ref = reference_state_dict(path)
    shapes = {k: tuple(v.shape) for k, v in ref.items()}
    lora = make_tiny_lora(shapes, full_deltas=True, magnitude=0.2, seed=3)
    layer = model.blocks[0].self_attn.q
    raw = layer.weight
    before = forward(model)
    backup = apply_loras(model, [(lora, 0.8)])
    assert layer.weight is raw and layer.weight_format.name == qtype  # never merged
    assert len(layer.lora_branches) == 1
    assert all(isinstance(m, CastLinear) and m.lora_branches for m in model.modules()
               if isinstance(m, CastLinear) and m.weight_format is not None)
    patched = forward(model)
    # the same LoRA merged into the reference-decoded float32 weights
    dense = tmp_path / "dequantized.safetensors"
    save_file(ref, str(dense))
    merged = load_dit(dense)
    apply_loras(merged, [(lora, 0.8)], keep_backup=False)
    expected = forward(merged)
    assert torch.allclose(patched, expected, rtol=0, atol=2e-5 * expected.abs().max().item())
    assert not torch.allclose(patched, before, atol=1e-3)
    remove_loras(model, backup)
    assert layer.lora_branches == () and torch.equal(forward(model), before)


def test_lora_shape_mismatch_is_checked_against_the_real_shape(tmp_path):
    model = load_dit(write(tmp_path, qtype="Q8_0"))
    bad = {"blocks.0.self_attn.q.lora_down.weight": torch.zeros(4, 128),
           "blocks.0.self_attn.q.lora_up.weight": torch.zeros(256, 4)}
    with pytest.raises(ValueError, match=r"shape \(256, 256\)"):
        apply_loras(model, [(bad, 1.0)])


# ---------------------------------------------------------------- bad files


def raises(path, *needles, cls=GGUFError):
    with pytest.raises(cls) as info:
        load_dit(path)
    message = str(info.value)
    assert path.name in message, message
    for needle in needles:
        assert needle in message, message
    with pytest.raises(cls):
        detect_dit(path)
    return message


@pytest.mark.parametrize("keep", [0.5, 0.9, 60])
def test_truncated_file(tmp_path, keep):
    path = write(tmp_path, qtype="Q8_0")
    data = path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: int(len(data) * keep) if keep < 1 else keep])
    raises(cut, "truncated")


def test_non_wan_architecture(tmp_path):
    path = tiny_gguf.write_gguf(tmp_path / "flux-Q8_0.gguf",
                                {"double_blocks.0.img_attn.proj.weight": (np.zeros((32, 32), np.float32), "F32")},
                                arch="flux")
    raises(path, "'flux'", "not Wan")


def test_text_encoder_gguf(tmp_path):
    tensors = {"enc.blk.0.attn_q.weight": (np.zeros((64, 64), np.float16), "F16"),
               "token_embd.weight": (np.zeros((100, 64), np.float16), "F16")}
    path = tiny_gguf.write_gguf(tmp_path / "umt5-xxl-encoder-Q8_0.gguf", tensors, arch="t5encoder")
    raises(path, "text encoder", "CLIPLoaderGGUF")


def test_wan_architecture_with_foreign_tensors(tmp_path):
    path = write(tmp_path, qtype="Q8_0", arch=None)  # no architecture key: the names decide
    assert detect_dit(path).variant == "t2v_a14b"
    vae = tiny_gguf.write_gguf(tmp_path / "vae.gguf", {
        "decoder.middle.0.residual.0.gamma": (np.ones((4,), np.float32), "F32")}, arch=None)
    raises(vae, "VAE")


def test_unsupported_type_lists_the_supported_ones(tmp_path):
    path = write(tmp_path, qtype="Q8_0")
    tensors = {t.name: (t.data, t.tensor_type.name) for t in gguf.GGUFReader(path).tensors}
    rng = np.random.default_rng(0)
    # IQ4_NL: 18 bytes per 32 weights, so [256, 256] is 256 rows of 144 bytes and [256, 512] of 288
    tensors["blocks.0.self_attn.q.weight"] = (rng.integers(0, 256, (256, 144), dtype=np.uint8), "IQ4_NL")
    tensors["blocks.1.ffn.2.weight"] = (rng.integers(0, 256, (256, 288), dtype=np.uint8), "IQ4_NL")
    bad = tiny_gguf.write_gguf(tmp_path / "iq4.gguf", tensors)
    message = raises(bad, "IQ4_NL", "blocks.0.self_attn.q.weight", cls=UnsupportedQuantization)
    assert ", ".join(ggml.SUPPORTED) in message


def test_orig_shape_that_disagrees_with_the_stored_size(tmp_path):
    path = write(tmp_path, qtype="Q8_0")
    reader = gguf.GGUFReader(path)
    tensors = {t.name: (t.data, t.tensor_type.name) for t in reader.tensors}
    bad = tiny_gguf.write_gguf(tmp_path / "badshape.gguf", tensors, shapes={"blocks.0.ffn.0.weight": (512, 128, 4)})
    raises(bad, "blocks.0.ffn.0.weight", "262144 elements, not 131072")


def test_tensor_whose_bytes_disagree_with_its_shape(tmp_path):
    """A tensor table entry claiming more elements than its data holds (its bytes run into the next tensor)."""
    path = tmp_path / "overlap.gguf"
    src = gguf.GGUFReader(write(tmp_path, qtype="Q8_0"))
    writer = gguf.GGUFWriter(str(path), arch="wan")
    for t in src.tensors:
        shape = None
        if t.name == "blocks.0.ffn.0.weight":  # header says [1024, 256] Q8_0; the data is [512, 256]
            shape = (1024, 8 * 34)  # the writer takes a quantized shape in bytes per row
        writer.add_tensor(t.name, t.data, raw_shape=shape, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    raises(path, "blocks.0.ffn.0.weight", "disagrees with its shape")


def test_misshaped_tensor_is_named(tmp_path):
    path = write(tmp_path, qtype="Q8_0")
    tensors = {t.name: (t.data, t.tensor_type.name) for t in gguf.GGUFReader(path).tensors}
    tensors["blocks.0.cross_attn.o.weight"] = (tiny_gguf.encode(np.zeros((128, 256), np.float32), "Q8_0", None),
                                               "Q8_0")
    raises(tiny_gguf.write_gguf(tmp_path / "mis.gguf", tensors), "blocks.0.cross_attn.o.weight is [128, 256]")


def test_errors_are_checkpoint_errors_and_safetensors_loader_unchanged(tmp_path):
    assert issubclass(GGUFError, CheckpointError) and issubclass(UnsupportedQuantization, GGUFError)
    assert GGUFError.__module__ == UnsupportedQuantization.__module__ == "wan22duo"  # ComfyUI's error dialog name
    text = tmp_path / "notes.gguf"  # a .gguf name does not make a GGUF file
    text.write_text("hello")
    assert not is_gguf(text)
    with pytest.raises(CheckpointError, match="not a .safetensors file"):
        load_dit(text)


def copy_with(path, out, add):
    """``path``'s tensors into a new GGUF ``out``, with ``add(writer)`` adding metadata first."""
    writer = gguf.GGUFWriter(str(out), arch="")
    writer.kv_data[0].pop(gguf.Keys.General.ARCHITECTURE, None)
    add(writer)
    for t in gguf.GGUFReader(path).tensors:
        writer.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def test_malformed_metadata_is_named(tmp_path):
    path = write(tmp_path, qtype="Q8_0")
    arch = copy_with(path, tmp_path / "arch.gguf", lambda w: w.add_uint32(gguf.Keys.General.ARCHITECTURE, 7))
    raises(arch, "general.architecture", "expected a string")
    shape = copy_with(path, tmp_path / "shape.gguf",
                      lambda w: w.add_array("comfy.gguf.orig_shape.head.head.weight", [0, 4]))
    raises(shape, "comfy.gguf.orig_shape.head.head.weight", "positive integers")
    legacy = copy_with(path, tmp_path / "pig.gguf", lambda w: w.add_string(gguf.Keys.General.ARCHITECTURE, "pig"))
    assert detect_dit(legacy).variant == "t2v_a14b"  # an early converter's placeholder: the names decide


def test_missing_file(tmp_path):
    from wan22duo.engine.weights.gguf import read_gguf_header

    with pytest.raises(GGUFError, match="no such file"):
        read_gguf_header(tmp_path / "gone.gguf")
    assert not is_gguf(tmp_path / "gone.gguf")


def test_format_comes_from_the_bytes_not_the_name(tmp_path):
    from wan22duo.engine.testing.tiny import write_tiny_dit

    disguised = tmp_path / "expert_fp16.safetensors"
    disguised.write_bytes(write(tmp_path, qtype="Q4_K").read_bytes())
    assert load_dit(disguised).blocks[0].ffn[0].weight_format.name == "Q4_K"
    safetensors = write_tiny_dit(tmp_path / "expert.gguf", **SIZES)
    model = load_dit(safetensors)
    assert model.blocks[0].ffn[0].weight_format is None and model.blocks[0].ffn[0].weight.dtype == torch.float32
