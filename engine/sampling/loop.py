"""The dual-expert sampling loop: one trajectory, the official switch, one expert in memory.

``sample()`` runs every Wan 2.2 task through one loop (spec §1.3, §3, §5):

* one sigma schedule and one solver object for the whole run. The high-noise expert
  runs the leading steps whose model timestep is at least ``boundary * 1000`` (or the
  first ``switch_step`` steps), then the low-noise expert continues from the very
  latent the last high step produced, with the solver's multistep history intact;
  nothing is re-noised or fully denoised at the switch;
* classifier-free guidance per expert, ``v = v_u + cfg * (v_c - v_u)``; cfg 1 skips the
  unconditional pass. Conditional and unconditional passes run separately (as the
  official code does), so the two contexts may have different lengths;
* T2V; I2V-A14B (``[x, mask, image latent]`` channel concat, ``i2v=``); TI2V-5B text- or
  image-to-video (``noise_mask=``: kept cells get timestep 0 and are written back after
  every step);
* memory through ``engine.memory.residency``: by default only the expert that runs sits on
  the compute device;
* optional leading phases (``engine.sampling.phases``): more models that run the first
  steps, each with its own cfg, before the high-noise expert, on the same schedule;
* optional step caching (``engine.sampling.step_cache``): per stage, a step whose output
  the run predicts to barely change reuses the last output change instead of a model call;
* optional context windows (``engine.sampling.context_windows``): the model call of every
  step runs on overlapping windows of latent frames whose velocities are fused, for videos
  longer than the model's clip; the solver steps the whole latent.

Latents come in and go out *raw* (as the VAE makes them, ComfyUI's LATENT "samples");
the loop works on normalised latents. Noise is drawn on CPU from ``seed`` exactly as
ComfyUI's KSampler does, so a seed means the same noise here and there.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional, Sequence

import torch

from ..model.conditioning import I2VConditioning, hold, noise_mask_for, token_timesteps
from ..errors import public
from .guidance import batched_guidance_enabled, batched_passes, prefer_two_passes
from ..model.latents import denormalize, normalize
from ..model.ops import first_non_finite
from ..memory.estimates import activation_bytes
from ..memory.residency import MEMORY_POLICIES, DeviceLike, ModelHandle, Residency
from ..memory.streaming import Budget
from .phases import Phase, Stage, check_lead_steps, lead_role, stages
from .step_cache import MIN_STEPS, CacheRun, StepCache
from .context_windows import TI2V_WARNING, ContextWindows
from .schedule import Schedule, make_schedule, resolve_switch_step
from .solvers import SOLVERS, make_solver

log = logging.getLogger(__name__)

VARIANTS = ("t2v_a14b", "i2v_a14b", "ti2v_5b")
TEXT_DIM = 4096  # umT5-XXL hidden size


@dataclass(frozen=True)
class Preset:
    """Official inference defaults of one model (OFF ``wan/configs``, spec §1.2)."""

    steps: int
    shift: float
    cfg_high: float
    cfg_low: float
    boundary: Optional[float]  # None: single model, no switch


OFFICIAL = {
    "t2v_a14b": Preset(steps=40, shift=12.0, cfg_high=4.0, cfg_low=3.0, boundary=0.875),
    "i2v_a14b": Preset(steps=40, shift=5.0, cfg_high=3.5, cfg_low=3.5, boundary=0.900),
    "ti2v_5b": Preset(steps=50, shift=5.0, cfg_high=5.0, cfg_low=5.0, boundary=None),
}


@public
class SamplingError(ValueError):
    """Inputs that disagree with each other or with the model; the message says how to fix it."""


@public
class SamplingCancelled(RuntimeError):
    """Raised between steps when the ``cancel`` check asks to stop."""


@dataclass
class StepInfo:
    """What the progress callback gets after each step (tensors are normalised latents)."""

    step: int  # index of the step just finished, 0-based
    total: int
    expert: str  # "high" or "low" ("lead1", "lead2", ... for leading phases)
    sigma: float
    timestep: float
    latent: torch.Tensor  # x after this step
    x0: torch.Tensor  # the data estimate this step's model call made


@dataclass
class SampleResult:
    """The final raw latent and how the run was routed."""

    latent: torch.Tensor  # raw (un-normalised) latent on CPU, float32
    switch_step: int  # steps [0, switch_step) ran on the high-noise expert
    boundary: Optional[float]
    schedule: Schedule
    solver: str
    variant: str
    expert_steps: dict = field(default_factory=dict)
    stages: list = field(default_factory=list)  # [{"role", "start", "stop", "cfg"}], in step order
    cache: Optional[dict] = None  # the step cache's report (step_cache.CacheRun.report), None without a cache
    windows: Optional[dict] = None  # context windows used (settings, windows of step 1), None when off or inactive

    @property
    def steps(self) -> int:
        return self.schedule.steps

    def switch_info(self) -> dict:
        """JSON-ready summary for the UI: switch step, boundary, sigmas and timesteps; with leading phases
        or a step cache also the stages and which steps reused the cache."""
        info = {
            "switch_step": self.switch_step,
            "steps": self.steps,
            "boundary": self.boundary,
            "sigmas": [float(s) for s in self.schedule.sigmas],
            "timesteps": [float(t) for t in self.schedule.timesteps],
        }
        if len(self.stages) > 2 or any(s["role"].startswith("lead") for s in self.stages):
            info["stages"] = self.stages
        if self.cache is not None:
            info["cache"] = self.cache
        if self.windows is not None:
            info["context_windows"] = self.windows
        return info


@dataclass(frozen=True)
class SwitchPlan:
    variant: str
    schedule: Schedule
    switch_step: int
    boundary: Optional[float]
    lead_steps: tuple = ()  # steps of each leading phase (engine.sampling.phases), in order

    @property
    def stages(self) -> tuple[Stage, ...]:
        return stages(self.schedule.steps, self.switch_step, self.lead_steps)

    def role(self, i: int) -> str:
        start = 0
        for n, count in enumerate(self.lead_steps, 1):
            if i < start + count:
                return lead_role(n)
            start += count
        return "high" if i < self.switch_step else "low"


# ----------------------------------------------------------------- validation


def model_variant(handle: ModelHandle) -> str:
    """``"t2v_a14b" | "i2v_a14b" | "ti2v_5b"`` from the handle's config (or its shapes)."""
    config = handle.config
    variant = getattr(config, "variant", None) or handle.info.get("variant")
    if variant is None and config is not None:
        in_dim, out_dim = getattr(config, "in_dim", None), getattr(config, "out_dim", None)
        variant = "ti2v_5b" if out_dim == 48 else "i2v_a14b" if in_dim == 36 else "t2v_a14b"
    if variant not in VARIANTS:
        raise SamplingError(f"{handle.name}: unknown model variant {variant!r}; expected one of {VARIANTS}")
    return variant


