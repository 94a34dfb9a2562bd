"""Wan22DuoContextWindows on Wan22DuoSampler (real tiny experts through the loader node)."""
import pytest
import torch

from wan22duo.engine.sampling.context_windows import ContextWindowError, ContextWindows
from wan22duo.nodes.context_windows import Wan22DuoContextWindows, checked_windows, refuse_model_windows
from wan22duo.nodes.samplers import Wan22DuoEmptyLatent

from test_nodes_sampler import expert, models, run  # noqa: F401  (models is a fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_node_converts_video_frames_to_latent_frames():
    (w,) = Wan22DuoContextWindows().make(81, 30, "static", "overlap_linear", False, True)
    assert w == ContextWindows(21, 7, schedule="static", fuse="overlap_linear", causal_anchor=False, freenoise=True)
    with pytest.raises(ContextWindowError, match="context_length 80 is not a Wan clip length"):
        Wan22DuoContextWindows().make(80, 30)
    (r,) = Wan22DuoContextWindows().make(81, 30, retain_first_frame=True)
    assert r.retain_first_frame and not w.retain_first_frame
    assert "retain_first_frame" in Wan22DuoContextWindows.INPUT_TYPES()["optional"]


def test_windows_on_the_sampler_run_per_window_and_report_it(models):
    high, low = expert(models, "t2v_high"), expert(models, "t2v_low")
    latent = Wan22DuoEmptyLatent().generate(32, 32, 33, 1)[0]  # 9 latent frames
    (windows,) = Wan22DuoContextWindows().make(17, 8)  # 5 latent frames, overlap 2
    plain, _ = run(high, latent, low, steps=4, switch_step=2)
    out, report = run(high, latent, low, steps=4, switch_step=2, context_windows=windows)
    info = report["context_windows"]
    assert (info["length"], info["overlap"], info["latent_frames"]) == (5, 2, 9)
    assert info["windows_step_1"] == [[0, 5], [3, 8], [4, 9]]
    assert out["samples"].shape == plain["samples"].shape and torch.isfinite(out["samples"]).all()
    assert not torch.allclose(out["samples"], plain["samples"])  # a real DiT attends across frames: windows matter


def test_a_clip_inside_one_window_is_bit_identical_on_the_node(models):
    high, low = expert(models, "t2v_high"), expert(models, "t2v_low")
    latent = Wan22DuoEmptyLatent().generate(32, 32, 17, 1)[0]  # 5 latent frames
    (windows,) = Wan22DuoContextWindows().make(17, 8)
    plain, _ = run(high, latent, low, steps=3, switch_step=1)
    out, report = run(high, latent, low, steps=3, switch_step=1, context_windows=windows)
    assert torch.equal(out["samples"], plain["samples"]) and "context_windows" not in report


def test_bad_wiring_is_named():
    with pytest.raises(ValueError, match="connect a Wan22DuoContextWindows node"):
        checked_windows({"length": 5}, "Wan22DuoSampler")

    class Patcher:
        model_options = {"context_handler": object()}

    with pytest.raises(ValueError, match="low_noise_model carries ComfyUI context windows"):
        refuse_model_windows([("high_noise_model", None), ("low_noise_model", Patcher())])


def test_windows_are_refused_with_the_parallel_input(models, monkeypatch):
    from wan22duo.engine.parallel import workers
    from wan22duo.nodes.parallel import Wan22DuoParallel

    monkeypatch.setattr(workers, "shared_group", lambda *a, **k: pytest.fail("a worker group was started"))
    high, low = expert(models, "t2v_high"), expert(models, "t2v_low")
    (options,) = Wan22DuoParallel().options("cpu,cpu")
    (windows,) = Wan22DuoContextWindows().make(17, 8)
    latent = Wan22DuoEmptyLatent().generate(32, 32, 33, 1)[0]
    with pytest.raises(ValueError, match="context_windows cannot be combined with the parallel input"):
        run(high, latent, low, steps=2, switch_step=1, parallel=options, context_windows=windows)
