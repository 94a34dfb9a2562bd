"""Keyframes (first-last frame), continuation and joining, on tiny random models (no ComfyUI).

The ComfyUI-side check (our first-last conditioning equals WanFirstLastFrameToVideo's from the
same images and VAE) is in integration/test_keyframes_comfy.py.
"""
import pytest
import torch

from wan22duo.engine.model.conditioning import I2VConditioning
from wan22duo.engine.model.keyframes import (
    Keyframe, KeyframeError, join_clips, known_flags, place, ti2v_fill, ti2v_hold_single, ti2v_keep,
    ti2v_latent_span,
)
from wan22duo.engine.model.latents import normalize
from wan22duo.engine.sampling.loop import SamplingError
from wan22duo.engine.testing.tiny import write_tiny_dit
from wan22duo.engine.weights.vae_checkpoint import load_vae
from wan22duo.engine.testing.tiny_vae import write_tiny_vae
from wan22duo.nodes.keyframes import (
    Wan22DuoI2VExtend, Wan22DuoI2VKeyframes, Wan22DuoJoinClips, Wan22DuoKeyframe, Wan22DuoTI2VExtend,
    Wan22DuoTI2VKeyframes,
)
from wan22duo.nodes.loaders import Wan22DuoExpertLoader, Wan22DuoTI2VLoader, Wan22DuoVAELoader
from wan22duo.nodes.samplers import Wan22DuoI2VConditioning, Wan22DuoSampler, Wan22DuoTI2VLatent
from wan22duo.nodes.vae import Wan22DuoVAEDecode

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = dict(dim=128, ffn_dim=256, num_layers=1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    out = {
        "t2v_high": write_tiny_dit(d / "t2v_high_noise.safetensors", "t2v_a14b", seed=1, **TINY),
        "i2v_high": write_tiny_dit(d / "i2v_high_noise.safetensors", "i2v_a14b", seed=3, **TINY),
        "i2v_low": write_tiny_dit(d / "i2v_low_noise.safetensors", "i2v_a14b", seed=4, **TINY),
        "ti2v": write_tiny_dit(d / "ti2v_5b.safetensors", "ti2v_5b", seed=5, **TINY),
        "vae21": write_tiny_vae(d / "wan_2.1_vae.safetensors", "2.1"),
        "vae22": write_tiny_vae(d / "wan2.2_vae.safetensors", "2.2"),
    }
    return {k: str(v) for k, v in out.items()}


def vae(files, key):
    return Wan22DuoVAELoader().load(files[key], "fp32", "cpu")["result"][0]


def images(frames, height, width, seed=0):
    """IMAGE frames with exact 8-bit values (TI2V fitting goes through 8-bit PIL)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (frames, height, width, 3), generator=g).float() / 255.0


def as_video(frames):
    """IMAGE [F, H, W, 3] -> [1, 3, F, H, W] in [-1, 1]."""
    return frames.movedim(-1, 0)[None] * 2.0 - 1.0


def prompts():
    g = torch.Generator().manual_seed(0)
    return [[torch.randn(1, 6, 4096, generator=g), {}]], [[torch.randn(1, 4, 4096, generator=g), {}]]


def comfy_flf_mask(length, latent_hw, start=0, end=0):
    """WanFirstLastFrameToVideo's concat_mask, from its description: 1 = unknown over 4T padded frames,
    0 on the first start+3 (frame 0 counts four times) and the last `end`, then [T, 4] -> [4, T]."""
    t = (length - 1) // 4 + 1
    padded = torch.ones(4 * t)
    if start:
        padded[:start + 3] = 0.0
    if end:
        padded[4 * t - end:] = 0.0
    per_latent = padded.view(t, 4).transpose(0, 1)
    return per_latent[None, :, :, None, None].expand(1, 4, t, *latent_hw)


# ---------------------------------------------------------------- layout logic


def test_place_resolves_negative_frames_and_rejects_misfits():
    a, b, c = images(1, 8, 8), images(2, 8, 8), images(3, 8, 8)
    placed = place([Keyframe(-2, b, "end"), Keyframe(0, a, "start"), Keyframe(4, c, "mid")], 9)
    assert [(p.start, p.stop, p.name) for p in placed] == [(0, 1, "start"), (4, 7, "mid"), (7, 9, "end")]
    assert known_flags(placed, 9) == [True, False, False, False, True, True, True, True, True]
    with pytest.raises(KeyframeError, match=r"keyframe at frame 8: 2 image\(s\) from frame 8 cover frames 8..9, "
                                            r"outside the 9-frame clip"):
        place([Keyframe(8, b, "keyframe at frame 8")], 9)
    with pytest.raises(KeyframeError, match="outside the 9-frame clip"):
        place([Keyframe(-10, a, "k")], 9)
    with pytest.raises(KeyframeError, match="start .*and end .*share frame 2"):
        place([Keyframe(0, c, "start"), Keyframe(2, b, "end")], 9)
    with pytest.raises(ValueError, match="4n\\+1"):
        place([Keyframe(0, a, "start")], 8)
    with pytest.raises(KeyframeError, match="IMAGE"):
        place([Keyframe(0, torch.zeros(8, 8, 3), "start")], 9)


def test_ti2v_spans_are_whole_latent_frames():
    one, four, five = images(1, 8, 8), images(4, 8, 8), images(5, 8, 8)
    span = lambda key, length=17: ti2v_latent_span(place([ti2v_hold_single(key, length)], length)[0])  # noqa: E731
    assert span(Keyframe(0, one, "s")) == (0, 1)
    assert span(Keyframe(0, five, "s")) == (0, 2)  # frames 0..4: latent 0 and latent 1 (frames 1..4)
    assert span(Keyframe(-4, four, "e")) == (4, 5)  # frames 13..16 of 17
    assert span(Keyframe(-1, one, "e")) == (4, 5)  # one end image, held over frames 13..16
    assert span(Keyframe(8, one, "k")) == (2, 3)  # frame 8 = 4 * 2: held over frames 5..8
    for key in (Keyframe(0, four, "s"), Keyframe(5, one, "k"), Keyframe(-3, images(3, 8, 8), "e"),
                Keyframe(2, four, "k")):
        with pytest.raises(KeyframeError, match="whole latent frames"):
            span(key)
    held = ti2v_hold_single(Keyframe(-1, one, "e"), 17)
    assert held.frame == 13 and held.count == 4 and all(torch.equal(held.images[i], one[0]) for i in range(4))


def test_ti2v_fill_shows_the_next_keyframe_and_encodes_only_what_is_kept():
    placed = place([Keyframe(0, images(1, 8, 8), "s"), Keyframe(5, images(4, 8, 8), "k")], 17)
    fill = ti2v_fill(placed, 17)
    assert fill[0] == (0, 0)
    assert fill[1:5] == [(1, 0)] * 4  # gap before the keyframe: its first image
    assert fill[5:9] == [(1, 0), (1, 1), (1, 2), (1, 3)]
    assert fill[9:] == [(1, 3)] * 8  # after the last keyframe: its last image
    kept, needed = ti2v_keep(placed, 17)
    assert kept == [0, 2] and needed == 9  # latent frame 2 ends at video frame 8
    assert ti2v_keep(place([Keyframe(0, images(5, 8, 8), "s")], 17), 17) == ([0, 1], 5)


def test_join_drops_the_overlap_and_takes_the_seam_from_the_right_clip():
    first, second = images(9, 8, 8, seed=1), images(13, 8, 8, seed=2)
    (joined,) = Wan22DuoJoinClips().join(first, second, 5)
    assert joined.shape[0] == 9 + 13 - 5
    assert torch.equal(joined[:9], first)  # up to the seam (the overlap included): the first clip
    assert torch.equal(joined[9:], second[5:])  # from the seam on: the second clip's new frames
    assert torch.equal(Wan22DuoJoinClips().join(first, second, 0)[0], torch.cat([first, second]))
    with pytest.raises(KeyframeError, match="overlap 10 is longer than the first clip .9 frames; second 13"):
        Wan22DuoJoinClips().join(first, second, 10)
    with pytest.raises(KeyframeError, match="overlap 9 leaves no new frame of the second clip .9 frames"):
        Wan22DuoJoinClips().join(second, first, 9)  # the whole second clip is overlap: nothing new to add
    assert Wan22DuoJoinClips().join(second, first, 8)[0].shape[0] == 13 + 1
    with pytest.raises(KeyframeError, match="differ in size: first is 8x8 .*second 16x8"):
        Wan22DuoJoinClips().join(first, images(3, 8, 16), 1)
    with pytest.raises(KeyframeError, match=">= 0"):
        join_clips(first, second, -1)


# ---------------------------------------------------------------- I2V-A14B


def _values(cond):
    return cond[0][1]["concat_latent_image"], cond[0][1]["concat_mask"]


def test_i2v_start_only_equals_the_i2v_conditioning_node(files):
    v = vae(files, "vae21")
    pos, neg = prompts()
    start = images(1, 40, 56)  # cropped and resized to 32x32
    ours = Wan22DuoI2VKeyframes().encode(pos, neg, v, 32, 32, 9, 2, start_image=start)
    today = Wan22DuoI2VConditioning().encode(pos, neg, v, start, 32, 32, 9, 2)
    for a, b in zip(ours[:2], today[:2]):
        for x, y in zip(_values(a), _values(b)):
            assert torch.equal(x, y)
    assert torch.equal(ours[2]["samples"], today[2]["samples"]) and ours[2]["samples"].shape == (2, 16, 3, 4, 4)


def test_i2v_first_last_layout_and_the_channels_the_experts_read(files):
    v = vae(files, "vae21")
    pos, neg = prompts()
    start, end = images(1, 32, 48, seed=1), images(2, 32, 48, seed=2)
    out_pos, out_neg, latent = Wan22DuoI2VKeyframes().encode(pos, neg, v, 48, 32, 13, 1, start_image=start,
                                                             end_image=end)
    image_latent, mask = _values(out_pos)
    assert torch.equal(mask, comfy_flf_mask(13, (4, 6), start=1, end=2))
    # latent frame 0: all 4 channels known; the last (frames 9..12): channels 2, 3 = frames 11, 12 known
    assert mask[0, :, 0].amax() == 0 and mask[0, :, 1:3].amin() == 1
    assert mask[0, :2, 3].amin() == 1 and mask[0, 2:, 3].amax() == 0
    video = torch.zeros(1, 3, 13, 32, 48)  # same size: the fit is the identity
    video[:, :, 0] = as_video(start)[:, :, 0]
    video[:, :, 11:] = as_video(end)
    reference = load_vae(files["vae21"]).encode(video)
    assert (image_latent - reference).abs().max() < 1e-5
    assert torch.equal(_values(out_neg)[0], image_latent)
    # What the experts read: y = [1 - concat_mask (4), normalised image latent (16)].
    y = I2VConditioning.from_comfy(image_latent, mask).y(latent["samples"].shape)
    assert torch.equal(y[:, :4], 1.0 - mask) and torch.equal(y[:, 4:], normalize(image_latent))


def test_i2v_keyframe_in_the_middle_marks_its_mask_channel(files):
    v = vae(files, "vae21")
    pos, neg = prompts()
    (keys,) = Wan22DuoKeyframe().add(images(1, 32, 32, seed=3), 6)
    (keys,) = Wan22DuoKeyframe().add(images(1, 32, 32, seed=4), -1, keys)
    out, _, _ = Wan22DuoI2VKeyframes().encode(pos, neg, v, 32, 32, 17, 1, start_image=images(1, 32, 32),
                                              keyframes=keys)
    mask = _values(out)[1][0, :, :, 0, 0]  # [4, T]
    known = {(j, k) for j in range(4) for k in range(5) if mask[j, k] == 0}
    # padded frame f + 3 -> latent (f + 3) // 4, channel (f + 3) % 4: frame 0 -> latent 0, frame 6 -> (1, 2),
    # frame 16 -> (3, 4)
    assert known == {(0, 0), (1, 0), (2, 0), (3, 0), (1, 2), (3, 4)}


def test_i2v_bad_input_is_named(files):
    v = vae(files, "vae21")
    pos, neg = prompts()
    with pytest.raises(KeyframeError, match="no image given"):
        Wan22DuoI2VKeyframes().encode(pos, neg, v, 32, 32, 9, 1)
    (keys,) = Wan22DuoKeyframe().add(images(1, 32, 32), 9)
    with pytest.raises(KeyframeError, match="keyframe at frame 9.*outside the 9-frame clip"):
        Wan22DuoI2VKeyframes().encode(pos, neg, v, 32, 32, 9, 1, keyframes=keys)
    with pytest.raises(KeyframeError, match="start_image .*end_image .*share frame"):
        Wan22DuoI2VKeyframes().encode(pos, neg, v, 32, 32, 5, 1, start_image=images(3, 32, 32),
                                      end_image=images(3, 32, 32))
    with pytest.raises(ValueError, match="wan_2.1_vae.safetensors"):
        Wan22DuoI2VKeyframes().encode(pos, neg, vae(files, "vae22"), 32, 32, 9, 1, start_image=images(1, 32, 32))


# ---------------------------------------------------------------- TI2V-5B


def test_ti2v_start_only_equals_the_ti2v_latent_node(files):
    v = vae(files, "vae22")
    start = images(1, 48, 80)
    (ours,) = Wan22DuoTI2VKeyframes().generate(v, 64, 32, 9, 2, start_image=start)
    (today,) = Wan22DuoTI2VLatent().generate(v, 64, 32, 9, 2, start_image=start)
    assert torch.equal(ours["samples"], today["samples"]) and torch.equal(ours["noise_mask"], today["noise_mask"])


def test_ti2v_first_last_latent_and_mask(files):
    v = vae(files, "vae22")
    start, end = images(1, 32, 64, seed=1), images(1, 32, 64, seed=2)
    (out,) = Wan22DuoTI2VKeyframes().generate(v, 64, 32, 13, 1, start_image=start, end_image=end)
    samples, mask = out["samples"], out["noise_mask"]
    assert samples.shape == (1, 48, 4, 2, 4) and mask.shape == (1, 1, 4, 2, 4)
    assert mask[:, :, [0, 3]].amax() == 0 and mask[:, :, 1:3].amin() == 1
    assert not samples[:, :, 1:3].any()
    # The conditioning video: the start image, then the end image held to the end (frames 9..12 = end x 4).
    video = torch.cat([as_video(start), as_video(end).expand(-1, -1, 12, -1, -1)], dim=2)
    reference = load_vae(files["vae22"]).encode(video)
    assert (samples[:, :, [0, 3]] - reference[:, :, [0, 3]]).abs().max() < 1e-5
    # Latent frame 0 is the start image alone (causal encoder), exactly as the TI2V start-image node.
    (start_only,) = Wan22DuoTI2VLatent().generate(v, 64, 32, 13, 1, start_image=start)
    assert torch.equal(samples[:, :, 0], start_only["samples"][:, :, 0])


def test_ti2v_sampler_keeps_start_and_end_cells_bit_exact(files):
    model = Wan22DuoTI2VLoader().load(files["ti2v"], "default", "auto", "cpu")[0]
    v = vae(files, "vae22")
    (latent,) = Wan22DuoTI2VKeyframes().generate(v, 64, 64, 13, 1, start_image=images(1, 64, 64, seed=1),
                                                 end_image=images(4, 64, 64, seed=2))
    pos, neg = prompts()
    out = Wan22DuoSampler().sample(model, pos, neg, latent, 0, steps=3, cfg_high=5.0, shift=5.0)["result"][0]
    kept = latent["noise_mask"][0, 0, :, 0, 0] == 0
    assert kept.tolist() == [True, False, False, True]
    assert torch.equal(out["samples"][:, :, kept], latent["samples"][:, :, kept])
    assert not torch.equal(out["samples"][:, :, ~kept], latent["samples"][:, :, ~kept])


def test_ti2v_bad_input_is_named(files):
    v = vae(files, "vae22")
    with pytest.raises(KeyframeError, match="start_image covers video frames 0..1, which do not fill whole"):
        Wan22DuoTI2VKeyframes().generate(v, 64, 32, 9, 1, start_image=images(2, 32, 64))
    with pytest.raises(KeyframeError, match="end_image covers video frames 6..8"):
        Wan22DuoTI2VKeyframes().generate(v, 64, 32, 9, 1, end_image=images(3, 32, 64))
    with pytest.raises(ValueError, match="wan2.2_vae.safetensors"):
        Wan22DuoTI2VKeyframes().generate(vae(files, "vae21"), 64, 32, 9, 1, start_image=images(1, 32, 64))


# ---------------------------------------------------------------- continuation


def test_i2v_extend_gives_the_tail_as_known_first_frames(files):
    v = vae(files, "vae21")
    pos, neg = prompts()
    previous = images(9, 32, 48, seed=5)
    ext_pos, _, latent, overlap = Wan22DuoI2VExtend().extend(pos, neg, v, 13, 5, previous_images=previous)
    assert overlap == 5  # passed through for the join
    image_latent, mask = _values(ext_pos)
    assert latent["samples"].shape == (1, 16, 4, 4, 6)
    assert torch.equal(mask, comfy_flf_mask(13, (4, 6), start=5))  # latent frames 0 and 1 fully known
    # The same as a keyframe node given the tail as start frames (same size: the fit is the identity).
    same = Wan22DuoI2VKeyframes().encode(pos, neg, v, 48, 32, 13, 1, start_image=previous[4:])
    assert torch.equal(_values(same[0])[0], image_latent) and torch.equal(_values(same[0])[1], mask)
    # From the previous clip's latent: decoded here, the same frames as decoding it first.
    prev_latent = {"samples": torch.randn(1, 16, 3, 4, 6, generator=torch.Generator().manual_seed(6))}
    (decoded,) = Wan22DuoVAEDecode().decode(v, prev_latent, 0, 64)
    from_latent = Wan22DuoI2VExtend().extend(pos, neg, v, 13, 5, previous_latent=prev_latent)
    from_images = Wan22DuoI2VExtend().extend(pos, neg, v, 13, 5, previous_images=decoded)
    assert torch.equal(_values(from_latent[0])[0], _values(from_images[0])[0])


def test_ti2v_extend_keeps_the_encoded_tail(files):
    v = vae(files, "vae22")
    previous = images(9, 32, 64, seed=7)
    latent, overlap = Wan22DuoTI2VExtend().extend(v, 13, 5, previous_images=previous)
    assert overlap == 5
    kept = latent["noise_mask"][0, 0, :, 0, 0] == 0
    assert kept.tolist() == [True, True, False, False]
    reference = load_vae(files["vae22"]).encode(as_video(previous[4:]))  # 5 frames -> 2 latent frames
    assert (latent["samples"][:, :, :2] - reference).abs().max() < 1e-5
    # The causal encoder: the first two latent frames of any 13-frame video starting with those 5 frames.
    longer = torch.cat([as_video(previous[4:]), torch.rand(1, 3, 8, 32, 64) * 2 - 1], dim=2)
    assert (load_vae(files["vae22"]).encode(longer)[:, :, :2] - reference).abs().max() < 1e-5
    model = Wan22DuoTI2VLoader().load(files["ti2v"], "default", "auto", "cpu")[0]
    pos, neg = prompts()
    out = Wan22DuoSampler().sample(model, pos, neg, latent, 1, steps=2, cfg_high=1.0)["result"][0]
    assert torch.equal(out["samples"][:, :, :2], latent["samples"][:, :, :2])


def test_extensions_chain_and_join(files):
    """Three clips: 9 frames, then two 9-frame extensions with overlap 5 -> 9 + 4 + 4 frames."""
    v = vae(files, "vae22")
    model = Wan22DuoTI2VLoader().load(files["ti2v"], "default", "auto", "cpu")[0]
    pos, neg = prompts()
    decode = lambda latent: Wan22DuoVAEDecode().decode(v, latent, 0, 64)[0]  # noqa: E731
    (latent,) = Wan22DuoTI2VLatent().generate(v, 32, 32, 9, 1, start_image=images(1, 32, 32))
    video = decode(Wan22DuoSampler().sample(model, pos, neg, latent, 0, steps=2, cfg_high=1.0)["result"][0])
    clips = [video]
    for seed in (1, 2):
        latent, _ = Wan22DuoTI2VExtend().extend(v, 9, 5, previous_images=clips[-1])
        clips.append(decode(Wan22DuoSampler().sample(model, pos, neg, latent, seed, steps=2,
                                                     cfg_high=1.0)["result"][0]))
        (video,) = Wan22DuoJoinClips().join(video, clips[-1], 5)
    assert video.shape == (17, 32, 32, 3)
    assert torch.equal(video[:9], clips[0]) and torch.equal(video[9:13], clips[1][5:])
    assert torch.equal(video[13:], clips[2][5:])


def test_continuation_bad_input_is_named(files):
    v21, v22 = vae(files, "vae21"), vae(files, "vae22")
    pos, neg = prompts()
    previous = images(5, 32, 32)
    with pytest.raises(KeyframeError, match="overlap 9 is longer than the previous clip .5 frames"):
        Wan22DuoI2VExtend().extend(pos, neg, v21, 13, 9, previous_images=previous)
    with pytest.raises(KeyframeError, match="overlap 9 leaves no new frame in a 9-frame clip"):
        Wan22DuoI2VExtend().extend(pos, neg, v21, 9, 9, previous_images=images(9, 32, 32))
    with pytest.raises(KeyframeError, match="1 \\+ 4m frames .*got 4. Use 1 or 5"):
        Wan22DuoTI2VExtend().extend(v22, 9, 4, previous_images=previous)
    with pytest.raises(KeyframeError, match="previous_images .*or previous_latent"):
        Wan22DuoTI2VExtend().extend(v22, 9, 5)
    with pytest.raises(KeyframeError, match="not both"):
        Wan22DuoTI2VExtend().extend(v22, 9, 5, previous_images=previous,
                                    previous_latent={"samples": torch.zeros(1, 48, 2, 2, 2)})
    with pytest.raises(KeyframeError, match="previous clip is 48x32, not a size .*multiple of 32"):
        Wan22DuoTI2VExtend().extend(v22, 9, 5, previous_images=images(5, 32, 48))
    with pytest.raises(ValueError, match="wan2.2_vae.safetensors"):
        Wan22DuoTI2VExtend().extend(v21, 9, 5, previous_images=previous)
    (keys,) = Wan22DuoKeyframe().add(images(1, 32, 32), 2)
    with pytest.raises(KeyframeError, match="overlap .*share frame 2"):
        Wan22DuoI2VExtend().extend(pos, neg, v21, 9, 5, previous_images=previous, keyframes=keys)


def test_keyframes_on_a_t2v_model_are_refused_by_name(files):
    t2v = Wan22DuoExpertLoader().load(files["t2v_high"], "high_noise", "default", "auto", "cpu")[0]
    pos, neg = prompts()
    out_pos, out_neg, latent = Wan22DuoI2VKeyframes().encode(pos, neg, vae(files, "vae21"), 32, 32, 5, 1,
                                                             end_image=images(1, 32, 32))
    with pytest.raises(SamplingError, match="t2v_a14b model.*Wan22DuoI2VKeyframes"):
        Wan22DuoSampler().sample(t2v, out_pos, out_neg, latent, 0, steps=1, switch_step=1)
    (ti2v_latent,) = Wan22DuoTI2VKeyframes().generate(vae(files, "vae22"), 32, 32, 5, 1,
                                                      end_image=images(1, 32, 32))
    with pytest.raises(SamplingError, match="noise_mask.*Wan22DuoTI2VKeyframes.*t2v_a14b model cannot"):
        Wan22DuoSampler().sample(t2v, pos, neg, ti2v_latent, 0, steps=1, switch_step=1)


# ---------------------------------------------------------------- pixels: one check at every image input (issue 26)


def _entry_points(files):
    """Every node input that takes IMAGE pixels, as ``name -> call(image)``."""
    v21, v22 = vae(files, "vae21"), vae(files, "vae22")
    pos, neg = prompts()
    ok = images(9, 32, 32, seed=3)
    from wan22duo.nodes.vae import Wan22DuoVAEEncode

    return {
        "I2V start_image": lambda im: Wan22DuoI2VConditioning().encode(pos, neg, v21, im, 32, 32, 9, 1),
        "TI2V start_image": lambda im: Wan22DuoTI2VLatent().generate(v22, 32, 32, 9, 1, start_image=im[:1]),
        "I2V keyframes start_image": lambda im: Wan22DuoI2VKeyframes().encode(pos, neg, v21, 32, 32, 9, 1,
                                                                              start_image=im[:1]),
        "TI2V keyframes end_image": lambda im: Wan22DuoTI2VKeyframes().generate(v22, 32, 32, 9, 1, end_image=im[:1]),
        "keyframe image": lambda im: Wan22DuoTI2VKeyframes().generate(
            v22, 32, 32, 9, 1, keyframes=Wan22DuoKeyframe().add(im[:1], 4)[0]),
        "I2V extend previous_images": lambda im: Wan22DuoI2VExtend().extend(pos, neg, v21, 13, 5, previous_images=im),
        "TI2V extend previous_images": lambda im: Wan22DuoTI2VExtend().extend(v22, 13, 5, previous_images=im),
        "join first clip": lambda im: Wan22DuoJoinClips().join(im, ok, 5),
        "join second clip": lambda im: Wan22DuoJoinClips().join(ok, im, 5),
        "VAE encode pixels": lambda im: Wan22DuoVAEEncode().encode(v22, im),
    }


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_pixels_are_refused_at_every_image_input(files, value):
    """Before: NaN/inf turned black on the TI2V-5B paths (clamp and 8-bit cast); now one check names them."""
    for where, call in _entry_points(files).items():
        bad = images(9, 32, 32, seed=4)
        bad[0, 5, 7, 1] = value
        with pytest.raises(ValueError, match=r"holds 1 NaN/inf pixel values of (27648|3072);"):
            call(bad)
        call(images(9, 32, 32, seed=4))  # the same input without it runs


def test_pixels_far_outside_0_1_are_refused_and_slight_overshoot_warns(files, caplog):
    for where, call in _entry_points(files).items():
        with pytest.raises(ValueError, match=r"pixel values from 0 to 255, far outside an IMAGE's 0..1 \(0..255 "
                                             r"pixels\? divide them by 255\)"):
            call(images(9, 32, 32, seed=4) * 255.0)
        with pytest.raises(ValueError, match="from -1 to 1, far outside"):
            call(images(9, 32, 32, seed=4) * 2 - 1)
    caplog.clear()
    over = images(9, 32, 32, seed=4) * 1.02
    _entry_points(files)["TI2V start_image"](over)
    assert "pixel values from 0 to 1.02, outside an IMAGE's 0..1; they are clamped" in caplog.text
    with pytest.raises(ValueError, match="has dtype uint8; an IMAGE holds float pixels"):
        _entry_points(files)["I2V start_image"]((images(9, 32, 32) * 255).to(torch.uint8))
