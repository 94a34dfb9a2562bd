"""Loader, latent and VAE nodes called on tiny random checkpoints (no ComfyUI)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from wan22duo.engine.model.latents import LatentMismatchError
from wan22duo.engine.testing.tiny import write_tiny_dit
from wan22duo.engine.weights.vae_checkpoint import load_vae
from wan22duo.engine.testing.tiny_vae import write_tiny_vae
from wan22duo.nodes.loaders import Wan22DuoExpertLoader, Wan22DuoTI2VLoader, Wan22DuoVAELoader, guess_role
from wan22duo.nodes.samplers import (
    Wan22DuoEmptyLatent, Wan22DuoI2VConditioning, Wan22DuoTI2VLatent, i2v_video, ti2v_frame,
)
from wan22duo.nodes.vae import Wan22DuoVAEDecode, Wan22DuoVAEEncode

TINY = dict(dim=128, ffn_dim=256, num_layers=1)


def assert_close(actual, expected, atol=1e-6, rtol=1e-6):
    """torch.allclose with the largest difference in the message (torch.testing imports slowly)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    diff = (actual.float() - expected.float()).abs().max().item() if actual.numel() else 0.0
    assert torch.allclose(actual.float(), expected.float(), atol=atol, rtol=rtol), f"max abs diff {diff}"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    out = {
        "t2v_high": write_tiny_dit(d / "wan2.2_t2v_high_noise_14B_fp16.safetensors", "t2v_a14b", seed=1, **TINY),
        "i2v_low": write_tiny_dit(d / "wan2.2_i2v_low_noise_14B.safetensors", "i2v_a14b", storage="fp16", seed=2,
                                  **TINY),
        "unnamed": write_tiny_dit(d / "my_expert.safetensors", "t2v_a14b", seed=3, **TINY),
        "ti2v": write_tiny_dit(d / "wan2.2_ti2v_5B_fp16.safetensors", "ti2v_5b", seed=4, **TINY),
        "vae21": write_tiny_vae(d / "wan_2.1_vae.safetensors", "2.1"),
        "vae22": write_tiny_vae(d / "wan2.2_vae.safetensors", "2.2"),
    }
    return {k: str(v) for k, v in out.items()}


def _vae(path):
    return Wan22DuoVAELoader().load(path)["result"][0]


# ---------------------------------------------------------------- loaders


def test_role_is_read_from_the_official_file_names():
    assert guess_role("wan2.2_t2v_high_noise_14B_fp16.safetensors") == "high_noise"
    assert guess_role("wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors") == "low_noise"
    assert guess_role("Wan2_2-T2V-A14B-HIGH_fp8_e4m3fn.safetensors") == "high_noise"
    assert guess_role("wan22_low.safetensors") == "low_noise"
    assert guess_role("wan_lowvram_model.safetensors") is None  # "low" only inside another word
    assert guess_role("my_expert.safetensors") is None


def test_expert_loader_returns_a_lazy_handle(files):
    (handle,) = Wan22DuoExpertLoader().load(files["t2v_high"], "auto", "default", "auto", "cpu")
    assert not handle.loaded  # nothing read but the header
    assert handle.info["role"] == "high_noise" and handle.info["variant"] == "t2v_a14b"
    assert handle.info["config"].dim == 128 and handle.device == torch.device("cpu")
    assert handle.compute_dtype == torch.float32  # auto on CPU
    assert "T2V-A14B high-noise expert" in repr(handle)
    model = handle.acquire()
    assert model.config.variant == "t2v_a14b" and handle.loaded


def test_role_override_and_unreadable_name(files):
    (handle,) = Wan22DuoExpertLoader().load(files["t2v_high"], "high_noise", "default", "auto", "cpu")
    assert handle.info["role"] == "high_noise"
    # An explicit role that contradicts the file name (a workflow's role, the other expert's file picked): refused.
    with pytest.raises(ValueError, match=r"role is low_noise but the file 'wan2.2_t2v_high_noise_14B_fp16.safetensors' "
                                         r"is named as the high-noise expert\. Pick the low-noise file"):
        Wan22DuoExpertLoader().load(files["t2v_high"], "low_noise", "default", "auto", "cpu")
    with pytest.raises(ValueError, match="set role to high_noise or low_noise"):
        Wan22DuoExpertLoader().load(files["unnamed"], "auto", "default", "auto", "cpu")
    (handle,) = Wan22DuoExpertLoader().load(files["unnamed"], "high_noise", "default", "auto", "cpu")
    assert handle.info["role"] == "high_noise"


