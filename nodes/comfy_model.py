"""A ComfyUI ``MODEL`` (a ModelPatcher from any loader, through any patch chain) as an engine model handle.

The engine's one loop (``engine.sampling.loop.sample``) asks a model handle for its config,
its device, and a model it can call; ``engine.memory.residency.Residency`` asks it to load,
offload or release. :class:`ComfyExpert` answers all of that for a ModelPatcher:

* **the model call** goes through ComfyUI's own path, ``comfy.samplers.sampling_function``
  (hence ``calc_cond_batch`` and ``BaseModel.apply_model``), so LoRAs and weight patches,
  ``model_function_wrapper``, ``transformer_options`` patches, APPLY_MODEL/CALC_COND_BATCH
  wrappers, ``sampler_cfg_function``/``sampler_post_cfg_function`` patches and the
  quantized layers of GGUF or fp8 files apply exactly as in a KSampler. ComfyUI returns a
  data estimate ``x0 = x - v * sigma``; the loop wants the velocity, so
  ``v = (x - x0) / sigma`` with the very ``sigma`` that was fed.
* **timesteps**: ComfyUI turns ``sigma`` into the model's timestep with
  ``model_sampling.timestep(sigma) = sigma * multiplier``. We feed
  ``sigma = t / multiplier`` in float64, so the DiT sees the loop's timestep ``t`` exactly:
  the official integers under the ``wan`` schedule (float32 would turn e.g. 937 into
  936.99994). MPS has no float64; there the value is float32.
* **memory** goes through ``comfy.model_management``: the running expert is loaded with
  ``load_models_gpu`` (via ``comfy.sampler_helpers.prepare_sampling``, as a KSampler
  does, so partial loading works on small GPUs), and :meth:`ComfyExpert.offload` takes
  the idle one out of ComfyUI's manager. "release" cannot drop more than that: the RAM
  copy belongs to the loader node's cache.
* **patches**: :meth:`ComfyExpert.prepare` does per run what ComfyUI's guider does before
  sampling (``comfy.sampler_helpers.prepare_model_patcher``): the wrappers and callbacks that
  patch nodes put on the ModelPatcher are merged into the expert's run options, so the
  PREPARE_SAMPLING, CALC_COND_BATCH, APPLY_MODEL and DIFFUSION_MODEL wrappers run, per expert,
  for that expert's steps. The sampler levels (OUTER_SAMPLE, SAMPLER_SAMPLE, PREDICT_NOISE) run
  through :mod:`nodes.comfy_wrappers`; :meth:`ComfyExpert.finish` undoes the preparation.

ComfyUI modules are imported inside functions only (the pack's rule), so this module
imports anywhere; the shift rule (:func:`resolve_shift`) and the velocity conversion are
plain Python.
"""
from __future__ import annotations

import logging
import math
import uuid
from typing import Any, Optional

import torch

log = logging.getLogger("wan22duo")

SHIFT_PATCH = "model_sampling"  # the object patch ModelSamplingSD3 (and friends) add
OFFICIAL_SHIFT = {"t2v_a14b": 12.0, "i2v_a14b": 5.0, "ti2v_5b": 5.0}


class ComfyModelError(ValueError):
    """A MODEL input the dual-expert sampler cannot run; the message says what to connect instead."""


# ---------------------------------------------------------------- what the MODEL is


def wan_config(patcher: Any, input_name: str):
    """The ``engine.model.dit.WanConfig`` of the Wan 2.2 DiT inside a ModelPatcher (shapes only, nothing loaded)."""
    from ..engine.model.dit import WanConfig

    model = getattr(patcher, "model", None)
    dm = getattr(model, "diffusion_model", None)
    kind = type(dm).__name__ if dm is not None else type(model).__name__
    if kind != "WanModel" or not hasattr(dm, "patch_embedding"):
        raise ComfyModelError(
            f"{input_name} is a {kind} model, not a Wan 2.2 DiT. Load a Wan 2.2 diffusion model (UNETLoader or "
            "UnetLoaderGGUF with a wan2.2_* file) and connect it here; VACE, S2V, Animate and camera models are not "
            "supported."
        )
    if getattr(dm, "img_emb", None) is not None:
        raise ComfyModelError(
            f"{input_name} is a Wan 2.1 image-to-video model (it has a CLIP-vision image embedding); Wan 2.2 "
            "I2V-A14B has none. Load wan2.2_i2v_high_noise_14B / wan2.2_i2v_low_noise_14B instead."
        )
    try:
        return WanConfig(dim=dm.dim, ffn_dim=dm.ffn_dim, num_layers=dm.num_layers, in_dim=dm.in_dim,
                         out_dim=dm.out_dim, text_dim=dm.text_dim, freq_dim=dm.freq_dim)
    except ValueError as exc:
        raise ComfyModelError(f"{input_name}: {exc}") from None


