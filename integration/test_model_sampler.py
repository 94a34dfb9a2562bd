"""Wan22DuoModelSampler in a real ComfyUI: the MODEL path against the engine path, memory, GGUF.

The same tiny checkpoints (``engine.testing.tiny``: dim 256, text_dim 4096, real key names, so
ComfyUI detects them as Wan 2.2) go through ComfyUI's UNETLoader -> LoraLoaderModelOnly ->
Wan22DuoModelSampler and through Wan22DuoExpertLoader -> Wan22DuoLoraLoader ->
Wan22DuoSampler, with the same seed and settings, in fp32 on the CPU.
"""
from __future__ import annotations

import math
import shutil

import pytest

import torch

STEPS = 6
SETTINGS = {  # official shift/cfg per variant; the A14B runs switch experts inside the 6 steps
    "t2v_a14b": dict(shift=12.0, cfg_high=4.0, cfg_low=3.0),
    "i2v_a14b": dict(shift=5.0, cfg_high=3.5, cfg_low=3.5),
    "ti2v_5b": dict(shift=5.0, cfg_high=5.0, cfg_low=5.0),
}
LATENT = {"t2v_a14b": (1, 16, 3, 8, 8), "i2v_a14b": (1, 16, 3, 8, 8), "ti2v_5b": (1, 48, 3, 8, 8)}
PARITY = 1e-4


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.fixture(scope="module")
def files(comfy):
    """Tiny experts and one LoRA per expert, written under ComfyUI's model folders."""
    tiny, lora_tiny = comfy.pack_module("engine.testing.tiny"), comfy.pack_module("engine.testing.tiny_lora")
    names = {}
    for seed, (variant, role) in enumerate([("t2v_a14b", "high"), ("t2v_a14b", "low"), ("i2v_a14b", "high"),
                                            ("i2v_a14b", "low"), ("ti2v_5b", "single")]):
        stem = f"tiny_{variant}_{role}_noise" if role != "single" else f"tiny_{variant}"
        dit = tiny.write_tiny_dit(comfy.tree.model_path("diffusion_models", stem + ".safetensors"), variant,
                                  seed=10 + seed)
        lora = comfy.tree.model_path("loras", stem + "_lora.safetensors")
        lora_tiny.write_tiny_lora(lora, dit, rank=4, alpha=4.0, seed=20 + seed, magnitude=0.1)
        names[variant, role] = (dit.name, lora.name)
    return names


def conditioning(comfy, variant: str, latent_shape):
    (pos,) = comfy.run("Wan22DuoTestConditioning", text="a red fox running through fresh snow", length=24)
    (neg,) = comfy.run("Wan22DuoTestConditioning", text="blurry, static", length=16)
    latent = {"samples": torch.zeros(latent_shape)}
    g = torch.Generator().manual_seed(5)
    if variant == "i2v_a14b":  # WanImageToVideo's values: raw image latent, concat_mask 0 on the known frame
        image = torch.randn(latent_shape, generator=g)
        mask = torch.ones(1, 1, *latent_shape[2:])
        mask[:, :, 0] = 0.0
        values = {"concat_latent_image": image, "concat_mask": mask}
        pos = [[c, {**o, **values}] for c, o in pos]
        neg = [[c, {**o, **values}] for c, o in neg]
    if variant == "ti2v_5b":  # Wan22ImageToVideoLatent's: the image in frame 0, kept by noise_mask
        latent["samples"][:, :, :1] = torch.randn(latent_shape[:2] + (1,) + latent_shape[3:], generator=g)
        latent["noise_mask"] = torch.ones(1, 1, *latent_shape[2:])
        latent["noise_mask"][:, :, 0] = 0.0
    return pos, neg, latent


def roles(variant):
    return ("single",) if variant == "ti2v_5b" else ("high", "low")


def engine_models(comfy, files, variant, lora_strength):
    models = []
    for role in roles(variant):
        dit, lora = files[variant, role]
        if role == "single":
            (model,) = comfy.run("Wan22DuoTI2VLoader", unet_name=dit, weight_dtype="default", compute_dtype="fp32",
                                 device="cpu")
        else:
            (model,) = comfy.run("Wan22DuoExpertLoader", unet_name=dit, role=f"{role}_noise", weight_dtype="default",
                                 compute_dtype="fp32", device="cpu")
        if lora_strength:
            (model,) = comfy.run("Wan22DuoLoraLoader", model=model, lora_name=lora, strength=lora_strength)
        models.append(model)
    return models


