"""The one place that touches optional ComfyUI modules.

Every helper imports ComfyUI at the point of use and falls back to plain-PyTorch
behaviour when ComfyUI is absent (tests, the demo), so the node modules import and
run anywhere. Nothing here is evaluated at import time.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Optional

import torch

log = logging.getLogger("wan22duo")


def _model_management():
    """``comfy.model_management`` inside ComfyUI, else None."""
    try:
        import comfy.model_management as mm
    except ImportError:
        return None
    return mm


def comfy_available() -> bool:
    return _model_management() is not None


# ---------------------------------------------------------------- files


def list_files(folder: str) -> list[str]:
    """Names in a ComfyUI model folder (``diffusion_models``, ``vae``); empty without ComfyUI."""
    try:
        import folder_paths
    except ImportError:
        return []
    return list(folder_paths.get_filename_list(folder))


def list_files_by_extension(folder: str, extensions: tuple[str, ...], registered: Optional[str] = None) -> list[str]:
    """Names with ``extensions`` under the paths of ComfyUI's ``folder``; empty without ComfyUI.

    ComfyUI lists a folder only with its own extensions (no ``.gguf`` for
    ``diffusion_models``). When another pack registered a folder name for exactly these
    files (ComfyUI-GGUF's ``unet_gguf``: the diffusion_models and unet paths, ``.gguf``),
    its cached list is used; otherwise the folder's paths are searched here.
    """
    try:
        import folder_paths
    except ImportError:
        return []
    if registered and registered in folder_paths.folder_names_and_paths:
        return [n for n in folder_paths.get_filename_list(registered) if n.lower().endswith(extensions)]
    names = set()
    for base in folder_paths.get_folder_paths(folder):
        files, _ = folder_paths.recursive_search(base, excluded_dir_names=[".git"])
        names.update(folder_paths.filter_files_extensions(files, extensions))
    return sorted(names)


def resolve_path(folder: str, name: str) -> str:
    """Full path of ``name`` in ComfyUI's ``folder``; an existing absolute path is taken as is.

    The absolute-path case is what lets tests, the demo and API users call the loaders
    without ComfyUI.
    """
    if not isinstance(name, str) or not name:
        got = "nothing (None)" if name is None else f"a {type(name).__name__}" if name != "" else "an empty string"
        raise ValueError(f"the {folder} file name must be a file name from the list, got {got}")
    if os.path.isabs(name) and os.path.isfile(name):
        return name
    try:
        import folder_paths
    except ImportError:
        raise FileNotFoundError(
            f"{name!r} is not an existing absolute path, and ComfyUI's folder_paths is not available "
            f"to look it up in the {folder!r} folder; pass a full path when running outside ComfyUI"
        ) from None
    path = folder_paths.get_full_path(folder, name)
    if path is None:
        raise FileNotFoundError(
            f"{name!r} was not found in ComfyUI's {folder!r} folder(s) {folder_paths.get_folder_paths(folder)}; "
            f"put the file there (or pick another one) and refresh the node list"
        )
    return path


def temp_directory() -> str:
    """ComfyUI's temp folder (emptied when the server starts), or the system's temp folder without ComfyUI."""
    try:
        import folder_paths
    except ImportError:
        import tempfile

        return tempfile.gettempdir()
    return folder_paths.get_temp_directory()


def save_path(filename_prefix: str, width: int, height: int, fallback: Optional[str] = None) -> tuple[str, str, str]:
    """``(folder, file name stem, subfolder)`` for a new output file, as ComfyUI's Save nodes number them
    (``<prefix>_00001_``); without ComfyUI the stem is the prefix's name in ``fallback`` (or the temp folder)."""
    try:
        import folder_paths
    except ImportError:
        folder = os.path.join(fallback or temp_directory(), os.path.dirname(filename_prefix))
        os.makedirs(folder, exist_ok=True)
        return folder, f"{os.path.basename(filename_prefix)}_00001_", os.path.dirname(filename_prefix)
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
        filename_prefix, folder_paths.get_output_directory(), width, height)
    os.makedirs(folder, exist_ok=True)
    return folder, f"{name}_{counter:05}_", subfolder


# ---------------------------------------------------------------- devices


def default_device() -> torch.device:
    """ComfyUI's main torch device, or the CPU without ComfyUI."""
    mm = _model_management()
    return mm.get_torch_device() if mm is not None else torch.device("cpu")


def intermediate_device() -> torch.device:
    """Where node outputs (latents, images) live between nodes: ComfyUI's choice, else CPU."""
    mm = _model_management()
    return mm.intermediate_device() if mm is not None else torch.device("cpu")


