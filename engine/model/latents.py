"""Latent normalisation tables and VAE/latent mismatch checks (spec §4.4).

LATENTs passed between nodes are *raw* VAE latents ``[B, C, T, H, W]``, as the VAE
encodes and decodes them. The diffusion models work on the normalised latent
``(z - mean) / std`` per channel; the sampler calls :func:`normalize` on the way in
and :func:`denormalize` on the way out. The table is picked by the channel count:
16 channels is the Wan 2.1 VAE (A14B experts), 48 the Wan 2.2 VAE (TI2V-5B).

Arithmetic follows the official code: it stores ``1/std`` and computes
``(z - mean) * (1/std)`` and ``z / (1/std) + mean``, in float32.
"""
import torch

from ..errors import public

WAN21_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
WAN21_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)
WAN22_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)
WAN22_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)

# channels -> (VAE version, mean, std, the models that use it)
_TABLES = {
    16: ("2.1", WAN21_MEAN, WAN21_STD, "the A14B experts (T2V-A14B, I2V-A14B)"),
    48: ("2.2", WAN22_MEAN, WAN22_STD, "TI2V-5B"),
}


@public
class LatentMismatchError(ValueError):
    """A latent was given to a VAE (or model) built for the other latent space."""


def vae_version_for_channels(channels: int) -> str:
    """"2.1" for 16 latent channels, "2.2" for 48; anything else raises."""
    if channels not in _TABLES:
        raise LatentMismatchError(
            f"a Wan latent has 16 channels (Wan 2.1 VAE, A14B experts) or 48 (Wan 2.2 VAE, TI2V-5B), "
            f"got {channels}"
        )
    return _TABLES[channels][0]


def latent_stats(channels: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(mean, 1/std)`` as float32 tensors of shape ``[channels]``."""
    vae_version_for_channels(channels)
    _, mean, std, _ = _TABLES[channels]
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device)
    inv_std = 1.0 / torch.tensor(std, dtype=torch.float32, device=device)
    return mean_t, inv_std


def _channel_view(table: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    # Channels sit on dim 1 ([B, C, ...]); broadcast over every later dim.
    return table.view(1, -1, *([1] * (z.ndim - 2)))


def _stats_for(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if z.ndim < 2:
        raise ValueError(f"expected a latent [B, C, T, H, W] with channels on dim 1, got shape {tuple(z.shape)}")
    mean, inv_std = latent_stats(z.shape[1], device=z.device)
    return _channel_view(mean, z), _channel_view(inv_std, z)


def normalize(z: torch.Tensor) -> torch.Tensor:
    """Raw VAE latent -> the diffusion model's space: ``(z - mean) * (1/std)`` per channel."""
    mean, inv_std = _stats_for(z)
    return ((z.float() - mean) * inv_std).to(z.dtype)


def denormalize(z: torch.Tensor) -> torch.Tensor:
    """Diffusion model's space -> raw VAE latent: ``z / (1/std) + mean`` per channel."""
    mean, inv_std = _stats_for(z)
    return (z.float() / inv_std + mean).to(z.dtype)


def mismatch_message(latent_channels: int, vae_version: str, vae_channels: int) -> str:
    """Error text for a latent meeting the wrong VAE: names both and the fix."""
    latent_owner = _TABLES.get(latent_channels)
    what = (
        f"a {latent_channels}-channel latent (Wan {latent_owner[0]} VAE, {latent_owner[3]})"
        if latent_owner
        else f"a {latent_channels}-channel latent (not a Wan latent: those have 16 or 48 channels)"
    )
    return (
        f"{what} was given to the Wan {vae_version} VAE, which uses {vae_channels} channels. "
        "TI2V-5B uses the Wan 2.2 VAE (wan2.2_vae.safetensors, 48 channels); the A14B experts "
        "(T2V/I2V) use the Wan 2.1 VAE (wan_2.1_vae.safetensors, 16 channels). Load the VAE that "
        "matches the model that made this latent."
    )


def check_latent(z: torch.Tensor, vae) -> None:
    """Raise :class:`LatentMismatchError` unless ``z`` ``[B, C, T, H, W]`` fits ``vae``.

    ``vae`` is anything with ``.z_dim`` and ``.version`` (a ``WanVAE``).
    """
    if z.ndim != 5:
        raise LatentMismatchError(
            f"expected a video latent [B, C, T, H, W], got shape {tuple(z.shape)}"
        )
    if z.shape[1] != vae.z_dim:
        raise LatentMismatchError(mismatch_message(z.shape[1], vae.version, vae.z_dim))
