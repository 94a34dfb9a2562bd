"""``WanVAE``: the Wan 2.1 / Wan 2.2 causal video VAE with chunked encode and decode.

Time is processed in the reference's chunks (spec §4.3): encode takes frame 0, then
frames 1-4, 5-8, ...; decode takes one latent frame at a time. The per-layer cache
lives in a dict local to each call, so the module holds no state between calls and
peak memory does not grow with the number of frames (apart from the output, which
is allocated once and filled chunk by chunk).

Latents are raw (un-normalised) ``[B, z_dim, T, H/s, W/s]``; see ``engine.model.latents``
for the normalisation the diffusion models use.
"""
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn

from .. import geometry
from ...errors import public
from ..latents import check_latent
from .layers import CausalConv3d
from .tiling import Tile, Tiling, plan_tiles
from .wan21 import Decoder21, Encoder21
from .wan22 import Decoder22, Encoder22, patchify, unpatchify

Progress = Callable[[int, int], None]
Chunks = list[tuple[int, int]]


@public
class NonFiniteError(ValueError):
    """NaN/inf going into or coming out of the VAE: one NaN cell would spread over the whole video."""


def check_finite(tensor: torch.Tensor, what: str, cause: str) -> None:
    """Raise :class:`NonFiniteError` naming ``what`` and the likely ``cause`` unless all values are finite."""
    if not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise NonFiniteError(f"{what} holds {bad} NaN/inf values of {tensor.numel()}; {cause}")


@dataclass(frozen=True)
class VAEConfig:
    """What varies between VAE files: the version and the widths read from the weights."""

    version: str  # "2.1" or "2.2"
    base_dim: int  # encoder width (96 for 2.1, 160 for 2.2)
    dec_dim: int  # decoder width (96 for 2.1, 256 for 2.2)
    z_dim: int  # latent channels (16 for 2.1, 48 for 2.2)

    def __post_init__(self):
        if self.version not in ("2.1", "2.2"):
            raise ValueError(f"unknown Wan VAE version {self.version!r}; expected '2.1' or '2.2'")

    @property
    def spatial_stride(self) -> int:
        return 8 if self.version == "2.1" else 16