def device_choices() -> list[str]:
    """Combo values for a ``device`` input: auto, cpu, then every visible CUDA device."""
    cuda = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return ["auto", "cpu"] + cuda


SUPPORTED_DEVICES = ("cpu", "cuda")  # the engine's kernels, streaming and memory estimates know these two


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> :func:`default_device`; anything else is checked and parsed (CPU and CUDA only)."""
    if not isinstance(name, str):
        raise ValueError(f"device must be a string such as 'cpu' or 'cuda:0', got {name!r}; expected one of "
                         f"{device_choices()}")
    device = default_device() if name == "auto" else None
    if device is None:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ValueError(f"device {name!r} is not a torch device; expected one of {device_choices()}") from None
    if device.type not in SUPPORTED_DEVICES:
        origin = f"'auto' (ComfyUI's device is {device})" if name == "auto" else repr(name)
        raise ValueError(f"device {origin} is not supported: the Wan 2.2 Duo loaders run on CPU and CUDA devices "
                         f"only; choose one of {device_choices()} (or use ComfyUI's own loaders with "
                         "Wan22DuoModelSampler)")
    if name == "auto":
        return device
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = 0 if device.index is None else device.index
        if index >= count:
            raise ValueError(
                f"device {name!r} is not available ({count} CUDA device(s) visible); choose one of {device_choices()}"
            )
    return device


# ---------------------------------------------------------------- run-time cooperation


def interrupt_check() -> Optional[Callable[[], None]]:
    """ComfyUI's Cancel check (raises when the user pressed Cancel), or None outside ComfyUI."""
    mm = _model_management()
    return mm.throw_exception_if_processing_interrupted if mm is not None else None


def free_memory(required_bytes: int, device: torch.device) -> None:
    """Ask ComfyUI to unload its own models until ``required_bytes`` fit on ``device``.

    Our experts live outside ComfyUI's model manager, so it cannot see them; calling
    this before an expert moves to a GPU lets ComfyUI drop e.g. the text encoder first.
    """
    mm = _model_management()
    if mm is None or torch.device(device).type == "cpu":
        return
    mm.free_memory(int(required_bytes), torch.device(device))


def empty_cache() -> None:
    """Return cached allocator blocks to the driver (ComfyUI's way if present)."""
    mm = _model_management()
    if mm is not None:
        mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------- progress and previews


def _make_previewer(latent_channels: int):
    """A ComfyUI latent previewer for Wan 2.1 (16 ch) or Wan 2.2 (48 ch) latents, or None.

    ``latent_preview.prepare_callback`` wants a ModelPatcher, which we do not have, so
    the previewer is built from the latent format directly. It expects normalized
    (model-space) latents, which is what the sampler hands to the callback.
    """
    try:
        import comfy.latent_formats
        import latent_preview
    except ImportError:
        return None
    fmt = comfy.latent_formats.Wan22() if latent_channels == 48 else comfy.latent_formats.Wan21()
    try:
        return latent_preview.get_previewer(default_device(), fmt)
    except Exception as exc:  # a preview must never stop a run
        log.warning("Wan22Duo: latent previews disabled (%s)", exc)
        return None


class Progress:
    """One progress bar over all steps of both experts, with latent previews when available.

    Call ``progress(step, x0)`` after each finished step (0-based ``step``; ``x0`` is
    the normalized x0 prediction or None), or ``progress.absolute(done, total)``.
    ``latent_channels`` (16 or 48) turns on previews; None means a bar only. Outside
    ComfyUI it only records how far it got.
    """

    def __init__(self, steps: int, latent_channels: Optional[int] = None):
        self.steps = int(steps)
        self.done = 0
        self._bar = None
        self._previewer = None
        try:
            import comfy.utils
        except ImportError:
            return
        self._bar = comfy.utils.ProgressBar(self.steps)
        if latent_channels is not None:
            self._previewer = _make_previewer(latent_channels)

    def absolute(self, done: int, total: int) -> None:
        """``done`` of ``total`` units finished (no preview)."""
        self.done, self.steps = int(done), int(total)
        if self._bar is not None:
            self._bar.update_absolute(self.done, self.steps)

    def __call__(self, step: int, x0: Optional[torch.Tensor] = None) -> None:
        self.done = int(step) + 1
        if self._bar is None:
            return
        preview = None
        if self._previewer is not None and x0 is not None:
            try:
                preview = self._previewer.decode_latent_to_preview_image("JPEG", x0)
            except Exception as exc:
                log.warning("Wan22Duo: preview failed, continuing without previews (%s)", exc)
                self._previewer = None
        self._bar.update_absolute(self.done, self.steps, preview)
