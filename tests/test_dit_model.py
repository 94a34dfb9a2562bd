"""WanModel behaviour beyond parity: compute dtypes, the casting-layer contract, attention hook, input checks."""
import pytest
import torch

from wan22duo.engine.model import attention
from wan22duo.engine.weights import checkpoint
from wan22duo.engine.testing import tiny
from wan22duo.engine.model.dit import WanConfig
from wan22duo.engine.model.ops import CastLinear, quantize_fp8

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return tiny.write_tiny_dit(tmp_path_factory.mktemp("dit") / "dit.safetensors", "ti2v_5b", seed=3)


def inputs(seed=0, frames=3, h=6, w=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 48, frames, h, w, generator=g), torch.randn(1, 9, 4096, generator=g)


def rel_l2(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 1e-2), (torch.float16, 2e-3)])
def test_half_compute_stays_close_to_fp32(path, dtype, tol):
    x, ctx = inputs()
    t = torch.tensor([[0.0] * 12 + [700.0] * 24])
    with torch.no_grad():
        ref = checkpoint.load_dit(path)(x, t, ctx)
        got = checkpoint.load_dit(path, compute_dtype=dtype)(x, t, ctx)
    assert got.dtype == torch.float32
    err = rel_l2(got, ref)
    assert 0 < err <= tol  # the half path really ran (err > 0) and stays near fp32


def test_fp8_weights_with_bf16_compute(tmp_path):
    p = tiny.write_tiny_dit(tmp_path / "f8.safetensors", "t2v_a14b", "fp8_scaled", seed=1)
    x = torch.randn(1, 16, 2, 4, 6)
    ctx = torch.randn(1, 5, 4096)
    with torch.no_grad():
        ref = checkpoint.load_dit(p)(x, torch.tensor([999]), ctx)
        got = checkpoint.load_dit(p, compute_dtype="bf16")(x, torch.tensor([999]), ctx)
    assert rel_l2(got, ref) <= 2e-2


def test_cast_linear_reads_weight_and_scale_at_call_time():
    """The LoRA contract: swapping weight / scale_weight takes effect at once; restoring restores."""
    layer = CastLinear(8, 4)
    w = torch.randn(4, 8)
    q, s = quantize_fp8(w, torch.float8_e4m3fn)
    layer.weight = torch.nn.Parameter(q, requires_grad=False)
    layer.bias = torch.nn.Parameter(torch.zeros(4), requires_grad=False)
    layer.scale_weight = s
    x = torch.randn(3, 8)
    before = layer(x)
    assert torch.allclose(before, x @ (q.float() * s).T)
    original = (layer.weight, layer.scale_weight)
    layer.weight = torch.nn.Parameter(torch.ones(4, 8, dtype=torch.bfloat16), requires_grad=False)
    layer.scale_weight = None
    assert torch.allclose(layer(x), x.sum(dim=1, keepdim=True).expand(3, 4), atol=1e-5)
    layer.weight, layer.scale_weight = original
    assert torch.equal(layer(x), before)
    assert layer(x.bfloat16()).dtype == torch.bfloat16  # compute follows the input dtype


def test_attention_backend_can_be_swapped(path):
    model = checkpoint.load_dit(path)
    x, ctx = inputs()
    calls = []

    def spy(q, k, v):
        calls.append((q.shape, k.shape))
        return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    with torch.no_grad():
        ref = model(x, torch.tensor([500]), ctx)
        previous = attention.set_attention_backend(spy)
        try:
            got = model(x, torch.tensor([500]), ctx)
        finally:
            attention.set_attention_backend(previous)
    assert torch.equal(got, ref)
    assert len(calls) == 2 * model.config.num_layers  # self + cross per block
    assert calls[0][0] == (1, 2, 3 * 3 * 4, 128) and calls[1][1] == (1, 2, 512, 128)


def test_int_float_and_scalar_timesteps_agree(path):
    model = checkpoint.load_dit(path)
    x, ctx = inputs()
    with torch.no_grad():
        a = model(x, torch.tensor([400]), ctx)
        b = model(x, torch.tensor([400.0], dtype=torch.float64), ctx)
        c = model(x, torch.tensor(400), ctx)
        d = model(x, torch.full((1, 36), 400), ctx)  # per-token, all equal
    assert torch.equal(a, b) and torch.equal(a, c)
    assert rel_l2(d, a) <= 1e-6


@pytest.mark.parametrize("x_shape,t,ctx_shape,needle", [
    ((1, 16, 3, 6, 8), [500], (1, 9, 4096), "expected [B, 48, T, h, w]"),
    ((1, 48, 3, 5, 8), [500], (1, 9, 4096), "must be even"),
    ((1, 48, 3, 6, 8), [[500] * 35], (1, 9, 4096), "expected [1] or [1, 36]"),
    ((1, 48, 3, 6, 8), [500], (1, 9, 768), "expected [1, L_txt, 4096]"),
    ((1, 48, 3, 6, 8), [500], (2, 9, 4096), "expected [1, L_txt, 4096]"),
])
def test_bad_inputs_are_named(path, x_shape, t, ctx_shape, needle):
    model = checkpoint.load_dit(path)
    with pytest.raises(ValueError) as info:
        model(torch.zeros(x_shape), torch.tensor(t), torch.zeros(ctx_shape))
    assert needle in str(info.value)


def test_config_rejects_non_wan_shapes():
    with pytest.raises(ValueError, match="multiple of the head dim"):
        WanConfig(dim=200, ffn_dim=400, num_layers=1, in_dim=16, out_dim=16)
    with pytest.raises(ValueError, match="compute_dtype"):
        checkpoint.WanModel(tiny.tiny_config(), compute_dtype=torch.float64)
