"""The trained toy model (toy/weights) inside a real ComfyUI: ComfyUI's own loaders read its files unchanged,
and both routes make the video the toy makes through the pack's own nodes.

The committed toy files (T2V- and I2V-A14B-layout experts of dim 128, a base-width-16 Wan 2.1-layout VAE;
see toy/build.py) are copied into ComfyUI's model folders. ``UNETLoader`` and ``VAELoader`` load them;
the experts run through ``Wan22DuoModelSampler`` and through ComfyUI's own two-``KSamplerAdvanced`` A14B
graph; ComfyUI's ``VAEDecode`` decodes the result as the pack's ``Wan22DuoVAEDecode`` does. I2V (from a
start image through ComfyUI's ``WanImageToVideo``) and T2V must pass the toy score (toy/score.py) on both
routes. The toy is a yardstick, not Wan 2.2.
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
    for name in ("t2v_high", "t2v_low", "i2v_high", "i2v_low", "vae"):
        shutil.copyfile(build.path(name), (vae_folder if name == "vae" else diffusion) / names[name])
    models = {name: comfy.run("UNETLoader", unet_name=names[name], weight_dtype="default")[0]
              for name in ("t2v_high", "t2v_low", "i2v_high", "i2v_low")}
    (vae,) = comfy.run("VAELoader", vae_name=names["vae"])
    (our_vae,) = comfy.run("Wan22DuoVAELoader", vae_name=names["vae"], dtype="fp32", device="cpu")["result"]
    return {"high": models["t2v_high"], "low": models["t2v_low"], "i2v_high": models["i2v_high"],
            "i2v_low": models["i2v_low"], "vae": vae, "our_vae": our_vae}


I2V_SEED = 1_000_005  # a held-out clip (toy.data.HELD_OUT_SEED + 5)


def i2v_inputs(comfy, toy):
    """ComfyUI's WanImageToVideo on the held-out clip's first frame: (positive, negative, latent, caption)."""
    data, run, text = (comfy.pack_module(f"toy.{m}") for m in ("data", "run", "text"))
    caption = data.draw_clip(I2V_SEED).caption
    pos, neg, latent = comfy.run("WanImageToVideo", positive=text.conditioning(caption), negative=text.conditioning(""),
                                 vae=toy["vae"], width=data.WIDTH, height=data.HEIGHT, length=data.FRAMES,
                                 batch_size=1, start_image=run.first_frame(I2V_SEED))
    return pos, neg, latent, caption


def prompts(comfy):
    text = comfy.pack_module("toy.text")
    return text.conditioning(CAPTION), text.conditioning("")


def empty_latent(comfy):
    data = comfy.pack_module("toy.data")
    (latent,) = comfy.run("EmptyHunyuanLatentVideo", width=data.WIDTH, height=data.HEIGHT, length=data.FRAMES,
                          batch_size=1)
    return latent


def decode_checked(comfy, toy, latent, caption=CAPTION):
    """ComfyUI's VAEDecode of ``latent``, checked against the pack's decode of the same file, then scored."""
    data = comfy.pack_module("toy.data")
    (images,) = comfy.run("VAEDecode", samples=latent, vae=toy["vae"])
    images = images.reshape(-1, *images.shape[-3:]).float().cpu()
    assert images.shape == (data.FRAMES, data.HEIGHT, data.WIDTH, 3)
    (ours,) = comfy.run("Wan22DuoVAEDecode", vae=toy["our_vae"], samples=latent, tile_size=0, tile_overlap=64)
    # one fp32 decode of the same weights by two implementations; outputs in [0, 1]
    assert (images - ours.float().cpu()).abs().max() < 1e-3
    result = comfy.pack_module("toy.score").score_video(images, caption)
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


def test_the_quality_bench_measures_the_samplers_in_comfyui(comfy, tmp_path, monkeypatch):
    """bench/quality.py --comfyui's rows (comfy_rows) on untrained toy files: every sampler path runs and scores."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import quality

    build, dit, toy_vae = (comfy.pack_module(f"toy.{m}") for m in ("build", "dit", "vae"))
    build.save(dit.new_model(seed=1), "t2v_high", "untrained", tmp_path)
    build.save(dit.new_model(seed=2), "t2v_low", "untrained", tmp_path)
    build.save(toy_vae.new_vae(base_dim=toy_vae.BASE_DIM), "vae", "untrained", tmp_path)
    monkeypatch.setattr(quality, "REFERENCE", {"steps": STEPS})
    monkeypatch.setattr(quality, "COMFY_CONFIGS", [(path, STEPS, path) for path in ("duo", "model_sampler",
                                                                                      "ksampler")])
    rows = quality.comfy_rows(comfy, 1, tmp_path, log=lambda line: None)
    assert [r["config"] for r in rows] == [f"Wan22DuoSampler UniPC {STEPS} steps (the reference)", "duo",
                                           "model_sampler", "ksampler"]
    assert rows[0]["pixel_rms"] == rows[1]["pixel_rms"] == 0.0  # the same Wan22DuoSampler run twice
    assert all(0 <= r["pixel_rms"] < 256 and 0 <= r["score"] <= 1 for r in rows)


def test_toy_i2v_through_wan_image_to_video_and_the_duo_model_sampler_passes_the_score(comfy, toy):
    pos, neg, latent, caption = i2v_inputs(comfy, toy)
    out = comfy.run("Wan22DuoModelSampler", high_noise_model=toy["i2v_high"], positive=pos, negative=neg,
                    latent=latent, seed=I2V_SEED, steps=STEPS, cfg_high=3.5, cfg_low=3.5, shift=5.0,
                    boundary=-1.0, switch_step=-1, sampler="unipc", scheduler="wan", memory="offload_cpu",
                    low_noise_model=toy["i2v_low"])
    sampled, switch = out["result"]
    assert 0 < switch < STEPS
    decode_checked(comfy, toy, sampled, caption)


def test_toy_i2v_through_comfyuis_two_ksampler_advanced_graph_passes_the_score(comfy, toy):
    schedule = comfy.pack_module("engine.sampling.schedule")
    switch = schedule.boundary_switch_step(schedule.make_schedule("simple", STEPS, 5.0).timesteps, 0.900)
    assert 0 < switch < STEPS
    pos, neg, latent, caption = i2v_inputs(comfy, toy)
    high = comfy.run("ModelSamplingSD3", model=toy["i2v_high"], shift=5.0)[0]
    low = comfy.run("ModelSamplingSD3", model=toy["i2v_low"], shift=5.0)[0]
    common = dict(noise_seed=I2V_SEED, steps=STEPS, sampler_name="uni_pc", scheduler="simple", positive=pos,
                  negative=neg, cfg=3.5)
    (mid,) = comfy.run("KSamplerAdvanced", model=high, add_noise="enable", latent_image=latent,
                       start_at_step=0, end_at_step=switch, return_with_leftover_noise="enable", **common)
    (sampled,) = comfy.run("KSamplerAdvanced", model=low, add_noise="disable", latent_image=mid,
                           start_at_step=switch, end_at_step=STEPS, return_with_leftover_noise="disable", **common)
    decode_checked(comfy, toy, sampled, caption)
