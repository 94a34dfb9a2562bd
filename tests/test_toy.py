"""The toy Wan 2.2 MoE (toy/): deterministic data, the toy text encoder, the training forwards through
the engine's modules, files the pack's loaders read, and the quality score.

No trained toy weights are committed yet (toy/build.py says why), so the files here are untrained and
the score is checked on rendered ground truth, a wrong caption and noise, not on samples."""
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


@pytest.fixture(scope="module")
def toy_files(tmp_path_factory):
    """Untrained toy files written as the training writes them (no trained ones are committed yet)."""
    folder = tmp_path_factory.mktemp("toy")
    build.save(dit.new_model(seed=1), "t2v_high", "untrained", folder)
    build.save(dit.new_model(seed=2), "t2v_low", "untrained", folder)
    build.save(toy_vae.new_vae(base_dim=toy_vae.BASE_DIM), "vae", "untrained", folder)
    return folder


def test_training_forward_equals_the_inference_forward_of_the_loaded_file(toy_files):
    from wan22duo.engine.weights.checkpoint import load_dit

    model = load_dit(build.path("t2v_low", toy_files), compute_dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 5, 8, 8, generator=gen)
    t = torch.tensor([700.0, 120.0])
    captions = ["a blue square moves up over a black background", ""]
    with torch.no_grad():
        want = model(x, t, torch.cat([text.encode(c) for c in captions]))
        got = dit.velocity(model, x, t, [text.encode_rows(c) for c in captions])
    # one float32 forward computed two ways (deduplicated padding keys): a few ulps of order-one outputs
    assert (got - want).abs().max() < 1e-5 * want.abs().max()
    assert want.abs().max() > 0.01  # not a vacuous comparison of zeros


def test_gradients_reach_every_parameter_of_the_engine_modules():
    model = dit.new_model()
    x = torch.randn(1, 16, 2, 4, 4)
    dit.velocity(model, x, torch.tensor([500.0]), [text.encode_rows("a red disc")]).square().mean().backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.parameters())
    vae = toy_vae.new_vae(base_dim=4)
    with torch.no_grad():  # the init zeroes the past taps; give them values so their gradients can show
        for name, p in vae.named_parameters():
            if p.dim() == 5 and p.shape[2] == 3 and "time_conv" not in name:
                p[:, :, :2] = 0.1 * torch.randn(p[:, :, :2].shape)
    video = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    toy_vae.decode_train(vae, toy_vae.encode_train(vae, video)).square().mean().backward()
    frozen = {n for n, p in vae.named_parameters() if not p.requires_grad}
    # the middle attention blocks stay the identity (zero output projection, frozen): see toy.vae.new_vae
    assert frozen and all(".middle.1." in n for n in frozen)
    assert all(not bool(vae.get_parameter(n).any()) for n in frozen if n.endswith("proj.weight"))
    unused = {n for n, p in vae.named_parameters()
              if p.requires_grad and (p.grad is None or not bool(p.grad.abs().sum() > 0))}
    # only the log-variance half of conv1 has no say in the mean latent
    assert unused == {"conv1.weight", "conv1.bias"} or unused == set()
    assert bool(vae.conv1.weight.grad[:16].abs().sum() > 0)
    assert not bool(vae.conv1.weight.grad[16:].any())


def test_whole_clip_training_forward_equals_the_chunked_inference_path():
    vae = toy_vae.new_vae(base_dim=4)
    with torch.no_grad():
        for p in vae.parameters():  # a generic network, not the per-frame init
            p.add_(0.05 * torch.randn(p.shape))
        vae.eval()
        video = data.to_model_range(data.render(data.draw_clip(5)))
        z = toy_vae.encode_train(vae, video)
        assert torch.allclose(z, vae.encode(video), atol=1e-5, rtol=1e-4)
        rec = toy_vae.decode_train(vae, z)
        assert torch.allclose(rec.clamp(-1, 1), vae.decode(z), atol=1e-5, rtol=1e-4)


def test_untrained_vae_starts_as_a_per_frame_autoencoder_keeping_every_fourth_frame():
    vae = toy_vae.new_vae(base_dim=4)
    video = data.to_model_range(data.render(data.draw_clip(9)))
    with torch.no_grad():
        z = toy_vae.encode_train(vae, video)
        alone = torch.cat([toy_vae.encode_train(vae, video[:, :, f:f + 1]) for f in (0, 4, 8, 12, 16)], dim=2)
        assert torch.allclose(z, alone, atol=1e-5)
        rec = toy_vae.decode_train(vae, z)
        assert torch.allclose(rec[:, :, 1], rec[:, :, 4], atol=1e-6)
        assert not torch.allclose(rec[:, :, 0], rec[:, :, 1], atol=1e-3)