def model_shift(patcher: Any) -> Optional[float]:
    """The shift a ``ModelSamplingSD3``-style node put on the MODEL, or None when none did.

    Only an explicit ``model_sampling`` object patch counts: every Wan MODEL carries
    ComfyUI's built-in default (8.0), which is no one's choice and not the official value.
    """
    sampling = (getattr(patcher, "object_patches", None) or {}).get(SHIFT_PATCH)
    shift = getattr(sampling, "shift", None)
    return None if shift is None else float(shift)


def resolve_shift(requested: float, variant: str, high_shift: Optional[float],
                  low_shift: Optional[float]) -> tuple[float, str]:
    """The one shift of the run and where it came from (for the log and the switch report).

    * ``requested > 0``: the sampler's value wins. A different ModelSamplingSD3 shift on
      a MODEL is overridden (the caller logs a warning).
    * ``requested < 0`` (auto): the ModelSamplingSD3 shift carried by the MODELs; both
      experts must agree, since one trajectory has one sigma schedule. With none, the
      official shift of the variant (12.0 T2V-A14B, 5.0 I2V-A14B and TI2V-5B), not
      ComfyUI's built-in 8.0.
    """
    requested = float(requested)
    if not math.isfinite(requested) or (requested <= 0 and requested != -1.0):
        raise ComfyModelError(
            f"shift {requested:g} is not a flow-matching shift; use -1 (the ModelSamplingSD3 shift on the MODELs, "
            f"else the official {OFFICIAL_SHIFT[variant]:g}) or a positive number")
    if requested > 0:
        return requested, "sampler"
    carried = {name: s for name, s in (("high_noise_model", high_shift), ("low_noise_model", low_shift))
               if s is not None}
    for name, value in carried.items():
        if not (math.isfinite(value) and value > 0):
            raise ComfyModelError(
                f"the ModelSamplingSD3 on {name} sets shift {value:g}, which is not a flow-matching shift (the sampler's "
                f"shift is -1, so it would be used). Give that ModelSamplingSD3 node a positive shift (official "
                f"{OFFICIAL_SHIFT[variant]:g}), or set a positive shift on the sampler, which overrides it.")
    if not carried:
        return OFFICIAL_SHIFT[variant], "official"
    if len(set(carried.values())) > 1:
        raise ComfyModelError(
            f"the experts carry different ModelSamplingSD3 shifts (high_noise_model {high_shift:g}, "
            f"low_noise_model {low_shift:g}), but one trajectory has one sigma schedule. Give both the same shift, "
            "or set the sampler's shift to the value you want (it then overrides both)."
        )
    (name, value), *_ = carried.items()
    return value, f"ModelSamplingSD3 on {name}" if len(carried) == 1 else "ModelSamplingSD3"


def shift_conflicts(shift: float, high_shift: Optional[float], low_shift: Optional[float]) -> list[str]:
    """``"high_noise_model 8"``-style notes for MODEL shifts the run's shift overrides."""
    return [f"{name} {s:g}" for name, s in (("high_noise_model", high_shift), ("low_noise_model", low_shift))
            if s is not None and s != shift]


# ---------------------------------------------------------------- the ComfyUI call, as tensors


def sigma_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def model_sigma(t: torch.Tensor, multiplier: float) -> torch.Tensor:
    """Per-sample ``sigma`` whose ``sigma * multiplier`` is the loop's timestep (see the module doc).

    ``t`` is ``[B]``, or ``[B, L]`` per token (TI2V-5B with kept frames at 0): then the
    sample's timestep is the largest token value, the one the generated tokens get.
    """
    per_sample = t.amax(dim=1) if t.ndim == 2 else t
    return per_sample.to(sigma_dtype(t.device)) / float(multiplier)


