"""toy/quantize.py: the Q4_K quantizer and the toy experts as city96-layout GGUF files.

The round trips decode with the engine's own decoder (``engine.weights.ggml.dequantize``, which equals
gguf's numpy reference bit for bit, tests/test_gguf.py), so a byte-layout mistake in the writer shows as
a large error, and the bounds are the ones each scheme promises:

* Q4_K (min/max per 32-weight sub-block, grid rounded outward): every weight within half a decoded step
  of its value, and the step at most one 6-bit grid unit (``d``, plus ``dmin / 15`` from the offset's
  rounding) above the ideal ``range / 15``; float32 rounding of the decode adds ~1e-7 relative.
* Q8_0 (``gguf.quants``, scale ``amax / 127`` stored in float16): within half a step plus the float16
  rounding of the scale over 127 codes, ``d * (0.5 + 127 * 2**-11)``.
"""
import numpy as np
import pytest
import torch

from wan22duo.engine.weights import ggml
from wan22duo.toy import build, dit, quantize

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def decode(raw: np.ndarray, kind: str, shape) -> np.ndarray:
    return ggml.dequantize(torch.from_numpy(np.ascontiguousarray(raw)), kind, tuple(shape), torch.float32).numpy()


def weights(rows: int = 24, cols: int = 512, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.05, size=(rows, cols)).astype(np.float32)
    w[0] = np.abs(w[0])  # a row of positive weights: the offset must stay 0
    w[1] = -np.abs(w[1]) - 0.01  # all negative
    w[2, :256] = 0.0  # a zero super-block
    w[3, :32] = 0.3  # a constant sub-block
    w[4] *= 40  # a row far wider than the rest
    return w


def test_q4_k_round_trip_is_within_half_a_step_of_a_min_max_grid():
    w = weights()
    raw = quantize.quantize_q4_k(w)
    assert raw.dtype == np.uint8 and raw.shape == (24, 2 * 144)
    out = decode(raw, "Q4_K", w.shape)
    blocks = raw.reshape(-1, 144)
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
    dmin = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
    scales, _ = ggml._k_scales(torch.from_numpy(blocks[:, 4:16].copy()))
    step = d * scales.numpy()  # [n, 8]
    sub, err = w.reshape(-1, 8, 32), np.abs(out - w).reshape(-1, 8, 32)
    assert (err <= step[:, :, None] / 2 + 1e-6 * np.abs(sub).max()).all()
    ideal = (sub.max(axis=2) - np.minimum(sub.min(axis=2), 0)) / 15
    assert (step <= ideal + d + dmin / 15 + 1e-7).all()
    assert np.array_equal(out[2, :256], np.zeros(256)) and np.allclose(out[3, :32], 0.3, atol=0.3 / 30)
    # a min/max grid over a normal sub-block: RMS error about step / sqrt(12), range / 15 ~ 0.3 std
    assert np.sqrt(np.mean((out[5:] - w[5:]) ** 2)) < 0.12 * w[5:].std()


def test_q4_k_layout_matches_the_decoder_field_by_field():
    """Codes planted at known places come back at those places (nibble order, scale packing)."""
    w = np.zeros((1, 256), np.float32)
    for j in range(8):  # sub-block j spans -j/100 .. (j + 1) / 10, weight k rising with k
        w[0, 32 * j:32 * (j + 1)] = np.linspace(-j / 100, (j + 1) / 10, 32)
    out = decode(quantize.quantize_q4_k(w), "Q4_K", w.shape)
    assert np.abs(out - w).max() < (0.8 + 0.07) / 15  # half a step of the widest sub-block, with margin
    assert np.argmax(out[0]) > 224 and np.argmin(out[0]) >= 224  # the extremes stay in sub-block 7


