"""Wan22DuoSaveVideoFromDisk: the MP4 made from a frame store decodes to its frames; failures leave no file.

PyAV (``av``, a ComfyUI requirement) is a declared test dependency (requirements-dev.txt). H.264 is
lossy, so the decoded pixels are compared with a bound, the frame count and size exactly.
"""
import pytest
import torch

from _deps import require
from wan22duo.engine.memory.frames import FrameStore, FrameStoreError, SegmentWriter, write_video
from wan22duo.nodes import _comfy
from wan22duo.nodes.frames import Wan22DuoSaveVideoFromDisk

av = require("av")


def segment(folder, frames: int, width=48, height=32, seed=0):
    """A segment of smooth moving gradients (H.264 keeps them within a few levels)."""
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    images = torch.stack([torch.stack([(x + 0.03 * (f + seed)) % 1, y, 0.5 * (x + y)], -1) for f in range(frames)])
    with SegmentWriter(folder, width, height, frames) as writer:
        writer.write(images)
        return writer.finish(), images


def decoded(path):
    with av.open(str(path)) as container:
        return [torch.from_numpy(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]


def test_saved_video_has_the_stores_frames(tmp_path, monkeypatch):
    monkeypatch.setattr(_comfy, "temp_directory", lambda: str(tmp_path))
    (a, first), (b, second) = segment(tmp_path / "s", 7), segment(tmp_path / "s", 5, seed=7)
    store = FrameStore(48, 32).appended(a).appended(b)
    result = Wan22DuoSaveVideoFromDisk().save(store, 16.0, "video/long")
    (record,) = result["ui"]["images"]
    assert record["type"] == "output" and record["subfolder"] == "video" and record["filename"].endswith(".mp4")
    path = tmp_path / "video" / record["filename"]
    frames = decoded(path)
    assert len(frames) == 12 and tuple(frames[0].shape) == (32, 48, 3)
    want = torch.cat(list(store.read()))
    error = (torch.stack(frames).float() - want.float()).abs().mean()
    assert error < 4.0, f"mean error {error:.2f} levels: not the store's frames"
    assert [p.name for p in (tmp_path / "video").iterdir()] == [record["filename"]]
    with av.open(str(path)) as container:
        assert container.streams.video[0].average_rate == 16


def test_a_failed_save_leaves_no_partial_file(tmp_path):
    good, _ = segment(tmp_path, 6)

    class Breaks(FrameStore):
        def read(self, chunk=1):
            for n, frame in enumerate(FrameStore.read(self, chunk)):
                if n == 3:
                    raise FrameStoreError("segment went away")
                yield frame

    with pytest.raises(FrameStoreError, match="went away"):
        write_video(Breaks(48, 32, (good,)), tmp_path / "out.mp4", 16.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [good.path.name]
    good.path.unlink()
    with pytest.raises(FrameStoreError, match=rf"{good.path.name} does not exist"):
        write_video(FrameStore(48, 32, (good,)), tmp_path / "out.mp4", 16.0)
    with pytest.raises(FrameStoreError, match="frame store is empty"):
        write_video(FrameStore(48, 32), tmp_path / "out.mp4", 16.0)
    assert list(tmp_path.iterdir()) == []
