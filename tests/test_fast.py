"""Batched guidance equals two passes; compiled DiT blocks equal eager and do not recompile at the switch."""
import pytest
import torch

from wan22duo.engine.sampling import fast, guidance
from wan22duo.engine.testing import tiny
from wan22duo.engine.model.dit import WanModel
from wan22duo.engine.memory.residency import ModelHandle
from wan22duo.engine.sampling.loop import guided_velocity, sample

from test_sampling_fixtures import contexts

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rel(a, b):
    return float((a - b).norm() / b.norm())


def tiny_model(seed=0, variant="t2v_a14b", layers=2):
    cfg = tiny.tiny_config(variant, dim=256, ffn_dim=512, num_layers=layers)
    model = WanModel(cfg)
    model.load_state_dict(tiny.random_state_dict(cfg, seed), assign=True)
    return model


class Counted(torch.nn.Module):
    """Wraps a model callable and records the batch of every call."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.batches = inner, []

    def forward(self, x, t, context):
        self.batches.append(x.shape[0])
        return self.inner(x, t, context)


def velocity(model, batched, x, t, pos, neg, cfg=3.5):
    previous = guidance.set_batched_guidance(batched)
    try:
        with torch.no_grad():
            return guided_velocity(model, x, t, pos, neg, cfg)
    finally:
        guidance.set_batched_guidance(previous)


# ---------------------------------------------------------------- batched guidance


@pytest.mark.parametrize("lengths,batch", [((9, 9), 1), ((24, 7), 1), ((5, 12), 2)])
def test_batched_guidance_equals_two_passes(lengths, batch):
    model = tiny_model()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 16, 2, 4, 6, generator=g)
    t = torch.full((batch,), 731.0)
    pos, neg = contexts(*lengths, batch=batch)
    counted = Counted(model)
    two = velocity(counted, False, x, t, pos, neg)
    assert counted.batches == [batch, batch]
    counted.batches.clear()
    # Different lengths batch too: WanModel pads every context to 512 zero rows itself.
    one = velocity(model, True, x, t, pos, neg)
    spy = []
    handle = model.register_forward_pre_hook(lambda m, args: spy.append(args[0].shape[0]))
    try:
        velocity(model, True, x, t, pos, neg)
    finally:
        handle.remove()
    assert spy == [2 * batch]
    with torch.no_grad():
        v_cond, v_uncond = guidance.batched_passes(model, x, t, pos, neg)
        assert rel(v_cond, model(x, t, pos)) <= 1e-6 and rel(v_uncond, model(x, t, neg)) <= 1e-6
    # Each pass differs by fp32 rounding only (another matmul blocking at twice the rows);
    # guidance scales that by cfg, as it would any rounding of the two passes.
    assert rel(one, two) <= (1 + 2 * 3.5) * 1e-6


def test_per_token_timesteps_batch_too():
    model = tiny_model(variant="ti2v_5b")
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 48, 2, 4, 4, generator=g)
    t = torch.tensor([[0.0] * 4 + [640.0] * 4])
    pos, neg = contexts(6, 6)
    with torch.no_grad():
        v_cond, v_uncond = guidance.batched_passes(model, x, t, pos, neg)
        assert rel(v_cond, model(x, t, pos)) <= 1e-6 and rel(v_uncond, model(x, t, neg)) <= 1e-6


def test_contexts_that_cannot_share_a_batch_run_two_passes():
    model = tiny_model(layers=1)
    counted = Counted(model)
    x, t = torch.randn(1, 16, 1, 2, 2), torch.tensor([500.0])
    pos, neg = contexts(520, 12)  # longer than text_len: the model uses it whole
    velocity(counted, True, x, t, pos, neg)
    assert counted.batches == [1, 1]
    # A callable that is not a WanModel is never padded: different lengths, two passes.
    calls = []

    def other(x, t, c):
        calls.append(c.shape[1])
        return x

    velocity(other, True, x, t, *contexts(7, 3))
    assert calls == [7, 3]
    velocity(other, True, x, t, *contexts(7, 7))
    assert calls == [7, 3, 7]  # equal lengths: one call of batch 2
    counted.batches.clear()
    velocity(counted, True, x, t, *contexts(5, 5), cfg=1.0)
    assert counted.batches == [1]  # cfg 1: no unconditional pass at all


def test_out_of_memory_at_batch_two_falls_back_to_two_passes(caplog):
    calls = []

    class Tight(torch.nn.Module):
        def forward(self, x, t, c):
            calls.append(x.shape[0])
            if x.shape[0] > 1:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return torch.tanh(x) + c.mean()

    model = Tight()
    x, t = torch.randn(1, 16, 1, 2, 2), torch.tensor([500.0])
    pos, neg = contexts(4, 4)
    v = velocity(model, True, x, t, pos, neg)
    assert calls == [2, 1, 1] and "ran out of memory" in caplog.text
    expected = torch.tanh(x) + neg.mean() + 3.5 * (pos.mean() - neg.mean())
    assert rel(v, expected) <= 1e-6
    velocity(model, True, x, t, pos, neg)
    assert calls == [2, 1, 1, 1, 1]  # it does not try batch 2 again


def test_sampling_with_batched_guidance_equals_two_passes(tmp_path):
    high, low = tiny_model(1), tiny_model(2)
    latent = torch.zeros(1, 16, 2, 4, 4)
    pos, neg = contexts(11, 6)
    out = {}
    for batched in (False, True):
        previous = guidance.set_batched_guidance(batched)
        try:
            out[batched] = sample(ModelHandle.from_module(high), ModelHandle.from_module(low), latent, pos, neg,
                                  seed=4, steps=4, switch_step=2, memory="keep_both").latent
        finally:
            guidance.set_batched_guidance(previous)
    # Four guided steps of per-pass fp32 rounding (about 5e-7 each, scaled by cfg): measured 1.0e-6.
    assert rel(out[True], out[False]) <= 5e-6


# ---------------------------------------------------------------- compile


def test_compiled_blocks_equal_eager_and_the_switch_does_not_recompile():
    """torch.compile with inductor on CPU: same latent as eager, one compiled graph for both experts."""
    high, low = tiny_model(1), tiny_model(2)
    latent = torch.zeros(1, 16, 2, 4, 4)
    pos, neg = contexts(9, 9)

    def run(counts=None):
        cb = None if counts is None else (lambda info: counts.append((info.expert, fast.compile_count())))
        return sample(ModelHandle.from_module(high), ModelHandle.from_module(low), latent, pos, neg, seed=5,
                      steps=4, switch_step=2, memory="keep_both", callback=cb).latent

    eager = run()
    for model in (high, low):
        fast.apply_fast_options(model, compile="inductor")
    assert fast.is_compiled(high) and fast.is_compiled(low)
    start, counts = fast.compile_count(), []
    compiled = run(counts)
    assert fast.compile_failure("inductor") is None
    assert [role for role, _ in counts] == ["high", "high", "low", "low"]
    first = counts[0][1]
    assert first > start  # the first step compiled the block graph
    assert all(n == first for _, n in counts)  # nothing compiled again: not the next blocks, not the switch
    assert rel(compiled, eager) <= 1e-5
    fast.apply_fast_options(high, compile="off")
    assert not fast.is_compiled(high) and fast.is_compiled(low)


def test_a_failing_compiler_falls_back_to_eager(caplog):
    from torch._dynamo import register_backend

    def broken(gm, example_inputs):
        raise RuntimeError("no C++ compiler found")

    register_backend(name="wan22duo_broken", compiler_fn=broken)
    model = tiny_model(layers=1)
    x, t, ctx = torch.randn(1, 16, 1, 2, 2), torch.tensor([300.0]), torch.randn(1, 4, 4096)
    with torch.no_grad():
        ref = model(x, t, ctx)
        fast.compile_blocks(model, "wan22duo_broken")
        got = model(x, t, ctx)
        again = model(x, t, ctx)
    assert torch.equal(got, ref) and torch.equal(again, ref)
    assert "no C++ compiler found" in fast.compile_failure("wan22duo_broken")
    assert "torch.compile (wan22duo_broken) failed" in caplog.text
    with pytest.raises(ValueError, match="compile 'max' is not one of"):
        fast.apply_fast_options(model, compile="max")


# ---------------------------------------------------------------- loader options


def test_loader_inputs_set_attention_and_compile_and_survive_a_reload(tmp_path):
    from wan22duo.nodes.loaders import Wan22DuoExpertLoader, Wan22DuoTI2VLoader

    path = str(tiny.write_tiny_dit(tmp_path / "wan_high_noise.safetensors", "t2v_a14b", num_layers=1))
    (plain,) = Wan22DuoExpertLoader().load(path, "auto", "default", "auto", "cpu")  # optional inputs left out
    model = plain.acquire()
    assert model.attention_backend == "auto" and not fast.is_compiled(model)
    (handle,) = Wan22DuoExpertLoader().load(path, "auto", "default", "auto", "cpu", attention="sdpa",
                                             compile="inductor")
    assert handle.info["attention"] == "sdpa" and handle.info["compile"] == "inductor"
    for _ in range(2):  # the options come back after "release" drops and reloads the weights
        model = handle.acquire()
        assert model.attention_backend == "sdpa" and fast.is_compiled(model)
        del model
        assert handle.release()
    ti2v = str(tiny.write_tiny_dit(tmp_path / "ti2v.safetensors", "ti2v_5b", num_layers=1))
    with pytest.raises(ValueError, match=r"attention 'sage' is not one of \['auto', 'sdpa'"):
        Wan22DuoTI2VLoader().load(ti2v, "default", "auto", "cpu", attention="sage")
    with pytest.raises(ValueError, match=r"compile 'on' is not one of \['off', 'inductor'\]"):
        Wan22DuoTI2VLoader().load(ti2v, "default", "auto", "cpu", compile="on")
