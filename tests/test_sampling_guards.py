"""Guards that turn silent failures into named errors, and the 1-based wording of the plan."""
from types import SimpleNamespace

import pytest
import torch

from test_sampling_fixtures import contexts, tiny_expert
from wan22duo.engine.memory.residency import ModelHandle
from wan22duo.engine.sampling.loop import SamplingError, describe_plan, plan_switch, sample


@pytest.fixture(scope="module")
def experts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("guards")
    return tiny_expert(tmp, "t2v_a14b", 1, "high_noise"), tiny_expert(tmp, "t2v_a14b", 2, "low_noise")


def _run(experts, positive, negative, **kwargs):
    high, low = experts
    latent = torch.zeros(1, 16, 1, 4, 4)
    return sample(high, low, latent, positive, negative, seed=0, steps=2, **kwargs)


@pytest.mark.parametrize("which", ["positive", "negative"])
def test_nan_text_context_is_named(experts, which):
    positive, negative = contexts(5, 7)
    broken = positive if which == "positive" else negative
    broken[0, 2, :3] = float("nan")
    with pytest.raises(SamplingError, match=rf"^{which} holds 3 NaN/inf values .*text encoder"):
        _run(experts, positive, negative)


def test_a_latent_going_non_finite_names_the_step(experts):
    high, low = experts
    positive, negative = contexts(5, 7)
    model = low.acquire()
    with torch.no_grad():
        model.head.head.bias.fill_(float("inf"))  # the low-noise expert now returns inf velocities
    with pytest.raises(SamplingError, match=r"NaN/inf at step 2 of 2 \(low-noise expert"):
        _run(experts, positive, negative, switch_step=1, memory="keep_both")
    low.release()


def test_plan_is_described_from_step_one():
    plan = plan_switch("t2v_a14b", object(), 40, 12.0, None, -1, "wan")
    assert plan.switch_step == 26  # spec §1.3
    assert describe_plan(plan, "unipc") == (
        "40 steps (unipc, wan schedule, shift 12): high-noise steps 1-26, low-noise steps 27-40 (boundary 0.875)")
    single = plan_switch("ti2v_5b", None, 4, 5.0, None, -1, "wan")
    assert describe_plan(single, "euler").endswith("TI2V-5B, single model, steps 1-4")
    low_only = plan_switch("t2v_a14b", object(), 4, 5.0, None, 0, "simple")
    assert "no high-noise steps, low-noise steps 1-4" in describe_plan(low_only, "euler")


# ---------------------------------------------------------------- wiring, settings, contexts


class _Fake:
    """A stand-in expert: a smooth function of x; records calls; ``out`` replaces its output."""

    def __init__(self, calls, compute_dtype=torch.float32, out=None):
        self.calls, self.compute_dtype, self.out = calls, compute_dtype, out

    def __call__(self, x, t, context):
        self.calls.append(t)
        return torch.tanh(x[:, :16]) if self.out is None else torch.full_like(x[:, :16], self.out)


T2V = SimpleNamespace(variant="t2v_a14b", in_dim=16, out_dim=16, text_dim=4096)


def fake(name, role, calls, path=None, **kwargs):
    info = {"config": T2V, "role": role, "name": name, "path": path}
    return ModelHandle(lambda device: _Fake(calls, **kwargs), "cpu", info=info)


def _fake_run(high, low, steps=4, **kwargs):
    positive, negative = contexts(5, 7)
    kwargs = {"solver": "euler", "schedule": "simple", "shift": 5.0, **kwargs}
    return sample(high, low, torch.zeros(1, 16, 1, 4, 4), positive, negative, seed=0, steps=steps, **kwargs)


def test_one_model_in_both_inputs_is_refused_when_both_run():
    calls = []
    one = fake("wan2.2_t2v_high_noise.safetensors", "high_noise", calls)
    with pytest.raises(SamplingError, match=r"wan2.2_t2v_high_noise.safetensors is connected to both "
                                            r"high_noise_model and low_noise_model.*set switch_step to 4"):
        _fake_run(one, one)
    assert calls == []  # refused before any step
    # The same file behind two handles (two loaders) is the same model.
    a = fake("a", None, calls, path="/models/x.safetensors")
    b = fake("b", None, calls, path="/models/x.safetensors")
    with pytest.raises(SamplingError, match="connected to both"):
        _fake_run(a, b)
    # A deliberate single-model run with the other input filled in is allowed.
    low_only = fake("wan2.2_t2v_low_noise.safetensors", "low_noise", calls)
    assert _fake_run(low_only, low_only, switch_step=0).switch_step == 0
    assert _fake_run(one, one, switch_step=4).switch_step == 4


@pytest.mark.parametrize("slot", ["high", "low"])
def test_an_expert_in_the_other_experts_input_is_refused(slot):
    calls = []
    right_high, right_low = fake("h", "high_noise", calls), fake("l", "low_noise", calls)
    wrong = fake("wan2.2_t2v_low_noise.safetensors" if slot == "high" else "wan2.2_t2v_high_noise.safetensors",
                 "low_noise" if slot == "high" else "high_noise", calls)
    high, low = (wrong, right_low) if slot == "high" else (right_high, wrong)
    expected = (r"is a low-noise expert but is connected to high_noise_model, which runs steps 1-2 of 4"
                if slot == "high" else
                r"is a high-noise expert but is connected to low_noise_model, which runs steps 3-4 of 4")
    with pytest.raises(SamplingError, match=expected):
        _fake_run(high, low)
    assert calls == []
    # When the misplaced expert runs no step, nothing is wrong.
    assert _fake_run(high, low, switch_step=0 if slot == "high" else 4).steps == 4


