"""Patches a MODEL carries, in Wan22DuoModelSampler and in ComfyUI's own two-KSamplerAdvanced graph.

The same patched MODELs (tiny T2V-A14B experts from ``engine.testing.tiny``, fp32, CPU) run through
our node and through the graph ComfyUI users build by hand: KSamplerAdvanced on the high-noise
expert for steps [0, k) with its leftover noise, then KSamplerAdvanced on the low-noise expert for
[k, steps) without new noise; euler, ComfyUI's ``simple`` schedule and ModelSamplingSD3 on both
MODELs, so the two runs share one trajectory. Each test fails when the MODEL's wrappers do not
run in our sampler (they did not before ``ComfyExpert.prepare`` merged them).
"""
from __future__ import annotations

import logging
import re
from collections import Counter

import pytest
import torch

STEPS, SWITCH, SHIFT, SEED = 8, 3, 8.0, 7
CFG_HIGH, CFG_LOW = 4.0, 3.0
PARITY = 1e-4
LEVELS = ("outer_sample", "prepare_sampling", "sampler_sample", "predict_noise", "calc_cond_batch",
          "apply_model", "diffusion_model")


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def result(output):
    """A node's outputs, V1 tuple or V3 NodeOutput."""
    return tuple(getattr(output, "result", output))


@pytest.fixture(scope="module")
def experts(comfy):
    """File names of a tiny high- and low-noise T2V-A14B expert in ComfyUI's diffusion_models."""
    tiny = comfy.pack_module("engine.testing.tiny")
    names = []
    for seed, role in ((31, "high"), (32, "low")):
        path = comfy.tree.model_path("diffusion_models", f"patches_t2v_a14b_{role}_noise.safetensors")
        names.append(tiny.write_tiny_dit(path, "t2v_a14b", seed=seed).name)
    return names


def models(comfy, experts):
    """Fresh ModelPatchers with ModelSamplingSD3 (the graph's sigmas need it; our sampler reads it, shift -1)."""
    out = []
    for name in experts:
        (model,) = result(comfy.run("UNETLoader", unet_name=name, weight_dtype="default"))
        out.append(result(comfy.run("ModelSamplingSD3", model=model, shift=SHIFT))[0])
    return out


def inputs(comfy, frames: int = 3):
    """Prompts of 512 rows (as umT5 returns them), so both samplers batch cond and uncond alike."""
    (pos,) = result(comfy.run("Wan22DuoTestConditioning", text="a red fox running through fresh snow", length=512))
    (neg,) = result(comfy.run("Wan22DuoTestConditioning", text="blurry, static", length=512))
    return pos, neg, {"samples": torch.zeros(1, 16, frames, 8, 8)}


def ours(comfy, pair, frames: int = 3, steps: int = STEPS):
    pos, neg, latent = inputs(comfy, frames)
    out = comfy.run("Wan22DuoModelSampler", high_noise_model=pair[0], low_noise_model=pair[1], positive=pos,
                    negative=neg, latent=latent, seed=SEED, steps=steps, cfg_high=CFG_HIGH, cfg_low=CFG_LOW,
                    shift=-1.0, boundary=-1.0, switch_step=SWITCH, sampler="euler", scheduler="simple",
                    memory="offload_cpu")
    (samples, switch) = out["result"]
    assert switch == SWITCH
    return samples["samples"], out["ui"]["wan22duo_switch"][0]


def graph(comfy, pair, frames: int = 3, steps: int = STEPS):
    """ComfyUI's two-KSamplerAdvanced graph on the same MODELs, switch and seed."""
    pos, neg, latent = inputs(comfy, frames)
    common = dict(noise_seed=SEED, steps=steps, sampler_name="euler", scheduler="simple", positive=pos,
                  negative=neg)
    (mid,) = result(comfy.run("KSamplerAdvanced", model=pair[0], add_noise="enable", cfg=CFG_HIGH, latent_image=latent,
                              start_at_step=0, end_at_step=SWITCH, return_with_leftover_noise="enable", **common))
    (out,) = result(comfy.run("KSamplerAdvanced", model=pair[1], add_noise="disable", cfg=CFG_LOW, latent_image=mid,
                              start_at_step=SWITCH, end_at_step=10000, return_with_leftover_noise="disable",
                              **common))
    return out["samples"]


