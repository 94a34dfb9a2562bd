"""I2V mask/concat and TI2V frame-hold tensor logic (spec §3.2, §3.3; ComfyUI conventions)."""
import pytest
import torch

from wan22duo.engine.model.conditioning import (
    ConditioningError,
    I2VConditioning,
    hold,
    noise_mask_for,
    official_i2v_mask,
    token_timesteps,
)
from wan22duo.engine.model.latents import WAN21_MEAN, WAN21_STD


def test_official_mask_single_start_image():
    mask = official_i2v_mask([1] + [0] * 80, (6, 10))
    assert mask.shape == (1, 4, 21, 6, 10)
    assert torch.all(mask[:, :, 0] == 1)
    assert torch.all(mask[:, :, 1:] == 0)


def test_official_mask_channel_j_of_latent_frame_k_is_padded_frame_4k_plus_j():
    # Frame 0 is repeated 3 extra times in front, so video frame f >= 1 sits at padded index f + 3.
    mask = official_i2v_mask([0, 0, 1, 0, 0, 0, 0, 0, 0], (2, 2))  # only video frame 2 known
    assert mask.shape == (1, 4, 3, 2, 2)
    expected = torch.zeros(4, 3)
    expected[1, 1] = 1  # padded index 5 = 4*1 + 1
    assert torch.equal(mask[0, :, :, 0, 0], expected)
    with pytest.raises(ConditioningError, match="4n\\+1"):
        official_i2v_mask([1, 0, 0], (2, 2))


def _comfy_i2v(frames=5, h=4, w=6):
    raw = torch.randn(1, 16, frames, h, w, generator=torch.Generator().manual_seed(3)) * 2
    concat_mask = torch.ones(1, 1, frames, h, w)
    concat_mask[:, :, :1] = 0.0  # ComfyUI WanImageToVideo: 0 where the start image is known
    return raw, concat_mask


def test_comfy_concat_mask_gives_the_official_y():
    raw, concat_mask = _comfy_i2v()
    y = I2VConditioning.from_comfy(raw, concat_mask).y((2, 16, 5, 4, 6))
    assert y.shape == (2, 20, 5, 4, 6)
    official = official_i2v_mask([1] + [0] * 16, (4, 6))  # 17 video frames -> 5 latent frames
    assert torch.equal(y[:, :4], official.expand(2, -1, -1, -1, -1))
    # Image channels are the normalised latent: (z - mean) / std with the Wan 2.1 table (spec §4.4).
    mean = torch.tensor(WAN21_MEAN).view(1, 16, 1, 1, 1)
    std = torch.tensor(WAN21_STD).view(1, 16, 1, 1, 1)
    assert torch.allclose(y[:1, 4:], (raw - mean) / std, atol=1e-5)


def test_comfy_missing_mask_means_nothing_known_and_four_channel_masks_pass_through():
    raw, _ = _comfy_i2v()
    assert torch.all(I2VConditioning.from_comfy(raw).y(raw.shape)[:, :4] == 0)
    four = torch.rand(1, 4, 5, 4, 6)
    assert torch.equal(I2VConditioning.from_comfy(raw, four).y(raw.shape)[:, :4], 1 - four)


def test_i2v_shape_mismatch_is_named():
    raw, concat_mask = _comfy_i2v(frames=5)
    cond = I2VConditioning.from_comfy(raw, concat_mask)
    with pytest.raises(ConditioningError, match=r"start-image latent has shape \(1, 16, 5, 4, 6\)"):
        cond.y((1, 16, 6, 4, 6))
    with pytest.raises(ConditioningError, match="batch 3"):
        I2VConditioning(raw.expand(3, -1, -1, -1, -1), 1 - concat_mask).y((2, 16, 5, 4, 6))


def test_noise_mask_layouts():
    shape = (2, 48, 3, 4, 6)
    comfy = torch.ones(1, 1, 3, 4, 6)
    comfy[:, :, 0] = 0
    assert torch.equal(noise_mask_for(comfy, shape), comfy)
    per_frame = noise_mask_for(torch.tensor([0.0, 1.0, 1.0]), shape)
    assert torch.equal(per_frame, comfy)
    with pytest.raises(ConditioningError, match=r"noise_mask has shape \(1, 1, 3, 8, 12\)"):
        noise_mask_for(torch.ones(1, 1, 3, 8, 12), shape)
    with pytest.raises(ConditioningError, match="needs 3 values"):
        noise_mask_for(torch.ones(4), shape)


def test_token_timesteps_zero_for_kept_frame():
    mask = torch.ones(1, 1, 3, 4, 6)
    mask[:, :, 0] = 0
    t = torch.tensor([900.0, 900.0])
    tok = token_timesteps(mask, t, batch=2)
    per_frame = (4 // 2) * (6 // 2)
    assert tok.shape == (2, 3 * per_frame)
    assert torch.all(tok[:, :per_frame] == 0)
    assert torch.all(tok[:, per_frame:] == 900)


def test_token_timesteps_sample_one_cell_per_patch_in_thw_order():
    mask = torch.ones(1, 1, 2, 4, 6)
    mask[0, 0, 1, 2, 4] = 0  # top-left cell of the patch at (frame 1, row 1, col 2)
    mask[0, 0, 0, 1, 1] = 0  # not a top-left cell: invisible to the official subsampling
    tok = token_timesteps(mask, torch.tensor([10.0]), batch=1)[0]
    expected = torch.full((2 * 2 * 3,), 10.0)
    expected[1 * 6 + 1 * 3 + 2] = 0
    assert torch.equal(tok, expected)


def test_hold_writes_back_where_the_mask_is_zero():
    x, kept = torch.randn(1, 2, 3, 2, 2), torch.randn(1, 2, 3, 2, 2)
    mask = torch.ones(1, 1, 3, 1, 1)
    mask[:, :, 0] = 0
    out = hold(x, kept, mask)
    assert torch.equal(out[:, :, 0], kept[:, :, 0])
    assert torch.equal(out[:, :, 1:], x[:, :, 1:])
