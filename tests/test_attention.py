"""The attention kernel registry: the once-per-process check against SDPA, fallback, ``auto``, per-model choice."""
import logging
import math

import pytest
import torch
import torch.nn.functional as F

from wan22duo.engine.model import attention as attn
from wan22duo.engine.sampling import fast
from wan22duo.engine.testing import tiny
from wan22duo.engine.model.dit import WanModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU, F32 = torch.device("cpu"), torch.float32


@pytest.fixture(autouse=True)
def clean_registry():
    before = dict(attn._kernels)
    selection = attn.selected_backend()
    yield
    for name in list(attn._kernels):
        if name not in before:
            attn.unregister_kernel(name)
    attn.select_backend(selection)
    attn._resolved.clear()


def math_attention(q, k, v):
    """Attention written out (float64 inside): a correct kernel that is not SDPA."""
    w = torch.softmax(q.double() @ k.double().transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return (w @ v.double()).to(q.dtype)


# Plausible kernel bugs the check must catch.
BUGGY = {
    "scale_1_over_d": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, scale=1.0 / q.shape[-1]),
    "layout_mixed": lambda q, k, v: F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2),
    "no_softmax": lambda q, k, v: (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])) @ v / k.shape[-2],
    "heads_swapped": lambda q, k, v: F.scaled_dot_product_attention(q, k.flip(1), v.flip(1)),
    "causal": lambda q, k, v: F.scaled_dot_product_attention(q, k[:, :, : q.shape[2]], v[:, :, : q.shape[2]],
                                                             is_causal=True),
}


def tiny_model(seed=0):
    cfg = tiny.tiny_config("t2v_a14b", dim=256, ffn_dim=256, num_layers=1)
    model = WanModel(cfg)
    model.load_state_dict(tiny.random_state_dict(cfg, seed), assign=True)
    return model


def inputs():
    g = torch.Generator().manual_seed(5)
    return torch.randn(1, 16, 2, 4, 4, generator=g), torch.tensor([600.0]), torch.randn(1, 6, 4096, generator=g)


def test_without_kernels_everything_is_sdpa():
    assert attn.backend_names()[:2] == ("auto", "sdpa")
    assert attn.selected_backend() == "auto"
    assert attn.resolve("auto", CPU, F32) is attn.sdpa_backend
    assert attn.chosen_name("auto", CPU, F32) == "sdpa"


def test_a_correct_kernel_passes_with_rounding_error_only():
    attn.register_kernel("math", math_attention)
    assert attn.check_kernel("math", CPU, F32) is None
    q, k, v = attn.check_input(CPU, F32)
    assert attn.rel_l2(math_attention(q, k, v), attn.sdpa_backend(q, k, v)) < 1e-5
    assert attn.check_kernel("math", CPU, torch.bfloat16) is None  # bf16 rounding stays inside its bound


@pytest.mark.parametrize("name", sorted(BUGGY))
def test_the_check_rejects_a_wrong_kernel_and_says_why(name, caplog):
    attn.register_kernel(name, BUGGY[name])
    q, k, v = attn.check_input(CPU, F32)
    try:
        err = attn.rel_l2(BUGGY[name](q, k, v), attn.sdpa_backend(q, k, v))
        assert err > 0.2  # the margin CHECK_TOLERANCE's comment claims
    except RuntimeError:
        pass  # shape errors count as wrong too
    with caplog.at_level(logging.WARNING, logger="wan22duo.engine.model.attention"):
        why = attn.check_kernel(name, CPU, F32)
    assert why is not None
    assert f"attention kernel {name} is not used on cpu torch.float32" in caplog.text and why in caplog.text


def test_wrong_kernel_is_not_used_and_auto_falls_back_to_sdpa():
    calls = []

    def wrong(q, k, v):
        calls.append(q.shape)
        return BUGGY["scale_1_over_d"](q, k, v)

    attn.register_kernel("wrong", wrong)
    model = tiny_model()
    x, t, ctx = inputs()
    with torch.no_grad():
        ref = model(x, t, ctx)
        for selection in ("wrong", "auto"):
            attn.select_backend(selection)
            assert attn.resolve(selection, CPU, F32) is attn.sdpa_backend
            assert torch.equal(model(x, t, ctx), ref)
    assert calls == [attn.CHECK_SHAPE]  # run once, by the check, never for the model


@pytest.mark.parametrize("failure", ["raises", "bad_shape", "bad_dtype", "nan", "unsupported"])
def test_kernels_that_fail_in_other_ways_are_not_used(failure):
    def kernel(q, k, v):
        if failure == "raises":
            raise RuntimeError("no kernel image is available for this device")
        out = attn.sdpa_backend(q, k, v)
        return {"bad_shape": out[:, :, :1], "bad_dtype": out.double(), "nan": out * float("nan")}.get(failure, out)

    supports = (lambda device, dtype: "needs compute capability 8.0") if failure == "unsupported" else None
    attn.register_kernel("k", kernel, supports)
    why = attn.check_kernel("k", CPU, F32)
    expected = {"raises": "it raised RuntimeError: no kernel image", "bad_shape": "returned shape",
                "bad_dtype": "returned torch.float64", "nan": "above the bound", "unsupported": "compute capability"}
    assert why is not None and expected[failure] in why
    assert attn.resolve("auto", CPU, F32) is attn.sdpa_backend


