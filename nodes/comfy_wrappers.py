"""ComfyUI's sampler-level wrappers around the one loop, per expert.

A MODEL's patch nodes register wrappers at seven levels of a KSampler run. Four sit at or
below the model call: PREPARE_SAMPLING (when the model is loaded), CALC_COND_BATCH,
APPLY_MODEL and DIFFUSION_MODEL. They run through ComfyUI's own functions once
:class:`nodes.comfy_model.ComfyExpert` has merged the patcher's wrappers and callbacks into its
run options, as ComfyUI's guider does before sampling. The other three belong to the sampler,
which ``engine.sampling.loop.sample`` replaces; this module runs them around that loop:

* **OUTER_SAMPLE** wraps one KSampler run. Every expert that runs a step enters its chain once
  per run, the high-noise expert's around the low-noise expert's around the loop. Inside, the
  expert takes the model options its wrappers left on its guider: EasyCache and LazyCache put a
  fresh cache holder there (its start/end percentages turned into sigmas, which the loop's
  sigmas are compared with) and reset it when the run ends, so nothing is kept between runs.
* **SAMPLER_SAMPLE** wraps the sampler call that gets the initial noise. The first expert's
  chain gets the seeded noise and the noise it passes on is the run's noise (FreeNoise
  shuffles it); the other expert's chain gets zeros, as a second KSamplerAdvanced with
  add_noise disabled does, so FreeNoise there changes nothing, as in ComfyUI's graph.
* **PREDICT_NOISE** wraps each step's guided prediction (:meth:`ExpertGuider.outer_predict_noise`,
  called by ``ComfyExpert.guided_velocity``), with the guider's ``cfg`` as wrappers may set it.

A wrapper at OUTER_SAMPLE or SAMPLER_SAMPLE whose key is not in :data:`EXACT` runs too, but
around the whole run (both experts' steps) instead of around its own expert's steps, so the
node names it once in the log and in its report (:func:`inexact_notes`).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

OUTER_SAMPLE, SAMPLER_SAMPLE, PREDICT_NOISE = "outer_sample", "sampler_sample", "predict_noise"
# Wrapper keys at the levels our loop replaces whose effect here equals that in ComfyUI's two-sampler graph.
EXACT = {
    OUTER_SAMPLE: {"easycache", "lazycache"},  # per-run holder: prepared before, reset after
    SAMPLER_SAMPLE: {"ContextWindows_sampler_sample"},  # FreeNoise: acts on the initial noise only
}


def wrappers_at(level: str, model_options: dict) -> dict:
    """``{key: [wrapper, ...]}`` registered at ``level`` in run options (after the patcher's were merged)."""
    return dict(((model_options or {}).get("transformer_options") or {}).get("wrappers", {}).get(level) or {})


def wrapper_name(key: Any, functions: Sequence[Callable]) -> str:
    """The key a patch node registered its wrapper under, else the wrapper's own name."""
    if key is not None:
        return str(key)
    names = sorted({getattr(f, "__qualname__", type(f).__name__) for f in functions})
    return ", ".join(names) or "an unnamed wrapper"


def inexact_notes(input_name: str, model_options: dict) -> list[str]:
    """One sentence per wrapper of this expert that cannot act exactly as in a KSampler (see the module doc)."""
    notes = []
    for level in (OUTER_SAMPLE, SAMPLER_SAMPLE):
        for key, functions in wrappers_at(level, model_options).items():
            if key not in EXACT[level]:
                notes.append(f"{input_name}: the {level.upper()} wrapper '{wrapper_name(key, functions)}' runs around "
                             "the whole run (both experts' steps), not around this expert's steps only")
    return notes


class LoopSampler:
    """What SAMPLER_SAMPLE wrappers reach as ``executor.class_obj``: stands for ComfyUI's sampler object."""

    name = "wan22duo"


class ExpertGuider:
    """What sampler-level wrappers reach as ``executor.class_obj``: one expert's guider.

    It has the attributes of ComfyUI's CFGGuider that wrappers use: ``model_patcher``,
    ``model_options`` (wrappers may replace it for the run), ``inner_model``, ``conds``
    (``{"positive": [...], "negative": [...]}``, ComfyUI's processed cond dicts; the current
    step's inside :meth:`outer_predict_noise`, empty lists before the first step) and ``cfg``.
    """

    def __init__(self, patcher: Any, model_options: dict):
        self.model_patcher = patcher
        self.model_options = model_options
        self.inner_model = patcher.model
        self.conds: dict = {"positive": [], "negative": []}
        self.cfg = 1.0

    def predict_noise(self, x, timestep, model_options: dict, seed=None):
        """ComfyUI's guided data estimate (``sampling_function``: cond/uncond batch, cfg patches)."""
        import comfy.samplers

        return comfy.samplers.sampling_function(self.inner_model, x, timestep, self.conds.get("negative"),
                                                self.conds.get("positive"), self.cfg, model_options=model_options,
                                                seed=seed)

    def outer_predict_noise(self, x, timestep, model_options: dict, seed=None):
        """:meth:`predict_noise` inside the PREDICT_NOISE wrappers of the guider's options, as a KSampler calls it."""
        from comfy.patcher_extension import WrapperExecutor

        wrappers = _flat(wrappers_at(PREDICT_NOISE, self.model_options))
        return WrapperExecutor.new_class_executor(self.predict_noise, self, wrappers).execute(
            x, timestep, model_options, seed)


def run_wrapped(runs: Sequence[tuple[Any, Any]], noise, latent, seed: int, loop: Callable):
    """``loop(noise)`` inside the OUTER_SAMPLE, then the SAMPLER_SAMPLE chains of the running experts.

    ``runs`` holds ``(expert, sigmas)`` for each ComfyExpert that runs at least one step, in
    the order they run; ``sigmas`` are the model sigmas of its steps (ending where the next
    expert starts, or in 0), what its KSamplerAdvanced would be given. The experts are
    prepared (each has ``guider``, ``begin_run()`` and ``run_options``). ``noise`` is the
    seeded noise on the CPU; ``loop`` gets the noise as the first expert's SAMPLER_SAMPLE
    wrappers left it and returns what the node returns.
    """
    from comfy.patcher_extension import WrapperExecutor

    import torch

    def outer(i: int):
        if i == len(runs):
            return sampler_level(0, noise)
        expert, sigmas = runs[i]

        def original(*args, **kwargs):
            expert.begin_run()  # the guider's model options as the OUTER_SAMPLE wrappers left them
            return outer(i + 1)

        chain = _flat(wrappers_at(OUTER_SAMPLE, expert.guider.model_options))
        return WrapperExecutor.new_class_executor(original, expert.guider, chain).execute(
            noise, latent, LoopSampler(), sigmas, None, None, True, seed, latent_shapes=[latent.shape])

    def sampler_level(i: int, run_noise):
        if i == len(runs):
            return loop(run_noise)
        expert, sigmas = runs[i]
        given = run_noise if i == 0 else torch.zeros_like(run_noise)

        def original(guider, sigmas_, extra_args, callback, wrapped_noise, *args, **kwargs):
            return sampler_level(i + 1, wrapped_noise if i == 0 else run_noise)

        chain = _flat(wrappers_at(SAMPLER_SAMPLE, expert.run_options))
        extra_args = {"model_options": expert.run_options, "seed": seed}
        return WrapperExecutor.new_class_executor(original, LoopSampler(), chain).execute(
            expert.guider, sigmas, extra_args, None, given, latent, None, True)

    return outer(0)


def _flat(by_key: dict) -> list:
    return [w for functions in by_key.values() for w in functions]
