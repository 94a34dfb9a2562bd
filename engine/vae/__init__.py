"""Wan 2.1 and Wan 2.2 causal video VAEs (spec §4).

    vae = load_vae("wan_2.1_vae.safetensors", dtype=torch.float32, device="cpu")
    z = vae.encode(video)              # [B, 3, 4n+1, H, W] in [-1, 1] -> raw latent [B, 16, n+1, H/8, W/8]
    video = vae.decode(z, tiling=Tiling(512, 64))   # -> [B, 3, 4n+1, H, W] in [-1, 1]

``detect_vae(path)`` reads only the file header. ``write_tiny_vae`` (in ``.tiny``)
writes random-weight files for tests and benchmarks.
"""
from .loading import VAEFileError, detect_vae, load_vae
from .model import NonFiniteError, VAEConfig, WanVAE
from .tiling import Tiling

__all__ = ["NonFiniteError", "VAEConfig", "VAEFileError", "Tiling", "WanVAE", "detect_vae", "load_vae"]
