"""Decoded frames of a long video on disk instead of in RAM: the frame store, and the video file made from it.

A chained long video held as ComfyUI IMAGE tensors costs host RAM in proportion to its length many
times over (every clip, every matched copy, every intermediate join stays in ComfyUI's cache; see
``bench/results_drift.md``). Here the frames go to disk as 8-bit RGB the moment they are decoded,
and the video file is encoded from disk one frame at a time, so RAM holds a frame or a latent
frame's worth of frames, never the video.

**Segment file** (``.w22frames``), one per decoded clip, written once and never changed:

    bytes 0-7    magic b"W22FRMS1"
    bytes 8-23   four little-endian uint32: width, height, frames, channels (3)
    then         frames x height x width x 3 bytes, RGB, frame after frame, row after row

The header states the frame count up front and the reader checks the file's size against it, so a
truncated or foreign file is refused with its name, never read as a shorter video. A segment is
written under a ``.part`` name and renamed only when complete, so a failed decode leaves no file that
looks finished (and the ``.part`` file is removed).

**FrameStore**: the ordered, immutable list of segments of one video (a ``WAN22DUO_FRAMES`` value in
ComfyUI). Continuing a video appends a *new* segment and returns a *new* store: the earlier store, which
ComfyUI may keep in its cache and hand to another node, never changes.

**8-bit conversion**: ``x * 255`` truncated, clamped to 0..255 (:func:`to_uint8`), the conversion
ComfyUI's ``SaveVideo`` applies to an IMAGE, so a video saved from the store has exactly the frames
``CreateVideo -> SaveVideo`` would encode from the same frames held as one IMAGE.

**Video file**: :func:`write_video` encodes the store as H.264 in MP4 with PyAV (a ComfyUI
requirement, imported here at the point of use), reading one frame at a time; it writes to a
``.part`` file and renames it when the encoder has flushed, so a failure leaves no half-written video.

No ComfyUI import here: the folder a store lives in is chosen by the caller (ComfyUI's temp folder in
``nodes/frames.py``).
"""
from __future__ import annotations

import os
import struct
import uuid
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional

import torch

from ..errors import public

MAGIC = b"W22FRMS1"
_HEADER = struct.Struct("<8s4I")
HEADER_BYTES = _HEADER.size  # 24
CHANNELS = 3
SUFFIX = ".w22frames"
PART = ".part"
VIDEO_CODECS = ("libx264", "h264", "libopenh264")  # the H.264 encoders a PyAV build may carry, best first


@public
class FrameStoreError(ValueError):
    """A frame store or one of its segment files cannot be used; the message names the file and the fix."""


_REDO = ("re-run the decode node that made it (change any of its inputs or clear ComfyUI's cache with the "
         "'Unload models and free cache' button, then queue again)")


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """IMAGE frames ``[F, H, W, 3]`` in [0, 1] -> ``uint8`` on the CPU, as ComfyUI's SaveVideo converts them."""
    return (images[..., :CHANNELS] * 255).clamp(0, 255).byte().cpu()


@dataclass(frozen=True)
class Segment:
    path: Path
    frames: int


@dataclass(frozen=True)
class FrameStore:
    """The segments of one video, in order; all ``width`` x ``height``. Immutable: see :meth:`appended`."""

    width: int
    height: int
    segments: tuple = ()

    @property
    def frames(self) -> int:
        return sum(s.frames for s in self.segments)

    @property
    def frame_bytes(self) -> int:
        return self.width * self.height * CHANNELS

    def appended(self, segment: Segment) -> "FrameStore":
        """A new store: these segments, then ``segment`` (whose header must give this store's size)."""
        width, height, frames = read_header(segment.path)
        if (width, height) != (self.width, self.height):
            raise FrameStoreError(
                f"segment {segment.path} holds {width}x{height} frames but the video before it is "
                f"{self.width}x{self.height}; every clip of one video must have the same size (decode a clip of "
                f"{self.width}x{self.height}, or start a new video without previous_frames)")
        return FrameStore(self.width, self.height, self.segments + (Segment(segment.path, frames),))

    def check(self) -> None:
        """Every segment file is present, complete and of this store's size (before anything is written)."""
        for segment in self.segments:
            width, height, frames = read_header(segment.path)
            if (width, height, frames) != (self.width, self.height, segment.frames):
                raise FrameStoreError(
                    f"segment {segment.path} holds {frames} frames of {width}x{height}, but this video expects "
                    f"{segment.frames} frames of {self.width}x{self.height}: the file was replaced; {_REDO}")

    def read(self, chunk: int = 1) -> Iterator[torch.Tensor]:
        """The video's frames in order as ``uint8 [n, H, W, 3]`` tensors of at most ``chunk`` frames."""
        self.check()
        for segment in self.segments:
            with open(segment.path, "rb") as f:
                f.seek(HEADER_BYTES)
                left = segment.frames
                while left:
                    n = min(chunk, left)
                    data = f.read(n * self.frame_bytes)
                    if len(data) != n * self.frame_bytes:
                        raise FrameStoreError(f"segment {segment.path} ended early while reading it; {_REDO}")
                    yield torch.frombuffer(bytearray(data), dtype=torch.uint8).view(n, self.height, self.width,
                                                                                   CHANNELS)
                    left -= n


