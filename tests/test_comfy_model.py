"""The parts of the ComfyUI-MODEL adapter that need no ComfyUI: shift rule, sigma/timestep, masks, velocity.

The adapter itself runs inside a real ComfyUI in integration/test_model_sampler.py.
"""
import re

import pytest
import torch

from wan22duo.engine.model.conditioning import token_timesteps
from wan22duo.engine.sampling.schedule import make_schedule
from wan22duo.engine.sampling.loop import guided_velocity
from wan22duo.nodes.comfy_model import (ComfyModelError, model_shift, model_sigma, pad_context, resolve_shift,
                                        shift_conflicts, token_mask, velocity, wan_config)


def test_shift_rule():
    # a positive sampler shift wins, whatever the MODELs carry
    assert resolve_shift(7.0, "t2v_a14b", 8.0, 8.0) == (7.0, "sampler")
    assert shift_conflicts(7.0, 8.0, None) == ["high_noise_model 8"]
    assert shift_conflicts(8.0, 8.0, 8.0) == []
    # -1: the ModelSamplingSD3 shift carried by the MODELs
    assert resolve_shift(-1.0, "t2v_a14b", 8.0, 8.0) == (8.0, "ModelSamplingSD3")
    assert resolve_shift(-1.0, "t2v_a14b", None, 3.0) == (3.0, "ModelSamplingSD3 on low_noise_model")
    assert resolve_shift(-1.0, "ti2v_5b", 6.5, None) == (6.5, "ModelSamplingSD3 on high_noise_model")
    # none carried: the official shift of the variant, not ComfyUI's built-in 8.0
    assert resolve_shift(-1.0, "t2v_a14b", None, None) == (12.0, "official")
    assert resolve_shift(-1.0, "i2v_a14b", None, None) == (5.0, "official")
    assert resolve_shift(-1.0, "ti2v_5b", None, None) == (5.0, "official")
    differ = r"different ModelSamplingSD3 shifts \(high_noise_model 8, low_noise_model 5\)"
    with pytest.raises(ComfyModelError, match=differ):
        resolve_shift(-1.0, "t2v_a14b", 8.0, 5.0)
    with pytest.raises(ComfyModelError, match="shift 0"):
        resolve_shift(0.0, "t2v_a14b", None, None)


class _Sampling:
    def __init__(self, shift):
        self.shift = shift


class _Patcher:
    def __init__(self, patches, model=None):
        self.object_patches = patches
        self.model = model


def test_model_shift_counts_only_an_explicit_model_sampling_patch():
    assert model_shift(_Patcher({"model_sampling": _Sampling(8)})) == 8.0
    assert model_shift(_Patcher({})) is None  # ComfyUI's built-in default is nobody's choice
    assert model_shift(_Patcher({"model_sampling": object()})) is None


def test_sigma_feeds_the_exact_timestep():
    t = make_schedule("wan", 40, 12.0).timesteps.float()
    sigma = model_sigma(t, 1000.0)
    assert sigma.dtype == torch.float64
    assert torch.equal((sigma * 1000.0).float(), t)  # what ComfyUI's timestep(sigma).float() gives the DiT
    every = torch.arange(1001, dtype=torch.float32)
    assert torch.equal((model_sigma(every, 1000.0) * 1000.0).float(), every)
    assert not torch.equal((every / 1000.0) * 1000.0, every)  # float32 would miss some integers
    assert torch.equal((model_sigma(t, 1.0) * 1.0).float(), t)  # e.g. an AuraFlow-style multiplier


def test_token_mask_inverts_the_engine_token_timesteps():
    noise_mask = torch.ones(2, 1, 3, 4, 6)
    noise_mask[:, :, 0] = 0.0  # TI2V: frame 0 kept
    t = token_timesteps(noise_mask, torch.tensor([937.0, 500.0]), 2)
    assert torch.equal(model_sigma(t, 1000.0), torch.tensor([0.937, 0.5], dtype=torch.float64))
    assert torch.equal(token_mask(t, noise_mask.shape), noise_mask)
    assert token_mask(torch.tensor([937.0]), noise_mask.shape) is None


