"""Properties of the chunked causal VAEs that do not need a reference implementation.

* Causality: latent frame k depends only on video frames 0..4k, and video frames
  0..4k depend only on latent frames 0..k.
* Chunking: the reference's chunks (encode 1 + 4 + 4 ..., decode one latent frame at
  a time) agree with one whole-sequence pass, which follows the plain full-sequence
  rules of spec §4.3, and with other chunkings, to relative L2 <= 1e-5 in fp32.
* Mismatch errors, input checks, output range, progress, reduced precision.
"""
import pytest
import torch

from wan22duo.engine.model.latents import LatentMismatchError
from wan22duo.engine.weights.vae_checkpoint import load_vae
from wan22duo.engine.model.vae.model import decode_chunks, encode_chunks
from wan22duo.engine.testing.tiny_vae import write_tiny_vae

SIZES = {"2.1": (16, 24), "2.2": (32, 48)}  # 2x3 latent cells


def rel_l2(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("inv")
    return {v: write_tiny_vae(d / f"vae{v}.safetensors", v, seed=7) for v in ("2.1", "2.2")}


@pytest.fixture(scope="module", params=["2.1", "2.2"])
def vae(request, files):
    return load_vae(files[request.param])


def video_for(vae, frames, seed=0):
    h, w = SIZES[vae.version]
    return torch.rand(1, 3, frames, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def latent_for(vae, frames, seed=0):
    h, w = SIZES[vae.version]
    s = vae.spatial_stride
    return torch.randn(1, vae.z_dim, frames, h // s, w // s, generator=torch.Generator().manual_seed(seed))


def test_encoder_is_causal(vae):
    video = video_for(vae, 13)
    base = vae.encode(video)
    assert base.shape[2] == 4
    for k in range(3):
        changed = video.clone()
        changed[:, :, 4 * k + 1 :] = torch.rand_like(changed[:, :, 4 * k + 1 :])
        out = vae.encode(changed)
        assert torch.equal(out[:, :, : k + 1], base[:, :, : k + 1])
        assert not torch.allclose(out[:, :, k + 1], base[:, :, k + 1])


def test_decoder_is_causal(vae):
    z = latent_for(vae, 4)
    base = vae.decode(z)
    for k in range(3):
        changed = z.clone()
        changed[:, :, k + 1 :] = torch.randn_like(changed[:, :, k + 1 :])
        out = vae.decode(changed)
        assert torch.equal(out[:, :, : 4 * k + 1], base[:, :, : 4 * k + 1])
        assert not torch.allclose(out[:, :, 4 * k + 1 : 4 * k + 5], base[:, :, 4 * k + 1 : 4 * k + 5])


def test_chunked_encode_equals_whole_sequence(vae):
    video = video_for(vae, 13, seed=1).to(vae.dtype)
    chunked = vae._encode_tile(video, encode_chunks(13))
    whole = vae._encode_tile(video, [(0, 13)])
    other = vae._encode_tile(video, [(0, 1), (1, 9), (9, 13)])  # 1 + 8 + 4
    assert whole.shape == chunked.shape == (1, vae.z_dim, 4, *chunked.shape[3:])
    assert rel_l2(chunked, whole) <= 1e-5
    assert rel_l2(other, whole) <= 1e-5


def collect_decode(vae, z, chunks):
    parts = {}
    for _ in vae._decode_tile(z, lambda first, frames: parts.__setitem__(first, frames.clone()), chunks):
        pass
    return torch.cat([parts[k] for k in sorted(parts)], dim=2)


def test_chunked_decode_equals_whole_sequence(vae):
    z = latent_for(vae, 4, seed=2)
    chunked = collect_decode(vae, z, decode_chunks(4))
    whole = collect_decode(vae, z, [(0, 4)])
    pairs = collect_decode(vae, z, [(0, 2), (2, 4)])
    assert whole.shape[2] == chunked.shape[2] == 13
    assert rel_l2(chunked, whole) <= 1e-5
    assert rel_l2(pairs, whole) <= 1e-5


def test_decode_is_clamped_and_float32(vae):
    out = vae.decode(latent_for(vae, 2) * 20)
    assert out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1 and (out.abs() == 1).any()


def test_decode_reports_progress(vae):
    calls = []
    vae.decode(latent_for(vae, 3), progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_encode_rejects_bad_frame_count_and_size(vae):
    with pytest.raises(ValueError, match=r"4n\+1.*9 or 13"):
        vae.encode(video_for(vae, 10))
    h, w = SIZES[vae.version]
    with pytest.raises(ValueError, match=f"width {w + 4} is not a multiple of {vae.spatial_stride}"):
        vae.encode(torch.zeros(1, 3, 1, h, w + 4))
    with pytest.raises(ValueError, match=r"\[B, 3, F, H, W\]"):
        vae.encode(torch.zeros(1, 4, 1, h, w))


def test_wrong_latent_channels_name_both_vaes_and_the_fix(files):
    vae21, vae22 = load_vae(files["2.1"]), load_vae(files["2.2"])
    with pytest.raises(LatentMismatchError) as err:
        vae21.decode(torch.zeros(1, 48, 1, 2, 2))
    msg = str(err.value)
    assert "48-channel" in msg and "Wan 2.1 VAE" in msg and "TI2V-5B uses the Wan 2.2 VAE" in msg
    with pytest.raises(LatentMismatchError) as err:
        vae22.decode(torch.zeros(1, 16, 1, 2, 2))
    msg = str(err.value)
    assert "16-channel" in msg and "Wan 2.2 VAE" in msg and "A14B experts" in msg and "Wan 2.1 VAE" in msg


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_stays_close_to_fp32(files, dtype):
    fp32, low = load_vae(files["2.1"]), load_vae(files["2.1"], dtype=dtype)
    assert low.dtype == dtype
    z = torch.randn(1, 16, 2, 2, 3, generator=torch.Generator().manual_seed(3))
    assert rel_l2(low.decode(z), fp32.decode(z)) < 0.05
    video = video_for(fp32, 5)
    assert rel_l2(low.encode(video), fp32.encode(video)) < 0.05
