"""The dual-expert loop: routing, CFG, one trajectory across the switch, errors, seeds, progress."""
from types import SimpleNamespace

import pytest
import torch

from wan22duo.engine.memory.residency import ModelHandle
from wan22duo.engine.sampling.loop import SamplingCancelled, SamplingError, make_noise, sample
from wan22duo.engine.sampling.schedule import make_schedule

from test_sampling_fixtures import comfy_noise

SHAPE = (1, 16, 2, 4, 4)
T2V = SimpleNamespace(variant="t2v_a14b", in_dim=16, out_dim=16, text_dim=4096)


class Expert:
    """A stand-in DiT: a fixed smooth function of (x, t, context); records every call."""

    def __init__(self, name, calls, scale=1.0, out_dim=16):
        self.name, self.calls, self.scale, self.out_dim = name, calls, scale, out_dim

    def __call__(self, x, t, context):
        self.calls.append(SimpleNamespace(expert=self.name, x=x.clone(), t=t.clone(), context=context))
        return torch.tanh(x[:, : self.out_dim] * self.scale) + context.mean() + t.float().mean() / 1000.0


def handle(name, calls, config=T2V, role=None, scale=1.0, loads=None, offload_device="cpu"):
    def load(device):
        if loads is not None:
            loads.append(name)
        return Expert(name, calls, scale, config.out_dim)

    return ModelHandle(load, "cpu", info={"config": config, "role": role, "name": name},
                       offload_device=offload_device)


def pair(config=T2V, offload_device="cpu"):
    calls = []
    return (handle("high", calls, config, "high_noise", 1.0, offload_device=offload_device),
            handle("low", calls, config, "low_noise", 0.5, offload_device=offload_device), calls)


def contexts(width=4096):
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, 7, width, generator=g), torch.randn(1, 3, width, generator=g) - 1.0


def run(high, low, **kw):
    pos, neg = contexts()
    kw.setdefault("seed", 3)
    return sample(high, low, torch.zeros(kw.pop("shape", SHAPE)), pos, neg, **kw)


# ------------------------------------------------------------------- routing


def test_t2v_official_routing_26_of_40():
    high, low, calls = pair()
    result = run(high, low, steps=40, shift=12.0)
    assert result.switch_step == 26 and result.boundary == 0.875
    ts = make_schedule("wan", 40, 12.0).timesteps.tolist()
    high_ts = [c.t.item() for c in calls if c.expert == "high"]
    low_ts = [c.t.item() for c in calls if c.expert == "low"]
    assert high_ts[::2] == ts[:26] and low_ts[::2] == ts[26:]  # two passes (cond, uncond) per step
    assert min(high_ts) == 877 and max(low_ts) == 865


def test_i2v_default_boundary_routes_15_of_40():
    i2v_cfg = SimpleNamespace(variant="i2v_a14b", in_dim=36, out_dim=16, text_dim=4096)
    high, low, calls = pair(i2v_cfg)
    from wan22duo.engine.model.conditioning import I2VConditioning

    image = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5))
    cond = I2VConditioning.from_comfy(image)
    result = run(high, low, steps=40, shift=5.0, i2v=cond, cfg_high=3.5, cfg_low=3.5)
    assert result.switch_step == 15 and result.boundary == 0.9
    ts = make_schedule("wan", 40, 5.0).timesteps.tolist()
    assert [c.expert for c in calls] == ["high"] * 30 + ["low"] * 50  # cond + uncond pass per step
    assert [c.t.item() for c in calls[::2]] == ts
    assert min(c.t.item() for c in calls if c.expert == "high") >= 900 > max(
        c.t.item() for c in calls if c.expert == "low")
    y = cond.y(SHAPE)
    for c in calls:  # every pass of both experts sees [noise(16), mask(4), image latent(16)]
        assert c.x.shape == (1, 36) + SHAPE[2:]
        assert torch.equal(c.x[:, 16:], y)


@pytest.mark.parametrize("kw,expected", [
    ({"boundary": 0.9995}, 0),  # above the first timestep: low-noise expert only
    ({"boundary": 0.2}, 40),  # below the last timestep: high-noise expert only
    ({"switch_step": 0}, 0),
    ({"switch_step": 40}, 40),
    ({"switch_step": 7}, 7),
])
def test_switch_edges(kw, expected):
    calls, loads = [], []
    high = handle("high", calls, loads=loads)
    low = handle("low", calls, loads=loads)
    result = run(high, low, steps=40, shift=12.0, solver="euler", **kw)
    assert result.switch_step == expected
    assert sum(c.expert == "high" for c in calls) == 2 * expected
    assert ("high" in loads) == (expected > 0) and ("low" in loads) == (expected < 40)  # unused: never loaded


def test_high_only_run_needs_no_low_model():
    calls = []
    result = run(handle("high", calls), None, steps=10, switch_step=10)
    assert result.switch_step == 10 and {c.expert for c in calls} == {"high"}


# ----------------------------------------------------------------------- CFG


