"""Phase plans and the step cache in a real ComfyUI, on the MODEL path (Wan22DuoModelSampler).

The three-stage Lightning recipe in one node (a Wan22DuoModelPhase in front of the LoRA'd experts)
against the same three stages run by hand with ComfyUI's own KSamplerAdvanced chain (0-2 with CFG,
2-4 and 4-8 at cfg 1, leftover noise kept between them), euler on the simple schedule, in fp32 on
the CPU. The tiny experts and LoRAs are test_model_sampler's; the LoRA stands in for Lightning.
"""
from __future__ import annotations

import pytest
import torch

from test_model_sampler import LATENT, files, rel_l2  # noqa: F401  (files is a fixture)

STEPS, LEAD, SHIFT = 8, 2, 5.0
# Both paths call the same ComfyUI model; they differ only in float rounding: the Duo sampler feeds
# sigma = t / 1000 in float64 and keeps the latent normalised between stages, the KSampler chain feeds
# float32 sigmas and round-trips the latent through process_latent_out/in and the flow noise scaling
# at each stage boundary. Seen: 1.4e-7 to 2e-7 relative (one to three stages); bound 1e-5.
FP32_ROUNDING = 1e-5


def conditioning(comfy, variant, shape):
    """Prompts of umT5's 512 rows (zero past the text), as CLIPTextEncode gives them, and an empty latent.

    512 rows, not fewer: the Duo sampler pads a context to the model's 512 rows as the official code
    does, a KSampler passes it as it comes, so only full-length contexts mean the same to both.
    """
    (pos,) = comfy.run("Wan22DuoTestConditioning", text="a red fox running through fresh snow", length=512)
    (neg,) = comfy.run("Wan22DuoTestConditioning", text="blurry, static", length=512)
    return pos, neg, {"samples": torch.zeros(shape)}


def models(comfy, files):
    """(base high, Lightning high, Lightning low): ComfyUI MODELs with ModelSamplingSD3 shift 5 on each."""
    out = []
    for role, lora in (("high", 0.0), ("high", 1.0), ("low", 1.0)):
        dit, lora_name = files["t2v_a14b", role]
        (model,) = comfy.run("UNETLoader", unet_name=dit, weight_dtype="default")
        if lora:
            (model,) = comfy.run("LoraLoaderModelOnly", model=model, lora_name=lora_name, strength_model=lora)
        out.append(comfy.run("ModelSamplingSD3", model=model, shift=SHIFT)[0])
    return out


def advanced(comfy, model, latent, pos, neg, cfg, start, end, first, last):
    (out,) = comfy.run("KSamplerAdvanced", model=model, add_noise="enable" if first else "disable", noise_seed=42,
                       steps=STEPS, cfg=cfg, sampler_name="euler", scheduler="simple", positive=pos, negative=neg,
                       latent_image=latent, start_at_step=start, end_at_step=end,
                       return_with_leftover_noise="disable" if last else "enable")
    return out


def duo(comfy, high, low, pos, neg, latent, **extra):
    out = comfy.run("Wan22DuoModelSampler", high_noise_model=high, low_noise_model=low, positive=pos, negative=neg,
                    latent=latent, seed=42, steps=STEPS, cfg_high=1.0, cfg_low=1.0, shift=-1.0, boundary=-1.0,
                    switch_step=-1, sampler="euler", scheduler="simple", memory="offload_cpu", **extra)
    return out["result"][0]["samples"], out["ui"]["wan22duo_switch"][0]


def test_three_stage_plan_equals_the_ksampler_advanced_chain(comfy, files, record_property):
    base, high, low = models(comfy, files)
    pos, neg, latent = conditioning(comfy, "t2v_a14b", LATENT["t2v_a14b"])
    first = advanced(comfy, base, latent, pos, neg, 3.5, 0, LEAD, True, False)
    second = advanced(comfy, high, first, pos, neg, 1.0, LEAD, 4, False, False)
    by_hand = advanced(comfy, low, second, pos, neg, 1.0, 4, 10000, False, True)["samples"]

    (phases,) = comfy.run("Wan22DuoModelPhase", model=base, cfg=3.5, steps=LEAD)
    got, report = duo(comfy, high, low, pos, neg, latent, lead_phases=phases)
    assert report["switch_step"] == 4  # the boundary rule: timesteps 1000, 937.5, 875, 812.5 ... at shift 5
    assert [(s["role"], s["start"], s["stop"], s["cfg"]) for s in report["stages"]] == [
        ("lead1", 0, LEAD, 3.5), ("high", LEAD, 4, 1.0), ("low", 4, STEPS, 1.0)]
    err = rel_l2(got, by_hand)
    record_property("three_stage_vs_ksampler_advanced_rel_l2", err)
    assert err <= FP32_ROUNDING, f"relative L2 {err:.2e}"
    # The first stage matters: without it the result is far from the chain.
    two_stage, _ = duo(comfy, high, low, pos, neg, latent)
    assert rel_l2(two_stage, by_hand) > 100 * FP32_ROUNDING


def test_step_cache_on_the_model_path(comfy, files):
    _, high, low = models(comfy, files)
    pos, neg, latent = conditioning(comfy, "t2v_a14b", LATENT["t2v_a14b"])
    run = dict(seed=42, steps=12, cfg_high=3.5, cfg_low=3.0, shift=-1.0, boundary=-1.0, switch_step=6,
               sampler="unipc", scheduler="wan", memory="offload_cpu")

    def sample(cache=None):
        out = comfy.run("Wan22DuoModelSampler", high_noise_model=high, low_noise_model=low, positive=pos,
                        negative=neg, latent=latent, step_cache=cache, **run)
        return out["result"][0]["samples"], out["ui"]["wan22duo_switch"][0]

    plain, plain_report = sample()
    zero, zero_report = sample(comfy.run("Wan22DuoStepCache", threshold=0.0, warmup_steps=2)[0])
    assert "cache" not in plain_report and zero_report["cache"]["reused"] == []
    assert torch.equal(zero, plain)
    cached, report = sample(comfy.run("Wan22DuoStepCache", threshold=2.0, warmup_steps=2)[0])
    reused = report["cache"]["reused"]
    assert reused and set(reused) <= {2, 3, 4, 8, 9, 10}  # warm-up 0-1 / 6-7 and the last steps 5 / 11 ran
    assert 0 < rel_l2(cached, plain) < 1.0


@pytest.mark.parametrize("node", ["Wan22DuoStepCache", "Wan22DuoPhase", "Wan22DuoModelPhase"])
def test_the_new_nodes_are_registered(comfy, node):
    assert comfy.node(node).CATEGORY == "Wan22Duo/sampling"
