"""Speed options for both sampler nodes: the step cache and phase plans (leading phases).

* ``Wan22DuoStepCache`` makes the step-cache settings (``engine.sampling.step_cache``) for
  the samplers' optional ``step_cache`` input: per-expert caching, off when unconnected.
* ``Wan22DuoPhase`` (pack models) and ``Wan22DuoModelPhase`` (ComfyUI MODELs) add a
  leading phase for the samplers' optional ``lead_phases`` input
  (``engine.sampling.phases``): a model that runs the first steps, with its own cfg,
  before the sampler's high-noise expert. Chain them for several phases; the
  three-stage Lightning recipe is one phase (the base high-noise model with CFG) in
  front of a sampler whose experts carry the Lightning LoRAs.

Options nodes rather than more widgets on the samplers: the samplers' inputs stay as
they were (their names and order are public API), a workflow without these nodes runs
exactly as before, and one options node can feed several samplers.
"""
from __future__ import annotations

import logging

from ..engine.sampling.phases import Phase
from ..engine.sampling.step_cache import DEFAULT_THRESHOLD, DEFAULT_WARMUP, MIN_STEPS, StepCache

STEP_CACHE = "WAN22DUO_STEP_CACHE"
PHASES = "WAN22DUO_PHASES"
CATEGORY = "Wan22Duo/sampling"
MAX_STEPS = 1000
log = logging.getLogger("wan22duo")

SPEED_TIPS = {
    "step_cache": "Optional step cache (Wan22DuoStepCache): reuses the model's output change on steps where the run "
                  "predicts little change, per expert. Unconnected: every step runs.",
    "lead_phases": "Optional leading phases (Wan22DuoPhase / Wan22DuoModelPhase): models that run the first steps, "
                   "in order and each with its own cfg, before high_noise_model, on the same schedule and trajectory. "
                   "The switch to low_noise_model stays where boundary (or switch_step) puts it.",
}


def speed_inputs() -> dict:
    """The optional inputs both samplers append (after their own; names are public API)."""
    return {"step_cache": (STEP_CACHE, {"tooltip": SPEED_TIPS["step_cache"]}),
            "lead_phases": (PHASES, {"tooltip": SPEED_TIPS["lead_phases"]})}


class Wan22DuoStepCache:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Step caching for the Wan 2.2 Duo samplers. Each expert keeps its own cache, reset at the switch: its first "
        "warmup_steps steps and its last step always run, and in between a step is skipped while the change the run "
        "predicts for the model's output (its measured transformation rate times the latent's change) stays under "
        f"threshold; a skipped step reuses the last output change. Plans under {MIN_STEPS} steps (Lightning) run "
        "every step. Both CFG passes are skipped or run together."
    )
    RETURN_TYPES = (STEP_CACHE,)
    RETURN_NAMES = ("step_cache",)
    OUTPUT_TOOLTIPS = ("Connect to step_cache of Wan22DuoSampler or Wan22DuoModelSampler.",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "threshold": ("FLOAT", {
                "default": DEFAULT_THRESHOLD, "min": 0.0, "max": 2.0, "step": 0.005, "round": 0.001,
                "tooltip": "Summed predicted relative change of the model output allowed before a step must run. "
                           "Higher skips more steps and drifts further from the uncached video; 0 skips nothing. "
                           "The default and its measured effect are in bench/RESULTS.md."}),
            "warmup_steps": ("INT", {
                "default": DEFAULT_WARMUP, "min": 2, "max": MAX_STEPS,
                "tooltip": "Steps that always run at the start of each expert's segment (at least 2: the rate needs "
                           "two calls of the same expert). The first step after the switch always runs."}),
        }}

    def make(self, threshold: float = DEFAULT_THRESHOLD, warmup_steps: int = DEFAULT_WARMUP):
        return (StepCache(float(threshold), int(warmup_steps)),)


def _phase_inputs(model_type: str, model_tip: str) -> dict:
    return {
        "required": {
            "model": (model_type, {"tooltip": model_tip}),
            "cfg": ("FLOAT", {"default": 3.5, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                              "tooltip": "Guidance scale of this phase's steps (1.0 skips the negative pass)."}),
            "steps": ("INT", {"default": 2, "min": 1, "max": MAX_STEPS,
                              "tooltip": "How many steps this phase runs, counted on the sampler's steps. The "
                                         "phases together must end at or before the switch to the low-noise "
                                         "expert."}),
        },
        "optional": {
            "lead_phases": (PHASES, {"tooltip": "Phases that run before this one (another phase node)."}),
        },
    }


