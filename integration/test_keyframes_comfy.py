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
    tiny_vae = comfy.pack_module("engine.vae.tiny")
    tiny_dit = comfy.pack_module("engine.tiny")
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