def test_velocity_inverts_comfyuis_denoised():
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(2, 16, 2, 4, 4, generator=g), torch.randn(2, 16, 2, 4, 4, generator=g)
    sigma = torch.tensor([0.937, 0.05], dtype=torch.float64)
    x0 = x - v * sigma.view(2, 1, 1, 1, 1)  # ComfyUI's CONST.calculate_denoised
    back = velocity(x, x0, sigma)
    assert back.dtype == torch.float32
    assert float((back - v).abs().max()) < 1e-6


def test_context_is_padded_to_the_text_length_never_cut():
    context = torch.randn(1, 24, 8)
    padded = pad_context(context, 512)
    assert padded.shape == (1, 512, 8) and torch.equal(padded[:, :24], context) and not padded[:, 24:].any()
    assert pad_context(torch.randn(1, 600, 8), 512).shape == (1, 600, 8)


class WanModel(torch.nn.Module):  # the name ComfyUI's Wan DiT class has
    def __init__(self, in_dim=16, out_dim=16, img_emb=None):
        super().__init__()
        self.patch_embedding = torch.nn.Identity()
        self.dim, self.ffn_dim, self.num_layers, self.freq_dim, self.text_dim = 256, 512, 2, 256, 4096
        self.in_dim, self.out_dim, self.img_emb = in_dim, out_dim, img_emb


class _Base:
    def __init__(self, dm):
        self.diffusion_model = dm


def test_wan_config_reads_the_comfyui_dit_and_rejects_other_models():
    assert wan_config(_Patcher({}, _Base(WanModel())), "high_noise_model").variant == "t2v_a14b"
    assert wan_config(_Patcher({}, _Base(WanModel(36, 16))), "high_noise_model").variant == "i2v_a14b"
    assert wan_config(_Patcher({}, _Base(WanModel(48, 48))), "high_noise_model").variant == "ti2v_5b"
    with pytest.raises(ComfyModelError, match="high_noise_model is a Linear model, not a Wan 2.2 DiT"):
        wan_config(_Patcher({}, _Base(torch.nn.Linear(2, 2))), "high_noise_model")
    with pytest.raises(ComfyModelError, match="Wan 2.1 image-to-video"):
        wan_config(_Patcher({}, _Base(WanModel(36, 16, img_emb=torch.nn.Identity()))), "low_noise_model")
    with pytest.raises(ComfyModelError, match="low_noise_model: in_dim 20"):
        wan_config(_Patcher({}, _Base(WanModel(20, 16))), "low_noise_model")


def test_the_loop_lets_a_model_do_its_own_guidance():
    calls = []

    class Guided:
        def __call__(self, x, t, context):
            raise AssertionError("a model with guided_velocity is not called pass by pass")

        def guided_velocity(self, x, t, positive, negative, cfg):
            calls.append(cfg)
            return (x * cfg).double()

    x = torch.ones(1, 16, 1, 2, 2)
    out = guided_velocity(Guided(), x, torch.tensor([1.0]), x, x, 3.0)
    assert calls == [3.0] and out.dtype == torch.float32 and torch.equal(out, x * 3.0)


# ---------------------------------------------------------------- issue 26: shift values, one MODEL in both inputs


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), -0.5, -2.0, -1e-9, 0.0])
def test_a_sampler_shift_that_is_not_minus_one_or_positive_is_refused_with_its_value(bad):
    with pytest.raises(ComfyModelError, match=f"shift {bad:g} is not a flow-matching shift") as info:
        resolve_shift(bad, "t2v_a14b", None, None)
    assert "official 12" in str(info.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0.0, -3.0])
def test_an_invalid_model_sampling_sd3_shift_names_that_node(bad):
    with pytest.raises(ComfyModelError, match=f"the ModelSamplingSD3 on low_noise_model sets shift {bad:g}"):
        resolve_shift(-1.0, "t2v_a14b", 8.0, bad)
    assert resolve_shift(6.0, "t2v_a14b", 8.0, bad) == (6.0, "sampler")  # a positive sampler shift overrides it