def test_q4_k_refuses_bad_rows_and_values():
    with pytest.raises(ValueError, match="multiple of 256"):
        quantize.quantize_q4_k(np.zeros((2, 128), np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        quantize.quantize_q4_k(np.full((1, 256), np.nan, np.float32))


def test_q8_0_round_trip_is_within_half_a_step():
    w = weights(cols=128)
    out = decode(quantize.quantize(w, "Q8_0"), "Q8_0", w.shape)
    d = np.abs(w.reshape(-1, 32)).max(axis=1, keepdims=True) / 127
    assert (np.abs(out - w).reshape(-1, 32) <= d * (0.5 + 127 * 2.0 ** -11) + 1e-9).all()


@pytest.fixture(scope="module")
def expert(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy")
    return build.save(dit.new_model(seed=1), "t2v_high", "untrained", folder)


@pytest.mark.parametrize("qtype", quantize.QTYPES)
def test_a_toy_expert_gguf_loads_through_the_pack_and_matches_its_file(expert, tmp_path, qtype):
    from safetensors.torch import load_file

    from wan22duo.engine.weights.checkpoint import load_dit
    from wan22duo.engine.weights.gguf import read_gguf_header
    from wan22duo.nodes.loaders import Wan22DuoExpertLoader

    out = tmp_path / f"toy_t2v_high_noise-{qtype}.gguf"
    counts = quantize.write_expert_gguf(expert, out, qtype)
    source = load_file(str(expert))
    assert sum(counts.values()) == sum(v.numel() for v in source.values())
    types = {name: t.type for name, t in read_gguf_header(out).tensors.items()}
    assert types["blocks.0.ffn.2.weight"] == qtype  # rows of 512
    # city96's rules: embeddings and head unquantized; with Q4_K, rows of 128 fall back to F16
    assert types["text_embedding.0.weight"] == types["head.head.weight"] == "F16"
    assert types["blocks.0.self_attn.q.weight"] == ("Q8_0" if qtype == "Q8_0" else "F16")
    assert types["patch_embedding.weight"] == types["blocks.0.modulation"] == "F32"
    assert counts[qtype] == sum(source[k].numel() for k, t in types.items() if t == qtype)

    model = load_dit(out, "fp32", "cpu")
    reference = load_dit(expert, "fp32", "cpu")
    worst = 0.0
    for name, layer in reference.named_modules():
        if not hasattr(layer, "weight") or not isinstance(layer.weight, torch.Tensor) or name == "":
            continue
        ours = model.get_submodule(name)
        fmt = getattr(ours, "weight_format", None)
        got = fmt.dequantize(ours.weight, torch.float32) if fmt else ours.weight.float()
        want = source[name + ".weight"].float()
        if types[name + ".weight"] in ("F16", "F32"):
            assert torch.equal(got.reshape(want.shape), want), name  # fp16 values kept exactly
        else:
            worst = max(worst, float((got - want).abs().max() / want.abs().max()))
    # Q8_0: half a step of amax / 127; Q4_K: half a step of (max - min) / 15 per sub-block
    assert worst < (0.5 / 127 * 1.07 if qtype == "Q8_0" else 1.1 / 15)

    (handle,) = Wan22DuoExpertLoader().load(str(out), "auto", "default", "fp32", "cpu")
    assert handle.info["role"] == "high_noise" and handle.info["variant"] == "t2v_a14b"
    g = torch.Generator().manual_seed(0)
    x, context = torch.randn(1, 16, 2, 4, 4, generator=g), torch.randn(1, 8, 4096, generator=g)
    with torch.no_grad():
        a = handle.acquire()(x, torch.tensor([900.0]), context)
        b = reference(x, torch.tensor([900.0]), context)
    # the weight errors above carried through two blocks: a few percent of the output's spread at most
    assert float((a - b).norm() / b.norm()) < (0.01 if qtype == "Q8_0" else 0.1)


def test_write_expert_gguf_refuses_other_types(expert, tmp_path):
    with pytest.raises(ValueError, match="Q2_K"):
        quantize.write_expert_gguf(expert, tmp_path / "x.gguf", "Q2_K")