def counting(pair, counts: Counter):
    """Clones of the experts with a wrapper at every level that counts its calls per expert."""
    import comfy.patcher_extension

    def counter(tag):
        def wrapper(executor, *args, **kwargs):
            counts[tag] += 1
            return executor(*args, **kwargs)
        return wrapper

    out = []
    for role, model in zip(("high", "low"), pair):
        model = model.clone()
        for level in LEVELS:
            model.add_wrapper_with_key(level, "wan22duo_test_count", counter((role, level)))
        out.append(model)
    return out


def test_a_counting_wrapper_runs_at_every_level_as_in_the_two_sampler_graph(comfy, experts, record_property):
    want, got = Counter(), Counter()
    reference = graph(comfy, counting(models(comfy, experts), want))
    samples, report = ours(comfy, counting(models(comfy, experts), got))
    per_expert = {role: {level: (got[role, level], want[role, level]) for level in LEVELS} for role in ("high", "low")}
    record_property("counts_ours_vs_graph", per_expert)
    print(f"\ncounts per expert and level (ours, graph): {per_expert}")
    for role, steps in (("high", SWITCH), ("low", STEPS - SWITCH)):
        for level in LEVELS:
            once = level in ("outer_sample", "prepare_sampling", "sampler_sample")
            assert want[role, level] == (1 if once else steps), (role, level)  # the graph, as documented
            assert got[role, level] == want[role, level], (role, level)
    assert rel_l2(samples, reference) <= PARITY
    # Our loop stands in for both samplers, so these two levels wrap the whole run: the report says so.
    notes = report["patch_notes"]
    for name in ("high_noise_model", "low_noise_model"):
        for level in ("OUTER_SAMPLE", "SAMPLER_SAMPLE"):
            assert any(n.startswith(f"{name}: the {level} wrapper 'wan22duo_test_count'") for n in notes), notes


def skipped(records, name: str) -> list[tuple[int, int]]:
    pattern = re.compile(rf"{name} - skipped (\d+)/(\d+) steps")
    return [tuple(map(int, m.groups())) for r in records if (m := pattern.search(r.getMessage()))]


@pytest.mark.parametrize("node", ["EasyCache", "LazyCache"])
def test_caches_skip_the_steps_they_skip_in_the_graph(comfy, experts, node, caplog, record_property):
    """Each expert's cache holder is prepared for the run (its start/end percentages as sigmas), skips where the
    graph's does, and is reset afterwards. A threshold at which they skip on the tiny experts (EasyCache skips
    4 of the 9 low-noise steps; measured on this tiny model, not a quality setting)."""
    caplog.set_level(logging.INFO)
    steps, threshold = 12, 0.8

    def cached():
        return [result(comfy.run(node, model=m, reuse_threshold=threshold, start_percent=0.15, end_percent=0.95,
                                 verbose=False))[0] for m in models(comfy, experts)]

    reference = graph(comfy, cached(), steps=steps)
    in_graph = skipped(caplog.records, node)  # [high, low]: (skipped, steps given)
    caplog.clear()
    samples, report = ours(comfy, cached(), steps=steps)
    in_ours = skipped(caplog.records, node)[::-1]  # the low-noise expert's wrapper is inside, so it ends first
    plain, _ = ours(comfy, models(comfy, experts), steps=steps)
    err = rel_l2(samples, reference)
    record_property("skipped_graph_ours", (in_graph, in_ours))
    print(f"\n{node} skipped (high, low: skipped/steps): graph {in_graph}, ours {in_ours}; ours vs graph rel L2 "
          f"{err:.2e}, vs no cache {rel_l2(samples, plain):.2e}")
    assert in_graph == [(0, SWITCH), (in_graph[1][0], steps - SWITCH)]
    assert in_graph[1][0] > 0, "the threshold must make the cache skip steps on the tiny model"
    assert in_ours == in_graph
    assert err <= PARITY
    assert rel_l2(samples, plain) > 100 * PARITY  # skipping changed the result
    assert report["patch_notes"] == []  # both caches act here as in the graph: nothing to warn about