def comfy_models(comfy, files, variant, lora_strength, loader="UNETLoader", names=None, **loader_options):
    models = []
    for role in roles(variant):
        dit, lora = files[variant, role]
        if loader == "UNETLoader":
            (model,) = comfy.run("UNETLoader", unet_name=(names or {}).get(role, dit), weight_dtype="default")
        else:
            (model,) = comfy.run(loader, unet_name=names[role], **loader_options)
        if lora_strength:
            (model,) = comfy.run("LoraLoaderModelOnly", model=model, lora_name=lora, strength_model=lora_strength)
        models.append(model)
    return models


def run_sampler(comfy, node, models, variant, schedule, **overrides):
    pos, neg, latent = conditioning(comfy, variant, LATENT[variant])
    kwargs = dict(high_noise_model=models[0], positive=pos, negative=neg, latent=latent, seed=42, steps=STEPS,
                  boundary=-1.0, switch_step=-1, sampler="unipc", scheduler=schedule, memory="offload_cpu",
                  **SETTINGS[variant])
    kwargs.update(overrides)
    if len(models) > 1:
        kwargs["low_noise_model"] = models[1]
    out = comfy.run(node, **kwargs)
    (latent_out, switch_step) = out["result"]
    return latent_out["samples"], switch_step, out["ui"]["wan22duo_switch"][0]


@pytest.mark.parametrize("schedule", ["wan", "simple"])
@pytest.mark.parametrize("variant", ["t2v_a14b", "i2v_a14b", "ti2v_5b"])
def test_model_path_matches_engine_path_with_a_lora_on_each_expert(comfy, files, variant, schedule, record_property):
    ref, ref_switch, _ = run_sampler(comfy, "Wan22DuoSampler", engine_models(comfy, files, variant, 0.8), variant,
                                     schedule)
    got, switch, report = run_sampler(comfy, "Wan22DuoModelSampler", comfy_models(comfy, files, variant, 0.8),
                                      variant, schedule, shift=-1.0)  # -1: official shift, the engine run's value
    err = rel_l2(got, ref)
    record_property("rel_l2", err)
    print(f"\nparity {variant} {schedule}: rel L2 {err:.3e}, switch_step {switch}")
    assert switch == ref_switch and report["switch_step"] == switch
    if variant != "ti2v_5b":
        assert 0 < switch < STEPS, "the run must use both experts"
    assert report["shift"] == SETTINGS[variant]["shift"] and report["shift_source"] == "official"
    assert err <= PARITY
    if variant == "ti2v_5b":  # the kept frame comes back untouched on both paths
        _, _, latent = conditioning(comfy, variant, LATENT[variant])
        assert torch.equal(got[:, :, :1], latent["samples"][:, :, :1])


@pytest.mark.parametrize("variant", ["t2v_a14b", "i2v_a14b", "ti2v_5b"])
def test_one_model_call_matches_the_engine_dit(comfy, files, variant):
    """ComfyExpert(x_in, t, context): the velocity of ComfyUI's model equals our DiT's, I2V channels and
    TI2V per-token timesteps included."""
    adapter = comfy.pack_module("nodes.comfy_model")
    conditioning_module = comfy.pack_module("engine.model.conditioning")
    (engine_handle,) = engine_models(comfy, files, variant, 0.8)[:1]
    (patcher,) = comfy_models(comfy, files, variant, 0.8)[:1]
    expert = adapter.ComfyExpert(patcher, "high_noise", "high_noise_model")
    shape = LATENT[variant]
    expert.prepare(shape, torch.tensor([0.9, 0.5, 0.0]), 0)
    g = torch.Generator().manual_seed(3)
    x_in = torch.randn(shape[0], expert.config.in_dim, *shape[2:], generator=g)
    context = 0.5 * torch.randn(1, 24, 4096, generator=g)
    t = torch.tensor([937.0])
    if variant == "ti2v_5b":
        noise_mask = torch.ones(1, 1, *shape[2:])
        noise_mask[:, :, 0] = 0.0
        t = conditioning_module.token_timesteps(noise_mask, t, 1)
    with torch.no_grad():  # as the loop runs them
        want = engine_handle.acquire("cpu")(x_in, t, context).float()
        got = expert.acquire()(x_in, t, context)
    expert.finish()
    assert got.shape == want.shape and rel_l2(got, want) <= 1e-5


