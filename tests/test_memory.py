"""The activation estimate, the VAE decode estimate and the automatic decode tile (engine.memory.estimates)."""
import json
from pathlib import Path

import pytest
import torch

from wan22duo.engine.model.dit import WanConfig
from wan22duo.engine.memory.estimates import (activation_bytes, auto_tile_size, ffn_chunk_tokens, vae_decode_bytes)
from wan22duo.engine.memory.residency import ModelHandle
from wan22duo.engine.model.vae.model import VAEConfig
from wan22duo.nodes import vae as vae_nodes

A14B = WanConfig(dim=5120, ffn_dim=13824, num_layers=40, in_dim=16, out_dim=16)
TI2V = WanConfig(dim=3072, ffn_dim=14336, num_layers=30, in_dim=48, out_dim=48)
VAE21 = VAEConfig("2.1", 96, 96, 16)
VAE22 = VAEConfig("2.2", 160, 256, 48)
GIB = 1024 ** 3
MIB = 1024 ** 2
# Every decode measured by bench/bench_vae_memory.py (one JSON line per fresh process).
VAE_RUNS = Path(__file__).resolve().parent.parent / "bench" / "results_vae_memory.jsonl"


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


def test_vae_decode_estimate_grows_with_pixels_and_not_below_half_in_two_byte_dtypes():
    for config in (VAE21, VAE22):
        whole, quarter = vae_decode_bytes(config, 720, 1280), vae_decode_bytes(config, 360, 640)
        assert 3.5 * quarter < whole < 4 * quarter  # per pixel, plus a fixed term
        for half in (torch.bfloat16, torch.float16):  # RMSNorm works in fp32: more than half of fp32
            assert whole / 2 < vae_decode_bytes(config, 720, 1280, half) < whole
        assert vae_decode_bytes(config, 128, 256) == vae_decode_bytes(config, 256, 128)


def _measured_decode_peaks() -> dict:
    """(version, dtype, decoded H, W, what) -> the largest peak MiB of any run of that decode."""
    peaks: dict = {}
    for line in VAE_RUNS.read_text().splitlines():
        r = json.loads(line)
        h, w, tile = r["height"], r["width"], r["tile"]
        tile_hw = (min(tile, h), min(tile, w)) if tile else (h, w)
        key = (r["version"], r["dtype"], *tile_hw, f"{r['frames']} frames {h}x{w}, tile {tile or '-'}")
        peaks[key] = max(peaks.get(key, 0.0), r["anon_mib"], r["hwm_mib"])
    return peaks


def test_vae_decode_estimate_bounds_every_measured_peak():
    """The estimate is an upper bound: >= 1.05 x every peak bench/bench_vae_memory.py measured
    (fresh process; RssAnon polled and VmHWM, whole frames and tiles, both VAEs, fp32 and bf16),
    and not loose where it matters, at the largest frames (there the per-pixel term dominates;
    the fixed term makes it loose at small frames, see bench/results_memory.md)."""
    peaks = _measured_decode_peaks()
    groups = {(k[0], k[1]) for k in peaks}
    assert groups == {("2.1", "float32"), ("2.1", "bfloat16"), ("2.2", "float32"), ("2.2", "bfloat16")}
    assert len(peaks) >= 20
    largest = {g: max(k[2] * k[3] for k in peaks if (k[0], k[1]) == g) for g in groups}
    for (version, dtype, h, w, what), peak in peaks.items():
        config = VAE21 if version == "2.1" else VAE22
        estimate = vae_decode_bytes(config, h, w, getattr(torch, dtype)) / MIB
        assert estimate >= 1.05 * peak, f"Wan {version} {dtype} {what}: estimate {estimate:.1f} MiB < 1.05 x {peak} MiB"
        if h * w == largest[(version, dtype)]:
            assert estimate <= 1.25 * peak, f"Wan {version} {dtype} {what}: estimate {estimate:.1f} MiB, {peak} measured"


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
    import wan22duo.engine.memory.streaming as streaming

    monkeypatch.setattr(streaming, "device_free", lambda device: whole + 10 ** 8)
    assert vae_nodes.auto_tile_size_for(gpu, (720, 1280), 64, 8) == 0
    monkeypatch.setattr(streaming, "device_free", lambda device: whole // 4 + 10 ** 8)
    size = vae_nodes.auto_tile_size_for(gpu, (720, 1280), 64, 8)
    assert 0 < size < 720 and vae_decode_bytes(VAE21, size, size) <= whole // 4
    # A video assembled on the GPU (ComfyUI's --gpu-only) is not free for the decode.
    monkeypatch.setattr(streaming, "device_free", lambda device: whole + 10 ** 8)
    size = vae_nodes.auto_tile_size_for(gpu, (720, 1280), 64, 8, output_bytes=whole // 2)
    assert 0 < size < 720 and vae_decode_bytes(VAE21, size, size) <= whole - whole // 2


class _Chosen(Exception):
    pass


@pytest.mark.parametrize("intermediate,expected", [("cpu", 0), ("cuda:0", 2 * 3 * 9 * 64 * 96 * 4)])
def test_decode_node_counts_the_video_on_the_gpu_for_auto_tile(monkeypatch, intermediate, expected):
    """The node passes the decoded video's bytes to auto_tile_size_for only when ComfyUI
    assembles it on the VAE's device: [B=2, 3, 9 frames, 64, 96] float32."""
    seen = {}

    def chosen(vae, pixels_hw, overlap, stride, output_bytes=0):
        seen.update(pixels_hw=pixels_hw, output_bytes=output_bytes)
        raise _Chosen

    monkeypatch.setattr(vae_nodes, "auto_tile_size_for", chosen)
    monkeypatch.setattr(vae_nodes._comfy, "intermediate_device", lambda: torch.device(intermediate))
    gpu = ModelHandle(lambda d: None, "cuda:0", torch.float32,
                      {"config": VAE21, "weight_bytes": 0, "version": "2.1", "z_dim": 16})
    with pytest.raises(_Chosen):
        vae_nodes.Wan22DuoVAEDecode().decode(gpu, {"samples": torch.zeros(2, 16, 3, 8, 12)}, auto_tile=True)
    assert seen == {"pixels_hw": (64, 96), "output_bytes": expected}
