"""The trained toy model (toy/weights) inside a real ComfyUI: ComfyUI's own loaders read its files unchanged,
and both routes make a video that passes the toy score.

The committed toy files (T2V-A14B-layout experts of dim 128, a base-width-16 Wan 2.1-layout VAE; see
toy/build.py) are copied into ComfyUI's model folders. ``UNETLoader`` and ``VAELoader`` load them; the
experts run through ``Wan22DuoModelSampler`` and through ComfyUI's own two-``KSamplerAdvanced`` A14B
graph; ComfyUI's ``VAEDecode`` decodes the result as the pack's ``Wan22DuoVAEDecode`` does; the toy
score (toy/score.py) must pass on both. The toy is a yardstick, not Wan 2.2.
"""
from __future__ import annotations

import pytest

import torch

STEPS = 20
CAPTION = "a red disc moves right over a gray background"


@pytest.fixture(scope="module")
def toy(comfy):
    import shutil

    build = comfy.pack_module("toy.build")
    names = build.FILES
    diffusion = comfy.tree.model_path("diffusion_models", "x").parent
    vae_folder = comfy.tree.model_path("vae", "x").parent
    for name, folder in (("t2v_high", diffusion), ("t2v_low", diffusion), ("vae", vae_folder)):
        shutil.copyfile(build.path(name), folder / names[name])
    (high,) = comfy.run("UNETLoader", unet_name=names["t2v_high"], weight_dtype="default")
    (low,) = comfy.run("UNETLoader", unet_name=names["t2v_low"], weight_dtype="default")
    (vae,) = comfy.run("VAELoader", vae_name=names["vae"])
    (our_vae,) = comfy.run("Wan22DuoVAELoader", vae_name=names["vae"], dtype="fp32", device="cpu")["result"]
    return {"high": high, "low": low, "vae": vae, "our_vae": our_vae}


def prompts(comfy):
    text = comfy.pack_module("toy.text")
    return text.conditioning(CAPTION), text.conditioning("")


def empty_latent(comfy):
    data = comfy.pack_module("toy.data")
    (latent,) = comfy.run("EmptyHunyuanLatentVideo", width=data.WIDTH, height=data.HEIGHT, length=data.FRAMES,
                          batch_size=1)
    return latent


def decode_checked(comfy, toy, latent):
    """ComfyUI's VAEDecode of ``latent``, checked against the pack's decode of the same file."""
    data = comfy.pack_module("toy.data")
    (images,) = comfy.run("VAEDecode", samples=latent, vae=toy["vae"])
    images = images.reshape(-1, *images.shape[-3:]).float().cpu()
    assert images.shape == (data.FRAMES, data.HEIGHT, data.WIDTH, 3)
    (ours,) = comfy.run("Wan22DuoVAEDecode", vae=toy["our_vae"], samples=latent, tile_size=0, tile_overlap=64)
    # one fp32 decode of the same weights by two implementations; outputs in [0, 1]
    assert (images - ours.float().cpu()).abs().max() < 1e-3
    result = comfy.pack_module("toy.score").score_video(images, CAPTION)
    assert result.ok, result.line()
    return images


def test_toy_files_run_through_comfy_models_and_the_duo_model_sampler(comfy, toy):
    pos, neg = prompts(comfy)
    out = comfy.run("Wan22DuoModelSampler", high_noise_model=toy["high"], positive=pos, negative=neg,
                    latent=empty_latent(comfy), seed=3, steps=STEPS, cfg_high=4.0, cfg_low=3.0, shift=12.0,
                    boundary=-1.0, switch_step=-1, sampler="unipc", scheduler="wan", memory="offload_cpu",
                    low_noise_model=toy["low"])
    latent, switch = out["result"]
    assert 0 < switch < STEPS and bool(torch.isfinite(latent["samples"]).all())
    decode_checked(comfy, toy, latent)


def test_toy_files_run_through_comfyuis_two_ksampler_advanced_graph(comfy, toy):
    schedule = comfy.pack_module("engine.sampling.schedule")
    switch = schedule.boundary_switch_step(schedule.make_schedule("simple", STEPS, 12.0).timesteps, 0.875)
    assert 0 < switch < STEPS
    pos, neg = prompts(comfy)
    high = comfy.run("ModelSamplingSD3", model=toy["high"], shift=12.0)[0]
    low = comfy.run("ModelSamplingSD3", model=toy["low"], shift=12.0)[0]
    common = dict(noise_seed=3, steps=STEPS, sampler_name="uni_pc", scheduler="simple", positive=pos, negative=neg)
    (mid,) = comfy.run("KSamplerAdvanced", model=high, add_noise="enable", cfg=4.0, latent_image=empty_latent(comfy),
                       start_at_step=0, end_at_step=switch, return_with_leftover_noise="enable", **common)
    (latent,) = comfy.run("KSamplerAdvanced", model=low, add_noise="disable", cfg=3.0, latent_image=mid,
                          start_at_step=switch, end_at_step=STEPS, return_with_leftover_noise="disable", **common)
    assert bool(torch.isfinite(latent["samples"]).all())
    decode_checked(comfy, toy, latent)