def test_weight_and_compute_dtypes(files):
    (handle,) = Wan22DuoExpertLoader().load(files["i2v_low"], "auto", "fp8_e4m3fn", "bf16", "cpu")
    model = handle.acquire()
    assert model.blocks[0].self_attn.q.weight.dtype == torch.float8_e4m3fn
    assert model.compute_dtype == torch.bfloat16 and handle.compute_dtype == torch.bfloat16
    (handle,) = Wan22DuoExpertLoader().load(files["i2v_low"], "auto", "default", "fp32", "cpu")
    assert handle.acquire().blocks[0].ffn[0].weight.dtype == torch.float16  # as stored
    assert handle.info["weight_bytes"] > 0


def test_loaders_name_the_right_node_for_the_wrong_model(files):
    with pytest.raises(ValueError, match="Wan22DuoTI2VLoader"):
        Wan22DuoExpertLoader().load(files["ti2v"], "auto", "default", "auto", "cpu")
    with pytest.raises(ValueError, match="Wan22DuoExpertLoader") as err:
        Wan22DuoTI2VLoader().load(files["t2v_high"], "default", "auto", "cpu")
    assert "high-noise expert of T2V-A14B" in str(err.value)
    (handle,) = Wan22DuoTI2VLoader().load(files["ti2v"], "default", "auto", "cpu")
    assert handle.info["variant"] == "ti2v_5b" and handle.info["role"] is None


def test_bad_device_and_missing_file(files, tmp_path):
    with pytest.raises(ValueError, match="cuda:7"):
        Wan22DuoExpertLoader().load(files["t2v_high"], "auto", "default", "auto", "cuda:7")
    with pytest.raises(FileNotFoundError, match="full path"):
        Wan22DuoExpertLoader().load("not_there.safetensors", "auto", "default", "auto", "cpu")


@pytest.mark.parametrize("key, version, channels", [("vae21", "2.1", 16), ("vae22", "2.2", 48)])
def test_vae_loader_reports_the_version(files, key, version, channels):
    out = Wan22DuoVAELoader().load(files[key], "fp32", "cpu")
    (handle,) = out["result"]
    assert out["ui"]["text"] == [f"Wan {version} VAE ({channels} latent channels, for "
                                 f"{'A14B experts' if version == '2.1' else 'TI2V-5B'})"]
    assert f"Wan {version} VAE" in repr(handle) and not handle.loaded
    assert handle.acquire().version == version


# ---------------------------------------------------------------- latents


def test_empty_latent_shapes():
    (out,) = Wan22DuoEmptyLatent().generate(1280, 720, 81, 1)
    assert out["samples"].shape == (1, 16, 21, 90, 160)  # spec §1.2: 81 frames -> 21 latents, /8 spatially
    assert out["samples"].dtype == torch.float32 and not out["samples"].any()
    (out,) = Wan22DuoEmptyLatent().generate(64, 48, 9, 2)
    assert out["samples"].shape == (2, 16, 3, 6, 8)
    with pytest.raises(ValueError, match="4n\\+1"):
        Wan22DuoEmptyLatent().generate(64, 48, 10, 1)
    with pytest.raises(ValueError, match="multiple of 16"):
        Wan22DuoEmptyLatent().generate(72, 48, 9, 1)


def _ramp_image(height, width, frames=1):
    """An IMAGE whose values are exact multiples of 1/255 (survive an 8-bit round trip)."""
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (frames, height, width, 3), generator=g).float() / 255.0