def test_the_loras_change_the_result(comfy, files):
    """Parity with a LoRA means something only if the LoRA does something on the MODEL path."""
    plain, _, _ = run_sampler(comfy, "Wan22DuoModelSampler", comfy_models(comfy, files, "t2v_a14b", 0.0),
                              "t2v_a14b", "wan")
    with_lora, _, _ = run_sampler(comfy, "Wan22DuoModelSampler", comfy_models(comfy, files, "t2v_a14b", 0.8),
                                  "t2v_a14b", "wan")
    assert rel_l2(with_lora, plain) > 100 * PARITY


def test_model_sampling_sd3_shift_is_used_and_reported(comfy, files):
    models = [comfy.run("ModelSamplingSD3", model=m, shift=8.0)[0] for m in comfy_models(comfy, files, "t2v_a14b", 0)]
    got, switch, report = run_sampler(comfy, "Wan22DuoModelSampler", models, "t2v_a14b", "wan", shift=-1.0)
    assert report["shift"] == 8.0 and report["shift_source"] == "ModelSamplingSD3"
    ref, ref_switch, _ = run_sampler(comfy, "Wan22DuoSampler", engine_models(comfy, files, "t2v_a14b", 0),
                                     "t2v_a14b", "wan", shift=8.0)
    assert switch == ref_switch and rel_l2(got, ref) <= PARITY
    # A positive sampler shift overrides the MODEL's and says so in the report.
    _, _, report = run_sampler(comfy, "Wan22DuoModelSampler", models, "t2v_a14b", "wan", shift=12.0)
    assert report["shift"] == 12.0 and report["shift_source"] == "sampler"
    # Experts that disagree cannot share one trajectory.
    low = comfy.run("ModelSamplingSD3", model=models[1], shift=5.0)[0]
    with pytest.raises(ValueError, match="different ModelSamplingSD3 shifts"):
        run_sampler(comfy, "Wan22DuoModelSampler", [models[0], low], "t2v_a14b", "wan", shift=-1.0)


def test_the_model_sees_the_official_integer_timesteps(comfy, files):
    """Under the wan schedule every DiT call gets int(sigma * 1000) exactly (the fed sigma is float64)."""
    (model,) = comfy.run("UNETLoader", unet_name=files["t2v_a14b", "high"][0], weight_dtype="default")
    seen = []

    def wrapper(apply_model, args):
        sampling = model.get_model_object("model_sampling")
        seen.append(sampling.timestep(args["timestep"]).float())  # what _apply_model hands the DiT
        return apply_model(args["input"], args["timestep"], **args["c"])

    model = model.clone()
    model.set_model_unet_function_wrapper(wrapper)
    expected = comfy.pack_module("engine.sampling.schedule").make_schedule("wan", STEPS, 12.0).timesteps.float()
    run_sampler(comfy, "Wan22DuoModelSampler", [model], "t2v_a14b", "wan", switch_step=STEPS)
    # cond and uncond go in one batch (both padded to 512 rows), so each step makes one call of batch 2
    assert [len(s) for s in seen] == [2] * STEPS
    assert torch.equal(torch.cat(seen), expected.repeat_interleave(2))
    assert bool((expected == expected.round()).all())


def test_after_the_switch_only_the_low_noise_expert_is_loaded(comfy, files):
    mm = comfy.model_management
    sampling = comfy.pack_module("engine.sampling.loop")
    adapter = comfy.pack_module("nodes.comfy_model")
    schedule = comfy.pack_module("engine.sampling.schedule")
    pos, neg, latent = conditioning(comfy, "t2v_a14b", LATENT["t2v_a14b"])
    for memory in ("offload_cpu", "release", "keep_both"):
        mm.unload_all_models()
        high_m, low_m = comfy_models(comfy, files, "t2v_a14b", 0.8)
        high = adapter.ComfyExpert(high_m, "high_noise", "high_noise_model")
        low = adapter.ComfyExpert(low_m, "low_noise", "low_noise_model")
        sigmas = schedule.make_schedule("wan", STEPS, 12.0).timesteps / 1000.0
        for expert in (high, low):
            expert.prepare(LATENT["t2v_a14b"], torch.cat([sigmas, sigmas.new_zeros(1)]), 42)
        held = []

        def record(info):
            models = [lm.model for lm in mm.current_loaded_models]
            held.append((info.expert, high_m in models, low_m in models))

        result = sampling.sample(high, low, latent["samples"], pos[0][0], neg[0][0], seed=42, steps=STEPS,
                                 shift=12.0, memory=memory, callback=record)
        for expert in (high, low):
            expert.finish()
        k = result.switch_step
        assert 0 < k < STEPS
        if memory == "keep_both":
            assert held[-1] == ("low", True, True)
            continue
        assert held[:k] == [("high", True, False)] * k, memory
        assert held[k:] == [("low", False, True)] * (STEPS - k), memory
        # After the run both are out of ComfyUI's manager (room for the VAE), as the engine path does.
        assert not high.loaded and not low.loaded