@pytest.mark.parametrize("setting", ["cfg_high", "cfg_low", "shift", "boundary"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_settings_are_refused_up_front(setting, value):
    calls = []
    with pytest.raises(SamplingError, match=rf"^{setting} is {value}; it must be a finite number"):
        _fake_run(fake("h", "high_noise", calls), fake("l", "low_noise", calls), **{setting: value})
    assert calls == []


@pytest.mark.parametrize("dtype,hint", [(torch.float16, "fp16 can overflow"), (torch.float32, "weights")])
def test_the_fp16_hint_only_for_fp16_compute(dtype, hint):
    calls = []
    high = fake("h", "high_noise", calls, compute_dtype=dtype, out=float("inf"))
    with pytest.raises(SamplingError, match="NaN/inf at step 1 of 4") as err:
        _fake_run(high, fake("l", "low_noise", calls))
    assert hint in str(err.value)
    assert ("fp16" in str(err.value)) == (dtype == torch.float16)


@pytest.mark.parametrize("which", ["positive", "negative"])
def test_a_context_with_no_tokens_is_refused(which):
    calls = []
    positive, negative = contexts(5, 7)
    empty = torch.zeros(1, 0, 4096)
    positive, negative = (empty, negative) if which == "positive" else (positive, empty)
    with pytest.raises(SamplingError, match=rf"^{which} has no tokens \(shape \[1, 0, 4096\]\)"):
        sample(fake("h", "high_noise", calls), fake("l", "low_noise", calls), torch.zeros(1, 16, 1, 4, 4),
               positive, negative, seed=0, steps=2)


def test_one_file_under_different_loras_in_both_inputs_warns(caplog):
    calls = []
    a = fake("x", None, calls, path="/models/x.safetensors")
    b = fake("x + l.safetensors@1", None, calls, path="/models/x.safetensors")
    b.info["loras"] = (("/loras/l.safetensors", 1.0),)
    with caplog.at_level("WARNING", logger="wan22duo.engine.sampling.loop"):
        assert _fake_run(a, b).switch_step == 2  # runs: a deliberate setup is possible
    assert "load the same file with different LoRAs" in caplog.text
    b.info["loras"] = a.info["loras"] = (("/loras/l.safetensors", 1.0),)  # the same chain: the same model
    with pytest.raises(SamplingError, match="connected to both"):
        _fake_run(a, b)


# ---------------------------------------------------------------- issue 26: the message names the file and the weight


def _expert(path):
    from wan22duo.nodes.loaders import Wan22DuoExpertLoader

    return Wan22DuoExpertLoader().load(str(path), "high_noise", "default", "fp32", "cpu")[0]


def test_nan_weights_name_the_expert_file_and_the_first_bad_weight(tmp_path, experts):
    from safetensors.torch import load_file, save_file

    from wan22duo.engine.testing.tiny import write_tiny_dit

    path = write_tiny_dit(tmp_path / "my_t2v_high_noise_expert.safetensors", "t2v_a14b", seed=3)
    weights = load_file(path)
    weights["blocks.0.ffn.2.bias"][3] = float("nan")
    save_file(weights, path)
    positive, negative = contexts(5, 7)
    with pytest.raises(SamplingError, match=r"NaN/inf at step 1 of 2 \(high-noise expert my_t2v_high_noise_expert"
                                            r"\.safetensors .*Its weight blocks\.0\.ffn\.2\.bias holds NaN/inf.* load "
                                            r"another copy"):
        sample(_expert(path), experts[1], torch.zeros(1, 16, 1, 4, 4), positive, negative, seed=0, steps=2,
               switch_step=2)


def test_a_nan_gguf_scale_names_the_file_and_the_quantized_tensor(tmp_path, experts):
    from wan22duo.engine.testing.tiny_gguf import write_tiny_gguf
    from wan22duo.engine.weights.gguf import read_gguf_header

    path = write_tiny_gguf(tmp_path / "wan_high_noise-Q8_0.gguf", qtype="Q8_0", dim=256, ffn_dim=512, num_layers=2,
                           text_dim=256)
    start = read_gguf_header(path).tensors["blocks.1.self_attn.v.weight"].start
    with open(path, "r+b") as f:  # the float16 scale of the tensor's first Q8_0 block -> NaN
        f.seek(start)
        f.write(b"\x00\x7e")
    positive, negative = contexts(5, 7, width=256)
    with pytest.raises(SamplingError, match=r"\(high-noise expert wan_high_noise-Q8_0\.gguf .*Its weight "
                                            r"blocks\.1\.self_attn\.v\.weight holds NaN/inf as the layer uses it"):
        sample(_expert(path), None, torch.zeros(1, 16, 1, 4, 4), positive, negative, seed=0, steps=2, switch_step=2)
