"""Tiny random-weight model files for the real-ComfyUI suite, written with the pack's own writers.

Every function writes one file and returns its path; none needs ComfyUI. The writers are the pack's
(``engine/testing/tiny.py``, ``engine/testing/tiny_vae.py``, ``engine/testing/tiny_lora.py``), imported from this clone as the
package ``wan22duo`` (see ``scripts/packpath.py``), so these files are what the unit tests use too.

What ComfyUI's own loaders need from them (facts from ComfyUI 0.3.76, not choices of ours):

* a DiT is recognised as Wan from its shapes: ``dim`` a multiple of 128 (heads of 128) and
  ``text_dim`` 4096. The pack's tiny DiT (dim 256, 2 layers) meets both.
* ComfyUI's ``VAELoader`` takes the Wan 2.1 VAE's width from the file, so the pack's tiny 2.1 VAE
  loads; it builds the Wan 2.2 VAE at its full size (dim 160, decoder 256) whatever the file holds
  and a smaller file fails with a size mismatch. ``write_vae(..., full_size=True)`` writes a random
  2.2 VAE at the real widths for it (1.4 GB in bf16, about 8 s to write; 6 GB of RAM to decode).
* GGUF files come from ``engine/testing/tiny_gguf.py`` (issue 12); until the pack has it,
  :func:`write_gguf_dit` raises :class:`NoWriterError` naming the file.
"""
from __future__ import annotations

import importlib
import re
import sys
import zlib
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent

# Wan 2.2 variant from an official or community file name, most specific first ("ti2v" holds "i2v").
_VARIANT_PATTERNS = (("ti2v_5b", r"ti2v|5b"), ("i2v_a14b", r"i2v"), ("t2v_a14b", r"t2v"))
# DiT storage from a file name; anything else is written as fp16 (the dtype of the official files).
_STORAGE_PATTERNS = (("fp8_scaled", r"fp8_(e4m3fn_)?scaled"), ("fp8_e5m2_scaled", r"fp8_e5m2_scaled"),
                     ("fp8_e5m2", r"fp8_e5m2"), ("fp8_e4m3fn", r"fp8"), ("bf16", r"bf16"),
                     ("fp32", r"fp32"))


def pack():
    """This clone imported as the package ``wan22duo`` (once per process)."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from packpath import load_pack
    finally:
        sys.path.remove(str(REPO / "scripts"))
    return load_pack()


def pack_module(name: str):
    """``"engine.testing.tiny"`` -> that module of this clone (``wan22duo.engine.testing.tiny``)."""
    return importlib.import_module(f"{pack().__name__}.{name}")


def seed_for(name: str) -> int:
    """A seed from a file name, so two files (e.g. the high- and low-noise experts) never share weights."""
    return zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF


def variant_from_name(name: str) -> str | None:
    """``"t2v_a14b" | "i2v_a14b" | "ti2v_5b"`` from a model file name, or None when it does not say."""
    lowered = name.lower().replace("-", "_")
    for variant, pattern in _VARIANT_PATTERNS:
        if re.search(pattern, lowered):
            return variant
    return None


def storage_from_name(name: str) -> str:
    """The ``engine.testing.tiny`` storage a file name promises (``..._fp8_scaled`` -> ``"fp8_scaled"``), else fp16."""
    lowered = name.lower()
    for storage, pattern in _STORAGE_PATTERNS:
        if re.search(pattern, lowered):
            return storage
    return "fp16"


def vae_version_from_name(name: str) -> str | None:
    """``"2.1"`` or ``"2.2"`` from a VAE file name (``wan_2.1_vae``, ``wan2.2_vae``), or None."""
    match = re.search(r"2[._]?([12])", name)
    return f"2.{match.group(1)}" if match else None


def write_dit(path: Path, variant: str, storage: str = "fp16", prefix: str = "", seed: int = 0) -> Path:
    """A tiny random DiT of ``variant`` (dim 256, 2 layers, the real key names) in ``storage``."""
    return pack_module("engine.testing.tiny").write_tiny_dit(path, variant=variant, storage=storage, prefix=prefix, seed=seed)


def write_vae(path: Path, version: str, full_size: bool = False, seed: int = 0) -> Path:
    """A random Wan ``version`` VAE: tiny widths, or the real ones (``full_size``, stored in bf16)."""
    tiny = pack_module("engine.testing.tiny_vae")
    if not full_size:
        return tiny.write_tiny_vae(path, version=version, seed=seed)
    widths = {"2.1": (96, 96), "2.2": (160, 256)}[version]
    return tiny.write_tiny_vae(path, version=version, base_dim=widths[0], dec_dim=widths[1],
                               dtype=torch.bfloat16, seed=seed)


def write_lora(path: Path, dit_path: Path, seed: int = 0) -> Path:
    """A rank-4 LoRA (``diffusion_model.<layer>.lora_up/down`` keys) for every Linear layer of ``dit_path``."""
    pack_module("engine.testing.tiny_lora").write_tiny_lora(path, dit_path, seed=seed)
    return Path(path)


class NoWriterError(RuntimeError):
    """No tiny writer exists for a file a workflow needs."""


def write_gguf_dit(path: Path, variant: str, quant: str = "Q8_0", seed: int = 0) -> Path:
    """A tiny GGUF DiT in city96's layout, with the pack's GGUF writer (``engine.testing.tiny_gguf``, issue 12).

    Raises :class:`NoWriterError` naming the file while the pack has no such writer.
    """
    module = f"{pack().__name__}.engine.testing.tiny_gguf"
    try:
        writer = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        raise NoWriterError(
            f"no tiny GGUF writer in the pack yet (engine/testing/tiny_gguf.py, issue 12), so {Path(path).name} "
            f"({variant}, {quant}) cannot be written") from None
    return writer.write_tiny_gguf(path, variant=variant, qtype=quant, seed=seed)


def gguf_quant_from_name(name: str) -> str:
    """The quantization a GGUF file name states (``..._Q4_K_M.gguf`` -> ``"Q4_K"``), Q8_0 when it does not."""
    match = re.search(r"(Q\d_(K|0|1)|F16|BF16|F32)", name.upper())
    return match.group(1) if match else "Q8_0"


def write_image(path: Path, width: int = 160, height: int = 112, seed: int = 0) -> Path:
    """A smooth random RGB PNG (a gradient plus noise), so crops and resizes have something to move."""
    from PIL import Image

    generator = torch.Generator().manual_seed(seed)
    ys = torch.linspace(0, 1, height)[:, None, None]
    xs = torch.linspace(0, 1, width)[None, :, None]
    base = torch.cat([xs.expand(height, width, 1), ys.expand(height, width, 1), (xs * ys).expand(height, width, 1)], 2)
    pixels = (base * 0.8 + 0.2 * torch.rand(height, width, 3, generator=generator)).clamp(0, 1)
    path = Path(path)
    Image.fromarray((pixels * 255).round().to(torch.uint8).numpy()).save(path)
    return path