def test_gguf_q8_0_expert_through_unet_loader_gguf(comfy, files, record_property):
    """Q8_0 GGUF experts: exactly their decoded weights (fp32 decoding), close to fp32 (the default loader).

    UnetLoaderGGUF decodes Q8_0 by default as ``fp16 scale * int8`` in fp16, which rounds
    each weight to fp16 on top of the 8-bit quantization; UnetLoaderGGUFAdvanced with
    ``dequant_dtype=float32`` decodes exactly what the file holds.
    """
    safetensors = pytest.importorskip("safetensors.torch")
    names, dequant_names, weight_errors = {}, {}, []
    for role in ("high", "low"):
        dit, _ = files["t2v_a14b", role]
        fp32 = safetensors.load_file(str(comfy.tree.model_path("diffusion_models", dit)))
        gguf_path = comfy.tree.model_path("diffusion_models", dit.replace(".safetensors", "-Q8_0.gguf"))
        decoded = write_q8_gguf(comfy, gguf_path, fp32)
        quantized = [k for k in fp32 if not torch.equal(decoded[k], fp32[k])]
        assert len(quantized) == 2 + 4 + 10 * 2, "every Linear weight is Q8_0 (text 2, time 3, head 1, 10 per block)"
        weight_errors += [rel_l2(decoded[k], fp32[k]) for k in quantized]
        dq_path = comfy.tree.model_path("diffusion_models", dit.replace(".safetensors", "-Q8_0-decoded.safetensors"))
        safetensors.save_file(decoded, str(dq_path))
        names[role], dequant_names[role] = gguf_path.name, dq_path.name

    def run(*args, **kwargs):
        return run_sampler(comfy, "Wan22DuoModelSampler", comfy_models(comfy, files, "t2v_a14b", 0.8, *args, **kwargs),
                           "t2v_a14b", "wan")

    exact_out, _, _ = run("UnetLoaderGGUFAdvanced", names, dequant_dtype="float32", patch_dtype="float32",
                          patch_on_device=False)
    decoded_out, _, _ = run(names=dequant_names)
    gguf_out, gguf_switch, _ = run("UnetLoaderGGUF", names)
    fp32_out, fp32_switch, _ = run()
    weight_err = max(weight_errors)
    exact, quant = rel_l2(exact_out, decoded_out), rel_l2(gguf_out, fp32_out)
    decoded_vs_fp32 = rel_l2(decoded_out, fp32_out)
    for key, value in (("q8_weight_rel_l2_max", weight_err), ("gguf_fp32_decode_vs_decoded", exact),
                       ("gguf_vs_fp32", quant), ("decoded_vs_fp32", decoded_vs_fp32)):
        record_property(key, value)
    print(f"\nQ8_0: weight rel L2 max {weight_err:.3e}; output: fp32-decoded GGUF vs decoded weights {exact:.3e}, "
          f"decoded weights vs fp32 {decoded_vs_fp32:.3e}, UnetLoaderGGUF (default) vs fp32 {quant:.3e}")
    assert gguf_switch == fp32_switch
    assert exact <= PARITY  # the GGUF path runs exactly the weights the file holds
    assert 0 < decoded_vs_fp32 <= 2 * weight_err  # the output moves by about the weights' quantization error
    assert 0 < quant <= 2 * weight_err  # the default fp16 decoding adds little on top


