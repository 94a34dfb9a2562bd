"""Frame counts, sizes and latent shapes of the two Wan 2.2 model families (spec §1.2)."""
import pytest

from wan22duo.engine.model import geometry as g


def test_frame_counts_map_to_latent_frames_both_ways():
    for frames, latents in ((1, 1), (5, 2), (81, 21), (121, 31)):
        assert g.latent_frames(frames) == latents
        assert g.pixel_frames(latents) == frames


@pytest.mark.parametrize("frames, hint", [(80, "77 or 81"), (82, "81 or 85"), (0, "Use 1 frames"), (120, "117 or 121")])
def test_bad_frame_counts_name_the_nearest_valid(frames, hint):
    with pytest.raises(ValueError, match=rf"got {frames}\..*{hint}"):
        g.check_frames(frames)


def test_non_integer_counts_are_rejected():
    with pytest.raises(ValueError, match="integer"):
        g.check_frames(81.0)
    with pytest.raises(ValueError, match="positive integer"):
        g.pixel_frames(0)


def test_sizes_follow_the_family_step():
    assert g.check_size(1280, 720, "a14b") == (1280, 720)
    assert g.check_size(1280, 704, "ti2v_5b") == (1280, 704)
    assert g.check_size(832, 480, "i2v_a14b") == (832, 480)
    with pytest.raises(ValueError, match=r"height 720 .*ti2v_5b.*multiple of 32.*Nearest: 704 or 736"):
        g.check_size(1280, 720, "ti2v_5b")
    with pytest.raises(ValueError, match=r"width 1000 .*multiple of 16.*Nearest: 992 or 1008"):
        g.check_size(1000, 720, "t2v_a14b")
    with pytest.raises(ValueError, match="unknown model family 'wan21'"):
        g.check_size(1280, 720, "wan21")


def test_latent_shapes_of_the_official_settings():
    # 1280x720x81 -> 21 x 90 x 160 (75,600 DiT tokens after 2x2 patches, spec §1.2)
    assert g.latent_shape("a14b", 81, 720, 1280) == (1, 16, 21, 90, 160)
    assert g.latent_shape("ti2v_5b", 121, 704, 1280, batch=2) == (2, 48, 31, 44, 80)
    with pytest.raises(ValueError, match="batch"):
        g.latent_shape("a14b", 81, 720, 1280, batch=0)


def test_family_lookup_by_channels():
    assert g.family_for_channels(16).vae_version == "2.1"
    assert g.family_for_channels(48).spatial_stride == 16
    with pytest.raises(ValueError, match="got 32"):
        g.family_for_channels(32)