@pytest.mark.parametrize("shift, word", [(1e9, "large"), (1e300, "large")])
@pytest.mark.parametrize("schedule", ["wan", "simple"])
def test_a_shift_that_degenerates_the_schedule_says_the_shift_is_the_cause(shift, word, schedule):
    from wan22duo.nodes.model_sampler import _timesteps

    with pytest.raises(ValueError, match=re.escape(f"shift {shift:g} is too {word}: the 40-step {schedule} schedule "
                                                   "degenerates")):
        make_schedule(schedule, 40, shift)
    with pytest.raises(ComfyModelError, match="came from the ModelSamplingSD3 on high_noise_model"):
        _timesteps(schedule, 40, shift, "ModelSamplingSD3 on high_noise_model")
    for fine in (1.0, 5.0, 12.0, 100.0):  # the node's range stays valid, at 1000 steps too
        make_schedule(schedule, 1000, fine)


class _ClonePatcher(_Patcher):
    """ComfyUI's clone semantics: clones share ``model``; same weights = same weight-patch set (``patches_uuid``)."""

    offload_device = "cpu"

    def __init__(self, model, patches_uuid=None):
        super().__init__({}, model)
        self.patches_uuid = patches_uuid

    def clone(self, patches_uuid=None):
        return _ClonePatcher(self.model, self.patches_uuid if patches_uuid is None else patches_uuid)

    def is_clone(self, other):
        return getattr(other, "model", None) is self.model

    def clone_has_same_weights(self, other):
        return self.is_clone(other) and self.patches_uuid == other.patches_uuid


def test_one_model_in_both_inputs_is_detected_as_the_engine_path_does():
    from wan22duo.engine.sampling.loop import SamplingError, _same_model, check_wiring, plan_switch
    from wan22duo.nodes.comfy_model import ComfyExpert

    base = _ClonePatcher(_Base(WanModel()))
    high = ComfyExpert(base, "high_noise", "high_noise_model")
    same_patcher = ComfyExpert(base, "low_noise", "low_noise_model")
    same_weights = ComfyExpert(base.clone(), "low_noise", "low_noise_model")  # e.g. through a ModelSamplingSD3
    other_lora = ComfyExpert(base.clone(patches_uuid="lora"), "low_noise", "low_noise_model")
    other_file = ComfyExpert(_ClonePatcher(_Base(WanModel())), "low_noise", "low_noise_model")
    assert [_same_model(high, low) for low in (same_patcher, same_weights, other_lora, other_file)] == [
        "model", "model", "file", None]
    plan = plan_switch("t2v_a14b", same_weights, 8, 12.0, None, -1, "wan")
    assert 0 < plan.switch_step < 8
    with pytest.raises(SamplingError, match="high_noise_model is connected to both .* one UNETLoader / UnetLoaderGGUF"):
        check_wiring(plan, high, same_weights)
    for one_expert in (0, 8):  # a deliberate one-expert run, as on the engine path
        check_wiring(plan_switch("t2v_a14b", same_weights, 8, 12.0, None, one_expert, "wan"), high, same_weights)
    check_wiring(plan, high, other_lora)  # one base model under two LoRA chains: a warning only


def test_sampler_level_wrappers_that_cannot_act_exactly_are_named():
    """EasyCache/LazyCache (OUTER_SAMPLE) and FreeNoise (SAMPLER_SAMPLE) act as in a two-sampler graph; any other
    wrapper at those levels wraps the whole run, so the node names it (log and report). Other levels run per step."""
    from wan22duo.nodes.comfy_wrappers import inexact_notes, wrapper_name

    def preview(executor, *args, **kwargs):
        return executor(*args, **kwargs)

    options = {"transformer_options": {"wrappers": {
        "outer_sample": {"easycache": [preview], "preview_key": [preview]},
        "sampler_sample": {"ContextWindows_sampler_sample": [preview], None: [preview]},
        "predict_noise": {"lazycache": [preview], "other": [preview]},
        "apply_model": {"torch.compile": [preview]},
    }}}
    notes = inexact_notes("low_noise_model", options)
    assert len(notes) == 2
    assert notes[0].startswith("low_noise_model: the OUTER_SAMPLE wrapper 'preview_key' runs around the whole run")
    assert notes[1].startswith("low_noise_model: the SAMPLER_SAMPLE wrapper "
                               "'test_sampler_level_wrappers_that_cannot_act_exactly_are_named.<locals>.preview'")
    assert inexact_notes("high_noise_model", {"transformer_options": {}}) == []
    assert inexact_notes("high_noise_model", {}) == []
    assert wrapper_name(None, []) == "an unnamed wrapper"
