"""The trained toy Wan 2.2 MoE (toy/) inside a real ComfyUI, through both samplers, scored.

The committed toy files are copied into ComfyUI's model folders unchanged and loaded by ComfyUI's own
loaders (``UNETLoader`` for the experts, ``VAELoader`` for the Wan 2.1-layout VAE); the prompts come
from the toy text encoder (``toy/text.py``, umT5's [1, 512, 4096] layout). Two graphs:

* ``UNETLoader`` x2 -> ``Wan22DuoModelSampler`` (the official switch) -> ``VAEDecode``;
* ComfyUI's own A14B graph: ``ModelSamplingSD3`` (shift 12) on each expert, two ``KSamplerAdvanced``
  (high-noise steps ``0..switch`` with leftover noise, then the low-noise steps) -> ``VAEDecode``,
  the switch step taken from the official boundary 0.875 on that schedule.

Each decoded video must pass the toy score against its caption (``toy/score.py``).
"""
from __future__ import annotations

import shutil

import pytest

import torch

STEPS = 20
CAPTIONS = ("a red disc moves right over a gray background", "a blue square moves up over a black background")
SEED = 1_000_003


@pytest.fixture(scope="module")
def toy(comfy):
    build = comfy.pack_module("toy.build")
    names = {}
    for key, folder in (("t2v_high", "diffusion_models"), ("t2v_low", "diffusion_models"), ("vae", "vae")):
        target = comfy.tree.model_path(folder, build.FILES[key])
        shutil.copyfile(build.path(key), target)
        names[key] = target.name
    (high,) = comfy.run("UNETLoader", unet_name=names["t2v_high"], weight_dtype="default")
    (low,) = comfy.run("UNETLoader", unet_name=names["t2v_low"], weight_dtype="default")
    (vae,) = comfy.run("VAELoader", vae_name=names["vae"])
    return {"high": high, "low": low, "vae": vae}


def prompts(comfy, caption):
    text = comfy.pack_module("toy.text")
    return text.conditioning(caption), text.conditioning("")


def empty_latent(comfy):
    data = comfy.pack_module("toy.data")
    (latent,) = comfy.run("EmptyHunyuanLatentVideo", width=data.WIDTH, height=data.HEIGHT, length=data.FRAMES,
                          batch_size=1)
    return latent


def decode_and_score(comfy, toy, latent, caption):
    (images,) = comfy.run("VAEDecode", samples=latent, vae=toy["vae"])
    images = images.reshape(-1, *images.shape[-3:]).float().cpu()
    return comfy.pack_module("toy.score").score_video(images, caption)


@pytest.mark.parametrize("caption", CAPTIONS)
def test_toy_through_comfy_models_and_the_duo_model_sampler_passes_the_score(comfy, toy, caption):
    pos, neg = prompts(comfy, caption)
    out = comfy.run("Wan22DuoModelSampler", high_noise_model=toy["high"], positive=pos, negative=neg,
                    latent=empty_latent(comfy), seed=SEED, steps=STEPS, cfg_high=4.0, cfg_low=3.0, shift=12.0,
                    boundary=-1.0, switch_step=-1, sampler="unipc", scheduler="wan", memory="offload_cpu",
                    low_noise_model=toy["low"])
    latent, _switch = out["result"]
    result = decode_and_score(comfy, toy, latent, caption)
    assert result.ok, result.line()


@pytest.mark.parametrize("caption", CAPTIONS)
def test_toy_through_comfyuis_two_ksampler_advanced_graph_passes_the_score(comfy, toy, caption):
    schedule = comfy.pack_module("engine.sampling.schedule")
    switch = schedule.boundary_switch_step(schedule.make_schedule("simple", STEPS, 12.0).timesteps, 0.875)
    assert 0 < switch < STEPS
    pos, neg = prompts(comfy, caption)
    high = comfy.run("ModelSamplingSD3", model=toy["high"], shift=12.0)[0]
    low = comfy.run("ModelSamplingSD3", model=toy["low"], shift=12.0)[0]
    common = dict(noise_seed=SEED, steps=STEPS, sampler_name="uni_pc", scheduler="simple", positive=pos,
                  negative=neg)
    (mid,) = comfy.run("KSamplerAdvanced", model=high, add_noise="enable", cfg=4.0, latent_image=empty_latent(comfy),
                       start_at_step=0, end_at_step=switch, return_with_leftover_noise="enable", **common)
    (latent,) = comfy.run("KSamplerAdvanced", model=low, add_noise="disable", cfg=3.0, latent_image=mid,
                          start_at_step=switch, end_at_step=STEPS, return_with_leftover_noise="disable", **common)
    result = decode_and_score(comfy, toy, latent, caption)
    assert result.ok, result.line()
    assert torch.isfinite(latent["samples"]).all()
