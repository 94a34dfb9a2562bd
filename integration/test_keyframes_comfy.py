"""First-last frame in real ComfyUI: our I2V keyframe conditioning against WanFirstLastFrameToVideo.

Both nodes get the same images (already at the video size, so neither resamples: ComfyUI fits
with a bilinear center-crop upscale, we with the official bicubic after a center crop) and the
same Wan 2.1 VAE file (random tiny weights), ComfyUI's node through its own VAELoader. The masks
must be identical and the image latents equal to VAE precision; then our sampler, fed either
node's conditioning, must give the same video latent.
"""
import pytest
import torch

LENGTH, WIDTH, HEIGHT = 13, 48, 32


@pytest.fixture(scope="module")
def setup(comfy):
    tiny_vae = comfy.pack_module("engine.testing.tiny_vae")
    tiny_dit = comfy.pack_module("engine.testing.tiny")
    vae_file = comfy.tree.model_path("vae", "keyframes_tiny_wan_2.1_vae.safetensors")
    tiny_vae.write_tiny_vae(vae_file, "2.1", seed=3)
    experts = {}
    for role, seed in (("high_noise", 11), ("low_noise", 12)):
        path = comfy.tree.model_path("diffusion_models", f"keyframes_tiny_i2v_{role}.safetensors")
        tiny_dit.write_tiny_dit(path, "i2v_a14b", seed=seed, dim=128, ffn_dim=256, num_layers=1)
        experts[role] = path.name
    comfy.folder_paths.filename_list_cache.clear()
    (pos,) = comfy.run("Wan22DuoTestConditioning", text="a boat crosses the bay", length=12)
    (neg,) = comfy.run("Wan22DuoTestConditioning", text="blurry", length=12)
    return {"vae": vae_file.name, "experts": experts, "positive": pos, "negative": neg}


def images(frames, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (frames, HEIGHT, WIDTH, 3), generator=g).float() / 255.0


def comfy_first_last(comfy, setup, start, end):
    (comfy_vae,) = comfy.run("VAELoader", vae_name=setup["vae"])
    node = comfy.node("WanFirstLastFrameToVideo")
    out = node.execute(setup["positive"], setup["negative"], comfy_vae, WIDTH, HEIGHT, LENGTH, 1,
                       start_image=start, end_image=end)
    return out.args if hasattr(out, "args") else out


def ours_first_last(comfy, setup, start, end):
    our_vae = comfy.run("Wan22DuoVAELoader", vae_name=setup["vae"], dtype="fp32", device="cpu")["result"][0]
    return comfy.run("Wan22DuoI2VKeyframes", setup["positive"], setup["negative"], our_vae, WIDTH, HEIGHT, LENGTH,
                     1, start_image=start, end_image=end)