def test_ti2v_latent_without_image(files):
    (out,) = Wan22DuoTI2VLatent().generate(_vae(files["vae22"]), 1280, 704, 121, 1)
    assert out["samples"].shape == (1, 48, 31, 44, 80)  # spec §3.3 example
    assert "noise_mask" not in out
    with pytest.raises(ValueError, match="multiple of 32"):
        Wan22DuoTI2VLatent().generate(_vae(files["vae22"]), 1280, 720, 121, 1)


def test_ti2v_frame_resizes_to_cover_and_center_crops():
    image = _ramp_image(48, 100)[0]
    # Height already fits (scale 1), so only the crop acts: columns (100 - 64) // 2 = 18 .. 82.
    frame = ti2v_frame(image, 64, 48)
    assert frame.shape == (1, 3, 1, 48, 64)
    assert_close(frame[0, :, 0], image[:, 18:82].movedim(-1, 0) * 2 - 1, atol=1e-6, rtol=0)
    # Twice the target size with the same aspect: a plain LANCZOS downscale, no crop.
    image = _ramp_image(96, 128)[0]
    pil = Image.fromarray((image.numpy() * 255).round().astype(np.uint8)).resize((64, 48), Image.LANCZOS)
    expected = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0).movedim(-1, 0) * 2 - 1
    assert_close(ti2v_frame(image, 64, 48)[0, :, 0], expected, atol=1e-6, rtol=0)


def test_ti2v_latent_with_image(files):
    vae = _vae(files["vae22"])
    image = _ramp_image(64, 96)
    (out,) = Wan22DuoTI2VLatent().generate(vae, 96, 64, 9, 2, start_image=image)
    samples, mask = out["samples"], out["noise_mask"]
    assert samples.shape == (2, 48, 3, 4, 6) and mask.shape == (2, 1, 3, 4, 6)
    assert (mask[:, :, 0] == 0).all() and (mask[:, :, 1:] == 1).all()  # 0 = keep frame 0
    assert not samples[:, :, 1:].any()
    # Frame 0 holds the Wan 2.2 VAE encoding of the image itself (same size: no resize, no crop).
    reference = load_vae(files["vae22"]).encode(image.movedim(-1, 0)[None, :, :1] * 2 - 1)
    assert_close(samples[:1, :, :1], reference, atol=1e-5, rtol=1e-5)
    assert_close(samples[1], samples[0])


def test_ti2v_latent_rejects_the_wan21_vae(files):
    with pytest.raises(ValueError, match="wan2.2_vae.safetensors"):
        Wan22DuoTI2VLatent().generate(_vae(files["vae21"]), 64, 64, 5, 1, start_image=_ramp_image(64, 64))


def test_i2v_video_is_the_image_then_gray():
    image = _ramp_image(48, 64)
    video, known = i2v_video(image, 64, 48, 9)
    assert known == 1 and video.shape == (1, 3, 9, 48, 64)
    # Same size: bicubic at scale 1 reproduces the pixels; frames 1.. are 0 (mid-gray in [-1, 1]).
    assert_close(video[0, :, 0], image[0].movedim(-1, 0) * 2 - 1, atol=1e-6, rtol=0)
    assert not video[:, :, 1:].any()
    video, _ = i2v_video(image, 32, 24, 5)
    expected = F.interpolate(image.movedim(-1, 1) * 2 - 1, size=(24, 32), mode="bicubic", align_corners=False)
    assert_close(video[:, :, 0], expected)


def test_i2v_video_crops_to_the_target_aspect_instead_of_stretching():
    image = _ramp_image(48, 96)  # 2:1, target 1:1 -> the middle 48 columns
    video, _ = i2v_video(image, 24, 24, 1)
    middle = image[:, :, 24:72].movedim(-1, 1) * 2 - 1
    expected = F.interpolate(middle, size=(24, 24), mode="bicubic", align_corners=False)
    assert_close(video[:, :, 0], expected)
    tall = _ramp_image(90, 30)  # 1:3, target 2:3 (w x h = 20 x 30) -> the middle 45 rows
    video, _ = i2v_video(tall, 20, 30, 1)
    rows = tall[:, 22:67].movedim(-1, 1) * 2 - 1
    expected = F.interpolate(rows, size=(30, 20), mode="bicubic", align_corners=False)
    assert_close(video[:, :, 0], expected)


