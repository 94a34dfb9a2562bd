"""Video geometry of the Wan 2.2 models, written once (spec §1.2).

Two model families share one set of rules with different numbers:

======== =========================== ======== ============== ================ ==========
family   models                      VAE      latent channels spatial stride  size step
======== =========================== ======== ============== ================ ==========
a14b     T2V-A14B, I2V-A14B experts  Wan 2.1  16             8 (pixels/latent) 16
ti2v_5b  TI2V-5B                     Wan 2.2  48             16               32
======== =========================== ======== ============== ================ ==========

* Frames: both VAEs are causal with temporal stride 4. The first frame gets its own
  latent, every further 4 frames one more, so a video has ``4n + 1`` frames and
  ``n + 1`` latent frames (81 -> 21, 121 -> 31).
* Size: the VAE divides width and height by its spatial stride and the DiT then
  patches the latent 2x2, so width and height must be multiples of 2x the stride.

Every function here raises ``ValueError`` naming the bad value and the nearest
valid ones; nothing rounds silently. ``family`` arguments accept the family names
above and also the DiT variant names ``t2v_a14b``, ``i2v_a14b``, ``ti2v_5b``.
"""
from dataclasses import dataclass

TEMPORAL_STRIDE = 4


@dataclass(frozen=True)
class Family:
    """Numbers that differ between the A14B experts and TI2V-5B."""

    name: str
    vae_version: str  # "2.1" or "2.2"
    latent_channels: int  # z_dim of that VAE
    spatial_stride: int  # pixels per latent cell along width and height
    size_multiple: int  # width/height step the DiT accepts (stride x 2x2 patch)


FAMILIES = {
    "a14b": Family("a14b", "2.1", 16, 8, 16),
    "ti2v_5b": Family("ti2v_5b", "2.2", 48, 16, 32),
}
# DiT variants (WanModel.config.variant) map onto their family.
_ALIASES = {"t2v_a14b": "a14b", "i2v_a14b": "a14b"}


def get_family(family: str) -> Family:
    """Look up a family by name ("a14b", "ti2v_5b") or DiT variant ("t2v_a14b", ...)."""
    key = _ALIASES.get(family, family)
    if key not in FAMILIES:
        valid = sorted([*FAMILIES, *_ALIASES])
        raise ValueError(f"unknown model family {family!r}; expected one of {valid}")
    return FAMILIES[key]


def family_for_channels(channels: int) -> Family:
    """The family whose VAE has ``channels`` latent channels (16 -> a14b, 48 -> ti2v_5b)."""
    for fam in FAMILIES.values():
        if fam.latent_channels == channels:
            return fam
    raise ValueError(
        f"a Wan latent has 16 channels (Wan 2.1 VAE, A14B) or 48 (Wan 2.2 VAE, TI2V-5B), got {channels}"
    )


def nearest_valid_frames(frames: int) -> tuple[int, int]:
    """The valid frame counts (4n + 1) just below and just above ``frames`` (equal if valid)."""
    below = max(1, ((frames - 1) // TEMPORAL_STRIDE) * TEMPORAL_STRIDE + 1)
    above = below if below >= frames else below + TEMPORAL_STRIDE
    return below, above


def check_frames(frames: int) -> int:
    """Return ``frames`` if it is a valid video length (4n + 1, at least 1), else raise."""
    if isinstance(frames, bool) or not isinstance(frames, int):
        raise ValueError(f"frame count must be an integer, got {frames!r}")
    if frames < 1 or (frames - 1) % TEMPORAL_STRIDE:
        below, above = nearest_valid_frames(max(frames, 1))
        options = f"{below}" if below == above else f"{below} or {above}"
        raise ValueError(
            f"Wan videos have 4n+1 frames (1, 5, ..., 81, ..., 121); got {frames}. "
            f"Use {options} frames."
        )
    return frames


def latent_frames(frames: int) -> int:
    """Latent frames for a ``4n + 1`` frame video: ``n + 1`` (81 -> 21). Raises if invalid."""
    return (check_frames(frames) - 1) // TEMPORAL_STRIDE + 1


def pixel_frames(latent_frames: int) -> int:
    """Video frames decoded from ``latent_frames`` latent frames: ``4(T - 1) + 1`` (21 -> 81)."""
    if isinstance(latent_frames, bool) or not isinstance(latent_frames, int) or latent_frames < 1:
        raise ValueError(f"latent frame count must be a positive integer, got {latent_frames!r}")
    return (latent_frames - 1) * TEMPORAL_STRIDE + 1


def _nearest_multiples(value: int, step: int) -> str:
    below = max(step, (value // step) * step)
    above = below + step if below < value else below
    return f"{below}" if below == above else f"{below} or {above}"


def check_size(width: int, height: int, family: str) -> tuple[int, int]:
    """Return ``(width, height)`` if both are positive multiples of the family's step, else raise.

    The step is 16 for the A14B experts and 32 for TI2V-5B (e.g. 1280x720 is valid for
    A14B but not for TI2V-5B, whose official size is 1280x704).
    """
    fam = get_family(family)
    step = fam.size_multiple
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value < step or value % step:
            hint = _nearest_multiples(value, step) if isinstance(value, int) and value > 0 else f"{step}"
            raise ValueError(
                f"{name} {value!r} is not valid for {fam.name}: it must be a positive multiple of {step} "
                f"(Wan {fam.vae_version} VAE stride {fam.spatial_stride} x 2x2 DiT patch). Nearest: {hint}."
            )
    return width, height


def latent_shape(family: str, frames: int, height: int, width: int, batch: int = 1) -> tuple[int, int, int, int, int]:
    """Shape ``[B, C, T, H/s, W/s]`` of the raw VAE latent for a video of this size.

    Example: ``latent_shape("a14b", 81, 720, 1280)`` is ``(1, 16, 21, 90, 160)`` and
    ``latent_shape("ti2v_5b", 121, 704, 1280)`` is ``(1, 48, 31, 44, 80)``.
    """
    fam = get_family(family)
    check_size(width, height, family)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch size must be a positive integer, got {batch!r}")
    s = fam.spatial_stride
    return (batch, fam.latent_channels, latent_frames(frames), height // s, width // s)