def _check_experts(high: ModelHandle, low: Optional[ModelHandle]) -> str:
    variant = model_variant(high)
    if low is None:
        return variant
    if variant == "ti2v_5b":
        raise SamplingError(
            "TI2V-5B is a single model, but a low_noise_model was connected too. Disconnect low_noise_model "
            "(TI2V-5B runs every step on the model connected to high_noise_model)."
        )
    low_variant = model_variant(low)
    if low_variant != variant:
        raise SamplingError(
            f"the experts come from different models: high_noise_model is {variant}, low_noise_model is "
            f"{low_variant}. Load the high- and low-noise files of the same model (both T2V-A14B or both I2V-A14B)."
        )
    return variant


def check_wiring(plan: SwitchPlan, high: ModelHandle, low: Optional[ModelHandle]) -> None:
    """Refuse experts wired so that a step would run on the wrong one.

    Only experts that run at least one step are judged, so a deliberate single-expert
    run (``switch_step`` 0 or ``steps``, the other input connected to anything) passes.
    Errors: the same model (one handle, or one file with the same LoRAs) in both inputs,
    and an expert whose role (from its loader: the file name or an explicit ``role``) is
    the other input's. One file under two different LoRA chains only warns: a base model
    run in both roles with different LoRAs can be deliberate. Handles without a role (a
    foreign model source) are not judged by role.
    """
    if low is None or plan.boundary is None:
        return
    steps, k = plan.schedule.steps, plan.switch_step
    runs_high, runs_low = k > 0, k < steps
    same = _same_model(high, low) if runs_high and runs_low else None
    if same == "file":
        log.warning("%s and %s load the same file with different LoRAs, so one base model runs in both roles; if "
                    "that is not intended, load the high-noise file in one loader and the low-noise file in the other",
                    high.name, low.name)
    if same == "model":
        loader = high.info.get("loader", "Wan22DuoExpertLoader")
        raise SamplingError(
            f"{high.name} is connected to both high_noise_model and low_noise_model, so one model would run in "
            f"both roles (steps 1-{k} and {k + 1}-{steps}). Load the high-noise file in one {loader} and "
            f"the low-noise file in another. To run one model on purpose, set switch_step to {steps} "
            "(high_noise_model only) or 0 (low_noise_model only)."
        )
    high_role, low_role = high.info.get("role"), low.info.get("role")
    if high_role == "low_noise" and low_role == "high_noise":
        raise SamplingError(
            f"the experts look swapped: {high.name} (a low-noise expert) is connected to high_noise_model and "
            f"{low.name} (a high-noise expert) to low_noise_model. Swap the two connections."
        )
    for slot, handle, role, runs, span in (("high_noise_model", high, high_role, runs_high, f"1-{k}"),
                                           ("low_noise_model", low, low_role, runs_low, f"{k + 1}-{steps}")):
        wanted = slot[: -len("_model")]
        if runs and role in ("high_noise", "low_noise") and role != wanted:
            raise SamplingError(
                f"{handle.name} is a {role.replace('_', '-')} expert but is connected to {slot}, which runs steps "
                f"{span} of {steps}. Connect the {wanted.replace('_', '-')} expert there (its file name says "
                f"{wanted}), or set the loader's role if the file is misnamed."
            )