def test_i2v_conditioning(files):
    vae = _vae(files["vae21"])
    text = torch.randn(1, 7, 4096)
    positive, negative = [[text, {"pooled_output": None}]], [[torch.zeros(1, 5, 4096), {}]]
    image = _ramp_image(48, 64)
    pos, neg, latent = Wan22DuoI2VConditioning().encode(positive, negative, vae, image, 64, 48, 9, 2)
    assert latent["samples"].shape == (2, 16, 3, 6, 8) and not latent["samples"].any()
    assert pos[0][0] is text and "pooled_output" in pos[0][1]
    assert positive[0][1] == {"pooled_output": None}  # inputs not modified
    for cond in (pos, neg):
        concat, mask = cond[0][1]["concat_latent_image"], cond[0][1]["concat_mask"]
        assert concat.shape == (1, 16, 3, 6, 8)
        # ComfyUI convention (WanImageToVideo): 0 on the latent frame of the start image, 1 elsewhere.
        assert mask.shape == (1, 4, 3, 6, 8)
        assert (mask[:, :, 0] == 0).all() and (mask[:, :, 1:] == 1).all()
    video = torch.zeros(1, 3, 9, 48, 64)
    video[:, :, 0] = image[0].movedim(-1, 0) * 2 - 1
    assert_close(pos[0][1]["concat_latent_image"], load_vae(files["vae21"]).encode(video),
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="wan_2.1_vae.safetensors"):
        Wan22DuoI2VConditioning().encode(positive, negative, _vae(files["vae22"]), image, 64, 48, 9, 1)


# ---------------------------------------------------------------- VAE nodes


def test_decode_gives_comfy_frames(files):
    vae = _vae(files["vae21"])
    latent = torch.randn(2, 16, 3, 4, 6)
    (images,) = Wan22DuoVAEDecode().decode(vae, {"samples": latent}, 0, 64)
    assert images.shape == (2 * 9, 32, 48, 3) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    reference = load_vae(files["vae21"]).decode(latent[1:])  # [1, 3, 9, H, W] in [-1, 1]
    assert_close(images[9:], ((reference[0] + 1) / 2).clamp(0, 1).permute(1, 2, 3, 0),
                               atol=1e-5, rtol=1e-5)
    assert vae.location == torch.device("cpu")


def test_tiled_decode_keeps_the_layout(files):
    vae = _vae(files["vae21"])
    latent = torch.randn(1, 16, 2, 8, 8)
    (whole,) = Wan22DuoVAEDecode().decode(vae, {"samples": latent}, 0, 64)
    (tiled,) = Wan22DuoVAEDecode().decode(vae, {"samples": latent}, 32, 16)
    assert tiled.shape == whole.shape == (5, 64, 64, 3)
    assert tiled.min() >= 0 and tiled.max() <= 1
    with pytest.raises(ValueError, match="overlap"):
        Wan22DuoVAEDecode().decode(vae, {"samples": latent}, 32, 32)


def test_decode_names_the_right_vae_for_a_mismatched_latent(files):
    with pytest.raises(LatentMismatchError, match="wan2.2_vae.safetensors") as err:
        Wan22DuoVAEDecode().decode(_vae(files["vae21"]), {"samples": torch.zeros(1, 48, 2, 4, 4)}, 0, 64)
    assert "48-channel" in str(err.value)
    with pytest.raises(LatentMismatchError, match="16-channel"):
        Wan22DuoVAEDecode().decode(_vae(files["vae22"]), {"samples": torch.zeros(1, 16, 2, 4, 4)}, 0, 64)


def test_encode_node(files):
    vae = _vae(files["vae22"])
    pixels = _ramp_image(32, 48, frames=5)
    (out,) = Wan22DuoVAEEncode().encode(vae, pixels)
    assert out["samples"].shape == (1, 48, 2, 2, 3)
    reference = load_vae(files["vae22"]).encode(pixels.permute(3, 0, 1, 2)[None] * 2 - 1)
    assert_close(out["samples"], reference, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="4n\\+1"):
        Wan22DuoVAEEncode().encode(vae, pixels[:4])
