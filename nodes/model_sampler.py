"""``Wan22DuoModelSampler``: the dual-expert sampler on ComfyUI's own MODEL inputs.

A sibling of ``Wan22DuoSampler`` rather than a union input on it, because a ComfyUI
input has one socket type and the two model kinds differ in what the node's inputs
mean: memory goes through ComfyUI's manager (``release`` cannot drop a RAM copy the
loader node caches), the shift may come from a ``ModelSamplingSD3`` on the MODEL
(``shift`` -1), and the web plot must follow MODEL patch chains. Existing workflows
with ``WAN22DUO_MODEL`` keep their node and meaning untouched.

Both nodes run the same loop, ``engine.sampling.loop.sample``; only the model handle differs
(``nodes.comfy_model.ComfyExpert``). Here the loop runs inside the sampler-level wrappers of
the experts that run a step (``nodes.comfy_wrappers.run_wrapped``), with the seeded noise as
their SAMPLER_SAMPLE wrappers leave it; wrappers that cannot act exactly as in a KSampler are
named in the log and in the report's ``patch_notes``. The CONDITIONING/LATENT translation,
progress bar, previews and Cancel are the helpers of ``nodes.samplers``.
"""
from __future__ import annotations

import logging

from . import _comfy
from .inputs import comfy_model, latent as checked_latent
from .comfy_model import OFFICIAL_SHIFT, ComfyExpert, ComfyModelError, resolve_shift, shift_conflicts
from .comfy_wrappers import inexact_notes, run_wrapped
from .samplers import SAMPLER_TIPS, _cancel_check, i2v_conditioning, sampler_inputs, text_context
from .speed import comfy_phases, speed_inputs
from .context_windows import checked_windows, refuse_model_windows, window_inputs

log = logging.getLogger("wan22duo")

MODEL_TIPS = {
    **SAMPLER_TIPS,
    "high_noise_model": "The high-noise expert as a ComfyUI MODEL (UNETLoader, UnetLoaderGGUF, through any LoRA "
                        "or patch nodes), or the TI2V-5B model.",
    "low_noise_model": "The low-noise expert of the same A14B model as a ComfyUI MODEL. Leave empty for TI2V-5B.",
    "latent": "Starting latent: EmptyHunyuanLatentVideo / Wan22DuoEmptyLatent (T2V), the latent of WanImageToVideo "
              "or Wan22DuoI2VConditioning (I2V), Wan22ImageToVideoLatent or Wan22DuoTI2VLatent (TI2V-5B).",
    "shift": "Flow-matching sigma shift. -1: the shift of a ModelSamplingSD3 on the MODELs (both experts must agree), "
             "else the official one (12.0 T2V-A14B, 5.0 I2V-A14B and TI2V-5B). A positive value is used as is and "
             "overrides any ModelSamplingSD3 (a warning names it). The switch report shows the shift used.",
    "memory": "offload_cpu / release: before an expert runs, the other one is unloaded from ComfyUI's model manager "
              "(weights back to RAM; ComfyUI caches the loader's copy there, so release cannot drop it). keep_both: "
              "leave both to ComfyUI's manager (fastest when both fit).",
}