@pytest.mark.parametrize("start_frames, end_frames", [(1, 1), (1, 3), (2, 0), (0, 1)])
def test_first_last_conditioning_equals_comfyui(comfy, setup, start_frames, end_frames):
    start = images(start_frames, 1) if start_frames else None
    end = images(end_frames, 2) if end_frames else None
    theirs = comfy_first_last(comfy, setup, start, end)
    ours = ours_first_last(comfy, setup, start, end)
    for slot in (0, 1):  # positive, negative
        (their_ctx, their_values), = theirs[slot]
        (our_ctx, our_values), = ours[slot]
        assert torch.equal(their_ctx, our_ctx)
        assert torch.equal(our_values["concat_mask"], their_values["concat_mask"].float())
        a, b = our_values["concat_latent_image"], their_values["concat_latent_image"]
        assert a.shape == b.shape == (1, 16, (LENGTH - 1) // 4 + 1, HEIGHT // 8, WIDTH // 8)
        diff = (a.float() - b.float()).abs().max().item()
        assert diff < 1e-5, f"image latents differ by {diff}"
    assert ours[2]["samples"].shape == theirs[2]["samples"].shape


def test_our_sampler_gives_the_same_video_from_either_node(comfy, setup):
    start, end = images(1, 3), images(1, 4)
    theirs = comfy_first_last(comfy, setup, start, end)
    ours = ours_first_last(comfy, setup, start, end)
    high, low = (comfy.run("Wan22DuoExpertLoader", setup["experts"][role], role, "default", "fp32", "cpu")[0]
                 for role in ("high_noise", "low_noise"))
    results = []
    for pos, neg, latent in (ours, theirs):
        out = comfy.run("Wan22DuoSampler", high, pos, neg, latent, 5, steps=2, cfg_high=3.5, cfg_low=3.5,
                        shift=5.0, switch_step=1, low_noise_model=low)
        results.append(out["result"][0]["samples"])
    diff = (results[0] - results[1]).abs().max().item()
    assert diff < 1e-4, f"sampled latents differ by {diff}"


# ---------------------------------------------------------------- through ComfyUI's MODEL path (Wan22DuoModelSampler)


@pytest.fixture(scope="module")
def comfy_dits(comfy):
    """Tiny DiTs at the harness's default widths (ComfyUI's UNETLoader detects them as Wan 2.2)."""
    tiny_dit, tiny_vae = comfy.pack_module("engine.testing.tiny"), comfy.pack_module("engine.testing.tiny_vae")
    names = {}
    for seed, (variant, role) in enumerate([("i2v_a14b", "high_noise"), ("i2v_a14b", "low_noise"),
                                            ("ti2v_5b", "single")]):
        path = comfy.tree.model_path("diffusion_models", f"keyframes_comfy_{variant}_{role}.safetensors")
        tiny_dit.write_tiny_dit(path, variant, seed=30 + seed)
        names[variant, role] = path.name
    vae22 = comfy.tree.model_path("vae", "keyframes_tiny_wan2.2_vae.safetensors")
    tiny_vae.write_tiny_vae(vae22, "2.2", seed=4)
    names["vae22"] = vae22.name
    comfy.folder_paths.filename_list_cache.clear()
    return names


def test_first_last_through_comfy_models_matches_the_engine_experts(comfy, setup, comfy_dits):
    """Our first-last conditioning on UNETLoader experts (Wan22DuoModelSampler) and on ours (Wan22DuoSampler)."""
    pos, neg, latent = ours_first_last(comfy, setup, images(1, 5), images(1, 6))
    settings = dict(seed=3, steps=4, cfg_high=3.5, cfg_low=3.5, shift=5.0, boundary=-1.0, switch_step=2,
                    sampler="unipc", scheduler="wan", memory="offload_cpu")
    unet = [comfy.run("UNETLoader", unet_name=comfy_dits["i2v_a14b", r], weight_dtype="default")[0]
            for r in ("high_noise", "low_noise")]
    ours = [comfy.run("Wan22DuoExpertLoader", comfy_dits["i2v_a14b", r], r, "default", "fp32", "cpu")[0]
            for r in ("high_noise", "low_noise")]
    a = comfy.run("Wan22DuoModelSampler", unet[0], pos, neg, latent, low_noise_model=unet[1], **settings)
    b = comfy.run("Wan22DuoSampler", ours[0], pos, neg, latent, low_noise_model=ours[1], **settings)
    x, y = a["result"][0]["samples"].double(), b["result"][0]["samples"].double()
    rel = float((x - y).norm() / y.norm())
    assert rel < 1e-4, f"MODEL path and engine path differ by {rel:.2e} (rel. L2)"


def test_ti2v_first_last_kept_frames_survive_the_comfy_model_path(comfy, comfy_dits):
    """ComfyUI's TI2V model turns the noise mask into per-frame timesteps; kept frames still come back exact."""
    our_vae = comfy.run("Wan22DuoVAELoader", vae_name=comfy_dits["vae22"], dtype="fp32", device="cpu")["result"][0]
    start, end = (torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(s)) for s in (7, 8))
    (latent,) = comfy.run("Wan22DuoTI2VKeyframes", our_vae, 64, 64, 13, 1, start_image=start, end_image=end)
    kept = latent["noise_mask"][0, 0, :, 0, 0] == 0
    assert kept.tolist() == [True, False, False, True]
    (model,) = comfy.run("UNETLoader", unet_name=comfy_dits["ti2v_5b", "single"], weight_dtype="default")
    (pos,) = comfy.run("Wan22DuoTestConditioning", text="waves on a beach", length=12)
    (neg,) = comfy.run("Wan22DuoTestConditioning", text="blurry", length=12)
    out = comfy.run("Wan22DuoModelSampler", model, pos, neg, latent, 1, steps=3, cfg_high=5.0, cfg_low=5.0,
                    shift=5.0)["result"][0]["samples"]
    assert torch.equal(out[:, :, kept], latent["samples"][:, :, kept])
    assert not torch.equal(out[:, :, ~kept], latent["samples"][:, :, ~kept])
