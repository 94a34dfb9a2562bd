"""Loading Wan VAE files: detection from the header, strict key check, storage dtypes, foreign files."""
import pytest
import torch
from safetensors.torch import load_file, save_file

from wan22duo.engine.model.vae.model import VAEConfig
from wan22duo.engine.weights.vae_checkpoint import VAEFileError, detect_vae, load_vae
from wan22duo.engine.weights.vae_checkpoint import build_vae
from wan22duo.engine.testing.tiny_vae import write_tiny_vae


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("load")
    return {
        "2.1": write_tiny_vae(d / "t21.safetensors", "2.1", base_dim=8),
        "2.2": write_tiny_vae(d / "t22.safetensors", "2.2", base_dim=8, dec_dim=12),
    }


def test_detect_reads_version_and_widths(tiny):
    assert detect_vae(tiny["2.1"]) == VAEConfig("2.1", base_dim=8, dec_dim=8, z_dim=16)
    assert detect_vae(tiny["2.2"]) == VAEConfig("2.2", base_dim=8, dec_dim=12, z_dim=48)


def test_real_layouts_have_the_published_sizes():
    # Spec §4.1/§4.2: 194 tensors / 126,892,531 params (2.1), 196 / 704,688,668 (2.2).
    for config, tensors, params in (
        (VAEConfig("2.1", 96, 96, 16), 194, 126_892_531),
        (VAEConfig("2.2", 160, 256, 48), 196, 704_688_668),
    ):
        state = build_vae(config).state_dict()
        assert len(state) == tensors
        assert sum(v.numel() for v in state.values()) == params
    real21 = build_vae(VAEConfig("2.1", 96, 96, 16)).state_dict()
    assert real21["decoder.upsamples.3.time_conv.weight"].shape == (768, 384, 3, 1, 1)
    assert real21["encoder.downsamples.3.shortcut.weight"].shape == (192, 96, 1, 1, 1)
    assert real21["decoder.middle.1.norm.gamma"].shape == (384, 1, 1)


def test_loaded_vae_exposes_its_geometry(tiny):
    v21, v22 = load_vae(tiny["2.1"]), load_vae(tiny["2.2"])
    assert (v21.version, v21.z_dim, v21.spatial_stride, v21.temporal_stride) == ("2.1", 16, 8, 4)
    assert (v22.version, v22.z_dim, v22.spatial_stride, v22.temporal_stride) == ("2.2", 48, 16, 4)
    assert v21.dtype == torch.float32 and v21.device == torch.device("cpu")
    assert not any(p.requires_grad for p in v21.parameters())


@pytest.mark.parametrize("storage", [torch.float16, torch.bfloat16])
def test_half_precision_storage_loads(tmp_path, tiny, storage):
    path = write_tiny_vae(tmp_path / "half.safetensors", "2.1", dtype=storage)
    vae = load_vae(path, dtype=torch.float32)
    ref = load_vae(tiny["2.1"])
    assert vae.dtype == torch.float32
    # same seed: the fp32 weights rounded to the storage dtype
    expected = ref.decoder.conv1.weight.to(storage).float()
    assert torch.equal(vae.decoder.conv1.weight, expected)
    assert load_vae(path, dtype=torch.bfloat16).dtype == torch.bfloat16


def _rewrite(src, dst, edit):
    state = load_file(str(src))
    edit(state)
    save_file(state, str(dst))
    return dst


def test_missing_unexpected_and_misshaped_keys_are_named(tmp_path, tiny):
    def edit(state):
        del state["decoder.upsamples.3.time_conv.bias"]
        state["decoder.extra.weight"] = torch.zeros(1)
        state["encoder.head.0.gamma"] = torch.ones(7, 1, 1, 1)

    path = _rewrite(tiny["2.1"], tmp_path / "bad.safetensors", edit)
    with pytest.raises(VAEFileError) as err:
        load_vae(path)
    msg = str(err.value)
    assert "1 missing: ['decoder.upsamples.3.time_conv.bias']" in msg
    assert "1 unexpected: ['decoder.extra.weight']" in msg
    assert "encoder.head.0.gamma: file (7, 1, 1, 1), expected (32, 1, 1, 1)" in msg


def test_dit_file_is_recognised(tmp_path):
    dit = {"head.modulation": torch.zeros(1, 2, 8), "head.head.weight": torch.zeros(192, 8),
           "blocks.0.self_attn.q.weight": torch.zeros(8, 8)}
    save_file(dit, str(tmp_path / "dit.safetensors"))
    with pytest.raises(VAEFileError, match=r"diffusion model \(DiT\).*TI2V-5B.*wan2\.2_vae"):
        load_vae(tmp_path / "dit.safetensors")
    dit["head.head.weight"] = torch.zeros(64, 8)
    save_file(dit, str(tmp_path / "dit14.safetensors"))
    with pytest.raises(VAEFileError, match=r"A14B expert.*wan_2\.1_vae"):
        detect_vae(tmp_path / "dit14.safetensors")


@pytest.mark.parametrize("keys, what", [
    (["encoder.block.0.layer.0.SelfAttention.q.weight", "shared.weight"], "text encoder"),
    (["diffusion_model.blocks.0.ffn.0.lora_down.weight"], "LoRA"),
    (["decoder.up_blocks.0.resnets.0.conv1.weight", "post_quant_conv.weight"], "diffusers layout"),
    (["decoder.up.0.block.0.conv1.weight", "decoder.mid.block_1.norm1.weight"], "another family"),
    (["something.else"], "none of its 1 keys"),
])
def test_foreign_files_say_what_they_are(tmp_path, keys, what):
    save_file({k: torch.zeros(2) for k in keys}, str(tmp_path / "x.safetensors"))
    with pytest.raises(VAEFileError) as err:
        load_vae(tmp_path / "x.safetensors")
    assert what in str(err.value) and "wan_2.1_vae.safetensors" in str(err.value)


def test_not_a_safetensors_file(tmp_path):
    (tmp_path / "vae.pth").write_bytes(b"PK\x03\x04 not safetensors")
    with pytest.raises(VAEFileError, match="not a .safetensors file"):
        detect_vae(tmp_path / "vae.pth")
    with pytest.raises(VAEFileError, match="not found"):
        detect_vae(tmp_path / "missing.safetensors")


def test_unsupported_compute_dtype(tiny):
    with pytest.raises(ValueError, match="float32, float16 or bfloat16"):
        load_vae(tiny["2.1"], dtype=torch.float64)
