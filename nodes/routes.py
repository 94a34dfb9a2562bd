"""HTTP route for the web extension: which Wan 2.2 model is in a diffusion-model file?

The canvas plot on ``Wan22DuoSampler`` needs the model's official boundary when the node's
``boundary`` is -1 (auto): 0.875 for T2V-A14B, 0.900 for I2V-A14B, none for TI2V-5B (one model,
no switch). The browser only knows the loader's ``unet_name``, so it asks

    GET /wan22duo/model_info?name=<file in diffusion_models (.safetensors or .gguf)>
    -> {"variant": "t2v_a14b" | "i2v_a14b" | "ti2v_5b", "role": ..., "boundary": ..., ...}
    (or {"variant": null, "error": ..., "guess": <same shape from the file name, or null>})

The answer comes from the checkpoint header (``engine.weights.checkpoint.detect_dit``), never from
loading weights. Everything except :func:`register_routes` is plain Python and testable without
ComfyUI; ComfyUI modules are imported inside functions only.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
from functools import lru_cache
from typing import Callable, Optional

log = logging.getLogger("wan22duo")

ROUTE = "/wan22duo/model_info"
FOLDER = "diffusion_models"
VARIANTS = ("t2v_a14b", "i2v_a14b", "ti2v_5b")
# Official switch boundaries (spec §1.3); TI2V-5B is a single model and never switches.
OFFICIAL_BOUNDARY = {"t2v_a14b": 0.875, "i2v_a14b": 0.900, "ti2v_5b": None}
LABELS = {"t2v_a14b": "T2V-A14B", "i2v_a14b": "I2V-A14B", "ti2v_5b": "TI2V-5B"}

_HIGH = re.compile(r"high[\s_.-]?noise|(^|[\s_.-])high([\s_.-]|$)")
_LOW = re.compile(r"low[\s_.-]?noise|(^|[\s_.-])low([\s_.-]|$)")


def guess_variant(name: str) -> Optional[str]:
    """Variant from a file name alone (the fallback when the header can't be read)."""
    base = os.path.basename(str(name)).lower()
    if "ti2v" in base or re.search(r"(^|[^0-9.])5b", base):
        return "ti2v_5b"
    if "i2v" in base:
        return "i2v_a14b"
    if "t2v" in base:
        return "t2v_a14b"
    return None


def guess_role(name: str, variant: Optional[str] = None) -> str:
    """``"high_noise"``, ``"low_noise"``, ``"single"`` (TI2V-5B) or ``"unknown"``, from the file name."""
    if variant == "ti2v_5b":
        return "single"
    base = os.path.basename(str(name)).lower()
    high, low = bool(_HIGH.search(base)), bool(_LOW.search(base))
    if high != low:
        return "high_noise" if high else "low_noise"
    return "unknown"


def describe(variant: str, name: str, source: str) -> dict:
    """The route's answer for a known variant."""
    return {
        "name": name,
        "variant": variant,
        "label": LABELS[variant],
        "role": guess_role(name, variant),
        "boundary": OFFICIAL_BOUNDARY[variant],
        "source": source,
    }


@lru_cache(maxsize=64)
def _variant_from_header(path: str, mtime_ns: int, size: int) -> str:
    # mtime and size are part of the key so a replaced file is read again.
    from ..engine.weights.checkpoint import detect_dit

    variant = detect_dit(path).variant
    if variant not in VARIANTS:
        raise ValueError(f"detect_dit returned unknown variant {variant!r} for {path!r}; expected one of {VARIANTS}")
    return variant


def model_info(path: str, name: Optional[str] = None) -> dict:
    """Describe the DiT checkpoint at ``path`` from its header; raises if it is not a Wan 2.2 DiT."""
    stat = os.stat(path)
    variant = _variant_from_header(os.fspath(path), stat.st_mtime_ns, stat.st_size)
    return describe(variant, name if name is not None else os.path.basename(path), "header")


def lookup(name: str, resolve: Callable[[str], Optional[str]]) -> tuple[int, dict]:
    """``(http_status, json_body)`` for a file name; ``resolve`` maps a listed name to its path or None.

    A file that is missing or not a Wan 2.2 DiT is an answer, not a failure: status 200 with
    ``variant`` None, an ``error`` message and the file-name ``guess`` (or None). That keeps the
    browser console clean when a workflow names a file this install lacks.
    """
    if not name:
        return 400, {"error": "missing query parameter 'name' (a file in the diffusion_models folder)"}
    guess = guess_variant(name)
    unknown = {"name": name, "variant": None, "guess": describe(guess, name, "name") if guess else None}
    path = resolve(name)
    if path is None:
        return 200, {**unknown, "error": f"{name!r} is not a file in ComfyUI's {FOLDER!r} folder"}
    try:
        return 200, model_info(path, name)
    except (ValueError, OSError) as exc:  # CheckpointError is a ValueError
        return 200, {**unknown, "error": f"could not read {name!r} as a Wan 2.2 DiT: {exc}"}


def _resolve_in_comfy(name: str) -> Optional[str]:
    """Full path of a file the expert loaders list; names outside that list are refused.

    The list is the loaders' own (``loaders.model_files``): ComfyUI's ``diffusion_models`` list
    plus the ``.gguf`` files of its paths, which ComfyUI's list never holds, so a GGUF expert is
    described from its header (``detect_dit`` reads it with ``engine.weights.gguf``) rather than
    guessed from its name.
    """
    import folder_paths

    from .loaders import model_files

    if name not in model_files():
        return None
    return folder_paths.get_full_path(FOLDER, name)


_registered = False


def register_routes() -> bool:
    """Add the route to ComfyUI's server; returns False quietly when ComfyUI is absent.

    Call once at import time of the pack (nodes/__init__.py): ComfyUI copies its route table
    into the web app (and under /api) right after loading custom nodes.
    """
    global _registered
    if _registered:
        return True
    try:
        from server import PromptServer

        routes = PromptServer.instance.routes
    except (ImportError, AttributeError):
        return False

    @routes.get(ROUTE)
    async def wan22duo_model_info(request):
        from aiohttp import web

        name = request.query.get("name", "")
        # Reading a header is quick, but keep file I/O off the event loop all the same.
        loop = asyncio.get_running_loop()
        status, body = await loop.run_in_executor(None, lookup, name, _resolve_in_comfy)
        return web.json_response(body, status=status)

    _registered = True
    log.debug("Wan22Duo: registered GET %s", ROUTE)
    return True
