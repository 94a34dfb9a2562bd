"""The activation estimate, the VAE decode estimate and the automatic decode tile (engine.memory)."""
import pytest
import torch

from wan22duo.engine.dit import WanConfig
from wan22duo.engine.memory import (activation_bytes, auto_tile_size, ffn_chunk_tokens, vae_decode_bytes)
from wan22duo.engine.residency import ModelHandle
from wan22duo.engine.vae.model import VAEConfig
from wan22duo.nodes import vae as vae_nodes

A14B = WanConfig(dim=5120, ffn_dim=13824, num_layers=40, in_dim=16, out_dim=16)
TI2V = WanConfig(dim=3072, ffn_dim=14336, num_layers=30, in_dim=48, out_dim=48)
VAE21 = VAEConfig("2.1", 96, 96, 16)
VAE22 = VAEConfig("2.2", 160, 256, 48)
GIB = 1024 ** 3


def test_activation_estimate_grows_with_size_dtype_and_guidance():
    small = activation_bytes(A14B, 21, 60, 104, torch.bfloat16)  # 832x480x81
    large = activation_bytes(A14B, 21, 90, 160, torch.bfloat16)  # 1280x720x81
    assert large > 2 * small
    assert activation_bytes(A14B, 21, 60, 104, torch.float32) > small
    assert activation_bytes(A14B, 21, 60, 104, torch.bfloat16, guidance_batch=2) > 1.7 * small
    assert activation_bytes(A14B, 21, 60, 104, torch.bfloat16, cfg=4.0) > small  # v_cond kept
    assert activation_bytes(A14B, 21, 60, 104, torch.bfloat16, batch=2) > 1.7 * small


def test_activation_estimate_at_real_shapes_is_plausible():
    """480p A14B: 32,760 tokens. The fp32 residual stream alone is 0.62 GiB; with q, k, v, the
    attention output and RoPE temporaries a bf16 forward needs a few GiB, not tens."""
    est = activation_bytes(A14B, 21, 60, 104, torch.bfloat16)
    stream = 21 * 30 * 52 * 5120 * 4
    assert 3 * stream < est < 12 * stream
    assert 1.5 * GIB < est < 8 * GIB
    five_b = activation_bytes(TI2V, 31, 44, 80, torch.bfloat16)  # 1280x704x121 on the Wan 2.2 VAE
    assert 2 * GIB < five_b < 12 * GIB


def test_ffn_chunk_keeps_the_hidden_no_larger_than_the_stream():
    length = 32760
    chunk = ffn_chunk_tokens(A14B, length)
    assert chunk * A14B.ffn_dim <= length * A14B.dim and chunk >= 512
    assert ffn_chunk_tokens(A14B, 100) == 512
    # chunking lowers the estimate against an unchunked FFN
    assert activation_bytes(A14B, 21, 60, 104, ffn_chunk=0) >= activation_bytes(A14B, 21, 60, 104)


def test_vae_decode_estimate_scales_with_pixels_and_dtype():
    assert vae_decode_bytes(VAE21, 720, 1280) == pytest.approx(4 * vae_decode_bytes(VAE21, 360, 640), rel=1e-6)
    assert vae_decode_bytes(VAE21, 720, 1280, torch.bfloat16) * 2 == vae_decode_bytes(VAE21, 720, 1280)
    assert vae_decode_bytes(VAE22, 704, 1280) > 0


@pytest.mark.parametrize("config,stride", [(VAE21, 8), (VAE22, 16)])
def test_auto_tile_is_whole_frames_when_they_fit_else_the_largest_fitting_tile(config, stride):
    h, w = 720, 1280
    whole = vae_decode_bytes(config, h, w)
    assert auto_tile_size(config, h, w, whole, stride=stride) == 0
    for available in (whole // 2, whole // 5, whole // 20):
        size = auto_tile_size(config, h, w, available, stride=stride)
        assert size > 64 and size % 32 == 0
        assert vae_decode_bytes(config, min(size, h), min(size, w)) <= available
        bigger = size + 32
        assert vae_decode_bytes(config, min(bigger, h), min(bigger, w)) > available
    assert auto_tile_size(config, h, w, 1, stride=stride) == 96  # nothing fits: the smallest tile above overlap


def test_decode_node_auto_tile(monkeypatch):
    """The node's auto choice: whole frames on CPU; on a (pretend) GPU, a tile from the free memory."""
    vae = ModelHandle(lambda d: None, "cpu", torch.float32, {"config": VAE21, "weight_bytes": 0})
    assert vae_nodes.auto_tile_size_for(vae, (720, 1280), 64, 8) == 0
    gpu = ModelHandle(lambda d: None, "cuda:0", torch.float32, {"config": VAE21, "weight_bytes": 10 ** 8})
    whole = vae_decode_bytes(VAE21, 720, 1280)
    import wan22duo.engine.streaming as streaming

    monkeypatch.setattr(streaming, "device_free", lambda device: whole + 10 ** 8)
    assert vae_nodes.auto_tile_size_for(gpu, (720, 1280), 64, 8) == 0
    monkeypatch.setattr(streaming, "device_free", lambda device: whole // 4 + 10 ** 8)
    size = vae_nodes.auto_tile_size_for(gpu, (720, 1280), 64, 8)
    assert 0 < size < 720 and vae_decode_bytes(VAE21, size, size) <= whole // 4
