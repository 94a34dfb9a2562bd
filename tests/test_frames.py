"""The long-video disk route: streamed decode, frame store segments, chaining with overlap, colour match, errors.

On tiny random Wan VAEs (real architecture, 8 channels), no ComfyUI. Bit-for-bit asserts compare the
same kernels on the same inputs of the same shapes in one process (``decode_stream`` runs the chunks
``decode`` runs, through the same caches): exact on any CPU. The 8-bit frames are compared after the
store's conversion (``to_uint8``, SaveVideo's), which is an exact function of those floats.
"""
import os

import pytest
import torch

from wan22duo.engine.memory.frames import (
    HEADER_BYTES, FrameStore, FrameStoreError, Segment, SegmentWriter, read_header, to_uint8,
)
from wan22duo.engine.model.colour import RunningStats, channel_stats
from wan22duo.engine.model.vae.tiling import Tiling
from wan22duo.engine.testing.tiny_vae import write_tiny_vae
from wan22duo.engine.weights.vae_checkpoint import load_vae
from wan22duo.nodes import _comfy
from wan22duo.nodes.continuation import Wan22DuoColorMatch
from wan22duo.nodes.frames import Wan22DuoVAEDecodeToDisk, decode_to_store
from wan22duo.nodes.keyframes import Wan22DuoJoinClips
from wan22duo.nodes.loaders import Wan22DuoVAELoader
from wan22duo.nodes.vae import Wan22DuoVAEDecode

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("vaes")
    return {v: str(write_tiny_vae(d / f"vae{v}.safetensors", v)) for v in ("2.1", "2.2")}


@pytest.fixture
def store_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(_comfy, "temp_directory", lambda: str(tmp_path))
    return tmp_path / "wan22duo_frames"


def handle(files, version="2.1"):
    return Wan22DuoVAELoader().load(files[version], "fp32", "cpu")["result"][0]


def latent(t, h, w, seed, z=16):
    return {"samples": torch.randn(1, z, t, h, w, generator=torch.Generator().manual_seed(seed))}


def all_frames(store: FrameStore) -> torch.Tensor:
    return torch.cat(list(store.read(chunk=3)))


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ---------------------------------------------------------------- the streamed decode


@pytest.mark.parametrize("version,tiling,park", [("2.1", None, None), ("2.1", Tiling(32, 16), None),
                                                  ("2.1", Tiling(32, 16), "cpu"), ("2.2", None, None)])