def test_cfg_patches_on_the_model_apply(comfy, files):
    """ComfyUI's CFG hooks run: a post-CFG patch that keeps the conditional estimate turns CFG off."""
    plain_models = comfy_models(comfy, files, "t2v_a14b", 0)
    unguided, _, _ = run_sampler(comfy, "Wan22DuoModelSampler", plain_models, "t2v_a14b", "wan",
                                 cfg_high=1.0, cfg_low=1.0)
    guided, _, _ = run_sampler(comfy, "Wan22DuoModelSampler", plain_models, "t2v_a14b", "wan")
    patched = []
    for model in plain_models:
        model = model.clone()
        model.set_model_sampler_post_cfg_function(lambda args: args["cond_denoised"])
        patched.append(model)
    got, _, _ = run_sampler(comfy, "Wan22DuoModelSampler", patched, "t2v_a14b", "wan")
    assert rel_l2(guided, unguided) > 1e-2  # CFG matters in this setting
    assert rel_l2(got, unguided) <= PARITY  # cond and uncond ran in one batch here, cfg 1 alone


def test_two_lora_clones_of_one_loaded_model_as_the_two_experts(comfy, files):
    """Both experts may share one base model (LoRA clones): ComfyUI's manager swaps the clones at the switch."""
    dit, lora = files["t2v_a14b", "high"]
    (base,) = comfy.run("UNETLoader", unet_name=dit, weight_dtype="default")
    models = [comfy.run("LoraLoaderModelOnly", model=base, lora_name=lora, strength_model=s)[0] for s in (0.8, -0.5)]
    got, switch, _ = run_sampler(comfy, "Wan22DuoModelSampler", models, "t2v_a14b", "wan")
    # Our loaders refuse a role that contradicts the file name, so the engine reference reads the same
    # bytes through a copy named as the low-noise expert.
    path = comfy.tree.models / "diffusion_models" / dit
    as_low = path.with_name(path.name.replace("high_noise", "low_noise_same_bytes"))
    if not as_low.exists():
        shutil.copyfile(path, as_low)
    engine = []
    for name, strength in ((dit, 0.8), (as_low.name, -0.5)):
        (model,) = comfy.run("Wan22DuoExpertLoader", unet_name=name, role="auto", weight_dtype="default",
                             compute_dtype="fp32", device="cpu")
        engine.append(comfy.run("Wan22DuoLoraLoader", model=model, lora_name=lora, strength=strength)[0])
    ref, ref_switch, _ = run_sampler(comfy, "Wan22DuoSampler", engine, "t2v_a14b", "wan")
    assert switch == ref_switch and 0 < switch < STEPS
    assert rel_l2(got, ref) <= PARITY


def test_one_model_in_both_inputs_is_refused_unless_one_expert_runs(comfy, files):
    """The same MODEL (one output, or a clone with the same weights) in both inputs, as Wan22DuoSampler judges it."""
    (model,) = comfy_models(comfy, files, "t2v_a14b", 0)[:1]
    (shifted,) = comfy.run("ModelSamplingSD3", model=model, shift=12.0)  # a clone: same weights, other object
    for low in (model, shifted):
        with pytest.raises(ValueError, match="high_noise_model is connected to both high_noise_model and "
                                             "low_noise_model"):
            run_sampler(comfy, "Wan22DuoModelSampler", [model, low], "t2v_a14b", "wan")
    _, switch, _ = run_sampler(comfy, "Wan22DuoModelSampler", [model, model], "t2v_a14b", "wan", switch_step=STEPS)
    assert switch == STEPS  # one expert on purpose: allowed, as on the engine path


def test_progress_previews_and_cancel_as_in_the_engine_sampler(comfy, files):
    """One bar over both experts with a latent preview per step; Cancel stops between steps."""
    from importlib import import_module

    utils, cli = import_module("comfy.utils"), import_module("comfy.cli_args")
    args, LatentPreviewMethod = cli.args, cli.LatentPreviewMethod
    calls = []
    before = args.preview_method
    args.preview_method = LatentPreviewMethod.Latent2RGB
    utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None:
                                             calls.append((value, total, preview is not None)))
    try:
        run_sampler(comfy, "Wan22DuoModelSampler", comfy_models(comfy, files, "t2v_a14b", 0), "t2v_a14b", "wan")
        assert calls == [(i, STEPS, True) for i in range(1, STEPS + 1)]
        comfy.model_management.interrupt_current_processing(True)
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            run_sampler(comfy, "Wan22DuoModelSampler", comfy_models(comfy, files, "t2v_a14b", 0), "t2v_a14b", "wan")
    finally:
        comfy.model_management.interrupt_current_processing(False)
        utils.set_progress_bar_global_hook(None)
        args.preview_method = before


