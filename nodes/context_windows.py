"""``Wan22DuoContextWindows``: context-window settings for both sampler nodes' optional ``context_windows`` input.

The settings become an ``engine.sampling.context_windows.ContextWindows``, which the one loop
uses to run each step's model calls on overlapping windows of the latent (see that module for
the schedules, fuses, causal anchor and FreeNoise). An options node, as the step cache is: the
samplers' existing inputs stay as they were, a workflow without it runs exactly as before, and
one node can feed several samplers.

ComfyUI's own ``WanContextWindowsManual`` on a MODEL keeps working on ``Wan22DuoModelSampler``
(it acts inside ComfyUI's model call, as on a KSampler); the two cannot be combined on one run,
since windows inside windows would split each window again.
"""
from __future__ import annotations

from ..engine.sampling.context_windows import FUSES, SCHEDULES, ContextWindows

CONTEXT_WINDOWS = "WAN22DUO_CONTEXT_WINDOWS"
MAX_FRAMES = 16384
WINDOW_TIP = ("Optional context windows (Wan22DuoContextWindows): each step runs the model on overlapping windows of "
              "the video and blends them, for videos longer than the model's clip. Unconnected, or a video no longer "
              "than one window: the whole latent at once, as before.")


def window_inputs() -> dict:
    """The optional input both samplers append (after their other optional inputs; its name is public API)."""
    return {"context_windows": (CONTEXT_WINDOWS, {"tooltip": WINDOW_TIP})}


class Wan22DuoContextWindows:
    CATEGORY = "Wan22Duo/sampling"
    DESCRIPTION = (
        "Context windows for the Wan 2.2 Duo samplers: a video longer than the model's clip (81 frames for A14B) is "
        "denoised in overlapping windows at every step and the windows are blended, so memory stays that of one "
        "window. Both experts use the same windows. The uniform schedule moves the seams from step to step; the "
        "causal anchor gives each window the frame before it as context; FreeNoise repeats shuffled noise so the "
        "windows agree. Works with T2V-A14B and I2V-A14B (the start image conditions the first window, or every window "
        "with retain_first_frame); TI2V-5B runs with a warning (reported not to work well with windows)."
    )
    RETURN_TYPES = (CONTEXT_WINDOWS,)
    RETURN_NAMES = ("context_windows",)
    OUTPUT_TOOLTIPS = ("Connect to context_windows of Wan22DuoSampler or Wan22DuoModelSampler.",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "context_length": ("INT", {
                "default": 81, "min": 5, "max": MAX_FRAMES, "step": 4,
                "tooltip": "Frames per window, 4n+1 (81: the A14B clip length). Becomes (length-1)/4+1 latent "
                           "frames."}),
            "context_overlap": ("INT", {
                "default": 32, "min": 0, "max": MAX_FRAMES, "step": 4,
                "tooltip": "Frames two neighbouring windows share; rounded down to whole latent frames (4 frames "
                           "each). More overlap blends better and costs more windows per step."}),
            "schedule": (list(SCHEDULES), {
                "default": "uniform",
                "tooltip": "uniform: windows shift a little at every step so seams do not stay in one place. "
                           "static: the same windows at every step."}),
            "fuse": (list(FUSES), {
                "default": "pyramid",
                "tooltip": "How overlapping windows are blended on a frame. pyramid: by distance from the window's "
                           "edge. overlap_linear: a linear cross-fade over the shared frames. flat: plain mean."}),
            "causal_anchor": ("BOOLEAN", {
                "default": True,
                "tooltip": "Give each window after the first the latent frame before it as context (its output is "
                           "dropped): Wan treats a clip's first latent frame as a start frame."}),
            "freenoise": ("BOOLEAN", {
                "default": True,
                "tooltip": "FreeNoise: frames past the first window start from shuffled copies of earlier frames' "
                           "noise (deterministic per seed), which keeps the windows consistent."}),
        }, "optional": {
            "retain_first_frame": ("BOOLEAN", {
                "default": False,
                "tooltip": "I2V-A14B: give every window the start image as its first (known) frame, so windows far "
                           "from the start still see it (as ComfyUI's WanContextWindowsManual retain_first_frame). "
                           "Keeps the background and colours of the start image; may pull late windows back "
                           "toward the first frame. No effect on T2V or TI2V-5B."}),
        }}

    def make(self, context_length: int = 81, context_overlap: int = 32, schedule: str = "uniform",
             fuse: str = "pyramid", causal_anchor: bool = True, freenoise: bool = True,
             retain_first_frame=None):
        return (ContextWindows.from_video_frames(context_length, context_overlap, schedule=schedule, fuse=fuse,
                                                 causal_anchor=bool(causal_anchor), freenoise=bool(freenoise),
                                                 retain_first_frame=bool(retain_first_frame or False)),)


def checked_windows(context_windows, node: str):
    """The input as ContextWindows (None when unconnected); anything else is named."""
    if context_windows is None or isinstance(context_windows, ContextWindows):
        return context_windows
    raise ValueError(f"{node}: context_windows got a {type(context_windows).__name__}; connect a "
                     "Wan22DuoContextWindows node (nodes/context_windows.py)")


def refuse_model_windows(models, node: str = "Wan22DuoModelSampler") -> None:
    """Our windows and ComfyUI's context handler on a MODEL together would window each window again."""
    for name, model in models:
        if model is not None and (getattr(model, "model_options", None) or {}).get("context_handler") is not None:
            raise ValueError(
                f"{node}: {name} carries ComfyUI context windows (WanContextWindowsManual / ContextWindowsManual) and "
                "the context_windows input is connected too, which would split each window again. Use one: remove "
                "the context-window node on the MODEL, or disconnect context_windows.")


NODE_CLASS_MAPPINGS = {"Wan22DuoContextWindows": Wan22DuoContextWindows}
NODE_DISPLAY_NAME_MAPPINGS = {"Wan22DuoContextWindows": "Wan 2.2 Duo Context Windows (long video)"}