def _same_model(a: ModelHandle, b: ModelHandle) -> Optional[str]:
    """"model": one handle, or one file with the same LoRAs (a LoRA-derived handle keeps its base file's
    path); "file": one file under different LoRA chains (possibly deliberate); None otherwise. A handle with a
    ``shares_weights(other)`` method answers for itself (same values)."""
    if a is b:
        return "model"
    shares = getattr(a, "shares_weights", None)  # handles over a foreign model (ComfyUI's MODEL) judge it themselves
    if shares is not None:
        return shares(b)
    path_a, path_b = a.info.get("path"), b.info.get("path")
    if path_a is None or path_a != path_b:
        return None
    return "model" if tuple(a.info.get("loras", ())) == tuple(b.info.get("loras", ())) else "file"


def check_settings(**settings: Optional[float]) -> None:
    """NaN/inf passes ComfyUI's min/max checks (every comparison with NaN is False); stop it here."""
    for name, value in settings.items():
        if value is not None and not math.isfinite(float(value)):
            raise SamplingError(f"{name} is {float(value)}; it must be a finite number. Reset it on the sampler "
                                "node (the official values are in its tooltip).")


def _check_latent(latent: torch.Tensor, high: ModelHandle, variant: str, i2v: Any, noise_mask: Any) -> None:
    if latent.ndim != 5:
        raise SamplingError(f"expected a video latent [B, C, T, H, W], got shape {tuple(latent.shape)}")
    _, channels, frames, height, width = latent.shape
    config = high.config
    in_dim = getattr(config, "in_dim", None)
    out_dim = getattr(config, "out_dim", channels)
    if variant == "i2v_a14b" and i2v is None:
        raise SamplingError(
            "I2V-A14B needs a start image: feed positive/negative/latent from Wan22DuoI2VConditioning "
            "(or ComfyUI's WanImageToVideo), which add the image latent and mask."
        )
    if variant != "i2v_a14b" and i2v is not None:
        raise SamplingError(
            f"image conditioning (concat_latent_image) was given to a {variant} model, which takes no image "
            "channels. Use the I2V-A14B experts, or drop the I2V conditioning node (Wan22DuoI2VConditioning, "
            "Wan22DuoI2VKeyframes, Wan22DuoI2VExtend or WanImageToVideo / WanFirstLastFrameToVideo)."
        )
    if noise_mask is not None and variant != "ti2v_5b":
        raise SamplingError(
            f"the latent carries a noise_mask, which only TI2V-5B uses (to keep its start, end or overlap "
            f"frames: Wan22DuoTI2VLatent, Wan22DuoTI2VKeyframes, Wan22DuoTI2VExtend); a "
            f"{variant} model cannot honour it. For I2V-A14B use Wan22DuoI2VConditioning; otherwise start "
            "from an empty latent."
        )
    extra = 20 if i2v is not None else 0
    if in_dim is not None and channels + extra != in_dim:
        hint = "TI2V-5B takes 48-channel Wan 2.2 VAE latents" if in_dim == 48 else (
            "the A14B experts take 16-channel Wan 2.1 VAE latents")
        raise SamplingError(
            f"the latent has {channels} channels{' (+20 image channels)' if extra else ''} but {high.name} "
            f"expects {in_dim} input channels ({variant}); {hint}. Make the latent with the node for this model."
        )
    if out_dim != channels:
        raise SamplingError(f"{high.name} outputs {out_dim} channels but the latent has {channels}")
    if frames < 1 or height % 2 or width % 2:
        raise SamplingError(
            f"latent frames x height x width = {frames} x {height} x {width}: height and width must be even "
            "(the DiT patches 2x2 latent cells); make the latent with the matching empty-latent node."
        )