def test_cfg_per_expert_on_the_velocity():
    # Constant experts: v = a for the positive context, b for the negative. With Euler,
    # the final latent is noise + sum_i (s_{i+1} - s_i) * (b + cfg_i * (a - b)).
    def const_handle(name, a, b):
        return ModelHandle(lambda d: (lambda x, t, c: torch.full_like(x, a if c.shape[1] == 7 else b)),
                           info={"config": T2V, "name": name})

    steps, cfg_high, cfg_low = 10, 4.0, 3.0
    result = run(const_handle("high", 1.0, 0.2), const_handle("low", -0.5, 0.1), steps=steps, shift=12.0,
                 solver="euler", cfg_high=cfg_high, cfg_low=cfg_low, switch_step=6)
    sig = make_schedule("wan", steps, 12.0).sigmas.double()
    total = sum(float(sig[i + 1] - sig[i]) * (0.2 + cfg_high * 0.8) for i in range(6))
    total += sum(float(sig[i + 1] - sig[i]) * (0.1 + cfg_low * -0.6) for i in range(6, steps))
    expected = make_noise(3, SHAPE) + total
    from wan22duo.engine.model.latents import normalize

    assert torch.allclose(normalize(result.latent), expected, atol=1e-5)


def test_cfg_one_skips_the_unconditional_pass():
    high, low, calls = pair()
    run(high, low, steps=8, shift=12.0, cfg_high=1.0, cfg_low=2.0, switch_step=5)
    assert sum(c.expert == "high" for c in calls) == 5  # one pass per high step
    assert sum(c.expert == "low" for c in calls) == 6  # two per low step


def test_contexts_of_different_lengths_reach_the_model_unpadded():
    high, low, calls = pair()
    run(high, low, steps=4, switch_step=2)
    assert {tuple(c.context.shape) for c in calls} == {(1, 7, 4096), (1, 3, 4096)}


# --------------------------------------------------------------- trajectory


@pytest.mark.parametrize("solver", ["unipc", "dpmpp_2m", "euler"])
def test_handoff_keeps_one_trajectory(solver):
    high, low, calls = pair()
    latents = []
    run(high, low, steps=12, shift=12.0, switch_step=5, solver=solver, callback=lambda s: latents.append(s.latent))
    first_low = next(c for c in calls if c.expert == "low")
    last_high = [c for c in calls if c.expert == "high"][-1]
    # The low expert's first input is exactly the latent the last high step produced:
    # not re-noised, not fully denoised.
    assert torch.equal(first_low.x, latents[4])
    assert not torch.equal(first_low.x, last_high.x)


@pytest.mark.parametrize("solver", ["unipc", "dpmpp_2m"])
def test_switch_leaves_the_solver_history_intact(solver):
    # One model that picks the expert by timestep gives the same run as the two-handle
    # switch, bit for bit, only if the multistep history carries across the switch.
    steps, calls = 12, []
    sched = make_schedule("wan", steps, 12.0)
    boundary_t = float(sched.timesteps[5])
    high_fn, low_fn = Expert("high", calls, 1.0), Expert("low", calls, 0.5)

    def combined(x, t, c):
        return (high_fn if t.max() >= boundary_t else low_fn)(x, t, c)

    one = ModelHandle(lambda d: combined, info={"config": T2V})
    high, low, _ = pair()
    two = run(high, low, steps=steps, shift=12.0, switch_step=6, solver=solver, cfg_high=4.0, cfg_low=4.0)
    single = run(one, None, steps=steps, shift=12.0, switch_step=steps, solver=solver, cfg_high=4.0)
    assert torch.equal(two.latent, single.latent)


# --------------------------------------------------------------------- seeds


def test_noise_equals_comfyui_ksampler_noise_and_leaves_global_rng_alone():
    torch.manual_seed(99)
    before = torch.get_rng_state()
    noise = make_noise(123456789, (2, 16, 3, 4, 6))
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(noise, comfy_noise(123456789, (2, 16, 3, 4, 6)))


def test_same_seed_same_result_and_the_seed_matters():
    high, low, _ = pair()
    a = run(high, low, steps=6, seed=7)
    b = run(high, low, steps=6, seed=7)
    c = run(high, low, steps=6, seed=8)
    assert torch.equal(a.latent, b.latent) and not torch.equal(a.latent, c.latent)


# -------------------------------------------------------------- progress, cancel


def test_callback_reports_every_step_and_expert():
    high, low, _ = pair()
    seen = []
    result = run(high, low, steps=10, shift=12.0, callback=seen.append)
    assert [s.step for s in seen] == list(range(10)) and {s.total for s in seen} == {10}
    assert [s.expert for s in seen] == ["high"] * result.switch_step + ["low"] * (10 - result.switch_step)
    assert torch.equal(seen[-1].x0, seen[-1].latent)  # UniPC's last step lands on its x0 estimate
    assert result.switch_info()["switch_step"] == result.switch_step
    assert len(result.switch_info()["sigmas"]) == 11 and len(result.switch_info()["timesteps"]) == 10