def test_torch_compile_model_compiles_the_running_experts(comfy, experts):
    """TorchCompileModel's wrapper (``set_torch_compile_wrapper``) with a counting backend: frames are compiled."""
    from comfy_api.torch_helpers import set_torch_compile_wrapper

    compiled = Counter()

    def backend(tag):
        def compile_graph(gm, example_inputs):
            compiled[tag] += 1
            return gm.forward
        return compile_graph

    plain, _ = ours(comfy, models(comfy, experts))
    pair = []
    for role, model in zip(("high", "low"), models(comfy, experts)):
        model = model.clone()
        set_torch_compile_wrapper(model, backend=backend(role))
        pair.append(model)
    torch._dynamo.reset()
    try:
        samples, report = ours(comfy, pair)
    finally:
        torch._dynamo.reset()
    print(f"\ncompiled graphs per expert: {dict(compiled)}")
    assert compiled["high"] > 0 and compiled["low"] > 0
    assert rel_l2(samples, plain) <= PARITY
    assert report["patch_notes"] == []


@pytest.mark.parametrize("freenoise", [False, True])
def test_context_windows_with_and_without_freenoise_as_in_the_graph(comfy, experts, freenoise, record_property):
    frames = 8  # latent frames; windows of 5 with overlap 1 (WanContextWindowsManual counts pixel frames)

    def windowed():
        return [result(comfy.run("WanContextWindowsManual", model=m, context_length=17, context_overlap=4,
                                 context_schedule="standard_static", context_stride=1, closed_loop=False,
                                 fuse_method="pyramid", freenoise=freenoise))[0] for m in models(comfy, experts)]

    reference = graph(comfy, windowed(), frames=frames)
    samples, _ = ours(comfy, windowed(), frames=frames)
    err = rel_l2(samples, reference)
    record_property("rel_l2", err)
    print(f"\ncontext windows, freenoise={freenoise}: ours vs graph rel L2 {err:.2e}")
    assert err <= PARITY
    if freenoise:  # FreeNoise changed the run (it did nothing before the SAMPLER_SAMPLE level was honoured)
        pair = [result(comfy.run("WanContextWindowsManual", model=m, context_length=17, context_overlap=4,
                                 context_schedule="standard_static", context_stride=1, closed_loop=False,
                                 fuse_method="pyramid", freenoise=False))[0] for m in models(comfy, experts)]
        off, _ = ours(comfy, pair, frames=frames)
        assert rel_l2(samples, off) > 100 * PARITY


def test_comfyui_context_windows_run_the_model_per_window_as_in_the_graph(comfy, experts, record_property):
    """WanContextWindowsManual on the MODELs: the diffusion model is called with window-length latents only
    (never the whole video), the same calls per expert as in the graph, and the same result (within PARITY).

    8 latent frames in windows of 17 video frames (5 latent frames), overlap 4 frames (1 latent frame),
    static schedule: windows [0, 5) and [3, 8). ComfyUI 0.33 also puts its causal anchor frame in front of
    the second window (6 frames); 0.3.76 has no anchor."""
    import comfy.patcher_extension as extension  # bound to another name: `comfy` is the fixture here

    frames = 8
    def windowed(seen: Counter):
        out = []
        for role, m in zip(("high", "low"), models(comfy, experts)):
            (m,) = result(comfy.run("WanContextWindowsManual", model=m, context_length=17, context_overlap=4,
                                    context_schedule="standard_static", context_stride=1, closed_loop=False,
                                    fuse_method="pyramid", freenoise=True))

            def record(executor, x, *args, _role=role, **kwargs):
                seen[_role, x.shape[2]] += 1
                return executor(x, *args, **kwargs)

            m.add_wrapper_with_key(extension.WrappersMP.DIFFUSION_MODEL, "wan22duo_test_frames", record)
            out.append(m)
        return out

    in_graph, in_ours = Counter(), Counter()
    reference = graph(comfy, windowed(in_graph), frames=frames)
    samples, report = ours(comfy, windowed(in_ours), frames=frames)
    err = rel_l2(samples, reference)
    record_property("frames_per_call_graph_ours", (dict(in_graph), dict(in_ours)))
    print(f"\nWanContextWindowsManual: model calls by (expert, latent frames): graph {dict(in_graph)}, "
          f"ours {dict(in_ours)}; rel L2 {err:.2e}")
    assert in_ours == in_graph
    assert {n for _, n in in_ours} <= {5, 6} and {n for _, n in in_ours} & {5}  # window-length inputs only
    # one call per window per step (cond and uncond batched together, as ComfyUI batches them)
    assert sum(c for (role, _), c in in_ours.items() if role == "high") == 2 * SWITCH
    assert sum(c for (role, _), c in in_ours.items() if role == "low") == 2 * (STEPS - SWITCH)
    assert err <= PARITY
    assert report["patch_notes"] == []  # FreeNoise's SAMPLER_SAMPLE wrapper acts as in the graph