def _check_context(name: str, context: torch.Tensor, batch: int, text_dim: int) -> torch.Tensor:
    if not isinstance(context, torch.Tensor) or context.ndim != 3:
        shape = tuple(context.shape) if isinstance(context, torch.Tensor) else type(context).__name__
        raise SamplingError(f"{name} must be umT5 hidden states [B, L, {text_dim}], got {shape}")
    if context.shape[-1] != text_dim:
        raise SamplingError(
            f"{name} has width {context.shape[-1]} but the model's text_dim is {text_dim}: encode the prompt "
            "with the umT5-XXL text encoder (CLIPLoader type 'wan')."
        )
    if context.shape[0] not in (1, batch):
        raise SamplingError(f"{name} has batch {context.shape[0]} but the latent has batch {batch}; use 1 or {batch}")
    if context.shape[1] == 0:
        raise SamplingError(
            f"{name} has no tokens (shape {list(context.shape)}), so cross-attention would attend to nothing; "
            "encode a prompt with CLIPTextEncode (CLIPLoader type 'wan'), which gives at least one token even "
            "for an empty prompt."
        )
    _check_finite(name, context, "the text encoder produced them: check the umT5 file and its dtype "
                  "(umt5_xxl_fp16 or umt5_xxl_fp8_e4m3fn_scaled with CLIPLoader type 'wan')")
    return context.expand(batch, -1, -1)


def _check_finite(name: str, tensor: torch.Tensor, cause: str) -> None:
    """Non-finite inputs would end in a silently black video; stop with the culprit named."""
    bad = int((~torch.isfinite(tensor)).sum())
    if bad:
        raise SamplingError(f"{name} holds {bad} NaN/inf values of {tensor.numel()}; {cause}.")


def plan_switch(variant: str, low: Optional[ModelHandle], steps: int, shift: float, boundary: Optional[float],
                switch_step: int, schedule: str) -> SwitchPlan:
    """The schedule and the step where the low-noise expert takes over, as ``sample`` runs it.

    ``boundary`` None or negative means the variant's official boundary. The web
    extension's test vectors are generated from this function, so the plot on the
    node and the run always agree.
    """
    sched = make_schedule(schedule, steps, shift)
    default = OFFICIAL[variant].boundary
    if variant == "ti2v_5b":
        if switch_step not in (-1, steps):
            raise SamplingError(f"TI2V-5B is a single model and has no switch; set switch_step to -1 (got {switch_step})")
        return SwitchPlan(variant, sched, steps, None)
    if boundary is None or boundary < 0:
        boundary = default
    k = resolve_switch_step(sched.timesteps, boundary, switch_step)
    if k < steps and low is None:
        raise SamplingError(
            f"steps {k + 1}-{steps} of {steps} need the low-noise expert (boundary {boundary} hands over after "
            f"step {k}), but no low_noise_model is connected. Connect the low-noise expert, or set switch_step "
            f"to {steps} to run every step on the high-noise expert."
        )
    return SwitchPlan(variant, sched, k, boundary)


def with_leads(plan: SwitchPlan, lead_steps: Sequence[int]) -> SwitchPlan:
    """``plan`` with leading phases of ``lead_steps`` steps in front of the high-noise expert."""
    lead_steps = tuple(lead_steps)
    problem = check_lead_steps(lead_steps, plan.switch_step, plan.schedule.steps)
    if problem:
        raise SamplingError(problem)
    return replace(plan, lead_steps=lead_steps)


def describe_plan(plan: SwitchPlan, solver: str) -> str:
    """One line for the log, counting steps from 1 as the web plot's caption does."""
    n, k = plan.schedule.steps, plan.switch_step
    head = f"{n} steps ({solver}, {plan.schedule.name} schedule, shift {plan.schedule.shift:g})"
    if plan.lead_steps:
        leads = ", ".join(f"{s.role} steps {s.start + 1}-{s.stop}" for s in plan.stages if s.role.startswith("lead"))
        head = f"{head}: {leads}"
    if plan.boundary is None:
        return f"{head}: TI2V-5B, single model, steps 1-{n}"
    high = f"high-noise steps 1-{k}" if k else "no high-noise steps"
    low = f"low-noise steps {k + 1}-{n}" if k < n else "no low-noise steps"
    return f"{head}: {high}, {low} (boundary {plan.boundary})"