@pytest.mark.parametrize("memory", ["offload_cpu", "release"])
def test_cancel_stops_between_steps_and_still_frees_the_experts(memory):
    # "meta" stands in for CPU RAM as the offload target, so that moving an expert off its compute
    # device (the CPU here) is observable on a machine without a GPU.
    high, low, calls = pair(offload_device="meta")
    steps_done = []
    with pytest.raises(SamplingCancelled, match="before step 4 of 10"):
        run(high, low, steps=10, switch_step=2, memory=memory, callback=lambda s: steps_done.append(s.step),
            cancel=lambda: len(steps_done) == 3)
    assert steps_done == [0, 1, 2]
    if memory == "release":
        assert not high.loaded and not low.loaded
    else:  # both stay loaded, parked on the offload device; the cancelled low expert too
        assert high.loaded and low.loaded
        assert high.location == low.location == torch.device("meta")


def test_release_policy_holds_one_expert_at_a_time():
    high, low, _ = pair()
    loaded = []
    run(high, low, steps=8, switch_step=4, memory="release",
        callback=lambda s: loaded.append((high.loaded, low.loaded)))
    assert loaded == [(True, False)] * 4 + [(False, True)] * 4
    assert not high.loaded and not low.loaded  # dropped at the end as well


# -------------------------------------------------------------------- errors


def test_missing_low_model_is_named_with_the_switch_step():
    high, _, _ = pair()
    with pytest.raises(SamplingError, match=r"steps 27-40 of 40 need the low-noise expert \(boundary 0\.875 hands over after step 26\)"):
        run(high, None, steps=40, shift=12.0)


def test_ti2v_with_a_low_model_is_refused():
    ti2v = SimpleNamespace(variant="ti2v_5b", in_dim=48, out_dim=48, text_dim=4096)
    high, low, _ = pair(ti2v)
    with pytest.raises(SamplingError, match="TI2V-5B is a single model"):
        run(high, low, shape=(1, 48, 2, 4, 4))


def test_ti2v_refuses_a_switch_step():
    ti2v = SimpleNamespace(variant="ti2v_5b", in_dim=48, out_dim=48, text_dim=4096)
    high, _, _ = pair(ti2v)
    with pytest.raises(SamplingError, match="has no switch"):
        run(high, None, shape=(1, 48, 2, 4, 4), steps=10, switch_step=4)


@pytest.mark.parametrize("shape,match", [
    ((1, 48, 2, 4, 4), r"latent has 48 channels but high expects 16 input channels"),
    ((1, 16, 4, 4), r"expected a video latent \[B, C, T, H, W\]"),
    ((1, 16, 2, 5, 4), "height and width must be even"),
])
def test_latent_shape_errors(shape, match):
    high, low, _ = pair()
    with pytest.raises(SamplingError, match=match):
        run(high, low, shape=shape)


def test_context_width_and_batch_errors():
    high, low, _ = pair()
    pos, neg = contexts(width=768)
    with pytest.raises(SamplingError, match="positive has width 768 but the model's text_dim is 4096"):
        sample(high, low, torch.zeros(SHAPE), pos, neg, seed=0)
    pos, neg = contexts()
    with pytest.raises(SamplingError, match="negative has batch 2 but the latent has batch 3"):
        sample(high, low, torch.zeros((3,) + SHAPE[1:]), pos, neg.expand(2, -1, -1), seed=0)


def test_mixed_and_swapped_experts_are_named():
    calls = []
    i2v = SimpleNamespace(variant="i2v_a14b", in_dim=36, out_dim=16, text_dim=4096)
    with pytest.raises(SamplingError, match="high_noise_model is t2v_a14b, low_noise_model is i2v_a14b"):
        run(handle("high", calls), handle("low", calls, i2v))
    swapped_high = handle("wan_low.safetensors", calls, role="low_noise")
    swapped_low = handle("wan_high.safetensors", calls, role="high_noise")
    with pytest.raises(SamplingError, match="the experts look swapped"):
        run(swapped_high, swapped_low)


def test_conditioning_that_does_not_fit_the_model():
    high, low, _ = pair()
    with pytest.raises(SamplingError, match="noise_mask, which only TI2V-5B uses"):
        run(high, low, noise_mask=torch.ones(1, 1, 2, 4, 4))
    i2v_cfg = SimpleNamespace(variant="i2v_a14b", in_dim=36, out_dim=16, text_dim=4096)
    high, low, _ = pair(i2v_cfg)
    with pytest.raises(SamplingError, match="I2V-A14B needs a start image"):
        run(high, low)


def test_unknown_options_are_named():
    high, low, _ = pair()
    with pytest.raises(SamplingError, match="unknown sampler 'lms'"):
        run(high, low, solver="lms")
    with pytest.raises(SamplingError, match="unknown memory policy 'all'"):
        run(high, low, memory="all")
    with pytest.raises(ValueError, match="unknown scheduler 'beta'"):
        run(high, low, schedule="beta")
