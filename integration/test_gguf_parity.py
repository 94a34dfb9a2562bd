"""One GGUF file, two loaders: ComfyUI-GGUF's UnetLoaderGGUF and ours give the same DiT output.

The tiny experts are written by the pack's ``engine.testing.tiny_gguf`` (city96's layout) into the copied
ComfyUI's ``models/unet`` folder, the legacy folder ComfyUI-GGUF users keep them in. ComfyUI-GGUF
decodes with ``dequant_dtype`` float32 here (UnetLoaderGGUFAdvanced): its default decodes the
float16 block scales in float16 arithmetic, so its weights differ from the exact values (and from
gguf's numpy reference) by up to half a float16 ulp; we decode in float32 like the reference.
Both models then run in float32 on the same inputs; the context has 512 rows (zeros past the
prompt, as ComfyUI's umT5 gives it) so neither side pads.

Two checks: every decoded weight is bit-identical between the two loaders, and the outputs agree
to 1e-5 relative L2 (spec §7's DiT tolerance) and 1e-5 of the output's largest magnitude. The
remaining difference is ComfyUI's Wan model against ours (float32 RoPE tables against our float64
ones, attention kernels): an F16 file, where no block decoding is involved, differs by as much.
"""
import pytest
import torch

SIZES = dict(dim=256, ffn_dim=512, num_layers=2, text_dim=4096)  # ComfyUI detects Wan from text_dim 4096
CHANNELS = {"t2v_a14b": 16, "i2v_a14b": 36, "ti2v_5b": 48}
TYPES = ("Q8_0", "Q6_K", "Q5_K", "Q5_1", "Q5_0", "Q4_K", "Q4_1", "Q4_0", "Q3_K", "Q2_K", "F16", "BF16")


def inputs(variant: str):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, CHANNELS[variant], 2, 6, 4, generator=g)
    context = torch.zeros(1, 512, 4096)
    context[:, :20] = torch.randn(1, 20, 4096, generator=g)
    return x, torch.tensor([640.0]), context


def both_outputs(comfy, variant: str, qtype: str):
    tiny_gguf = comfy.pack_module("engine.testing.tiny_gguf")
    name = f"wan22duo-parity-{variant}-{qtype}-high_noise.gguf"
    tiny_gguf.write_tiny_gguf(comfy.tree.model_path("unet", name), variant, qtype, seed=11, **SIZES)
    return outputs_of(comfy, name, variant)


def outputs_of(comfy, name: str, variant: str):
    """Load models/unet/``name`` with ComfyUI-GGUF's and our loader; both outputs and our model."""
    (patcher,) = comfy.run("UnetLoaderGGUFAdvanced", unet_name=name, dequant_dtype="float32",
                           patch_dtype="default", patch_on_device=False)
    theirs = patcher.model.diffusion_model
    loader = "Wan22DuoTI2VLoader" if variant == "ti2v_5b" else "Wan22DuoExpertLoader"
    choices = comfy.node(loader).INPUT_TYPES()["required"]["unet_name"][0]
    assert name in choices  # listed from models/unet through ComfyUI's folder_paths
    args = dict(unet_name=name, weight_dtype="default", compute_dtype="fp32", device="cpu")
    if loader == "Wan22DuoExpertLoader":
        args["role"] = "auto"
    (handle,) = comfy.run(loader, **args)
    ours = handle.acquire()
    x, t, context = inputs(variant)
    with torch.no_grad():
        assert_same_weights(comfy, ours, theirs)
        return ours(x, t, context), theirs(x, t, context).float(), ours


def assert_same_weights(comfy, ours, theirs):
    """Each casting layer's weight as our layer decodes it equals ComfyUI-GGUF's decoding, bit for bit."""
    ops = comfy.pack_module("engine.model.ops")
    checked = 0
    for name, layer in ours.named_modules():
        if not isinstance(layer, ops.CASTING_LAYERS):
            continue
        other = theirs.get_submodule(name)
        # ComfyUI-GGUF has no Conv3d op: the F32 patch embedding is a plain tensor there
        decoded = other.get_weight(other.weight, torch.float32) if hasattr(other, "get_weight") else other.weight
        expected = torch.Tensor(decoded).float().reshape(ops.weight_shape(layer))
        assert torch.equal(ops.layer_weight(layer, torch.float32), expected), name
        checked += 1
    assert checked == 6 + 10 * ours.config.num_layers + 1  # embeddings and head, 10 per block, patch embedding


def assert_close(ours, theirs, what):
    rel_l2 = ((ours - theirs).norm() / theirs.norm()).item()
    worst = ((ours - theirs).abs().max() / theirs.abs().max()).item()
    print(f"{what}: relative L2 {rel_l2:.3g}, max abs / max |out| {worst:.3g}")  # shown with -s
    assert rel_l2 <= 1e-5 and worst <= 1e-5, f"{what}: relative L2 {rel_l2:.3g}, max abs / max |out| {worst:.3g}"


@pytest.mark.parametrize("qtype", TYPES)
def test_same_gguf_same_output_every_type(comfy, qtype):
    ours, theirs, model = both_outputs(comfy, "t2v_a14b", qtype)
    if qtype not in ("F16", "BF16"):
        assert model.blocks[0].ffn[0].weight_format.name == qtype  # ours really ran on the quantized bytes
    assert ours.shape == theirs.shape
    assert_close(ours, theirs, qtype)


@pytest.mark.parametrize("variant", ["i2v_a14b", "ti2v_5b"])
def test_same_gguf_same_output_other_variants(comfy, variant):
    ours, theirs, _ = both_outputs(comfy, variant, "Q4_K")
    assert_close(ours, theirs, variant)


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K"])
def test_toy_expert_quantized_by_the_pack_loads_the_same_in_both(comfy, tmp_path, qtype):
    """A toy expert written by toy/quantize.py (our own Q4_K quantizer) decodes alike in ComfyUI-GGUF."""
    build, dit, quantize = (comfy.pack_module(f"toy.{m}") for m in ("build", "dit", "quantize"))
    source = build.save(dit.new_model(seed=5), "t2v_high", "untrained", tmp_path)
    name = f"wan22duo-toy-{qtype}-high_noise.gguf"
    counts = quantize.write_expert_gguf(source, comfy.tree.model_path("unet", name), qtype)
    assert counts[qtype] > 0
    ours, theirs, model = outputs_of(comfy, name, "t2v_a14b")
    assert model.blocks[0].ffn[2].weight_format.name == qtype
    assert_close(ours, theirs, f"toy {qtype}")