# ---------------------------------------------------------------------- noise


def make_noise(seed: int, shape: Sequence[int]) -> torch.Tensor:
    """ComfyUI's KSampler noise for ``seed``: ``randn(shape)`` on CPU from ``manual_seed(seed)``.

    A private generator seeded the same way as ``torch.manual_seed(seed)`` yields the
    same numbers without touching the global RNG.
    """
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32, device="cpu")


# ----------------------------------------------------------------------- loop


def guided_velocity(model: Callable, x_in: torch.Tensor, t: torch.Tensor, positive: torch.Tensor,
                    negative: torch.Tensor, cfg: float) -> torch.Tensor:
    """CFG on the velocity: ``v_u + cfg * (v_c - v_u)``; one pass when ``cfg == 1``.

    A model with its own ``guided_velocity`` (a ComfyUI MODEL, whose CFG patches must
    run as in a KSampler) does the guidance itself and returns the same quantity.
    Otherwise the two passes run as one forward of twice the batch when
    ``engine.sampling.guidance`` allows it (equal-length contexts, memory permitting), else one
    after the other.
    """
    own = getattr(model, "guided_velocity", None)
    if own is not None:
        return own(x_in, t, positive, negative, cfg).float()
    if cfg != 1.0:
        both = batched_passes(model, x_in, t, positive, negative)
        if both is not None:
            v_cond, v_uncond = both
            return v_uncond + cfg * (v_cond - v_uncond)
    v_cond = model(x_in, t, positive).float()
    if cfg == 1.0:
        return v_cond
    v_uncond = model(x_in, t, negative).float()
    return v_uncond + cfg * (v_cond - v_uncond)


