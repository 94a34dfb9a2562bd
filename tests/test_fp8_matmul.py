"""fp8 x fp8 matmul (torch._scaled_mm) for e4m3fn experts: checked once against the upcast path, LoRA exact."""
import logging

import pytest
import torch
import torch.nn.functional as F

from wan22duo.engine.weights import checkpoint, fp8
from wan22duo.engine.sampling import fast
from wan22duo.engine.testing import tiny
from wan22duo.engine.model.ops import CastLinear, LoraBranch, cast_weight, fp8_matmul, quantize_fp8

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def fresh_checks():
    fp8._checked.clear()
    yield
    fp8._checked.clear()


def rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


def layer(n_in=64, n_out=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    lin = CastLinear(n_in, n_out)
    w, s = quantize_fp8(torch.randn(n_out, n_in, generator=g) * n_in ** -0.5, torch.float8_e4m3fn)
    lin.weight = torch.nn.Parameter(w, requires_grad=False)
    lin.bias = torch.nn.Parameter(torch.randn(n_out, generator=g) * 0.1, requires_grad=False)
    lin.scale_weight = s
    return lin


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fp8_product_is_the_upcast_product_up_to_activation_rounding(dtype):
    lin = layer()
    x = torch.randn(2, 16, 64, generator=torch.Generator().manual_seed(1)).to(dtype)
    ref = lin(x)
    lin.fp8_matmul = True
    got = lin(x)
    assert got.dtype == dtype and got.shape == ref.shape
    assert 1e-3 < rel(got, ref) < fp8.TOLERANCE  # really quantised (not the upcast), and close
    # the same as quantising x by hand and multiplying in float64
    x2 = x.reshape(-1, 64).float()
    sx = x2.abs().max() / 448
    xq = (x2 / sx).to(torch.float8_e4m3fn).double() * sx.double()
    by_hand = xq @ (lin.weight.double() * lin.scale_weight.double()).T + lin.bias.double()
    assert rel(got.reshape(-1, 48), by_hand) < (1e-6 if dtype == torch.float32 else 1e-2)


def test_lora_branches_stay_exact_beside_the_fp8_product():
    lin = layer()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 64, generator=g)
    lin.fp8_matmul = True
    base_fp8 = lin(x)
    up, down = torch.randn(48, 4, generator=g), torch.randn(4, 64, generator=g)
    lin.lora_branches = (LoraBranch(up, down, 0.5), LoraBranch(torch.randn(48, 64, generator=g) * 0.01, None, 1.0))
    got = lin(x)
    branches = 0.5 * (x @ down.T) @ up.T + x @ lin.lora_branches[1].up.T
    assert rel(got - base_fp8, branches) < 1e-5  # the LoRA part is computed from the unquantised x


def test_check_passes_on_cpu_once_and_rejects_a_wrong_product(monkeypatch, caplog):
    calls = []
    real = fp8.fp8_matmul

    def counted(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(fp8, "fp8_matmul", counted)
    for _ in range(3):
        assert fp8.check_fp8_matmul(CPU, torch.float32) is None
    assert calls == [1]
    fp8._checked.clear()

    def no_activation_scale(x2, weight, scale):
        return torch._scaled_mm(x2.to(torch.float8_e4m3fn), weight.t(), scale_a=torch.ones(()),
                                scale_b=scale, out_dtype=x2.dtype) * 0 + real(x2, weight, scale) * 100

    monkeypatch.setattr(fp8, "fp8_matmul", no_activation_scale)
    with caplog.at_level(logging.WARNING, logger="wan22duo.engine.weights.fp8"):
        why = fp8.check_fp8_matmul(CPU, torch.float32)
    assert why is not None and "above the bound" in why and "fp8 matmul is not used on cpu" in caplog.text
    fp8._checked.clear()

    def raises(*args):
        raise RuntimeError("torch._scaled_mm is only supported on CUDA devices with compute capability >= 9.0")

    monkeypatch.setattr(fp8, "fp8_matmul", raises)
    assert "raised RuntimeError: torch._scaled_mm is only supported" in fp8.check_fp8_matmul(CPU, torch.bfloat16)


def test_model_option_uses_fp8_in_the_blocks_only_and_falls_back_when_the_check_fails(tmp_path, monkeypatch):
    path = tiny.write_tiny_dit(tmp_path / "f8.safetensors", "t2v_a14b", "fp8_scaled", seed=1, num_layers=1)
    model = checkpoint.load_dit(path)
    g = torch.Generator().manual_seed(3)
    x, t, ctx = torch.randn(1, 16, 1, 4, 4, generator=g), torch.tensor([700.0]), torch.randn(1, 5, 4096, generator=g)
    with torch.no_grad():
        ref = model(x, t, ctx)
        assert fast.apply_fast_options(model, fp8_matmul=True) is model
        assert len(fp8.block_fp8_layers(model)) == 4 + 4 + 2  # q k v o of both attentions, the two FFN layers
        got = model(x, t, ctx)
        assert all(m.fp8_matmul for m in fp8.block_fp8_layers(model))
        assert not model.text_embedding[0].fp8_matmul and not model.head.head.fp8_matmul
        assert 1e-4 < rel(got, ref) < 0.1
        fast.apply_fast_options(model, fp8_matmul=False)
        assert torch.equal(model(x, t, ctx), ref)
        # A failed check leaves the upcast path in place.
        fp8._checked[(CPU, torch.float32)] = "it raised RuntimeError: no fp8 kernels"
        fast.apply_fast_options(model, fp8_matmul=True)
        assert torch.equal(model(x, t, ctx), ref)
        assert not any(m.fp8_matmul for m in fp8.block_fp8_layers(model))


def test_bf16_model_has_no_fp8_layers(tmp_path):
    path = tiny.write_tiny_dit(tmp_path / "bf.safetensors", "t2v_a14b", "bf16", num_layers=1)
    assert fp8.set_fp8_matmul(checkpoint.load_dit(path), True) == 0
    e5m2 = checkpoint.load_dit(tiny.write_tiny_dit(tmp_path / "e5.safetensors", "t2v_a14b", "fp8_e5m2", num_layers=1))
    assert fp8.set_fp8_matmul(e5m2, True) == 0  # e5m2 weights keep the upcast
