"""Load ``wan_2.1_vae.safetensors`` / ``wan2.2_vae.safetensors`` (spec §4.5).

The files use the official module names with no prefix (``encoder.conv1.weight``,
``decoder.upsamples.3.time_conv.weight``, ``conv1.*``, ``conv2.*``). Which VAE a file
holds, and its widths, are read from the safetensors header alone:

* Wan VAE marker: ``decoder.middle.0.residual.0.gamma``;
* Wan 2.2 marker: ``decoder.upsamples.0.upsamples.0.residual.2.weight``;
* encoder width from ``encoder.conv1.weight``, decoder width from
  ``decoder.head.0.gamma``, latent channels from ``conv2.weight``.

The key check is strict: every missing, unexpected or mis-shaped tensor is named.
Files that are something else (a DiT, the text encoder, a LoRA, another VAE family,
the diffusers layout) get an error saying what they are and which file is expected.
"""
from pathlib import Path

import torch

from . import safetensors_header
from ..errors import public
from .safetensors_header import clip, quote, quote_list
from ..model.vae.model import VAEConfig, WanVAE

WAN_MARKER = "decoder.middle.0.residual.0.gamma"
WAN22_MARKER = "decoder.upsamples.0.upsamples.0.residual.2.weight"
EXPECTED_FILES = (
    "Expected a Wan VAE file in ComfyUI's models/vae folder: wan_2.1_vae.safetensors for the "
    "A14B experts (T2V/I2V) or wan2.2_vae.safetensors for TI2V-5B "
    "(Comfy-Org/Wan_2.2_ComfyUI_Repackaged, split_files/vae)."
)
_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
_LISTED = 8  # names shown per category in error messages


@public
class VAEFileError(ValueError):
    """The file is not a loadable Wan VAE; the message says why and what to use instead."""


def read_header(path) -> dict[str, dict]:
    """``{name: {"dtype": "F32", "shape": [...]}}`` from a strictly checked safetensors header, no tensor data read.

    The checks are the DiT loader's (``engine.weights.safetensors_header``): a truncated or damaged
    file raises :class:`VAEFileError` naming the file (and the tensor) here, before decode.
    """
    path = Path(path)
    if not path.is_file():
        raise VAEFileError(f"VAE file not found: {path}. {EXPECTED_FILES}")
    header = safetensors_header.read_header(path, VAEFileError, EXPECTED_FILES)
    return {k: {"dtype": v.dtype, "shape": list(v.shape)} for k, v in header.tensors.items()}


def detect_vae(path) -> VAEConfig:
    """Tell which Wan VAE a file holds and read its widths, from the header only."""
    header = read_header(path)
    return config_from_shapes({k: v["shape"] for k, v in header.items()}, clip(Path(path).name))


def config_from_shapes(shapes: dict[str, list[int]], name: str = "the file") -> VAEConfig:
    """The :class:`VAEConfig` for a state dict given as ``{key: shape}``; raises :class:`VAEFileError`."""
    if WAN_MARKER not in shapes:
        raise VAEFileError(f"{name} is not a Wan VAE: {describe_foreign(shapes)} {EXPECTED_FILES}")
    version = "2.2" if WAN22_MARKER in shapes else "2.1"
    needed = ("encoder.conv1.weight", "decoder.head.0.gamma", "conv2.weight")
    missing = [k for k in needed if k not in shapes]
    if missing:
        raise VAEFileError(f"{name} looks like a Wan {version} VAE but lacks {missing}. {EXPECTED_FILES}")
    return VAEConfig(
        version=version,
        base_dim=int(shapes["encoder.conv1.weight"][0]),
        dec_dim=int(shapes["decoder.head.0.gamma"][0]),
        z_dim=int(shapes["conv2.weight"][0]),
    )