class Wan22DuoPhase:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "A leading phase for Wan22DuoSampler: this model runs the first steps with its own cfg, before the sampler's "
        "high-noise expert, on the same schedule (one trajectory, nothing re-noised). For the three-stage Lightning "
        "recipe connect the base high-noise expert here (cfg 3.5, 2 steps) and the Lightning-LoRA experts to the "
        "sampler (cfg 1). Chain phase nodes for more phases."
    )
    RETURN_TYPES = (PHASES,)
    RETURN_NAMES = ("lead_phases",)
    OUTPUT_TOOLTIPS = ("These phases in order; connect to lead_phases of the sampler (or of another phase node).",)
    FUNCTION = "add"
    MODEL_TYPE = "WAN22DUO_MODEL"

    @classmethod
    def INPUT_TYPES(cls):
        return _phase_inputs(cls.MODEL_TYPE, "The model of this phase (Wan22DuoExpertLoader, through any "
                                             "Wan22DuoLoraLoader), usually a high-noise expert.")

    def add(self, model, cfg: float = 3.5, steps: int = 2, lead_phases=None):
        return (tuple(lead_phases or ()) + (Phase(model, float(cfg), int(steps)),),)


class Wan22DuoModelPhase(Wan22DuoPhase):
    DESCRIPTION = Wan22DuoPhase.DESCRIPTION.replace("Wan22DuoSampler", "Wan22DuoModelSampler (ComfyUI MODEL inputs)")
    MODEL_TYPE = "MODEL"

    @classmethod
    def INPUT_TYPES(cls):
        return _phase_inputs(cls.MODEL_TYPE, "The model of this phase as a ComfyUI MODEL (UNETLoader, "
                                             "UnetLoaderGGUF, through any LoRA or patch nodes), usually the "
                                             "high-noise expert.")


def _is_comfy_model(model) -> bool:
    return hasattr(model, "model_options") and hasattr(model, "patches")  # a ComfyUI ModelPatcher


def phase_models(lead_phases, wanted: str, node: str) -> tuple:
    """The phases, checked to carry the model kind ``node`` takes (``wanted``: WAN22DUO_MODEL or MODEL)."""
    phases = tuple(lead_phases or ())
    for n, phase in enumerate(phases, 1):
        if not isinstance(phase, Phase):
            raise ValueError(f"{node}: lead_phases entry {n} is a {type(phase).__name__}, not a phase; connect a "
                             "Wan22DuoPhase or Wan22DuoModelPhase node")
        is_comfy = _is_comfy_model(phase.model)
        if (wanted == "MODEL") != is_comfy:
            other = "Wan22DuoModelPhase" if wanted == "MODEL" else "Wan22DuoPhase"
            held = "a ComfyUI MODEL" if is_comfy else "a Wan 2.2 Duo model (WAN22DUO_MODEL)"
            takes = "ComfyUI MODELs" if wanted == "MODEL" else "Wan 2.2 Duo models (WAN22DUO_MODEL)"
            raise ValueError(f"{node}: lead phase {n} holds {held}, but this sampler takes {takes}; build the phase "
                             f"with {other}")
    return phases


def comfy_phases(lead_phases, shift: float) -> tuple:
    """Wan22DuoModelSampler's phases with each MODEL wrapped as a ComfyExpert (``nodes.comfy_model``).

    A ModelSamplingSD3 shift on a phase's MODEL that differs from the run's ``shift`` is
    overridden (one trajectory has one schedule), with a warning naming it.
    """
    from .comfy_model import ComfyExpert, model_shift

    out = []
    for n, phase in enumerate(phase_models(lead_phases, "MODEL", "Wan22DuoModelSampler"), 1):
        carried = model_shift(phase.model)
        if carried is not None and carried != shift:
            log.warning("Wan22DuoModelSampler: shift %g overrides the ModelSamplingSD3 shift %g of lead phase %d",
                        shift, carried, n)
        out.append(Phase(ComfyExpert(phase.model, "high_noise", f"lead phase {n}"), phase.cfg, phase.steps))
    return tuple(out)


NODE_CLASS_MAPPINGS = {"Wan22DuoStepCache": Wan22DuoStepCache, "Wan22DuoPhase": Wan22DuoPhase,
                       "Wan22DuoModelPhase": Wan22DuoModelPhase}
NODE_DISPLAY_NAME_MAPPINGS = {"Wan22DuoStepCache": "Wan 2.2 Duo Step Cache",
                              "Wan22DuoPhase": "Wan 2.2 Duo Leading Phase",
                              "Wan22DuoModelPhase": "Wan 2.2 Duo Leading Phase (ComfyUI MODEL)"}
