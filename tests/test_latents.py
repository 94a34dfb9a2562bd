"""Latent normalisation tables and mismatch checks (spec §4.4)."""
import types

import pytest
import torch

from wan22duo.engine.model import latents as L


def test_tables_have_the_published_values():
    # Spot values from spec §4.4, typed from the spec, not from the module.
    assert len(L.WAN21_MEAN) == len(L.WAN21_STD) == 16
    assert len(L.WAN22_MEAN) == len(L.WAN22_STD) == 48
    assert (L.WAN21_MEAN[7], L.WAN21_STD[8], L.WAN21_STD[15]) == (1.5508, 3.2687, 1.9160)
    assert (L.WAN22_MEAN[19], L.WAN22_STD[39], L.WAN22_MEAN[47]) == (0.5109, 1.6887, -0.0667)


@pytest.mark.parametrize("channels", [16, 48])
def test_round_trip(channels):
    z = torch.randn(2, channels, 3, 4, 5, generator=torch.Generator().manual_seed(0)) * 2
    back = L.denormalize(L.normalize(z))
    torch.testing.assert_close(back, z, rtol=1e-6, atol=1e-6)


def test_normalize_uses_the_channel_table():
    z = torch.zeros(1, 16, 1, 1, 1)
    z[0, 7] = 1.5508 + 2.0743  # mean + one std of channel 7
    out = L.normalize(z)
    assert out[0, 7].item() == pytest.approx(1.0, abs=1e-6)
    assert out[0, 0].item() == pytest.approx(0.7571 / 2.8184, abs=1e-6)
    z48 = torch.full((1, 48, 1, 1, 1), -0.2289)
    assert L.normalize(z48)[0, 0].item() == pytest.approx(0.0, abs=1e-7)


def test_dtype_is_kept():
    z = torch.randn(1, 48, 1, 2, 2).bfloat16()
    assert L.normalize(z).dtype == torch.bfloat16


def test_other_channel_counts_are_rejected():
    with pytest.raises(L.LatentMismatchError, match="16 channels .* or 48 .*got 36"):
        L.normalize(torch.zeros(1, 36, 1, 2, 2))


def test_check_latent_against_a_vae():
    vae22 = types.SimpleNamespace(z_dim=48, version="2.2")
    L.check_latent(torch.zeros(1, 48, 2, 2, 2), vae22)
    with pytest.raises(L.LatentMismatchError, match="16-channel latent .*Wan 2.2 VAE.*A14B experts"):
        L.check_latent(torch.zeros(1, 16, 2, 2, 2), vae22)
    with pytest.raises(L.LatentMismatchError, match=r"\[B, C, T, H, W\]"):
        L.check_latent(torch.zeros(48, 2, 2, 2), vae22)