def token_mask(t: torch.Tensor, latent_shape: torch.Size) -> Optional[torch.Tensor]:
    """ComfyUI's ``denoise_mask`` ``[B, 1, T, H, W]`` rebuilt from per-token timesteps (None for ``[B]``).

    The loop gives kept tokens timestep 0; ComfyUI's WAN22 model derives the same
    per-token timesteps from a denoise mask (1 = generate), so the mask is ``t / t_max``
    per token, spread over its 2x2 latent cells.
    """
    if t.ndim != 2:
        return None
    batch, _, frames, height, width = latent_shape
    top = t.amax(dim=1, keepdim=True)
    mask = torch.where(top > 0, t / top.clamp_min(1e-12), torch.ones_like(t)).float()
    mask = mask.reshape(batch, 1, frames, height // 2, width // 2)
    return mask.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


def pad_context(context: torch.Tensor, text_len: int) -> torch.Tensor:
    """Zero rows up to ``text_len`` (never cut), as the official code and the engine's DiT do.

    ComfyUI's umT5 already returns 512 rows; a shorter context (another encoder, a test)
    would otherwise attend over fewer rows than the model was trained with.
    """
    missing = text_len - context.shape[1]
    return torch.nn.functional.pad(context, (0, 0, 0, missing)) if missing > 0 else context


def velocity(x: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Invert ComfyUI's flow ``calculate_denoised`` (``x0 = x - v * sigma``) with the sigma that was fed."""
    sigma = sigma.reshape(sigma.shape[:1] + (1,) * (x.ndim - 1))
    return ((x.to(sigma.dtype) - x0.to(sigma.dtype)) / sigma).float()


# ---------------------------------------------------------------- the handle


class ComfyExpert:
    """One expert as a ModelPatcher, behaving as an ``engine.memory.residency.ModelHandle`` and as its model.

    ``acquire()`` returns the handle itself: it is callable as ``model(x_in, t, context)``
    (one conditional pass) and has ``guided_velocity(x_in, t, positive, negative, cfg)``,
    which the loop prefers, so that ComfyUI's own CFG (with its cfg patches and PREDICT_NOISE
    wrappers) runs. Call :meth:`prepare` with the run's latent shape, model sigmas and seed
    before the run and :meth:`finish` after it (also when the run failed).
    """

    def __init__(self, patcher: Any, role: str, input_name: str):
        self.patcher = patcher
        self.input_name = input_name
        config = wan_config(patcher, input_name)
        self.info = {"config": config, "variant": config.variant, "role": role, "name": input_name,
                     "shift": model_shift(patcher), "loader": "UNETLoader / UnetLoaderGGUF"}
        self.offload_device = torch.device(patcher.offload_device)
        self._shape: Optional[tuple] = None
        self.sample_sigmas: Optional[torch.Tensor] = None  # the run's model sigmas, ending in 0
        self._options: Optional[dict] = None  # the run options the model calls get (KSampler's extra_args ones)
        self._seed: Optional[int] = None
        self._extra_models: list = []
        self._prepared_sampling = False  # prepare_sampling ran in this run (once per run, as in a KSampler)
        self._hook_mode = None
        self.guider = None  # nodes.comfy_wrappers.ExpertGuider of the run
        self._uuids = (uuid.uuid4(), uuid.uuid4())  # positive, negative: stable over the run, as in a KSampler

    def shares_weights(self, other) -> Optional[str]:
        """For the engine's wiring check: "model" when ``other`` is this MODEL (the same patcher, or a clone with
        the same weights and patches), "file" for a clone of the same base model with other patches, else None."""
        mine, theirs = self.patcher, getattr(other, "patcher", None)
        if theirs is None:
            return None
        if mine is theirs:
            return "model"
        same = getattr(mine, "clone_has_same_weights", None)
        if same is not None and same(theirs):  # weight patches (LoRAs) included; a ModelSamplingSD3 shift is not
            return "model"
        is_clone = getattr(mine, "is_clone", None)
        return "file" if is_clone is not None and is_clone(theirs) else None

    # ------------------------------------------------------------ handle interface
    @property
    def config(self):
        return self.info["config"]

    @property
    def name(self) -> str:
        return self.input_name

    @property
    def device(self) -> torch.device:
        from ..engine.memory.residency import canonical_device

        return canonical_device(self.patcher.load_device)

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.patcher.model_dtype()

    @property
    def loaded(self) -> bool:
        """Whether ComfyUI's model manager holds this expert (fully or partially) on its load device."""
        return self._loaded_index() is not None

    @property
    def location(self) -> Optional[torch.device]:
        return self.device if self.loaded else None

    def __repr__(self) -> str:
        return f"ComfyExpert({self.input_name!r}, device={self.device}, loaded={self.loaded})"

    def prepare(self, latent_shape, sample_sigmas: torch.Tensor, seed: int) -> None:
        """Per-run settings (noise shape, the run's model sigmas, seed) and ComfyUI's pre-sampling step.

        As ``CFGGuider.sample`` does: a clone of the MODEL's options, the hook mode for
        conds without hooks, then ``prepare_model_patcher``, which merges the patcher's
        wrappers and callbacks into the clone's ``transformer_options``. The clone becomes
        the expert's guider options; :meth:`begin_run` derives the model calls' options
        from them.
        """
        import comfy.hooks
        import comfy.model_patcher
        import comfy.model_sampling
        import comfy.sampler_helpers

        from .comfy_wrappers import ExpertGuider

        sampling = self.patcher.get_model_object("model_sampling")
        if not isinstance(sampling, comfy.model_sampling.CONST):
            raise ComfyModelError(
                f"{self.input_name} carries a {type(sampling).__name__} sampling patch, which is not flow matching; "
                "Wan 2.2 is a flow model. Remove that ModelSampling* node (ModelSamplingSD3 is fine).")
        self._shape = tuple(latent_shape)
        self._seed = int(seed)
        self.sample_sigmas = sample_sigmas
        self._prepared_sampling = False
        options = comfy.model_patcher.create_model_options_clone(self.patcher.model_options)
        options.setdefault("transformer_options", {})
        if self._hook_mode is None:  # our conds carry no hooks: ComfyUI's choice for at most one hook group
            self._hook_mode = self.patcher.hook_mode
            self.patcher.hook_mode = comfy.hooks.EnumHookMode.MinVram
        comfy.sampler_helpers.prepare_model_patcher(self.patcher, {}, options)
        self.guider = ExpertGuider(self.patcher, options)
        self.begin_run()

    def begin_run(self) -> None:
        """The model calls' options: the guider's (as OUTER_SAMPLE wrappers left them) plus the run's sigmas.

        What KSampler's ``inner_sample`` adds: cache and step-aware patches read ``sample_sigmas``.
        """
        import comfy.model_patcher

        options = comfy.model_patcher.create_model_options_clone(self.guider.model_options)
        options.setdefault("transformer_options", {})["sample_sigmas"] = self.sample_sigmas.to(self.device)
        self._options = options

    @property
    def run_options(self) -> dict:
        if self._options is None:
            raise RuntimeError("ComfyExpert.prepare() must run before the expert is used")
        return self._options

    def acquire(self, device=None) -> "ComfyExpert":
        if device is not None and torch.device(device) != self.device:
            raise ComfyModelError(f"{self.input_name} computes on {self.device} (ComfyUI's choice); it cannot be "
                                  f"placed on {device}")
        if self._options is None:
            raise RuntimeError("ComfyExpert.prepare() must run before the expert is used")
        if not self.loaded or not self._prepared_sampling:
            self._load()  # once per run even when still loaded: PREPARE_SAMPLING wrappers run, as in a KSampler
        if getattr(self.patcher.model, "current_patcher", None) is not self.patcher:
            # As a KSampler before sampling; again when a clone sharing the base model ran meanwhile,
            # or when a kept model (keep_both) starts a new run after finish() cleared it.
            self.patcher.pre_run()
        return self

    def offload(self) -> None:
        """Take the expert out of ComfyUI's manager: its weights go to the offload device (RAM)."""
        import comfy.model_management as mm

        index = self._loaded_index()
        if index is None:
            return
        log.info("Wan22Duo: unloading %s from %s", self.input_name, self.device)
        loaded = mm.current_loaded_models[index]
        if loaded.model_unload():
            mm.current_loaded_models.pop(index)
        mm.soft_empty_cache()

    def release(self) -> bool:
        """Same as :meth:`offload`: the RAM copy is the loader node's, which ComfyUI caches."""
        self.offload()
        return False

    def finish(self) -> None:
        """What a KSampler does after sampling: cleanup callbacks, extra models, hook mode and patches back."""
        import comfy.sampler_helpers
        import comfy.samplers

        try:
            self.patcher.cleanup()
        finally:
            comfy.sampler_helpers.cleanup_additional_models(self._extra_models)
            self._extra_models = []
            if self.guider is not None:
                comfy.samplers.cast_to_load_options(self.guider.model_options, device=self.offload_device)
            if self._hook_mode is not None:
                self.patcher.hook_mode = self._hook_mode
                self._hook_mode = None
            self.patcher.restore_hook_patches()
            self._prepared_sampling = False

    def _loaded_index(self) -> Optional[int]:
        try:
            import comfy.model_management as mm
        except ImportError:
            return None
        for i, loaded in enumerate(mm.current_loaded_models):
            if loaded.model is self.patcher:
                return i
        return None

    def _load(self) -> None:
        """``prepare_sampling`` (PREPARE_SAMPLING wrappers, then ComfyUI's loader) with the guider's options."""
        import comfy.sampler_helpers
        import comfy.samplers

        log.info("Wan22Duo: loading %s through ComfyUI's model manager", self.input_name)
        options = self.guider.model_options
        _, _, models = comfy.sampler_helpers.prepare_sampling(self.patcher, self._shape, {}, options)
        self._extra_models = models
        self._prepared_sampling = True
        for opts in (options, self._options):
            comfy.samplers.cast_to_load_options(opts, device=self.device, dtype=self.patcher.model_dtype())

    # ------------------------------------------------------------ model interface
    def __call__(self, x_in: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The velocity of one conditional pass (no guidance)."""
        import comfy.samplers

        x, sigma, cond = self._inputs(x_in, t, context, 0)
        (x0, *_) = comfy.samplers.calc_cond_batch(self.patcher.model, [cond], x, sigma, self._options)
        return velocity(x, x0, sigma)

    def guided_velocity(self, x_in: torch.Tensor, t: torch.Tensor, positive: torch.Tensor,
                        negative: torch.Tensor, cfg: float) -> torch.Tensor:
        """CFG as a KSampler does it: its guider's prediction (``sampling_function``: one batch when the
        shapes allow, cfg patches) inside the PREDICT_NOISE wrappers."""
        x, sigma, cond = self._inputs(x_in, t, positive, 0)
        _, _, uncond = self._inputs(x_in, t, negative, 1)
        self.guider.conds = {"positive": cond, "negative": uncond}
        self.guider.cfg = float(cfg)
        x0 = self.guider.outer_predict_noise(x, sigma, self._options, self._seed)
        return velocity(x, x0, sigma)

    def _inputs(self, x_in: torch.Tensor, t: torch.Tensor, context: torch.Tensor, which: int):
        """ComfyUI's (x, sigma, [cond]) for the loop's (x_in, t, context).

        The I2V channels the loop concatenated (``[mask(4), image latent(16)]``) go back to
        ComfyUI as ``c_concat``, which ``apply_model`` appends to the latent again.
        """
        import comfy.conds

        if self._options is None:
            raise RuntimeError("ComfyExpert.prepare() must run before the expert is used")
        channels = self.config.out_dim
        x, concat = x_in[:, :channels], x_in[:, channels:]
        sampling = self.patcher.get_model_object("model_sampling")
        sigma = model_sigma(t, getattr(sampling, "multiplier", 1000.0))
        model_conds = {"c_crossattn": comfy.conds.CONDRegular(pad_context(context, self.config.text_len))}
        if concat.shape[1]:
            model_conds["c_concat"] = comfy.conds.CONDNoiseShape(concat)
        mask = token_mask(t, x.shape)
        if mask is not None:
            model_conds["denoise_mask"] = comfy.conds.CONDRegular(mask)
        return x, sigma, [{"model_conds": model_conds, "uuid": self._uuids[which]}]