def test_matching_wan21_latent_stats_does_not_change_reconstructions():
    from wan22duo.engine.model.latents import WAN21_MEAN, WAN21_STD

    vae = toy_vae.new_vae(base_dim=4)
    vae.eval()
    video = data.to_model_range(data.render(data.draw_clip(3)))
    with torch.no_grad():
        before = vae.decode(vae.encode(video))
        toy_vae.match_wan21_stats(vae, [3, 4])
        after = vae.decode(vae.encode(video))
        z = torch.cat([vae.encode(data.to_model_range(data.render(data.draw_clip(s)))) for s in (3, 4)])
    # an exact reparametrisation, up to float32 rounding of the rescaled weights
    assert (before - after).abs().max() < 1e-4
    assert torch.allclose(z.mean(dim=(0, 2, 3, 4)), torch.tensor(WAN21_MEAN), atol=1e-3)
    assert torch.allclose(z.std(dim=(0, 2, 3, 4)), torch.tensor(WAN21_STD), rtol=1e-3)


def test_toy_files_load_through_the_pack_loaders_and_sample(toy_files):
    from wan22duo.toy import run

    models = run.load(toy_files)
    assert models["high"].info.get("role") == "high_noise" and models["low"].info.get("role") == "low_noise"
    images, switch_step = run.generate(models, seed=0, steps=3)
    assert images.shape == (data.FRAMES, data.HEIGHT, data.WIDTH, 3) and bool(torch.isfinite(images).all())
    assert switch_step == 2  # 3 steps at shift 12: t = 999, 957, 856 -> two at or above 875
    score.score_video(images, run.DEFAULT_CAPTION)  # scores any decoded video without error


def test_score_separates_ground_truth_from_wrong_caption_and_noise():
    clip = data.draw_clip(data.HELD_OUT_SEED + 11)
    video = data.render(clip).float() / 255.0
    right = score.score_video(video, clip.caption)
    assert right.ok and right.score == 1.0, right.line()
    other_colour = next(c for c in data.COLOURS if c != clip.colour)
    other_direction = next(d for d in data.DIRECTIONS if d != clip.direction)
    wrong = score.score_video(video, f"a {other_colour} {clip.shape} moves {other_direction} over a "
                                     f"{clip.background} background")
    assert not wrong.ok and not wrong.colour_ok and not wrong.direction_ok and wrong.score < right.score
    noise = score.score_video(torch.rand(video.shape, generator=torch.Generator().manual_seed(0)), clip.caption)
    assert not noise.ok and noise.score < right.score, noise.line()
    # a frozen shape (no motion) fails direction and speed; a jittered one fails jitter
    frozen = video[:1].expand_as(video)
    assert not score.score_video(frozen, clip.caption).direction_ok
    shaken = torch.stack([torch.roll(f, shifts=(4 * (i % 2), 0), dims=(0, 1)) for i, f in enumerate(video)])
    shaken_score = score.score_video(shaken, clip.caption)
    assert shaken_score.jitter > score.TARGETS["jitter"] and not shaken_score.ok
    assert score.distance(video, video) == {"pixel_rms": 0.0, "track_rms": 0.0}
    assert score.distance(shaken, video)["track_rms"] > 1.0


def test_score_rejects_a_caption_outside_the_toy_vocabulary():
    with pytest.raises(ValueError, match="not a toy caption"):
        score.score_video(torch.zeros(data.FRAMES, 8, 8, 3), "a cat sleeps on a sofa in the sun")


def test_i2v_conditions_and_an_i2v_expert_follow_the_official_layout(toy_files):
    from wan22duo.engine.model.latents import normalize
    from wan22duo.engine.weights.vae_checkpoint import load_vae
    from wan22duo.toy import run

    y = build.encode_i2v_conditions([5, 6], log=lambda _: None, folder=toy_files)
    assert y.shape == (2, 20, 5, 8, 8)
    assert bool((y[:, :4, 0] == 1).all()) and not bool(y[:, :4, 1:].any())  # video frame 0 known
    vae = load_vae(build.path("vae", toy_files), torch.float32)
    video = data.to_model_range(data.render(data.draw_clip(5)))
    video[:, :, 1:] = 0.0  # the start frame, then mid-gray
    with torch.no_grad():
        assert torch.allclose(y[:1, 4:], normalize(vae.encode(video)), atol=1e-5)
    latents, rows = build.encode_clips([5, 6], log=lambda _: None, folder=toy_files)
    model, curve = dit.train_expert(latents, rows, high=True, variant="i2v_a14b", cond=y, steps=4, batch_size=2,
                                    log=lambda _: None)
    assert model.config.in_dim == 36 and curve == []
    build.save(model, "i2v_high", "untrained", toy_files)
    build.save(dit.new_model("i2v_a14b", seed=4), "i2v_low", "untrained", toy_files)
    models = run.load(toy_files, task="i2v")
    images, switch_step = run.generate(models, seed=0, steps=3, cfg_high=3.5, cfg_low=3.5,
                                       start_image=run.first_frame(5))
    assert images.shape == (data.FRAMES, data.HEIGHT, data.WIDTH, 3) and bool(torch.isfinite(images).all())
    assert switch_step == 2  # 3 steps at shift 5 (I2V): two at or above t = 900
    with pytest.raises(ValueError, match="start_image"):
        run.generate(models, steps=1)