def sample(
    high: ModelHandle,
    low: Optional[ModelHandle],
    latent: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    *,
    seed: int,
    steps: int = 40,
    cfg_high: float = 4.0,
    cfg_low: float = 3.0,
    shift: float = 12.0,
    boundary: Optional[float] = None,
    switch_step: int = -1,
    solver: str = "unipc",
    schedule: str = "wan",
    memory: str = "offload_cpu",
    budget: Any = "auto",
    noise_mask: Optional[torch.Tensor] = None,
    i2v: Optional[I2VConditioning] = None,
    placement: Optional[tuple[Optional[DeviceLike], Optional[DeviceLike]]] = None,
    noise: Optional[torch.Tensor] = None,
    callback: Optional[Callable[[StepInfo], None]] = None,
    cancel: Optional[Callable[[], bool]] = None,
    lead: Sequence[Phase] = (),
    step_cache: Optional[StepCache] = None,
    windows: Optional[ContextWindows] = None,
) -> SampleResult:
    """Denoise ``latent`` (raw ``[B, C, T, h, w]``) with the high- then low-noise expert.

    ``boundary``: None or negative uses the model's official value (0.875 T2V-A14B,
    0.900 I2V-A14B). ``switch_step``: -1 applies the boundary, else the step index
    where the low-noise expert takes over (0..steps). For TI2V-5B pass its handle as
    ``high``, ``low=None``; ``cfg_high`` applies to every step. ``noise_mask`` (TI2V,
    1 = generate, 0 = keep the latent there) and ``i2v`` (I2V-A14B) carry the image.
    ``placement=(device_high, device_low)`` overrides the handles' compute devices.
    ``noise`` replaces the seeded noise (same shape as ``latent``). ``callback`` gets a
    :class:`StepInfo` after every step; ``cancel()`` is checked before every step and a
    true result raises :class:`SamplingCancelled`.
    ``budget``: the device memory each expert's weights may use (``"auto"``: what the
    device has free minus this run's activation estimate; a number of GB; None: no
    limit); an expert larger than it is streamed block by block (``engine.memory.streaming``).
    A ``streaming.Budget`` may be passed instead of a spec (tests pass a counting link).
    ``lead``: leading phases (``phases.Phase``: a model handle, its cfg, its step count)
    that run the first steps, in order, before ``high``; together they must end at or
    before the switch. ``step_cache``: a ``step_cache.StepCache`` to reuse steps (None:
    every step runs); the result's ``cache`` says which steps were reused. ``windows``: a
    ``context_windows.ContextWindows`` to run each model call on overlapping windows of latent
    frames (None, or a latent no longer than one window: the whole latent at once); it also
    applies FreeNoise to the noise (seeded or given) when that is on.
    """
    if solver not in SOLVERS:
        raise SamplingError(f"unknown sampler {solver!r}; expected one of {SOLVERS}")
    if memory not in MEMORY_POLICIES:
        raise SamplingError(f"unknown memory policy {memory!r}; expected one of {MEMORY_POLICIES}")
    check_settings(cfg_high=cfg_high, cfg_low=cfg_low, shift=shift, boundary=boundary)
    lead = tuple(lead)
    variant = _check_experts(high, low)
    _check_leads(lead, variant)
    latent = latent.float()
    _check_latent(latent, high, variant, i2v, noise_mask)
    batch = latent.shape[0]
    text_dim = getattr(high.config, "text_dim", TEXT_DIM)
    positive = _check_context("positive", positive, batch, text_dim)
    negative = _check_context("negative", negative, batch, text_dim)
    plan = with_leads(plan_switch(variant, low, steps, shift, boundary, switch_step, schedule),
                      [phase.steps for phase in lead])
    check_wiring(plan, high, low)
    mask = noise_mask_for(noise_mask, latent.shape) if noise_mask is not None else None
    y = i2v.y(latent.shape) if i2v is not None else None
    if y is not None:
        _check_finite("the I2V start-image latent", y, "re-encode the start image with the Wan 2.1 VAE in fp32")
    if noise is None:
        noise = make_noise(seed, latent.shape)
    elif tuple(noise.shape) != tuple(latent.shape):
        raise SamplingError(f"noise has shape {tuple(noise.shape)} but the latent is {tuple(latent.shape)}")
    windows = _check_windows(windows, latent.shape[2], variant)
    if windows is not None:
        noise = windows.initial_noise(noise, seed)

    handles = {"high": high} if low is None else {"high": high, "low": low}
    handles.update({lead_role(n): phase.model for n, phase in enumerate(lead, 1)})
    cfgs = {"high": cfg_high, "low": cfg_low, **{lead_role(n): phase.cfg for n, phase in enumerate(lead, 1)}}
    devices = dict(zip(("high", "low"), placement or (None, None)))
    devices.update({lead_role(n): devices["high"] for n in range(1, len(lead) + 1)})  # leads sit with the high expert
    residency = Residency(memory, handles, {r: d for r, d in devices.items() if r in handles and d is not None},
                          expert_budgets(budget, handles, model_shape(latent.shape, windows), cfgs))
    cache = CacheRun(step_cache, plan.stages, plan.schedule.steps) if step_cache is not None else None
    log.info("sampling %s", describe_plan(plan, solver))
    if cache is not None and not cache.active:
        log.info("step cache off: %d steps is under its minimum of %d", plan.schedule.steps, MIN_STEPS)
    try:
        x = _run(plan, residency, make_solver(solver, plan.schedule.sigmas), latent, noise, positive, negative,
                 cfgs, mask, y, callback, cancel, cache, windows)
    finally:
        residency.finish()
    out = denormalize(x)
    if mask is not None:
        out = hold(out, latent, mask)  # kept cells come back bit-exact, not via a normalise round trip
    counts = {"high": plan.switch_step - sum(plan.lead_steps), "low": plan.schedule.steps - plan.switch_step}
    stage_list = [{**s.as_dict(), "cfg": float(cfgs[s.role])} for s in plan.stages]
    report = cache.report() if cache is not None else None
    if report is not None:
        log.info("step cache: %d of %d steps reused", len(report["reused"]), plan.schedule.steps)
    return SampleResult(out, plan.switch_step, plan.boundary, plan.schedule, solver, variant, counts, stage_list,
                        report, _windows_report(windows, latent.shape[2]))


def _check_windows(windows: Optional[ContextWindows], frames: int, variant: str) -> Optional[ContextWindows]:
    """The windows to use: None when off or when the latent fits in one window (then nothing changes)."""
    if windows is None:
        return None
    if not isinstance(windows, ContextWindows):
        raise SamplingError(f"windows is a {type(windows).__name__}; expected an "
                            "engine.sampling.context_windows.ContextWindows (the Wan22DuoContextWindows node)")
    if not windows.active(frames):
        log.info("context windows off: %d latent frames fit in one window of %d", frames, windows.length)
        return None
    if variant == "ti2v_5b":
        log.warning("%s", TI2V_WARNING)
    if windows.retain_first_frame and variant != "i2v_a14b":
        log.warning("context windows: retain_first_frame acts on I2V-A14B's image channels only; this %s run has "
                    "none, so it changes nothing", variant)
    log.info("context windows: %d latent frames in windows of %d, overlap %d (%s, %s fuse%s%s%s)", frames,
             windows.length, windows.overlap, windows.schedule, windows.fuse,
             ", causal anchor" if windows.causal_anchor else "", ", FreeNoise" if windows.freenoise else "",
             ", start frame retained" if windows.retain_first_frame else "")
    return windows