class Wan22DuoModelSampler:
    CATEGORY = "Wan22Duo/sampling"
    DESCRIPTION = (
        "Wan22DuoSampler for ComfyUI's own MODEL inputs (UNETLoader, UnetLoaderGGUF, LoRA and patch chains): the "
        "high-noise expert for the leading steps, the low-noise expert for the rest, switched by the official "
        "boundary rule on one continuous trajectory with per-expert CFG. Every model call goes through ComfyUI's "
        "own path, so LoRAs, patches, wrappers and GGUF/fp8 weights apply as in a KSampler; memory goes through "
        "ComfyUI's model manager. For TI2V-5B connect the model to high_noise_model only."
    )
    RETURN_TYPES = ("LATENT", "INT")
    RETURN_NAMES = ("latent", "switch_step")
    OUTPUT_TOOLTIPS = (
        "The denoised latent; decode it with VAEDecode (or Wan22DuoVAEDecode).",
        "Steps [0, switch_step) ran on the high-noise expert (equals steps for TI2V-5B).",
    )
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        inputs = sampler_inputs("MODEL", MODEL_TIPS, {"default": -1.0, "min": -1.0})
        inputs["optional"].update(speed_inputs())
        inputs["optional"].update(window_inputs())
        return inputs

    def sample(self, high_noise_model, positive, negative, latent: dict, seed: int, steps: int = 40,
               cfg_high: float = 4.0, cfg_low: float = 3.0, shift: float = -1.0, boundary: float = -1.0,
               switch_step: int = -1, sampler: str = "unipc", scheduler: str = "wan", memory: str = "offload_cpu",
               low_noise_model=None, step_cache=None, lead_phases=None, context_windows=None):
        from ..engine.sampling.loop import check_settings, make_noise, model_shape, plan_switch, sample

        comfy_model(high_noise_model, "high_noise_model")
        if low_noise_model is not None:
            comfy_model(low_noise_model, "low_noise_model")
        pos, pos_options = text_context(positive, "positive")
        neg, neg_options = text_context(negative, "negative")
        samples = checked_latent(latent)["samples"].cpu()
        noise_mask = latent.get("noise_mask")
        high = ComfyExpert(high_noise_model, "high_noise", "high_noise_model")
        low = None if low_noise_model is None else ComfyExpert(low_noise_model, "low_noise", "low_noise_model")
        variant = high.info["variant"]
        carried = high.info["shift"], (low.info["shift"] if low is not None else None)
        used, source = resolve_shift(shift, variant, *carried)
        overridden = shift_conflicts(used, *carried)
        if overridden:
            log.warning("Wan22DuoModelSampler: shift %g from the sampler overrides the ModelSamplingSD3 shift of %s",
                        used, ", ".join(overridden))
        log.info("Wan22DuoModelSampler: shift %g (%s; official %g)", used, source, OFFICIAL_SHIFT[variant])
        lead = comfy_phases(lead_phases, used)  # leading phases' MODELs as ComfyExperts
        windows = checked_windows(context_windows, "Wan22DuoModelSampler")
        if windows is not None:
            refuse_model_windows([("high_noise_model", high_noise_model), ("low_noise_model", low_noise_model)] +
                                 [(f"lead phase {n}", p.model.patcher) for n, p in enumerate(lead, 1)])
        experts = [e for e in (high, low) if e is not None] + [phase.model for phase in lead]
        timesteps = _timesteps(scheduler, steps, used, source)
        check_settings(cfg_high=cfg_high, cfg_low=cfg_low, shift=used, boundary=None if boundary < 0 else boundary)
        plan = plan_switch(variant, low, steps, used, None if boundary < 0 else boundary, switch_step, scheduler)
        # The experts that run a step, in the order they run (leading phases, then the high- and low-noise
        # experts), with their steps [first, end): their sampler-level wrappers wrap the loop in that order.
        running = [(e, a, b) for e, a, b in _spans(lead, high, low, plan.switch_step, steps) if e is not None and b > a]
        progress = _comfy.Progress(steps, latent_channels=samples.shape[1])
        notes: list[str] = []
        try:
            for expert in experts:
                multiplier = float(getattr(expert.patcher.get_model_object("model_sampling"), "multiplier", 1000.0))
                sigmas = timesteps / multiplier  # what the model is fed
                # ComfyUI's loader sizes its room for the largest latent one model call sees (one window)
                expert.prepare(model_shape(samples.shape, windows), _with_zero(sigmas), seed)
            for expert, _, _ in running:
                notes += inexact_notes(expert.input_name, expert.guider.model_options)
            for note in notes:
                log.warning("Wan22DuoModelSampler: %s", note)

            def loop(noise):
                return sample(
                    high, low, samples, pos, neg,
                    seed=seed, steps=steps, cfg_high=cfg_high, cfg_low=cfg_low, shift=used,
                    boundary=None if boundary < 0 else boundary, switch_step=switch_step,
                    solver=sampler, schedule=scheduler, memory=memory, noise=noise,
                    noise_mask=None if noise_mask is None else noise_mask.cpu(),
                    i2v=i2v_conditioning(pos_options, neg_options),
                    callback=lambda info: progress(info.step, info.x0), cancel=_cancel_check(),
                    lead=lead, step_cache=step_cache, windows=windows,
                )

            # Each expert's wrappers see the sigmas its own KSamplerAdvanced would get.
            segments = [(e, e.sample_sigmas[a:b + 1]) for e, a, b in running]
            result = run_wrapped(segments, make_noise(seed, samples.shape), samples, seed, loop)
        finally:
            for expert in reversed(experts):  # one patcher in both inputs gets its own hook mode back last
                expert.finish()
        out = {**latent, "samples": result.latent.to(_comfy.intermediate_device())}
        report = {**result.switch_info(), "shift": used, "shift_source": source, "patch_notes": notes}
        return {"ui": {"wan22duo_switch": [report]}, "result": (out, result.switch_step)}


def _spans(lead, high, low, switch_step: int, steps: int) -> list:
    """``(expert, first step, end)`` of the leading phases, the high- and the low-noise expert, in run order."""
    spans, start = [], 0
    for phase in lead:
        spans.append((phase.model, start, start + phase.steps))
        start += phase.steps
    return spans + [(high, start, switch_step), (low, switch_step, steps)]


def _timesteps(scheduler: str, steps: int, shift: float, source: str):
    """The run's model timesteps; a shift that degenerates the schedule is named with where it came from."""
    from ..engine.sampling.schedule import make_schedule

    try:
        return make_schedule(scheduler, steps, shift).timesteps
    except ValueError as err:
        origin = {"sampler": "this sampler's shift input", "official": "the official shift"}.get(source, f"the {source}")
        raise ComfyModelError(f"{err} The shift {shift:g} came from {origin}.") from None


def _with_zero(sigmas):
    import torch

    return torch.cat([sigmas, sigmas.new_zeros(1)])


NODE_CLASS_MAPPINGS = {"Wan22DuoModelSampler": Wan22DuoModelSampler}
NODE_DISPLAY_NAME_MAPPINGS = {"Wan22DuoModelSampler": "Wan 2.2 Duo Sampler (ComfyUI MODEL inputs)"}
