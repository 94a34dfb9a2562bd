"""The toy Wan 2.2 MoE (toy/): deterministic data, the toy text encoder, the committed weights, the
training forward, and the quality score telling good samples from bad ones."""
import hashlib
import math

import pytest
import torch

from wan22duo.toy import build, data, dit, score, text
from wan22duo.toy import vae as toy_vae

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_clips_are_deterministic_and_follow_their_caption():
    a, b = data.render(data.draw_clip(7)), data.render(data.draw_clip(7))
    assert torch.equal(a, b)
    assert not torch.equal(a, data.render(data.draw_clip(8)))
    for seed in (0, 5, 50, data.HELD_OUT_SEED + 3):
        clip = data.draw_clip(seed)
        frames = data.render(clip)
        assert frames.shape == (data.FRAMES, data.HEIGHT, data.WIDTH, 3) and frames.dtype == torch.uint8
        result = score.score_video(frames, clip.caption)
        assert result.ok, (clip, result)
        dx, dy = data.DIRECTIONS[clip.direction]
        assert result.velocity == pytest.approx((dx * data.SPEED, dy * data.SPEED), abs=0.05)


def test_every_caption_is_used_and_start_positions_keep_the_shape_inside():
    assert len({data.draw_clip(s).caption for s in range(len(data.all_captions()))}) == 96
    for seed in range(0, 400, 7):
        clip = data.draw_clip(seed)
        for f in (0, data.FRAMES - 1):
            x, y = clip.centre(f)
            assert data.RADIUS <= x <= data.WIDTH - data.RADIUS and data.RADIUS <= y <= data.HEIGHT - data.RADIUS


def test_toy_text_encoder_has_umt5_layout():
    caption = "a red disc moves right over a gray background"
    context = text.encode(caption)
    assert context.shape == (1, 512, 4096) and context.dtype == torch.float32
    assert torch.equal(context, text.encode(caption))
    assert bool((context[0, :9].norm(dim=1) > 0).all()) and not bool(context[0, 9:].any())
    # word order matters: the same words in another order give other rows
    swapped = text.encode("a gray disc moves right over a red background")
    assert not torch.allclose(context, swapped)
    assert not bool(text.encode("").any())


def test_committed_weights_match_their_sha256():
    sums = (build.WEIGHTS / "SHA256SUMS").read_text().split("\n")
    listed = dict(reversed(line.split("  ")) for line in sums if line)
    assert set(listed) == {p.name for p in build.WEIGHTS.glob("*.safetensors")}
    assert set(build.FILES.values()) <= set(listed)
    total = 0
    for name, digest in listed.items():
        blob = (build.WEIGHTS / name).read_bytes()
        total += len(blob)
        assert hashlib.sha256(blob).hexdigest() == digest, name
    assert total <= 40 * 2**20


def test_training_forward_equals_the_inference_forward_on_the_committed_expert():
    from wan22duo.engine.weights.checkpoint import load_dit

    model = load_dit(build.path("t2v_low"), compute_dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 5, 8, 8, generator=gen)
    t = torch.tensor([700.0, 120.0])
    captions = ["a blue square moves up over a black background", ""]
    with torch.no_grad():
        want = model(x, t, torch.cat([text.encode(c) for c in captions]))
        got = dit.velocity(model, x, t, [text.encode_rows(c) for c in captions])
    # one float32 forward computed two ways (deduplicated padding keys): a few ulps of order-one outputs
    assert (got - want).abs().max() < 1e-5 * want.abs().max()


def test_gradients_reach_every_parameter_of_the_engine_modules():
    model = dit.new_model()
    x = torch.randn(1, 16, 2, 4, 4)
    dit.velocity(model, x, torch.tensor([500.0]), [text.encode_rows("a red disc")]).square().mean().backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.parameters())
    vae = toy_vae.new_vae(base_dim=4)
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    toy_vae.decode_train(vae, toy_vae.encode_train(vae, video)).square().mean().backward()
    unused = {n for n, p in vae.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)}
    # only the log-variance half of conv1 has no say in the mean latent
    assert unused == {"conv1.weight", "conv1.bias"} or unused == set()
    assert bool(vae.conv1.weight.grad[:16].abs().sum() > 0)
    assert not bool(vae.conv1.weight.grad[16:].any())


def test_matching_wan21_latent_stats_does_not_change_reconstructions():
    vae = toy_vae.new_vae(base_dim=4)
    vae.eval()
    video = data.to_model_range(data.render(data.draw_clip(3)))
    with torch.no_grad():
        before = vae.decode(vae.encode(video))
        toy_vae.match_wan21_stats(vae, [3, 4])
        z = vae.encode(video)
        after = vae.decode(z)
    from wan22duo.engine.model.latents import WAN21_MEAN

    assert (before - after).abs().max() < 1e-4
    assert z.mean(dim=(0, 2, 3, 4)).sub(torch.tensor(WAN21_MEAN)).abs().max() < 1.0


def test_vae_reconstructs_held_out_clips():
    from wan22duo.engine.weights.vae_checkpoint import load_vae

    vae = load_vae(build.path("vae"), torch.float32)
    video = data.to_model_range(data.render(data.draw_clip(data.HELD_OUT_SEED + 1)))
    with torch.no_grad():
        mse = float((vae.decode(vae.encode(video)) - video).square().mean())
    assert toy_vae.psnr_from_mse(mse) >= build.PSNR_TARGET_DB


@pytest.fixture(scope="module")
def toy_models():
    from wan22duo.toy import run

    return run.load()


def test_score_separates_good_samples_from_wrong_caption_noise_and_swapped_experts(toy_models):
    from wan22duo.toy import run

    caption = "a green square moves down over a black background"
    good, _ = run.generate(toy_models, caption, seed=data.HELD_OUT_SEED, steps=8)
    swapped, _ = run.generate(run.load(swap_experts=True), caption, seed=data.HELD_OUT_SEED, steps=8)
    noise = torch.rand(good.shape, generator=torch.Generator().manual_seed(0))
    right = score.score_video(good, caption)
    assert right.ok, right.line()
    wrong = score.score_video(good, "a yellow square moves up over a black background")
    assert not wrong.ok and not wrong.colour_ok and not wrong.direction_ok
    for bad in (score.score_video(noise, caption), score.score_video(swapped, caption)):
        assert not bad.ok and bad.score < right.score, bad.line()
    assert score.distance(good, good) == {"pixel_rms": 0.0, "track_rms": 0.0}
    assert score.distance(swapped, good)["pixel_rms"] > 10
