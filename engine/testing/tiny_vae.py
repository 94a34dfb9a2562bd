"""Random-weight Wan VAE files for tests, the demo and benchmarks.

``write_tiny_vae`` writes a ``.safetensors`` file with the real key names and the
real latent width (16 channels for 2.1, 48 for 2.2) but small channel widths, so a
whole encode/decode runs in milliseconds on CPU. Pass the real widths (2.1:
``base_dim=96``; 2.2: ``base_dim=160, dec_dim=256``) for a full-size random VAE.

Weights are scaled so activations stay of order one: every conv is drawn with
variance ``1/fan_in`` (the inputs are RMS-normalised), the second conv of each
residual branch and the attention output are halved so the residual stream grows
slowly, norms start near 1 and biases near 0. Decoded values then mostly lie inside
[-1, 1] instead of saturating the final clamp.
"""
import math
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..weights.vae_checkpoint import build_vae
from ..model.vae.model import VAEConfig

TINY_DIMS = {"2.1": (8, 8), "2.2": (8, 8)}  # (base_dim, dec_dim)
Z_DIMS = {"2.1": 16, "2.2": 48}


def write_tiny_vae(
    path,
    version: str = "2.1",
    base_dim: int | None = None,
    dec_dim: int | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> Path:
    """Write a random Wan ``version`` VAE to ``path`` and return the path.

    ``dec_dim`` defaults to ``base_dim``, which defaults to 8.
    """
    if version not in Z_DIMS:
        raise ValueError(f"version must be '2.1' or '2.2', got {version!r}")
    base_dim = base_dim or TINY_DIMS[version][0]
    dec_dim = dec_dim or base_dim
    config = VAEConfig(version=version, base_dim=base_dim, dec_dim=dec_dim, z_dim=Z_DIMS[version])
    shapes = {k: tuple(v.shape) for k, v in build_vae(config).state_dict().items()}
    gen = torch.Generator().manual_seed(seed)
    tensors = {k: _init(k, shape, gen).to(dtype).contiguous() for k, shape in sorted(shapes.items())}
    path = Path(path)
    save_file(tensors, str(path), metadata={"wan22duo": f"random Wan {version} VAE, seed {seed}"})
    return path


def _init(key: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    if key.endswith("gamma"):
        return 1.0 + 0.1 * torch.randn(shape, generator=gen)
    if key.endswith("bias"):
        return 0.02 * torch.randn(shape, generator=gen)
    fan_in = math.prod(shape[1:])
    gain = 0.5 if key.endswith(("residual.6.weight", "proj.weight")) else 1.0
    return torch.randn(shape, generator=gen) * (gain / math.sqrt(fan_in))