def model_shape(latent_shape: Sequence[int], windows: Optional[ContextWindows]) -> tuple:
    """The largest latent one model call sees: the whole latent, or one window (with its anchor)."""
    shape = tuple(latent_shape)
    if windows is None:
        return shape
    return shape[:2] + (windows.model_frames(shape[2]),) + shape[3:]


def _windows_report(windows: Optional[ContextWindows], frames: int) -> Optional[dict]:
    if windows is None:
        return None
    first = windows.windows(frames, 0)
    return {**windows.describe(), "latent_frames": frames, "windows_per_step": len(first),
            "windows_step_1": [[w.start, w.stop] for w in first]}


def _check_leads(lead: tuple, variant: str) -> None:
    """Leading phases: phase objects with a finite cfg, models of the run's variant, no low-noise expert."""
    for n, phase in enumerate(lead, 1):
        if not isinstance(phase, Phase):
            raise SamplingError(f"lead phase {n} is a {type(phase).__name__}; expected an engine.sampling.phases.Phase")
        check_settings(**{f"the cfg of lead phase {n}": phase.cfg})
        phase_variant = model_variant(phase.model)
        if phase_variant != variant:
            raise SamplingError(
                f"lead phase {n} ({phase.model.name}) is a {phase_variant} model but the experts are {variant}; "
                "every phase must be a model of the same Wan 2.2 variant")
        if phase.model.info.get("role") == "low_noise":
            raise SamplingError(
                f"lead phase {n} ({phase.model.name}) is a low-noise expert, but leading phases run the first, "
                "high-noise steps; connect a high-noise expert (the base model for the three-stage Lightning recipe)")


def expert_budgets(budget: Any, handles: dict, latent_shape: Sequence[int], cfgs: Any) -> dict:
    """Per-expert ``streaming.Budget``: the spec plus that expert's activation estimate for this latent."""
    base = budget if isinstance(budget, Budget) else Budget(budget)
    out = {}
    for role, handle in handles.items():
        if not isinstance(handle, ModelHandle):
            continue  # e.g. a ComfyUI MODEL expert: ComfyUI's model manager places its weights
        config = handle.info.get("config")
        batch, _, frames, height, width = latent_shape
        cfg = cfgs[role] if isinstance(cfgs, dict) else cfgs[0] if role == "high" else cfgs[1]
        known = all(hasattr(config, a) for a in ("dim", "ffn_dim", "head_dim", "text_len", "out_dim"))
        passes = 2 if cfg != 1.0 and batched_guidance_enabled() else 1  # engine.sampling.guidance batches CFG when it can
        act = [activation_bytes(config, frames, height, width, handle.compute_dtype, batch, cfg, guidance_batch=n)
               if known else 0 for n in (passes, 1)]
        out[role] = replace(base, activations=act[0], fallback=act[1], on_two_passes=prefer_two_passes)
    return out


def _run(plan: SwitchPlan, residency: Residency, solver, latent, noise, positive, negative, cfgs: dict, mask, y,
         callback, cancel, cache: Optional[CacheRun] = None, windows: Optional[ContextWindows] = None) -> torch.Tensor:
    """The step loop; returns the final normalised latent on CPU."""
    sched = plan.schedule
    state_device = residency.device(plan.role(0))
    kept = normalize(latent).to(state_device) if mask is not None else None
    mask = mask.to(state_device) if mask is not None else None
    constants = _OnDevice(positive, negative, *([] if y is None else [y]))
    x = noise.to(state_device)
    if mask is not None:
        x = hold(x, kept, mask)  # official TI2V start: image latent where kept, noise elsewhere
    model_dtype = "unknown"
    with torch.no_grad():
        for i in range(sched.steps):
            if cancel is not None and cancel():
                raise SamplingCancelled(f"sampling cancelled before step {i + 1} of {sched.steps}")
            role = plan.role(i)
            v = cache.reuse(i, x) if cache is not None else None
            if v is None:  # no cache, or the cache wants this step run
                v = _model_velocity(residency, role, sched, i, x, mask, constants, cfgs[role], windows)
                v = v.to(state_device)
                if cache is not None:
                    cache.record(i, x, v)
            x0 = solver.x0(i, x, v) if callback is not None else None
            x = solver.step(i, x, v)
            if not bool(torch.isfinite(x).all()):
                raise SamplingError(_non_finite_message(i, sched.steps, role, residency))
            if mask is not None:
                x = hold(x, kept, mask)
            if callback is not None:
                x0 = hold(x0, kept, mask) if mask is not None else x0
                callback(StepInfo(i, sched.steps, role, float(sched.sigmas[i]), float(sched.timesteps[i]), x, x0))
    return x.cpu()