def test_check_runs_once_per_device_and_dtype():
    calls = []

    def counted(q, k, v):
        calls.append(q.dtype)
        return attn.sdpa_backend(q, k, v)

    attn.register_kernel("counted", counted)
    attn.AUTO_TIMING_TOKENS, tokens = 256, attn.AUTO_TIMING_TOKENS
    try:
        for _ in range(3):
            assert attn.check_kernel("counted", CPU, F32) is None
        attn.resolve("counted", CPU, F32)
        attn._resolved.clear()
        attn.resolve("counted", CPU, F32)
    finally:
        attn.AUTO_TIMING_TOKENS = tokens
    assert calls == [F32]
    attn.check_kernel("counted", CPU, torch.bfloat16)
    assert calls == [F32, torch.bfloat16]


@pytest.mark.parametrize("fast_one", ["math", "sdpa"])
def test_auto_picks_the_fastest_kernel_that_passed(monkeypatch, fast_one):
    attn.register_kernel("math", math_attention)
    attn.register_kernel("wrong", BUGGY["no_softmax"])  # would be "fastest" but fails its check
    times = {"math": 1.0, "sdpa": 2.0, "wrong": 0.0} if fast_one == "math" else {"math": 3.0, "sdpa": 2.0}
    names = {math_attention: "math", attn.sdpa_backend: "sdpa", attn._kernels["wrong"].fn: "wrong"}
    timed = []

    def fake_timer(fn, q, k, v):
        timed.append(names[fn])
        assert q.shape[2] == attn.AUTO_TIMING_TOKENS
        return times[names[fn]]

    monkeypatch.setattr(attn, "_timer", fake_timer)
    assert attn.chosen_name("auto", CPU, F32) == fast_one
    assert sorted(timed) == ["math", "sdpa"]


def test_model_option_selects_the_kernel_for_its_own_forward_only():
    calls = []

    def spy(q, k, v):
        calls.append(q.shape)
        return math_attention(q, k, v)

    attn.register_kernel("spy", spy)
    with_spy, plain = fast.apply_fast_options(tiny_model(), attention="spy"), tiny_model()
    x, t, ctx = inputs()
    with torch.no_grad():
        ref = plain(x, t, ctx)
        got = with_spy(x, t, ctx)
        assert attn.selected_backend() == "auto"  # restored after the forward
        calls.clear()
        again = plain(x, t, ctx)
    assert calls == [] and torch.equal(again, ref)
    assert attn.rel_l2(got, ref) < 1e-5
    fast.apply_fast_options(with_spy, attention="sdpa")
    with torch.no_grad():
        assert torch.equal(with_spy(x, t, ctx), ref)
    assert calls == []


def test_unknown_backend_names_are_refused_clearly():
    with pytest.raises(ValueError, match=r"attention backend 'sageattention' is unknown \(sageattention is not "
                                         r"available in this version of the pack\); expected one of"):
        attn.select_backend("sageattention")
    with pytest.raises(ValueError, match="'flash'"):
        fast.apply_fast_options(tiny_model(), attention="flash")
    with pytest.raises(ValueError, match="reserved"):
        attn.register_kernel("sdpa", math_attention)


def test_override_callable_still_wins():
    model = tiny_model()
    x, t, ctx = inputs()
    calls = []

    def spy(q, k, v):
        calls.append(1)
        return attn.sdpa_backend(q, k, v)

    previous = attn.set_attention_backend(spy)
    try:
        with torch.no_grad():
            model(x, t, ctx)
    finally:
        assert attn.set_attention_backend(previous) is spy
    assert len(calls) == 2 and attn._override is None


def test_selection_is_restored_when_the_forward_raises():
    attn.register_kernel("math", math_attention)
    model = fast.apply_fast_options(tiny_model(), attention="math")
    x, t, ctx = inputs()
    with pytest.raises(ValueError, match="context has shape"):
        with torch.no_grad():
            model(x, t, ctx[:, :, :100])
    assert attn.selected_backend() == "auto"


def test_auto_times_the_candidates_for_real(monkeypatch):
    calls = []

    def counted(q, k, v):
        calls.append(q.shape[2])
        return math_attention(q, k, v)

    attn.register_kernel("counted", counted)
    monkeypatch.setattr(attn, "AUTO_TIMING_TOKENS", 256)
    assert attn.chosen_name("auto", CPU, F32) in ("counted", "sdpa")
    assert calls == [attn.CHECK_SHAPE[2]] + [256] * 4  # the check, then one warm-up and three timed calls
