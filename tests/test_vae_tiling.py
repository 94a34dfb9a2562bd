"""Spatial tiling: the layout and blend are exact, and tiles stay close to untiled output.

Two kinds of check:

* Exactness of the machinery. With a VAE made spatially local (every 3x3 kernel cut
  to its centre tap, attention output projection zeroed), each pixel depends only on
  its own latent cell, so a correct tile layout and blend must reproduce the untiled
  result to float rounding (relative L2 <= 1e-5). Any misplaced tile, wrong offset or
  weights that do not sum to one would show.
* Closeness with the real (random) weights on smooth input. Tiles see zero padding at
  their own borders and attend only within themselves. Random weights spread border
  effects over ~15 latent cells, far more than a trained VAE, so the tolerance is
  loose: relative L2 <= 0.1 for a spatially constant latent (decode) and video
  (encode), 160 px frames, 128 px tiles with 64 px overlap (measured: 0.048 decode,
  0.075 encode).
"""
import pytest
import torch
from safetensors.torch import load_file, save_file

from wan22duo.engine.model.vae.tiling import Tiling
from wan22duo.engine.weights.vae_checkpoint import load_vae
from wan22duo.engine.model.vae.tiling import blend_weights, plan_tiles, spans
from wan22duo.engine.testing.tiny_vae import write_tiny_vae


def rel_l2(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def make_local(src, dst):
    """Copy a VAE file, cutting every spatial kernel to its centre tap and zeroing attention output."""
    state = load_file(str(src))
    for key, w in state.items():
        if key.endswith("weight") and w.ndim >= 4 and w.shape[-1] == 3:
            centre = w[..., 1:2, 1:2].clone()
            w.zero_()
            w[..., 1:2, 1:2] = centre
        if key.endswith("proj.weight"):
            w.zero_()
    save_file(state, str(dst))
    return dst


@pytest.fixture(scope="module", params=["2.1", "2.2"])
def local_vae(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("tiling")
    src = write_tiny_vae(d / "vae.safetensors", request.param, seed=5)
    return load_vae(make_local(src, d / "local.safetensors"))


def test_spans_cover_with_full_size_windows():
    assert spans(10, 4, 1) == [(0, 4), (3, 7), (6, 10)]
    assert spans(9, 4, 2) == [(0, 4), (2, 6), (4, 8), (5, 9)]
    assert spans(4, 8, 2) == [(0, 4)]


def test_blend_weights_sum_to_one_and_ramp():
    windows = spans(10, 4, 2)
    weights = blend_weights(windows, overlap=2, scale=8)
    total = torch.zeros(80)
    for (a, b), w in zip(windows, weights):
        total[a * 8 : b * 8] += w
    torch.testing.assert_close(total, torch.ones(80))
    first = weights[0]
    assert first[0] == 1 and first[-1] < first[-9] < 1  # inner edge ramps down


def test_plan_without_tiling_is_one_unit_tile():
    (tile,) = plan_tiles(5, 7, None, stride=8, scale=8)
    assert (tile.rows, tile.cols) == (slice(0, 5), slice(0, 7))
    assert torch.all(tile.row_weight == 1) and torch.all(tile.col_weight == 1)


def test_bad_tiling_values_are_rejected():
    with pytest.raises(ValueError, match="smaller than tile_size"):
        Tiling(64, 64)
    with pytest.raises(ValueError, match="non-negative"):
        Tiling(-8, 0)
    with pytest.raises(ValueError, match="latent cell"):
        Tiling(8, 0).cells(16)


def test_tiled_decode_is_exact_for_a_local_vae(local_vae):
    s = local_vae.spatial_stride
    z = torch.randn(1, local_vae.z_dim, 2, 5, 6, generator=torch.Generator().manual_seed(0))
    whole = local_vae.decode(z)
    calls = []
    tiled = local_vae.decode(z, tiling=Tiling(3 * s, s), progress=lambda d, t: calls.append((d, t)))
    assert rel_l2(tiled, whole) <= 1e-5
    n_tiles = len(spans(5, 3, 1)) * len(spans(6, 3, 1))
    assert calls[-1] == (2 * n_tiles, 2 * n_tiles) and len(calls) == 2 * n_tiles


def test_tiled_encode_is_exact_for_a_local_vae(local_vae):
    s = local_vae.spatial_stride
    video = torch.rand(1, 3, 5, 5 * s, 6 * s, generator=torch.Generator().manual_seed(1)) * 2 - 1
    whole = local_vae.encode(video)
    tiled = local_vae.encode(video, tiling=Tiling(3 * s, s))
    assert rel_l2(tiled, whole) <= 1e-5


@pytest.fixture(scope="module")
def vae21(tmp_path_factory):
    return load_vae(write_tiny_vae(tmp_path_factory.mktemp("t21") / "vae.safetensors", "2.1", seed=0))


def test_tiled_decode_close_on_constant_latent(vae21):
    z = torch.randn(1, 16, 1, 1, 1, generator=torch.Generator().manual_seed(0)).expand(1, 16, 1, 20, 20)
    whole = vae21.decode(z)
    tiled = vae21.decode(z, tiling=Tiling(128, 64))
    assert 0 < rel_l2(tiled, whole) <= 0.1


def test_tiled_encode_close_on_constant_video(vae21):
    colour = torch.tensor([0.3, -0.5, 0.7]).view(1, 3, 1, 1, 1)
    video = colour.expand(1, 3, 1, 160, 160).contiguous()
    whole = vae21.encode(video)
    tiled = vae21.encode(video, tiling=Tiling(128, 64))
    assert 0 < rel_l2(tiled, whole) <= 0.1