def read_header(path: Path) -> tuple[int, int, int]:
    """``(width, height, frames)`` of a segment file, after checking its magic and its size."""
    path = Path(path)
    if not path.is_file():
        raise FrameStoreError(f"frame segment {path} does not exist (deleted, or ComfyUI's temp folder was "
                              f"emptied by a restart); {_REDO}")
    with open(path, "rb") as f:
        head = f.read(HEADER_BYTES)
    if len(head) < HEADER_BYTES or head[:8] != MAGIC:
        raise FrameStoreError(f"{path} is not a Wan22Duo frame segment (its first bytes are not {MAGIC!r}); {_REDO}")
    _, width, height, frames, channels = _HEADER.unpack(head)
    if channels != CHANNELS:
        raise FrameStoreError(f"{path} holds {channels} channels per pixel, expected {CHANNELS}; {_REDO}")
    expected = HEADER_BYTES + frames * width * height * CHANNELS
    size = path.stat().st_size
    if size != expected:
        raise FrameStoreError(
            f"frame segment {path} is {size} bytes, but its header promises {frames} frames of {width}x{height} "
            f"({expected} bytes): the file is truncated or was changed; {_REDO}")
    return width, height, frames


class SegmentWriter:
    """Writes one segment of ``frames`` frames to a ``.part`` file in ``folder``; :meth:`finish` renames it.

    Use as a context manager: leaving the block without :meth:`finish` (an exception) removes the
    ``.part`` file, so nothing half-written stays behind.
    """

    def __init__(self, folder, width: int, height: int, frames: int):
        for name, value in (("width", width), ("height", height), ("frames", frames)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "frames" else 1):
                raise FrameStoreError(f"segment {name} must be a whole number >= {0 if name == 'frames' else 1}, "
                                      f"got {value!r}")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.width, self.height, self.frames = width, height, frames
        self.path = folder / f"{uuid.uuid4().hex}{SUFFIX}"
        self.part = self.path.with_name(self.path.name + PART)
        self.written = 0
        self._file = open(self.part, "wb")
        self._file.write(_HEADER.pack(MAGIC, width, height, frames, CHANNELS))

    def write(self, images: torch.Tensor) -> None:
        """Append IMAGE frames ``[n, H, W, 3]`` (float in [0, 1], converted by :func:`to_uint8`, or uint8)."""
        if images.ndim != 4 or tuple(images.shape[1:3]) != (self.height, self.width) or images.shape[3] < CHANNELS:
            raise FrameStoreError(f"frames of shape {tuple(images.shape)} do not fit segment {self.path} of "
                                  f"{self.width}x{self.height} RGB frames")
        if self.written + images.shape[0] > self.frames:
            raise FrameStoreError(f"segment {self.path} was opened for {self.frames} frames; writing "
                                  f"{images.shape[0]} more after {self.written} is too many")
        data = images[..., :CHANNELS] if images.dtype == torch.uint8 else to_uint8(images)
        self._file.write(data.cpu().contiguous().numpy().tobytes())
        self.written += images.shape[0]

    def finish(self) -> Segment:
        """Close the file and give it its final name; it must hold the frames announced."""
        if self.written != self.frames:
            raise FrameStoreError(f"segment {self.path} got {self.written} frames, {self.frames} announced")
        self._file.close()
        os.replace(self.part, self.path)
        return Segment(self.path, self.frames)

    def discard(self) -> None:
        self._file.close()
        self.part.unlink(missing_ok=True)

    def __enter__(self) -> "SegmentWriter":
        return self

    def __exit__(self, kind, value, trace) -> None:
        if not self._file.closed or self.part.exists():
            self.discard()


# ---------------------------------------------------------------- the video file


def _h264(av) -> str:
    for name in VIDEO_CODECS:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # PyAV raises UnknownCodecError (a ValueError) or FFmpegError, by version
            continue
    raise FrameStoreError(
        f"the installed PyAV {getattr(av, '__version__', '?')} has no H.264 encoder ({', '.join(VIDEO_CODECS)}); "
        "install a PyAV wheel from PyPI (`pip install --force-reinstall av`), whose FFmpeg includes libx264")


def write_video(store: FrameStore, path, fps: float, crf: int = 19, metadata: Optional[dict] = None) -> Path:
    """Encode ``store`` as H.264 (yuv420p) in an MP4 at ``path``, one frame at a time; returns ``path``.

    Written to ``path + '.part'`` and renamed when complete; on any failure the ``.part`` file is removed.
    """
    try:
        import av
    except ImportError as exc:
        raise FrameStoreError(f"writing {path} needs PyAV (`pip install av`; ComfyUI installs it): {exc}") from None
    if not store.segments or store.frames == 0:
        raise FrameStoreError(f"no frames to write to {path}: the frame store is empty")
    if store.width % 2 or store.height % 2:
        raise FrameStoreError(f"H.264 in yuv420p needs an even width and height; the video is "
                              f"{store.width}x{store.height}")
    if not fps > 0:
        raise FrameStoreError(f"fps must be positive, got {fps}")
    store.check()
    codec = _h264(av)
    path = Path(path)
    part = path.with_name(path.name + PART)
    try:
        with av.open(str(part), mode="w", format="mp4") as container:
            for key, value in (metadata or {}).items():
                container.metadata[key] = value
            stream = container.add_stream(codec, rate=Fraction(round(fps * 1000), 1000))
            stream.width, stream.height, stream.pix_fmt = store.width, store.height, "yuv420p"
            if codec == "libx264":
                stream.options = {"crf": str(int(crf))}
            for frame in store.read():
                picture = av.VideoFrame.from_ndarray(frame[0].numpy(), format="rgb24").reformat(format="yuv420p")
                container.mux(stream.encode(picture))
            container.mux(stream.encode(None))
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return path