class WanVAE(nn.Module):
    """Encoder, decoder and the two 1x1x1 convs around the latent (``conv1``, ``conv2``)."""

    temporal_stride = geometry.TEMPORAL_STRIDE

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        z = config.z_dim
        encoder, decoder = (Encoder21, Decoder21) if config.version == "2.1" else (Encoder22, Decoder22)
        self.encoder = encoder(config.base_dim, 2 * z)
        self.conv1 = CausalConv3d(2 * z, 2 * z, 1)  # -> mean and log-variance; the latent is the mean
        self.conv2 = CausalConv3d(z, z, 1)
        self.decoder = decoder(config.dec_dim, z)
        self.source: Optional[str] = None  # the file the weights came from (set by the loader), for messages

    # -- properties the rest of the engine reads -------------------------------------------
    @property
    def version(self) -> str:
        return self.config.version

    @property
    def z_dim(self) -> int:
        return self.config.z_dim

    @property
    def spatial_stride(self) -> int:
        return self.config.spatial_stride

    @property
    def dtype(self) -> torch.dtype:
        return self.conv2.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv2.weight.device

    def extra_repr(self) -> str:
        c = self.config
        return f"version={c.version}, base_dim={c.base_dim}, dec_dim={c.dec_dim}, z_dim={c.z_dim}"

    # -- encode ----------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, video: torch.Tensor, tiling: Tiling | None = None) -> torch.Tensor:
        """Video ``[B, 3, F, H, W]`` in [-1, 1] -> raw latent ``[B, z_dim, (F-1)/4 + 1, H/s, W/s]`` (float32).

        ``F`` must be 4n + 1 and ``H``, ``W`` multiples of the spatial stride (8 for
        Wan 2.1, 16 for Wan 2.2). ``tiling`` splits large frames into blended tiles.
        """
        self._check_video(video)
        check_finite(video, "the video to encode", "encoding it would spread them over the whole latent. Check the "
                     "node that made the frames.")
        b, _, frames, height, width = video.shape
        s = self.spatial_stride
        latent = torch.zeros(b, self.z_dim, geometry.latent_frames(frames), height // s, width // s,
                             dtype=torch.float32, device=self.device)
        for tile in plan_tiles(height // s, width // s, tiling, s, scale=1):
            rows, cols = tile.scaled(s)
            part = self._encode_tile(video[:, :, :, rows, cols].to(self.device, self.dtype), encode_chunks(frames))
            weight = tile.row_weight.to(self.device)[:, None] * tile.col_weight.to(self.device)[None, :]
            latent[:, :, :, tile.rows, tile.cols] += part * weight
        check_finite(latent, f"the latent the Wan {self.version} VAE encoded from finite frames",
                     self._weights_hint())
        return latent

    def _weights_hint(self) -> str:
        dtype = str(self.dtype).replace("torch.", "")
        overflow = " or fp16 overflowed (use dtype fp32 or bf16 on Wan22DuoVAELoader)" if dtype == "float16" else ""
        usual = "wan_2.1_vae.safetensors" if self.version == "2.1" else "wan2.2_vae.safetensors"
        loaded = f"the VAE file {self.source}" if self.source else f"the VAE file ({usual})"
        return f"the VAE's weights ({dtype}) hold NaN/inf{overflow}. Load another copy of {loaded}."

    def _encode_tile(self, video: torch.Tensor, chunks: Chunks) -> torch.Tensor:
        """Run the encoder over ``chunks`` of frames; returns the latent mean (float32)."""
        cache: dict = {}
        parts = []
        for start, stop in chunks:
            x = video[:, :, start:stop]
            if self.version == "2.2":
                x = patchify(x)
            h = self.conv1(self.encoder(x, cache), cache)
            parts.append(h[:, : self.z_dim].float())
        return torch.cat(parts, dim=2)

    def _check_video(self, video: torch.Tensor) -> None:
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"expected a video [B, 3, F, H, W] in [-1, 1], got shape {tuple(video.shape)}")
        geometry.check_frames(int(video.shape[2]))
        s = self.spatial_stride
        for name, value in (("height", video.shape[3]), ("width", video.shape[4])):
            if value % s:
                raise ValueError(
                    f"video {name} {value} is not a multiple of {s}, the Wan {self.version} VAE's spatial "
                    f"stride; crop or resize to {max(s, value // s * s)} or {(value // s + 1) * s}"
                )

    # -- decode ----------------------------------------------------------------------------
    @torch.no_grad()
    def decode(
        self,
        latent: torch.Tensor,
        tiling: Tiling | None = None,
        progress: Progress | None = None,
        output_device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Raw latent ``[B, z_dim, T, h, w]`` -> video ``[B, 3, 4(T-1)+1, h*s, w*s]`` in [-1, 1] (float32).

        ``progress(done, total)`` is called after every latent frame of every tile.
        ``output_device`` (default: the VAE's device) is where the video is assembled;
        pass "cpu" to keep a long video off the accelerator.
        """
        b, t, h, w, s, out_device, tiles = self._decode_plan(latent, tiling, output_device)
        alloc = torch.empty if len(tiles) == 1 else torch.zeros
        video = alloc(b, 3, geometry.pixel_frames(t), h * s, w * s, dtype=torch.float32, device=out_device)
        total, done = t * len(tiles), 0
        for tile in tiles:
            sink = _TileSink(video, tile, s, blend=len(tiles) > 1)
            z = latent[:, :, :, tile.rows, tile.cols].to(self.device, self.dtype)
            for _ in self._decode_tile(z, sink, decode_chunks(t)):
                done += 1
                if progress is not None:
                    progress(done, total)
        return video.clamp_(-1.0, 1.0)

    @torch.no_grad()
    def decode_stream(
        self,
        latent: torch.Tensor,
        tiling: Tiling | None = None,
        progress: Progress | None = None,
        output_device: torch.device | str | None = None,
        park_device: torch.device | str | None = None,
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """:meth:`decode` handed out one latent frame at a time: yields ``(first video frame, frames)`` with
        ``frames`` ``[B, 3, n, H, W]`` in [-1, 1] (float32, on ``output_device``), n = 1 then 4.

        The same computation as :meth:`decode` (bit for bit: the same chunks through the same per-tile
        caches, tiles blended in the same order), but latent frame by latent frame across all tiles
        instead of tile by tile, so the caller can write each frame away and never hold the video.
        With several tiles every tile keeps its causal cache between latent frames; ``park_device``
        (default: ``output_device`` when there are several tiles and it is not the VAE's device) holds
        the caches of the tiles not being decoded, so the accelerator holds one tile's cache at a time.
        """
        b, t, h, w, s, out_device, tiles = self._decode_plan(latent, tiling, output_device)
        if park_device is None and len(tiles) > 1 and out_device != self.device:
            park_device = out_device
        caches = [{} for _ in tiles]
        total, done = t * len(tiles), 0
        for start, stop in decode_chunks(t):
            first = 0 if start == 0 else geometry.pixel_frames(start)
            alloc = torch.empty if len(tiles) == 1 else torch.zeros
            chunk = alloc(b, 3, geometry.pixel_frames(stop) - first, h * s, w * s, dtype=torch.float32,
                          device=out_device)
            for tile, cache in zip(tiles, caches):
                z = latent[:, :, start:stop, tile.rows, tile.cols].to(self.device, self.dtype)
                if park_device is not None:
                    _move_cache(cache, self.device)
                _TileSink(chunk, tile, s, blend=len(tiles) > 1)(0, self._decode_chunk(z, cache, start))
                if park_device is not None:
                    _move_cache(cache, park_device)
                done += 1
                if progress is not None:
                    progress(done, total)
            yield first, chunk.clamp_(-1.0, 1.0)

    def _decode_plan(self, latent: torch.Tensor, tiling: Tiling | None, output_device) -> tuple:
        """The checks and the plan :meth:`decode` and :meth:`decode_stream` share: ``(b, t, h, w, stride,
        output device, tiles)`` for ``latent``."""
        check_latent(latent, self)
        check_finite(latent, "the latent to decode", "decoding it would give a black (all-NaN) video. Check the node "
                     "that made the latent (Wan22DuoSampler stops on NaN itself).")
        b, _, t, h, w = latent.shape
        s = self.spatial_stride
        out_device = torch.device(output_device) if output_device is not None else self.device
        return b, t, h, w, s, out_device, plan_tiles(h, w, tiling, s, scale=s)

    def _decode_chunk(self, latent: torch.Tensor, cache: dict, start: int) -> torch.Tensor:
        """One chunk of a tile's latent frames (the first is frame ``start``) -> their video frames,
        through the tile's ``cache``."""
        x = self.decoder(self.conv2(latent, cache), cache)
        if self.version == "2.2":
            x = unpatchify(x)
        check_finite(x, f"the video the Wan {self.version} VAE decoded from finite latent frame {start}",
                     self._weights_hint())
        return x

    def _decode_tile(self, latent: torch.Tensor, sink: Callable, chunks: Chunks):
        """Decode ``chunks`` of latent frames, handing each chunk's frames to ``sink``; yields per chunk."""
        cache: dict = {}
        for start, stop in chunks:
            x = self._decode_chunk(latent[:, :, start:stop], cache, start)
            # latent frame 0 -> video frame 0; latent frame k >= 1 -> video frames 4k-3 .. 4k
            sink(0 if start == 0 else geometry.pixel_frames(start), x)
            yield stop


def _move_cache(cache: dict, device) -> None:
    """Move a decoder cache's tensors (each layer's last input frames) to ``device``, in place."""
    for key, value in cache.items():
        if isinstance(value, torch.Tensor):
            cache[key] = value.to(device)


class _TileSink:
    """Writes a tile's decoded frames into the output video, weighted when tiles overlap."""

    def __init__(self, video: torch.Tensor, tile: Tile, scale: int, blend: bool):
        self.video = video
        self.rows, self.cols = tile.scaled(scale)
        self.weight = None
        if blend:
            rw, cw = tile.row_weight.to(video.device), tile.col_weight.to(video.device)
            self.weight = rw[:, None] * cw[None, :]

    def __call__(self, first_frame: int, frames: torch.Tensor) -> None:
        target = self.video[:, :, first_frame : first_frame + frames.shape[2], self.rows, self.cols]
        frames = frames.to(target.device)
        if self.weight is None:
            target.copy_(frames)
        else:
            target.add_(frames.float() * self.weight)


def encode_chunks(frames: int) -> Chunks:
    """The reference's encode chunks: frame 0 alone, then runs of 4 frames."""
    return [(0, 1)] + [(i, i + 4) for i in range(1, frames, 4)]


def decode_chunks(latent_frames: int) -> Chunks:
    """The reference's decode chunks: one latent frame at a time."""
    return [(i, i + 1) for i in range(latent_frames)]
