"""SVI 2.0 Pro continuation layout and the colour match, on tiny random models (no ComfyUI).

The layout is checked against two references built here from the published description, not from
the pack's code: ComfyUI's side as KJNodes' WanImageToVideoSVIPro stores it (raw latent: anchor,
the previous latent's last k frames, then ``Wan21.process_out(zeros)``; a one-channel mask 0 on
latent frame 0), and the model's side as the SVI authors describe ``y`` (normalised: anchor,
motion latents, zeros; the four mask channels 1 on latent frame 0).
"""
import pytest
import torch

from wan22duo.engine.model.colour import (
    GAIN_RANGE, channel_stats, lab_to_rgb, match_colour, overlap_frames, rgb_to_lab,
)
from wan22duo.engine.model.conditioning import I2VConditioning
from wan22duo.engine.model.continuation import ContinuationError, svi_layout, svi_overlap
from wan22duo.engine.model.latents import WAN21_MEAN, WAN21_STD
from wan22duo.engine.testing.tiny import write_tiny_dit
from wan22duo.engine.testing.tiny_vae import write_tiny_vae
from wan22duo.engine.weights.vae_checkpoint import load_vae
from wan22duo.nodes.continuation import Wan22DuoColorMatch, Wan22DuoI2VExtendSVI
from wan22duo.nodes.keyframes import Wan22DuoJoinClips, fit_i2v
from wan22duo.nodes.loaders import Wan22DuoExpertLoader, Wan22DuoVAELoader
from wan22duo.nodes.samplers import Wan22DuoSampler
from wan22duo.nodes.vae import Wan22DuoVAEDecode

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = dict(dim=128, ffn_dim=256, num_layers=1)
MEAN = torch.tensor(WAN21_MEAN).view(1, 16, 1, 1, 1)
STD = torch.tensor(WAN21_STD).view(1, 16, 1, 1, 1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    out = {
        "i2v_high": write_tiny_dit(d / "i2v_high_noise.safetensors", "i2v_a14b", seed=3, **TINY),
        "i2v_low": write_tiny_dit(d / "i2v_low_noise.safetensors", "i2v_a14b", seed=4, **TINY),
        "vae21": write_tiny_vae(d / "wan_2.1_vae.safetensors", "2.1"),
        "vae22": write_tiny_vae(d / "wan2.2_vae.safetensors", "2.2"),
    }
    return {k: str(v) for k, v in out.items()}


def vae(files, key="vae21"):
    return Wan22DuoVAELoader().load(files[key], "fp32", "cpu")["result"][0]


def images(frames, height, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(frames, height, width, 3, generator=g)


def prompts():
    g = torch.Generator().manual_seed(0)
    return [[torch.randn(1, 6, 4096, generator=g), {}]], [[torch.randn(1, 4, 4096, generator=g), {}]]


def kjnodes_reference(anchor, previous, k, t):
    """ComfyUI side, as WanImageToVideoSVIPro stores it: raw latent and a 1-channel mask (0 = known)."""
    parts = [anchor] + ([previous[:, :, -k:]] if previous is not None and k > 0 else [])
    pad = t - sum(p.shape[2] for p in parts)
    padding = torch.zeros(1, 16, pad, *anchor.shape[-2:]) * STD + MEAN  # Wan21().process_out(zeros)
    mask = torch.ones(1, 1, t, *anchor.shape[-2:])
    mask[:, :, :1] = 0.0
    return torch.cat(parts + [padding], dim=2), mask


def authors_reference_y(anchor, previous, k, t):
    """Model side, as the SVI authors describe y: [mask(4): 1 on frame 0, anchor, motion, zeros] (normalised)."""
    norm = lambda z: (z - MEAN) / STD  # noqa: E731
    h, w = anchor.shape[-2:]
    lat = torch.zeros(1, 16, t, h, w)
    lat[:, :, 0] = norm(anchor)[:, :, 0]
    if previous is not None and k > 0:
        lat[:, :, 1:1 + k] = norm(previous)[:, :, -k:]
    msk = torch.zeros(1, 4, t, h, w)
    msk[:, :, 0] = 1.0
    return torch.cat([msk, lat], dim=1)


@pytest.mark.parametrize("k, t, with_previous", [(1, 21, True), (2, 5, True), (0, 5, True), (1, 6, False),
                                                 (2, 4, True)])
def test_svi_layout_equals_the_published_layouts(k, t, with_previous):
    g = torch.Generator().manual_seed(k * 10 + t)
    anchor = torch.randn(1, 16, 1, 6, 10, generator=g) * 2
    previous = torch.randn(1, 16, 7, 6, 10, generator=g) * 2 if with_previous else None
    image, mask = svi_layout(anchor, previous, k, t)
    ref_image, ref_mask = kjnodes_reference(anchor, previous, k, t)
    assert torch.equal(image, ref_image)  # copies and the per-channel mean: exact
    assert mask.shape == (1, 4, t, 6, 10)
    assert torch.equal(mask.mean(dim=1, keepdim=True), ref_mask)  # ComfyUI averages other channel counts
    shape = (1, 16, t, 6, 10)
    ours = I2VConditioning.from_comfy(image, mask).y(shape)
    theirs = I2VConditioning.from_comfy(ref_image, ref_mask).y(shape)
    assert torch.equal(ours, theirs)
    torch.testing.assert_close(ours, authors_reference_y(anchor, previous, k, t), rtol=0, atol=2e-6)


def test_svi_layout_bad_input_is_named():
    anchor, previous = torch.zeros(1, 16, 1, 4, 4), torch.zeros(1, 16, 3, 4, 4)
    with pytest.raises(ContinuationError, match="motion_latents 4 is more than the previous clip's 3"):
        svi_layout(anchor, previous, 4, 21)
    with pytest.raises(ContinuationError, match="fill all 3 latent frames of the clip .9 frames.*at least 13 frames"):
        svi_layout(anchor, previous, 2, 3)
    assert svi_layout(anchor, None, 2, 1)[0].shape[2] == 1  # a first clip may be the anchor alone
    with pytest.raises(ContinuationError, match="previous_latent is 40x32 pixels but the new clip is 32x32"):
        svi_layout(anchor, torch.zeros(1, 16, 3, 4, 5), 1, 5)
    with pytest.raises(ContinuationError, match=r"\[1, 16, T, h, w\]"):
        svi_layout(anchor, torch.zeros(1, 48, 3, 4, 4), 1, 5)
    with pytest.raises(ContinuationError, match="encoded alone .1 latent frame., got 2"):
        svi_layout(torch.zeros(1, 16, 2, 4, 4), None, 1, 5)
    with pytest.raises(ContinuationError, match="motion_latents must be a whole number >= 0, got -1"):
        svi_layout(anchor, previous, -1, 5)
    assert svi_overlap(1, True) == 5 and svi_overlap(2, True) == 9 and svi_overlap(1, False) == 0


def test_node_encodes_the_anchor_alone_and_takes_the_tail_from_the_latent(files):
    v = vae(files)
    pos, neg = prompts()
    anchor = images(1, 40, 56, seed=1)
    previous = {"samples": torch.randn(1, 16, 4, 4, 6)}
    p, n, latent, overlap = Wan22DuoI2VExtendSVI().extend(pos, neg, v, anchor, 48, 32, 17, 2, previous)
    assert overlap == 9 and latent["samples"].shape == (1, 16, 5, 4, 6) and not latent["samples"].any()
    values = p[0][1]
    assert values["concat_latent_image"] is n[0][1]["concat_latent_image"]
    fitted = fit_i2v(anchor, 48, 32).movedim(0, 1).unsqueeze(0)  # [1, 3, 1, H, W]
    alone = load_vae(files["vae21"]).encode(fitted)
    torch.testing.assert_close(values["concat_latent_image"][:, :, :1], alone, rtol=0, atol=1e-5)
    assert torch.equal(values["concat_latent_image"][:, :, 1:3], previous["samples"][:, :, 2:4])
    assert torch.equal(values["concat_latent_image"][:, :, 3:], MEAN.expand(1, 16, 2, 4, 6))
    assert values["concat_mask"][:, :, 0].eq(0).all() and values["concat_mask"][:, :, 1:].eq(1).all()
    first = Wan22DuoI2VExtendSVI().extend(pos, neg, v, anchor, 48, 32, 17, 2)
    assert first[3] == 0
    assert torch.equal(first[0][0][1]["concat_latent_image"][:, :, 1:], MEAN.expand(1, 16, 4, 4, 6))


def test_node_bad_input_is_named(files):
    pos, neg = prompts()
    with pytest.raises(ValueError, match="Wan 2.2 VAE, but I2V-A14B uses the Wan 2.1 VAE"):
        Wan22DuoI2VExtendSVI().extend(pos, neg, vae(files, "vae22"), images(1, 32, 32), 32, 32, 9, 1)
    with pytest.raises(ContinuationError, match="anchor_image must be one image .* got 3 frames"):
        Wan22DuoI2VExtendSVI().extend(pos, neg, vae(files), images(3, 32, 32), 32, 32, 9, 1)
    with pytest.raises(ContinuationError, match="previous_latent is 48x32 pixels but the new clip is 32x32"):
        Wan22DuoI2VExtendSVI().extend(pos, neg, vae(files), images(1, 32, 32), 32, 32, 9, 1,
                                      {"samples": torch.zeros(1, 16, 3, 4, 6)})


def test_svi_chain_samples_decodes_and_joins(files):
    """Clip 1 (anchor + zeros), then two SVI continuations from the sampled latents; joined 9 + 4 + 4 frames."""
    v = vae(files)
    high = Wan22DuoExpertLoader().load(files["i2v_high"], "high_noise", "default", "auto", "cpu")[0]
    low = Wan22DuoExpertLoader().load(files["i2v_low"], "low_noise", "default", "auto", "cpu")[0]
    pos, neg = prompts()
    anchor = images(1, 32, 32, seed=2)
    decode = lambda latent: Wan22DuoVAEDecode().decode(v, latent, 0, 64)[0]  # noqa: E731
    previous, video, clips = None, None, []
    for seed in range(3):
        p, n, latent, overlap = Wan22DuoI2VExtendSVI().extend(pos, neg, v, anchor, 32, 32, 9, 1, previous)
        out = Wan22DuoSampler().sample(high, p, n, latent, seed, steps=2, cfg_high=1.0, cfg_low=1.0,
                                       low_noise_model=low)["result"][0]
        clip = decode(out)
        clips.append(clip)
        video = clip if video is None else Wan22DuoJoinClips().join(video, clip, overlap)[0]
        if previous is not None:
            assert torch.equal(p[0][1]["concat_latent_image"][:, :, 1], previous["samples"][:, :, -1])
        previous = out
    assert video.shape == (17, 32, 32, 3)
    assert torch.equal(video[9:13], clips[1][5:]) and torch.equal(video[13:], clips[2][5:])


# ---------------------------------------------------------------- colour


def test_lab_has_the_published_values_and_round_trips():
    lab = rgb_to_lab(torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    expected = torch.tensor([[100.0, 0.0, 0.0], [53.2408, 80.0925, 67.2032], [0.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(lab, expected, rtol=0, atol=2e-3)
    rgb = images(2, 8, 8, seed=3).double()
    torch.testing.assert_close(lab_to_rgb(rgb_to_lab(rgb)), rgb, rtol=0, atol=1e-9)


@pytest.mark.parametrize("space", ["lab", "ycbcr"])
def test_match_gives_the_reference_statistics(space):
    reference = 0.2 + 0.6 * images(3, 16, 16, seed=4)
    drifted = (reference * 0.8 + torch.tensor([0.12, 0.05, -0.02])).clamp(0, 1)  # darker contrast, warm tint
    out = match_colour(drifted, drifted, reference, space, 1.0)
    mean_o, std_o = channel_stats(out, space)
    mean_r, std_r = channel_stats(reference, space)
    mean_d, _ = channel_stats(drifted, space)
    scale = 100.0 if space == "lab" else 1.0
    assert (mean_o - mean_r).abs().max() < 0.01 * scale < (mean_d - mean_r).abs().max()
    assert (std_o - std_r).abs().max() < 0.01 * scale
    assert torch.equal(match_colour(drifted, drifted, reference, space, 0.0), drifted)
    half = match_colour(drifted, drifted, reference, space, 0.5)
    torch.testing.assert_close(channel_stats(half, space)[0], (mean_d + mean_o) / 2, rtol=0, atol=0.01 * scale)


def test_overlap_match_undoes_a_brightness_shift_of_the_shared_frames():
    """The new clip repeats the previous clip's last 4 frames (after its anchor frame 0), 0.1 brighter."""
    previous = 0.2 + 0.6 * images(9, 16, 16, seed=5)
    new = torch.cat([images(1, 16, 16, seed=6), previous[-4:], 0.2 + 0.6 * images(4, 16, 16, seed=7)]) + 0.1
    (out,) = Wan22DuoColorMatch().match(new, previous, "overlap", 5, 1.0, "ycbcr")
    torch.testing.assert_close(out[1:5], previous[-4:], rtol=0, atol=1e-5)
    torch.testing.assert_close(out[5:], new[5:] - 0.1, rtol=0, atol=1e-5)  # the same transform on every frame


def test_overlap_frames_and_the_gain_bound():
    a, b = images(9, 4, 4, seed=8), images(7, 4, 4, seed=9)
    src, ref = overlap_frames(a, b, 5)
    assert torch.equal(src, a[1:5]) and torch.equal(ref, b[3:])
    for overlap in (0, 1):
        src, ref = overlap_frames(a, b, overlap)
        assert torch.equal(src, a[:1]) and torch.equal(ref, b[-1:])
    with pytest.raises(ValueError, match="overlap 8 is longer than a clip"):
        overlap_frames(a, b, 8)
    flat = torch.full((2, 4, 4, 3), 0.5)
    out = match_colour(flat + 0.01 * images(2, 4, 4, seed=10), flat, images(2, 4, 4, seed=11), "ycbcr")
    spread = channel_stats(out, "ycbcr")[1] / channel_stats(flat + 0.01 * images(2, 4, 4, seed=10), "ycbcr")[1]
    assert spread.max() <= GAIN_RANGE[1] + 1e-6


def test_colour_match_node_anchor_mode_and_bad_input(files):
    anchor = 0.3 + 0.4 * images(1, 16, 16, seed=12)
    clip = anchor.expand(5, -1, -1, -1) * 0.7
    (out,) = Wan22DuoColorMatch().match(clip, anchor, "anchor", 0, 1.0, "lab")
    assert (channel_stats(out, "lab")[0] - channel_stats(anchor, "lab")[0]).abs().max() < 0.05
    with pytest.raises(ValueError, match="match must be 'overlap' or 'anchor', got 'both'"):
        Wan22DuoColorMatch().match(clip, anchor, "both", 0, 1.0, "lab")
    with pytest.raises(ValueError, match="colour space must be one of"):
        Wan22DuoColorMatch().match(clip, anchor, "anchor", 0, 1.0, "hsv")
    with pytest.raises(ValueError, match="strength must be between 0 and 1, got 2.0"):
        Wan22DuoColorMatch().match(clip, anchor, "anchor", 0, 2.0, "lab")