def test_committed_gguf_schema_is_the_live_node(comfy):
    """workflows/schema/comfyui-gguf-nodes.json (used by the workflow tests) says what ComfyUI-GGUF declares."""
    import json

    committed = json.loads((comfy.tree.pack / "workflows" / "schema" / "comfyui-gguf-nodes.json").read_text())
    for name, info in committed.items():
        cls = comfy.node(name)
        live = cls.INPUT_TYPES()
        assert info["input_order"] == {k: list(v) for k, v in live.items()}
        for section, inputs in live.items():
            for key, spec in inputs.items():
                got = info["input"][section][key]
                if isinstance(spec[0], list):  # the file list is install-specific
                    assert got[0] == [] and list(got[1:]) == list(spec[1:])
                else:
                    assert list(got) == list(spec)
        assert info["output"] == list(cls.RETURN_TYPES) and info["output_name"] == list(cls.RETURN_TYPES)
        assert info["display_name"] == cls.TITLE and info["category"] == cls.CATEGORY


# ---------------------------------------------------------------- a tiny Q8_0 GGUF, city96's layout

def write_q8_gguf(comfy, path, state_dict: dict) -> dict:
    """Write ``state_dict`` as a Q8_0 GGUF in city96's layout (the pack's ``engine.testing.tiny_gguf`` rules); return
    what each tensor decodes to by ``gguf``'s own numpy reference.

    The 5-D patch embedding is flattened to 2-D and kept in F32 with its real shape in
    ``comfy.gguf.orig_shape.<name>``, so only the Linear weights carry quantization error.
    """
    import gguf
    import numpy as np

    tiny_gguf = comfy.pack_module("engine.testing.tiny_gguf")
    tensors, shapes, decoded = {}, {}, {}
    for key, tensor in state_dict.items():
        data = tensor.float().numpy()
        kind = tiny_gguf.city96_type(key, data.shape, "Q8_0")
        if data.ndim > 4:
            shapes[key], data, kind = data.shape, data.reshape(data.shape[0], -1), "F32"
        encoded = tiny_gguf.encode(np.ascontiguousarray(data), kind, np.random.default_rng(0))
        tensors[key] = (encoded, kind)
        back = gguf.quants.dequantize(encoded, gguf.GGMLQuantizationType[kind]).reshape(tensor.shape)
        decoded[key] = torch.from_numpy(np.ascontiguousarray(back, dtype=np.float32))
    tiny_gguf.write_gguf(path, tensors, shapes=shapes)
    return decoded


@pytest.mark.parametrize("variant", ["t2v_a14b", "i2v_a14b", "ti2v_5b"])
def test_context_windows_give_the_same_result_on_the_model_path_and_the_engine_path(comfy, files, variant,
                                                                                     record_property):
    """Wan22DuoContextWindows on both samplers (7 latent frames in windows of 3, overlap 1, uniform, anchor,
    FreeNoise): the windows run in the one loop either way, so the MODEL path matches the engine path."""
    (windows,) = comfy.run("Wan22DuoContextWindows", context_length=9, context_overlap=4, schedule="uniform",
                           fuse="pyramid", causal_anchor=True, freenoise=True)
    shape = LATENT[variant][:2] + (7,) + LATENT[variant][3:]
    outs = []
    for node, models, extra in (("Wan22DuoSampler", engine_models(comfy, files, variant, 0.8), {}),
                                ("Wan22DuoModelSampler", comfy_models(comfy, files, variant, 0.8), {"shift": -1.0})):
        pos, neg, latent = conditioning(comfy, variant, shape)
        kwargs = dict(high_noise_model=models[0], positive=pos, negative=neg, latent=latent, seed=42, steps=STEPS,
                      boundary=-1.0, switch_step=-1, sampler="unipc", scheduler="wan", memory="offload_cpu",
                      context_windows=windows, **{**SETTINGS[variant], **extra})
        if len(models) > 1:
            kwargs["low_noise_model"] = models[1]
        out = comfy.run(node, **kwargs)
        report = out["ui"]["wan22duo_switch"][0]
        assert report["context_windows"]["windows_step_1"] == [[0, 3], [2, 5], [4, 7]], report["context_windows"]
        outs.append(out["result"][0]["samples"])
    err = rel_l2(outs[1], outs[0])
    record_property("rel_l2", err)
    print(f"\ncontext windows {variant}: MODEL path vs engine path rel L2 {err:.3e}")
    assert err <= PARITY
    assert outs[0].shape[2] == 7