def describe_foreign(shapes: dict[str, list[int]]) -> str:
    """A sentence saying what a non-Wan-VAE state dict most likely is."""
    keys = list(shapes)

    def has(fragment: str) -> bool:
        return any(fragment in k for k in keys)

    head = next((k for k in keys if k.endswith("head.head.weight")), None)
    if has("head.modulation") or has("blocks.0.self_attn.q.weight"):
        fits = ""
        if head is not None and shapes[head][0] in (64, 192):
            fits = (" This one is TI2V-5B, which needs wan2.2_vae.safetensors." if shapes[head][0] == 192
                    else " This one is an A14B expert, which needs wan_2.1_vae.safetensors.")
        return ("it is a Wan diffusion model (DiT) checkpoint; load it with the Wan22Duo expert or TI2V "
                f"loader from models/diffusion_models.{fits}")
    if has("SelfAttention") or has("shared.weight") or has("token_embedding.weight"):
        return "it is a text encoder (umT5); load it with CLIPLoader (type wan) from models/text_encoders."
    if has("lora_") or has(".lora.") or has("lora_A") or has(".diff_b"):
        return "it is a LoRA; load it with Wan22DuoLoraLoader from models/loras."
    if has("visual.") or has("vision_model."):
        return "it is a CLIP vision model, which Wan 2.2 does not use."
    if has("decoder.up_blocks.") and has("post_quant_conv"):
        return ("it is a VAE in the diffusers layout (decoder.up_blocks...); use the ComfyUI single-file "
                "version instead.")
    if has("decoder.up.0.") or has("decoder.mid.block_1"):
        return "it is an image VAE of another family (SD/SDXL/Flux-style keys such as decoder.up.0...)."
    return f"none of its {len(keys)} keys is {WAN_MARKER!r} (first keys: {quote_list(keys[:3])})."


def check_keys(expected: dict[str, tuple], found: dict[str, list[int]], name: str, version: str) -> None:
    """Strict comparison of key sets and shapes; one error naming every problem (first few of each)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshaped = sorted(
        f"{k}: file {tuple(found[k])}, expected {tuple(expected[k])}"
        for k in set(expected) & set(found)
        if tuple(found[k]) != tuple(expected[k])
    )
    if not (missing or unexpected or misshaped):
        return
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if items:
            more = f" (+{len(items) - _LISTED} more)" if len(items) > _LISTED else ""
            parts.append(f"{len(items)} {label}: [{', '.join(quote(i) for i in items[:_LISTED])}]{more}")
    raise VAEFileError(
        f"{name} does not match the Wan {version} VAE layout read from its own widths; "
        + "; ".join(parts) + f". Is it a modified or pruned VAE? {EXPECTED_FILES}"
    )


def build_vae(config: VAEConfig) -> WanVAE:
    """An empty (meta-device) model for ``config``; fill it with ``load_state_dict(..., assign=True)``."""
    with torch.device("meta"):
        return WanVAE(config)


def load_vae(path, dtype: torch.dtype = torch.float32, device="cpu") -> WanVAE:
    """Load a Wan 2.1 or 2.2 VAE from a ``.safetensors`` file, in ``dtype`` on ``device``.

    Stored fp32, fp16 or bf16 weights are converted to ``dtype`` (fp32, fp16 or bf16).
    """
    from safetensors import SafetensorError, safe_open

    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"VAE dtype must be torch.float32, float16 or bfloat16, got {dtype!r}")
    path = Path(path)
    header = read_header(path)
    shapes = {k: v["shape"] for k, v in header.items()}
    config = config_from_shapes(shapes, clip(path.name))
    model = build_vae(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_keys(expected, shapes, clip(path.name), config.version)
    bad = sorted({v["dtype"] for v in header.values()} - set(_DTYPES))
    if bad:
        raise VAEFileError(f"{clip(path.name)} stores tensors as {quote_list(bad)}; a Wan VAE file holds F32, F16 "
                           f"or BF16 weights.")
    state = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for key in expected:
                state[key] = f.get_tensor(key).to(device=device, dtype=dtype)
    except SafetensorError as err:  # what the strict header check let through (e.g. a gap between tensors)
        raise VAEFileError(f"{clip(path.name)} could not be read ({clip(str(err))}); the file is damaged. "
                           f"Download it again. {EXPECTED_FILES}") from None
    model.load_state_dict(state, strict=True, assign=True)
    model.source = clip(path.name)
    return model.eval().requires_grad_(False)
