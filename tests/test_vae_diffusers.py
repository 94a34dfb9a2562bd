"""Parity of our Wan VAEs with diffusers' AutoencoderKLWan (the independent peer).

Both load the same tiny random weights: ours from the ComfyUI-layout file written by
``write_tiny_vae``, diffusers' through a key map written here from spec §6.3 (not
diffusers' own converter). Tolerance: relative L2 error at most 1e-5 in fp32
(spec §7's acceptance threshold for VAE encode or decode).
"""
import re

import pytest
import torch
from safetensors.torch import load_file

from wan22duo.engine.weights.vae_checkpoint import load_vae
from wan22duo.engine.testing.tiny_vae import write_tiny_vae

from _deps import require

diffusers = require("diffusers")

RES_PARTS = {
    "residual.0.gamma": "norm1.gamma",
    "residual.2": "conv1",
    "residual.3.gamma": "norm2.gamma",
    "residual.6": "conv2",
    "shortcut": "conv_shortcut",
}


def to_diffusers_key(key: str, version: str) -> str:
    """Official/ComfyUI VAE key -> AutoencoderKLWan key (spec §6.3)."""
    for old, new in (("conv1.", "quant_conv."), ("conv2.", "post_quant_conv.")):
        if key.startswith(old):
            return new + key[len(old):]
    key = re.sub(r"^(encoder|decoder)\.conv1\.", r"\1.conv_in.", key)
    key = re.sub(r"\.middle\.0\.", ".mid_block.resnets.0.", key)
    key = re.sub(r"\.middle\.1\.", ".mid_block.attentions.0.", key)
    key = re.sub(r"\.middle\.2\.", ".mid_block.resnets.1.", key)
    key = re.sub(r"\.head\.0\.", ".norm_out.", key)
    key = re.sub(r"\.head\.2\.", ".conv_out.", key)
    if version == "2.1":
        key = re.sub(r"^encoder\.downsamples\.", "encoder.down_blocks.", key)
        key = re.sub(r"^decoder\.upsamples\.(\d+)\.", _decoder21_block, key)
    else:
        key = re.sub(r"^encoder\.downsamples\.(\d+)\.downsamples\.2\.", r"encoder.down_blocks.\1.downsampler.", key)
        key = re.sub(r"^encoder\.downsamples\.(\d+)\.downsamples\.(\d+)\.", r"encoder.down_blocks.\1.resnets.\2.", key)
        key = re.sub(r"^decoder\.upsamples\.(\d+)\.upsamples\.3\.", r"decoder.up_blocks.\1.upsampler.", key)
        key = re.sub(r"^decoder\.upsamples\.(\d+)\.upsamples\.(\d+)\.", r"decoder.up_blocks.\1.resnets.\2.", key)
    for old, new in RES_PARTS.items():
        key = key.replace(f".{old}.", f".{new}.") if f".{old}." in key else key
        if key.endswith(f".{old}"):
            key = key[: -len(old)] + new
    return key


def _decoder21_block(match: re.Match) -> str:
    # Flat list of 15: stages of 3 residual blocks, an upsampler after each of the first three.
    stage, pos = divmod(int(match.group(1)), 4)
    return f"decoder.up_blocks.{stage}." + ("upsamplers.0." if pos == 3 else f"resnets.{pos}.")


def diffusers_vae(path, version: str, base_dim: int, dec_dim: int):
    """diffusers' AutoencoderKLWan holding the weights of a ComfyUI-layout VAE file."""
    return diffusers_vae_from_state(load_file(str(path)), version, base_dim, dec_dim)


def diffusers_vae_from_state(state: dict, version: str, base_dim: int, dec_dim: int):
    from diffusers import AutoencoderKLWan

    if version == "2.1":
        model = AutoencoderKLWan(base_dim=base_dim, z_dim=16)
    else:
        model = AutoencoderKLWan(
            base_dim=base_dim, decoder_base_dim=dec_dim, z_dim=48, is_residual=True,
            in_channels=12, out_channels=12, patch_size=2, scale_factor_spatial=16,
            latents_mean=[0.0] * 48, latents_std=[1.0] * 48,
        )
    model.load_state_dict({to_diffusers_key(k, version): v for k, v in state.items()}, strict=True)
    return model.eval()


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


CASES = {
    # version: (base_dim, dec_dim, frames, size); sizes give a 4x5 latent grid
    "2.1": (8, 8, 9, (32, 40)),
    "2.2": (8, 12, 9, (64, 80)),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def pair(request, tmp_path_factory):
    version = request.param
    base, dec, frames, size = CASES[version]
    path = write_tiny_vae(tmp_path_factory.mktemp("vae") / f"tiny{version}.safetensors", version, base, dec, seed=3)
    return version, load_vae(path), diffusers_vae(path, version, base, dec), frames, size


def test_encode_matches_diffusers(pair):
    version, ours, ref, frames, (h, w) = pair
    video = torch.rand(1, 3, frames, h, w, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        expected = ref.encode(video).latent_dist.mean
    got = ours.encode(video)
    assert got.shape == expected.shape
    assert rel_l2(got, expected) <= 1e-5


def test_decode_matches_diffusers(pair):
    version, ours, ref, frames, (h, w) = pair
    s = ours.spatial_stride
    z = torch.randn(1, ours.z_dim, 3, h // s, w // s, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = ref.decode(z).sample
    got = ours.decode(z)
    assert got.shape == expected.shape == (1, 3, 9, h, w)
    # The clamp must not hide the comparison: most values are inside (-1, 1).
    assert (expected.abs() < 1).float().mean() > 0.8
    assert rel_l2(got, expected) <= 1e-5


def test_batch_of_two_matches_diffusers(pair):
    version, ours, ref, frames, (h, w) = pair
    s = ours.spatial_stride
    z = torch.randn(2, ours.z_dim, 2, h // s, w // s, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = ref.decode(z).sample
    assert rel_l2(ours.decode(z), expected) <= 1e-5


def test_key_map_covers_every_diffusers_parameter():
    """The map is a bijection onto diffusers' names (load_state_dict(strict=True) above also checks this)."""
    from wan22duo.engine.weights.vae_checkpoint import build_vae
    from wan22duo.engine.model.vae.model import VAEConfig

    for version, z in (("2.1", 16), ("2.2", 48)):
        ours = build_vae(VAEConfig(version, 8, 8, z)).state_dict()
        mapped = {to_diffusers_key(k, version) for k in ours}
        assert len(mapped) == len(ours)
