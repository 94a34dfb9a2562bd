"""Wan22DuoSampler on tiny random checkpoints: routing numbers from the spec, conditioning paths, hooks."""
import pytest
import torch

from wan22duo.engine.sampling.loop import SamplingError
from wan22duo.engine.testing.tiny import write_tiny_dit
from wan22duo.engine.testing.tiny_vae import write_tiny_vae
from wan22duo.nodes import _comfy
from wan22duo.nodes.loaders import Wan22DuoExpertLoader, Wan22DuoTI2VLoader, Wan22DuoVAELoader
from wan22duo.nodes.samplers import (
    Wan22DuoEmptyLatent, Wan22DuoI2VConditioning, Wan22DuoSampler, Wan22DuoTI2VLatent,
)

TINY = dict(dim=128, ffn_dim=256, num_layers=1)


def assert_close(actual, expected, atol=1e-6, rtol=1e-6):
    """torch.allclose with the largest difference in the message (torch.testing imports slowly)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    diff = (actual.float() - expected.float()).abs().max().item() if actual.numel() else 0.0
    assert torch.allclose(actual.float(), expected.float(), atol=atol, rtol=rtol), f"max abs diff {diff}"
# Spec §1.3 table: the 40 timesteps T2V-A14B feeds the model at shift 12 (official UniPC grid).
T2V_40_SHIFT12 = [999, 997, 995, 993, 990, 988, 985, 982, 979, 976, 972, 969, 965, 961, 956, 952, 947, 941, 936, 929,
                  922, 915, 907, 898, 888, 877, 865, 852, 837, 819, 799, 776, 749, 717, 678, 631, 571, 492, 386, 235]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    files = {
        "t2v_high": write_tiny_dit(d / "t2v_high_noise.safetensors", "t2v_a14b", seed=1, **TINY),
        "t2v_low": write_tiny_dit(d / "t2v_low_noise.safetensors", "t2v_a14b", seed=2, **TINY),
        "i2v_high": write_tiny_dit(d / "i2v_high_noise.safetensors", "i2v_a14b", seed=3, **TINY),
        "i2v_low": write_tiny_dit(d / "i2v_low_noise.safetensors", "i2v_a14b", seed=4, **TINY),
        "ti2v": write_tiny_dit(d / "ti2v_5b.safetensors", "ti2v_5b", seed=5, **TINY),
        "vae21": write_tiny_vae(d / "vae21.safetensors", "2.1"),
        "vae22": write_tiny_vae(d / "vae22.safetensors", "2.2"),
    }
    return {k: str(v) for k, v in files.items()}


def expert(models, key, role="auto"):
    return Wan22DuoExpertLoader().load(models[key], role, "default", "auto", "cpu")[0]


def vae(models, key):
    return Wan22DuoVAELoader().load(models[key], "fp32", "cpu")["result"][0]


def prompts():
    g = torch.Generator().manual_seed(0)
    return [[torch.randn(1, 6, 4096, generator=g), {}]], [[torch.randn(1, 4, 4096, generator=g), {}]]


def run(high, latent, low=None, **kw):
    pos, neg = prompts()
    out = Wan22DuoSampler().sample(high, kw.pop("positive", pos), kw.pop("negative", neg), latent,
                                   kw.pop("seed", 0), low_noise_model=low, **kw)
    (switch,) = out["ui"]["wan22duo_switch"]
    latent_out, k = out["result"]
    assert switch["switch_step"] == k
    return latent_out, switch


def small_t2v_latent(batch=1):
    return Wan22DuoEmptyLatent().generate(32, 32, 5, batch)[0]  # [B, 16, 2, 4, 4]


def test_t2v_official_defaults_switch_at_26_of_40(models):
    latent = Wan22DuoEmptyLatent().generate(16, 16, 1, 1)[0]
    # cfg 1 skips the negative pass (routing does not depend on cfg); everything else at its default.
    out, switch = run(expert(models, "t2v_high"), latent, expert(models, "t2v_low"), cfg_high=1.0, cfg_low=1.0)
    assert switch["switch_step"] == 26 and switch["steps"] == 40 and switch["boundary"] == 0.875
    assert switch["timesteps"] == [float(t) for t in T2V_40_SHIFT12]
    assert len(switch["sigmas"]) == 41 and switch["sigmas"][-1] == 0.0
    assert abs(switch["sigmas"][0] - 12 * 0.999 / (1 + 11 * 0.999)) < 1e-6  # shifted float32(0.999) start
    samples = out["samples"]
    assert samples.shape == (1, 16, 1, 2, 2) and samples.dtype == torch.float32 and torch.isfinite(samples).all()


@pytest.mark.parametrize("steps, shift, boundary, switch_step, expected", [
    (20, 12.0, -1.0, -1, 13),  # spec §1.3: 13 of 20 high-noise steps for T2V
    (20, 5.0, 0.9, -1, 8),  # the I2V rule (boundary 0.9, shift 5): 8 of 20, whatever the experts
    (3, 12.0, -1.0, 1, 1),  # an explicit switch step wins over the boundary
    (3, 12.0, 0.0, 3, 3),  # high-noise expert only
])
def test_t2v_boundary_and_switch_step_inputs(models, steps, shift, boundary, switch_step, expected):
    latent = Wan22DuoEmptyLatent().generate(16, 16, 1, 1)[0]
    _, switch = run(expert(models, "t2v_high"), latent, expert(models, "t2v_low"), cfg_high=1.0, cfg_low=1.0,
                    steps=steps, shift=shift, boundary=boundary, switch_step=switch_step)
    assert switch["switch_step"] == expected


def test_t2v_is_deterministic_per_seed_and_keeps_latent_keys(models):
    high, low = expert(models, "t2v_high"), expert(models, "t2v_low")
    latent = {**small_t2v_latent(2), "batch_index": [0, 1]}
    a, switch = run(high, latent, low, steps=4, seed=7)
    b, _ = run(high, latent, low, steps=4, seed=7)
    c, _ = run(high, latent, low, steps=4, seed=8)
    # 4 steps: s = 0.999, 0.749, 0.500, 0.250 -> 12s/(1+11s) -> t = 999, 972, 922, 799, of which 3 are >= 875.
    assert switch["switch_step"] == 3
    assert a["samples"].shape == (2, 16, 2, 4, 4) and a["batch_index"] == [0, 1]
    assert_close(a["samples"], b["samples"], rtol=0, atol=0)
    assert not torch.equal(a["samples"], c["samples"])
    assert not torch.equal(a["samples"][0], a["samples"][1])  # each video its own noise


def i2v_inputs(models, batch=1):
    pos, neg = prompts()
    image = torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(1))
    return Wan22DuoI2VConditioning().encode(pos, neg, vae(models, "vae21"), image, 32, 32, 5, batch)


def test_i2v_official_boundary_and_comfy_wan_image_to_video_conditioning(models):
    high, low = expert(models, "i2v_high"), expert(models, "i2v_low")
    pos, neg, latent = i2v_inputs(models)
    _, switch = run(high, latent, low, positive=pos, negative=neg, steps=20, shift=5.0, cfg_high=1.0, cfg_low=1.0)
    assert switch["switch_step"] == 8 and switch["boundary"] == 0.9  # spec §1.3: I2V, 8 of 20 at shift 5
    ours, _ = run(high, latent, low, positive=pos, negative=neg, steps=2, switch_step=1, cfg_high=3.5, cfg_low=3.5)
    # ComfyUI's WanImageToVideo stores the same image latent with a 1-channel mask, 0 on latent frame 0.
    image_latent = pos[0][1]["concat_latent_image"]
    comfy_mask = torch.ones(1, 1, *image_latent.shape[2:])
    comfy_mask[:, :, 0] = 0.0
    values = {"concat_latent_image": image_latent, "concat_mask": comfy_mask}
    theirs, _ = run(high, latent, low, positive=[[pos[0][0], values]], negative=[[neg[0][0], values]], steps=2,
                    switch_step=1, cfg_high=3.5, cfg_low=3.5)
    assert_close(ours["samples"], theirs["samples"], rtol=0, atol=0)
    assert ours["samples"].shape == (1, 16, 2, 4, 4)


def test_ti2v_alone_keeps_the_start_frame(models):
    model = Wan22DuoTI2VLoader().load(models["ti2v"], "default", "auto", "cpu")[0]
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(2))
    (latent,) = Wan22DuoTI2VLatent().generate(vae(models, "vae22"), 64, 64, 5, 1, start_image=image)
    out, switch = run(model, latent, steps=3, shift=5.0, cfg_high=5.0, boundary=0.5)  # boundary ignored
    assert switch["switch_step"] == 3 and switch["boundary"] is None
    samples = out["samples"]
    assert samples.shape == (1, 48, 2, 4, 4)
    assert_close(samples[:, :, 0], latent["samples"][:, :, 0], rtol=0, atol=0)
    assert not torch.equal(samples[:, :, 1], latent["samples"][:, :, 1])
    assert torch.equal(out["noise_mask"], latent["noise_mask"])
    (t2v_latent,) = Wan22DuoTI2VLatent().generate(vae(models, "vae22"), 64, 64, 5, 1)
    out, switch = run(model, t2v_latent, steps=2, cfg_high=1.0)
    assert switch["switch_step"] == 2 and out["samples"].abs().sum() > 0


class Recorder:
    """Stands in for the ComfyUI progress bar; records every update."""

    instances = []

    def __init__(self, steps, latent_channels=None):
        self.steps, self.channels, self.calls = steps, latent_channels, []
        Recorder.instances.append(self)

    def __call__(self, step, x0=None):
        self.calls.append((step, None if x0 is None else tuple(x0.shape)))


def test_one_progress_bar_with_previews_over_both_experts(models, monkeypatch):
    Recorder.instances = []
    monkeypatch.setattr(_comfy, "Progress", Recorder)
    run(expert(models, "t2v_high"), small_t2v_latent(), expert(models, "t2v_low"), steps=4)
    (bar,) = Recorder.instances
    assert bar.steps == 4 and bar.channels == 16
    assert bar.calls == [(i, (1, 16, 2, 4, 4)) for i in range(4)]


def test_cancel_is_checked_between_steps(models, monkeypatch):
    class Interrupted(Exception):
        pass

    calls = []

    def check():
        calls.append(1)
        if len(calls) == 3:
            raise Interrupted

    Recorder.instances = []
    monkeypatch.setattr(_comfy, "interrupt_check", lambda: check)
    monkeypatch.setattr(_comfy, "Progress", Recorder)
    high, low = expert(models, "t2v_high"), expert(models, "t2v_low")
    with pytest.raises(Interrupted):
        run(high, small_t2v_latent(), low, steps=6)
    assert [c[0] for c in Recorder.instances[0].calls] == [0, 1]


@pytest.mark.parametrize("memory", ["offload_cpu", "keep_both", "release"])
def test_memory_is_requested_from_comfy_and_released(models, monkeypatch, memory):
    requests = []
    monkeypatch.setattr(_comfy, "free_memory", lambda size, device: requests.append((size, device)))
    high, low = expert(models, "t2v_high"), expert(models, "t2v_low")
    run(high, small_t2v_latent(), low, steps=2, switch_step=1, memory=memory)
    one = high.info["weight_bytes"]
    assert one == low.info["weight_bytes"] > 0
    expected = 2 * one if memory == "keep_both" else one
    assert requests[0] == (expected, torch.device("cpu"))  # asked before sampling, for the run's device
    assert high.loaded == low.loaded == (memory != "release")


def test_conditioning_errors(models):
    high, low = expert(models, "t2v_high"), expert(models, "t2v_low")
    pos, neg = prompts()
    with pytest.raises(ValueError, match="ConditioningConcat"):
        run(high, small_t2v_latent(), low, positive=pos + pos, steps=2)
    i2v_pos, i2v_neg, latent = i2v_inputs(models)
    with pytest.raises(SamplingError, match="image"):
        run(high, latent, low, positive=i2v_pos, negative=i2v_neg, steps=2)
    with pytest.raises(SamplingError, match="Wan22DuoI2VConditioning"):
        run(expert(models, "i2v_high"), latent, expert(models, "i2v_low"), steps=2)
    with pytest.raises(SamplingError, match="swapped"):
        run(low, small_t2v_latent(), high, steps=2)
    with pytest.raises(SamplingError, match="low_noise_model"):
        run(high, small_t2v_latent(), steps=4)  # switch at step 3 needs the low-noise expert


def test_empty_and_malformed_conditioning_are_named(models):
    high, low = expert(models, "t2v_high"), expert(models, "t2v_low")
    with pytest.raises(ValueError, match=r"^positive is an empty CONDITIONING \(a list with no prompt entries\)"):
        run(high, small_t2v_latent(), low, positive=[], steps=2)
    with pytest.raises(ValueError, match=r"^negative is not a CONDITIONING: its entry should be \[tensor, options\]"):
        run(high, small_t2v_latent(), low, negative=[torch.zeros(1, 4, 4096)], steps=2)


def test_a_workflow_role_with_the_other_experts_file_is_caught(models):
    # The bundled workflows set role explicitly; the loader refuses a file named as the other expert ...
    with pytest.raises(ValueError, match="role is high_noise but the file 't2v_low_noise.safetensors'"):
        expert(models, "t2v_low", role="high_noise")
    # ... and with role auto the sampler refuses the low-noise file picked in both loaders.
    with pytest.raises(SamplingError, match=r"^t2v_low_noise.safetensors \[T2V-A14B low-noise expert\] is connected "
                                            r"to both high_noise_model and low_noise_model"):
        run(expert(models, "t2v_low"), small_t2v_latent(), expert(models, "t2v_low"), steps=4)


@pytest.mark.parametrize("budget", ["auto", "12", "none", None])
def test_gpu_budget_on_cpu_changes_nothing(models, budget):
    """On CPU the weights are read from the mapping in place; any valid budget gives the same latent."""
    high, low = expert(models, "t2v_high"), expert(models, "t2v_low")
    kw = dict(steps=3, switch_step=2)
    plain = run(high, small_t2v_latent(), low, **kw)[0]["samples"]
    assert torch.equal(run(high, small_t2v_latent(), low, gpu_budget=budget, **kw)[0]["samples"], plain)


@pytest.mark.parametrize("budget", ["-4", "nan", "lots", "0"])
def test_bad_gpu_budget_is_named(models, budget):
    from wan22duo.engine.memory.estimates import BudgetError

    with pytest.raises(BudgetError, match="budget"):
        run(expert(models, "t2v_high"), small_t2v_latent(), expert(models, "t2v_low"), gpu_budget=budget, steps=2)