def test_decode_stream_is_decode_bit_for_bit(files, version, tiling, park):
    module = load_vae(files[version], dtype=torch.float32, device="cpu")
    z = latent(4, 6, 7, seed=1, z=module.z_dim)["samples"]
    whole = module.decode(z, tiling=tiling)
    pieces, seen = [], []
    for first, chunk in module.decode_stream(z, tiling=tiling, park_device=park,
                                             progress=lambda d, t: seen.append((d, t))):
        assert first == sum(p.shape[2] for p in pieces)
        pieces.append(chunk)
    assert [p.shape[2] for p in pieces] == [1, 4, 4, 4]
    assert torch.equal(torch.cat(pieces, dim=2), whole)
    assert seen[-1][0] == seen[-1][1] == 4 * (1 if tiling is None else len(seen) // 4)


def test_running_colour_stats_equal_the_whole_clip_stats():
    g = torch.Generator().manual_seed(2)
    clip = torch.rand(13, 8, 9, 3, generator=g) ** 2
    for space in ("lab", "ycbcr"):
        running = RunningStats(space)
        for part in (clip[:1], clip[1:5], clip[5:]):
            running.add(part)
        for got, want in zip(running.stats(), channel_stats(clip, space)):
            assert torch.allclose(got, want, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------- the node against the IMAGE route


def test_frames_on_disk_are_the_image_routes_frames_in_8_bit(files, store_dir):
    vae, z = handle(files), latent(5, 4, 6, seed=3)
    (images,) = Wan22DuoVAEDecode().decode(vae, z, 0, 64)
    store, last = Wan22DuoVAEDecodeToDisk().decode(vae, z, 0, 64, tail_frames=5)
    assert (store.width, store.height, store.frames) == (48, 32, 17) and len(store.segments) == 1
    assert torch.equal(all_frames(store), to_uint8(images))
    assert torch.equal(last, images[-5:])
    assert leftovers(store_dir) == [store.segments[0].path.name]


def test_tiled_frames_on_disk_are_the_tiled_image_routes(files, store_dir):
    vae, z = handle(files), latent(3, 6, 8, seed=4)
    (images,) = Wan22DuoVAEDecode().decode(vae, z, 32, 16)
    store, _ = Wan22DuoVAEDecodeToDisk().decode(vae, z, 32, 16)
    assert torch.equal(all_frames(store), to_uint8(images))


def test_chaining_drops_exactly_the_overlap_and_never_changes_the_previous_store(files, store_dir):
    vae, node = handle(files), Wan22DuoVAEDecodeToDisk()
    clips = [latent(3, 4, 6, seed=s) for s in (5, 6, 7)]  # 9 frames each
    decoded = [Wan22DuoVAEDecode().decode(vae, z, 0, 64)[0] for z in clips]
    first, _ = node.decode(vae, clips[0], 0, 64)
    first_bytes = first.segments[0].path.read_bytes()
    second, _ = node.decode(vae, clips[1], 0, 64, previous_frames=first, overlap=5)
    third, last = node.decode(vae, clips[2], 0, 64, previous_frames=second, overlap=1, tail_frames=3)
    assert (first.frames, second.frames, third.frames) == (9, 9 + 4, 9 + 4 + 8)
    assert len(first.segments) == 1 and first.segments[0].path.read_bytes() == first_bytes
    assert third.segments[:2] == second.segments
    joined = Wan22DuoJoinClips().join(Wan22DuoJoinClips().join(decoded[0], decoded[1], 5)[0], decoded[2], 1)[0]
    assert torch.equal(all_frames(third), to_uint8(joined))
    assert torch.equal(all_frames(second), to_uint8(joined[:13]))
    assert torch.equal(last, decoded[2][-3:])


def test_anchor_colour_match_is_the_colour_match_nodes(files, store_dir):
    vae, node = handle(files), Wan22DuoVAEDecodeToDisk()
    z = latent(4, 4, 6, seed=8)
    anchor = torch.rand(1, 40, 30, 3, generator=torch.Generator().manual_seed(9)) * 0.5 + 0.3
    (images,) = Wan22DuoVAEDecode().decode(vae, z, 0, 64)
    previous, _ = node.decode(vae, latent(2, 4, 6, seed=10), 0, 64)
    for space, strength in (("lab", 1.0), ("ycbcr", 0.6)):
        (matched,) = Wan22DuoColorMatch().match(images, anchor, "anchor", 0, strength, space)
        store, last = node.decode(vae, z, 0, 64, previous_frames=previous, overlap=5, tail_frames=4,
                                  colour_match="anchor", anchor_image=anchor, colour_strength=strength,
                                  colour_space=space)
        # the clip statistics are summed in another order (a batch at a time): equal to float64 rounding, so the
        # matched float frames agree to ~1e-12 and an 8-bit level can flip only where a value sits on its edge
        assert torch.allclose(last, matched[-4:], atol=1e-6, rtol=0)
        got = all_frames(store)[previous.frames:].int()
        want = to_uint8(matched[5:]).int()
        assert (got - want).abs().max() <= 1 and (got != want).float().mean() < 1e-3
        assert not torch.equal(got, to_uint8(images[5:]).int())  # the match did something
    assert [p for p in leftovers(store_dir) if not p.endswith(".w22frames")] == []  # spool files are gone


# ---------------------------------------------------------------- errors and leftovers


def test_a_failed_decode_leaves_no_file(files, store_dir):
    module = load_vae(files["2.1"], dtype=torch.float32, device="cpu")

    class Failing:
        spatial_stride = module.spatial_stride

        def decode_stream(self, z, **kw):
            for n, item in enumerate(module.decode_stream(z, **kw)):
                if n == 2:
                    raise RuntimeError("interrupted")
                yield item

    z = latent(4, 4, 6, seed=11)["samples"]
    for colour in (None, lambda stats: None):
        with pytest.raises(RuntimeError, match="interrupted"):
            decode_to_store(Failing(), z, None, store_dir, colour=colour)
        assert leftovers(store_dir) == []


def test_missing_truncated_and_foreign_segments_are_named(files, store_dir):
    vae = handle(files)
    store, _ = Wan22DuoVAEDecodeToDisk().decode(vae, latent(2, 4, 6, seed=12), 0, 64)
    path = store.segments[0].path
    data = path.read_bytes()
    path.write_bytes(data[:-7])
    with pytest.raises(FrameStoreError, match=rf"{path.name} is {len(data) - 7} bytes.*5 frames of 48x32.*truncated"):
        list(store.read())
    path.write_bytes(b"GIF89a" + data[6:])
    with pytest.raises(FrameStoreError, match=rf"{path.name} is not a Wan22Duo frame segment"):
        store.check()
    path.unlink()
    with pytest.raises(FrameStoreError, match=rf"{path.name} does not exist.*re-run the decode node"):
        Wan22DuoVAEDecodeToDisk().decode(vae, latent(2, 4, 6, seed=13), 0, 64, previous_frames=store, overlap=1)
    assert leftovers(store_dir) == []  # refused before decoding anything


def test_clips_of_another_size_are_refused(files, store_dir, tmp_path):
    vae, node = handle(files), Wan22DuoVAEDecodeToDisk()
    store, _ = node.decode(vae, latent(2, 4, 6, seed=14), 0, 64)
    with pytest.raises(FrameStoreError, match=r"this clip is 56x32 but previous_frames is 48x32"):
        node.decode(vae, latent(2, 4, 7, seed=15), 0, 64, previous_frames=store, overlap=1)
    with SegmentWriter(tmp_path / "other", 40, 32, 1) as writer:
        writer.write(torch.zeros(1, 32, 40, 3))
        other = writer.finish()
    with pytest.raises(FrameStoreError, match=rf"segment .*{other.path.name} holds 40x32 frames but the video before "
                                              r"it is 48x32"):
        store.appended(other)
    with pytest.raises(ValueError, match=r"overlap is 5 but previous_frames is empty"):
        node.decode(vae, latent(2, 4, 6, seed=16), 0, 64, overlap=5)
    with pytest.raises(ValueError, match=r"overlap 6 is longer than the clip \(5 frames\)"):
        node.decode(vae, latent(2, 4, 6, seed=16), 0, 64, previous_frames=store, overlap=6)
    with pytest.raises(ValueError, match=r"colour_match is 'anchor' but anchor_image is not connected"):
        node.decode(vae, latent(2, 4, 6, seed=16), 0, 64, colour_match="anchor")


def test_segment_writer_checks_what_it_is_given(tmp_path):
    with SegmentWriter(tmp_path, 4, 2, 3) as writer:
        writer.write(torch.full((2, 2, 4, 3), 0.5))
        with pytest.raises(FrameStoreError, match=r"got 2 frames, 3 announced"):
            writer.finish()
        with pytest.raises(FrameStoreError, match=r"do not fit segment"):
            writer.write(torch.zeros(1, 4, 2, 3))
        with pytest.raises(FrameStoreError, match=r"opened for 3 frames"):
            writer.write(torch.zeros(2, 2, 4, 3))
    assert leftovers(tmp_path) == []
    with SegmentWriter(tmp_path, 4, 2, 1) as writer:
        writer.write(torch.full((1, 2, 4, 3), 0.5))
        segment = writer.finish()
    assert read_header(segment.path) == (4, 2, 1)
    assert segment.path.stat().st_size == HEADER_BYTES + 4 * 2 * 3
    assert torch.equal(next(FrameStore(4, 2, (segment,)).read()), torch.full((1, 2, 4, 3), 127, dtype=torch.uint8))
    assert leftovers(tmp_path) == [segment.path.name]
    with pytest.raises(FrameStoreError, match=r"holds 1 frames of 4x2, but this video expects 2 frames"):
        FrameStore(4, 2, (Segment(segment.path, 2),)).check()
    assert os.path.exists(segment.path)