def test_comfyui_context_windows_on_i2v_slice_the_image_conditioning_as_in_the_graph(comfy, record_property):
    """I2V-A14B under WanContextWindowsManual: ComfyUI's handler slices the start-image channels (c_concat) per
    window in both samplers; ours hands them to ComfyUI as c_concat, so the result matches the graph's."""
    tiny = comfy.pack_module("engine.testing.tiny")
    pair = []
    for seed, role in ((41, "high"), (42, "low")):
        path = comfy.tree.model_path("diffusion_models", f"patches_i2v_a14b_{role}_noise.safetensors")
        (model,) = result(comfy.run("UNETLoader", unet_name=tiny.write_tiny_dit(path, "i2v_a14b", seed=seed).name,
                                    weight_dtype="default"))
        (model,) = result(comfy.run("ModelSamplingSD3", model=model, shift=SHIFT))
        (model,) = result(comfy.run("WanContextWindowsManual", model=model, context_length=17, context_overlap=4,
                                    context_schedule="standard_static", context_stride=1, closed_loop=False,
                                    fuse_method="pyramid", freenoise=True))
        pair.append(model)
    frames = 8
    pos, neg, latent = inputs(comfy, frames)
    g = torch.Generator().manual_seed(5)
    mask = torch.ones(1, 1, frames, 8, 8)
    mask[:, :, 0] = 0.0  # WanImageToVideo: 0 on the known (start image) frame
    values = {"concat_latent_image": torch.randn(1, 16, frames, 8, 8, generator=g), "concat_mask": mask}
    pos = [[c, {**o, **values}] for c, o in pos]
    neg = [[c, {**o, **values}] for c, o in neg]
    common = dict(noise_seed=SEED, steps=STEPS, sampler_name="euler", scheduler="simple", positive=pos, negative=neg)
    (mid,) = result(comfy.run("KSamplerAdvanced", model=pair[0], add_noise="enable", cfg=3.5, latent_image=latent,
                              start_at_step=0, end_at_step=SWITCH, return_with_leftover_noise="enable", **common))
    (reference,) = result(comfy.run("KSamplerAdvanced", model=pair[1], add_noise="disable", cfg=3.5, latent_image=mid,
                                    start_at_step=SWITCH, end_at_step=10000, return_with_leftover_noise="disable",
                                    **common))
    out = comfy.run("Wan22DuoModelSampler", high_noise_model=pair[0], low_noise_model=pair[1], positive=pos,
                    negative=neg, latent=latent, seed=SEED, steps=STEPS, cfg_high=3.5, cfg_low=3.5, shift=-1.0,
                    boundary=-1.0, switch_step=SWITCH, sampler="euler", scheduler="simple", memory="offload_cpu")
    err = rel_l2(out["result"][0]["samples"], reference["samples"])
    record_property("rel_l2", err)
    print(f"\nI2V under WanContextWindowsManual: ours vs graph rel L2 {err:.2e}")
    assert err <= PARITY