def _model_velocity(residency: Residency, role: str, sched: Schedule, i: int, x: torch.Tensor, mask, constants,
                    cfg: float, windows: Optional[ContextWindows] = None) -> torch.Tensor:
    """One step's model call: the guided velocity at ``x`` (on the model's device); with context windows, one
    call per window of the step, fused (``context_windows.ContextWindows.fuse_velocity``)."""
    model = residency.use(role)
    device = residency.device(role)
    t_step = torch.full((x.shape[0],), float(sched.timesteps[i]), dtype=torch.float32, device=device)
    pos, neg, *image = constants.on(device)

    def call(frames: Optional[list], cond_frames: Optional[list] = None) -> torch.Tensor:
        """The guided velocity of ``frames`` of the latent (None: all), their conditioning sliced alike; the I2V
        channels from ``cond_frames`` when given (a window retaining the start frame)."""
        xs, ms, ys = x, mask, image[0] if image else None
        if frames is not None:
            xs = x[:, :, frames]
            ms = None if mask is None else mask[:, :, frames]
            ys = None if ys is None else ys[:, :, frames if cond_frames is None else cond_frames]
        t = t_step if ms is None else token_timesteps(ms.to(device), t_step, x.shape[0])  # kept tokens at t = 0
        x_in = xs.to(device)
        if ys is not None:
            x_in = torch.cat([x_in, ys], dim=1)  # I2V: [noise(16), mask(4), image latent(16)]
        v = guided_velocity(model, x_in, t, pos, neg, cfg)
        if v.shape != xs.shape:
            raise SamplingError(f"the {_role_name(role)} returned shape {tuple(v.shape)} for a latent of "
                                f"shape {tuple(xs.shape)}; it does not fit this latent")
        return v

    v = call(None) if windows is None else windows.fuse_velocity(i, call, x.shape, device)
    del model  # the residency's handle holds the only long-lived reference
    return v


def _role_name(role: str) -> str:
    """"high" -> "high-noise expert", "lead2" -> "lead phase 2" (for messages)."""
    if role.startswith("lead"):
        return f"lead phase {role[len('lead'):]}"
    return f"{role}-noise expert"


def _non_finite_message(i: int, steps: int, role: str, residency: Residency) -> str:
    """Which step, which expert (its file), and the first weight that holds NaN/inf when one does.

    Runs only once sampling has failed: the expert that made the step is still in place."""
    model = residency.use(role)
    name = getattr(residency.handles[role], "name", role)
    model_dtype = str(getattr(model, "compute_dtype", "unknown")).replace("torch.", "")
    culprit = first_non_finite(model) if isinstance(model, torch.nn.Module) else None
    found = f" Its weight {culprit} holds NaN/inf as the layer uses it." if culprit else ""
    hint = ("That file is damaged (NaN/inf weights or GGUF scales, or a tensor stored in another type than its "
            "header says): load another copy." if culprit else _non_finite_hint(model_dtype))
    return (f"the latent became NaN/inf at step {i + 1} of {steps} ({_role_name(role)} {name}, compute dtype "
            f"{model_dtype}).{found} {hint}")


def _non_finite_hint(model_dtype: str) -> str:
    if model_dtype == "float16":
        return "fp16 can overflow on Wan: use bf16 or fp32 compute_dtype on the expert loader."
    return ("The inputs were finite, so the expert's weights (or a LoRA on it) hold NaN/inf or overflow: load "
            "another copy of the file, or remove the LoRA to find the culprit.")


class _OnDevice:
    """Per-run constant inputs (contexts, I2V ``y``), copied once to the device that needs them.

    Only the latest device's copy is kept, so a switch to an expert on another device
    frees the previous copies.
    """

    def __init__(self, *tensors: torch.Tensor):
        self._source = tensors
        self._cache: dict = {}

    def on(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        if device not in self._cache:
            self._cache = {device: tuple(c.to(device=device, dtype=torch.float32) for c in self._source)}
        return self._cache[device]
