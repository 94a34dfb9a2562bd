"""Weight streaming under a budget and the file as the host copy (engine.memory.streaming), on CPU.

The "device" here is a ``CountingLink``: it really copies every tensor (CPU to CPU), so
device-side bytes are separate memory that the tests count independently of the
streamer's own ledger, by walking the model's tensors and summing those that are not
the host copies (views of the mapped file, or the host tensors recorded before placing).
"""
import math

import pytest
import torch

from wan22duo.engine.weights.checkpoint import load_dit
from wan22duo.engine.weights.lora import apply_loras
from wan22duo.engine.testing.tiny_lora import write_tiny_lora
from wan22duo.engine.memory.estimates import BudgetError, parse_budget
from wan22duo.engine.memory.residency import ModelHandle
from wan22duo.engine.sampling.loop import sample
from _exact import copies_budget, resident_copies
from wan22duo.engine.memory.streaming import (Budget, CountingLink, place, streamer_of, tensor_bytes, to_host)
from wan22duo.engine.testing.tiny import write_tiny_dit

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GIB = 1024 ** 3
LAYERS = 8
STORAGES = ("fp32", "fp16", "bf16", "fp8_e4m3fn", "fp8_scaled")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stream")
    return {s: write_tiny_dit(folder / f"{s}.safetensors", storage=s, num_layers=LAYERS, dim=256, ffn_dim=512,
                              text_dim=64, seed=3) for s in STORAGES}


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory, files):
    folder = tmp_path_factory.mktemp("lora")
    return write_tiny_lora(folder / "lora.safetensors", files["fp32"], rank=4, seed=5, full_deltas=True)


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 16, 2, 8, 8, generator=g), torch.tensor([700.0]), torch.randn(1, 7, 64, generator=g)


def counting_budget(model, fraction, asynchronous=False, total=None):
    link = CountingLink(asynchronous=asynchronous, total_bytes=total)
    return Budget(tensor_bytes(model) * fraction / GIB, link=lambda device, block: link), link


def model_tensors(model):
    for t in list(model.parameters()) + list(model.buffers()):
        yield t
    for sub in model.modules():
        for branch in getattr(sub, "lora_branches", ()):
            yield branch.up
            if branch.down is not None:
                yield branch.down


def host_pointers(model):
    return {t.data_ptr() for t in model_tensors(model)}


def device_side_bytes(model, host):
    """Bytes of the model's tensors that are not host copies: what sits on the device side."""
    return sum(t.nbytes for t in model_tensors(model) if t.data_ptr() not in host)


def forward(model, seed=0):
    x, t, ctx = inputs(seed)
    with torch.no_grad():
        return model(x, t, ctx)


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("compute", [torch.float32, torch.bfloat16])
def test_streamed_output_is_bit_identical_to_resident(files, storage, compute):
    model = load_dit(files[storage], compute_dtype=compute)
    mapped = forward(model)  # over the file mapping: what the model gives again once offloaded
    expected = resident_copies(model, lambda: forward(model))  # resident, weights aligned as streamed ones (_exact)
    for fraction, asynchronous in ((0.6, False), (0.45, True)):
        budget, link = counting_budget(model, fraction, asynchronous)
        place(model, torch.device("cpu"), budget)
        streamer = streamer_of(model)
        assert streamer.plan.streamed_blocks, "the budget should force streaming"
        for seed in (0, 0):  # twice: the second forward starts from the wrapped-around prefetch
            assert torch.equal(forward(model, seed), expected)
        to_host(model, torch.device("cpu"))
        assert streamer_of(model) is None
    assert torch.equal(forward(model), mapped)


@pytest.mark.parametrize("storage", ["bf16", "fp8_scaled"])
def test_streaming_with_a_lora_is_bit_identical(files, lora_file, storage):
    model = load_dit(files[storage], compute_dtype=torch.bfloat16)
    apply_loras(model, [(lora_file, 0.8)], keep_backup=False)
    if storage == "fp8_scaled":
        assert any(getattr(m, "lora_branches", ()) for m in model.modules())  # branches stream too
    expected = resident_copies(model, lambda: forward(model))  # weights aligned as the streamed ones (_exact)
    budget, _ = counting_budget(model, 0.45, asynchronous=True)
    place(model, torch.device("cpu"), budget)
    assert streamer_of(model).plan.streamed_blocks
    assert torch.equal(forward(model), expected)
    assert torch.equal(forward(model), expected)


@pytest.mark.parametrize("fraction", [1.0, 0.5, 0.3])
@pytest.mark.parametrize("asynchronous", [False, True])
def test_budget_is_respected_block_by_block(files, fraction, asynchronous):
    model = load_dit(files["fp16"])
    host = host_pointers(model)
    total = tensor_bytes(model)
    budget, _ = counting_budget(model, fraction, asynchronous)
    limit = int(total * fraction)
    if fraction < 0.35 and asynchronous:
        limit = int(total * 0.4)  # double buffering needs two blocks in flight: give it room
        budget, _ = counting_budget(model, 0.4, asynchronous)
    place(model, torch.device("cpu"), budget)
    streamer = streamer_of(model)
    seen = []

    def observe(i, s):
        counted = device_side_bytes(model, host)
        seen.append((i, counted, s.device_bytes, sorted(s.loaded)))

    streamer.observers.append(observe)
    forward(model)
    forward(model)
    assert len(seen) == 2 * LAYERS
    for i, counted, ledger, loaded in seen:
        assert counted == ledger, (i, counted, ledger)
        assert counted <= limit, (i, counted, limit)
        assert len(loaded) <= (2 if asynchronous else 1)
    if fraction == 1.0:
        assert not streamer.plan.streamed_blocks and streamer.copied_bytes == 0
        assert all(c == total for _, c, _, _ in seen)  # everything on the device side, nothing streamed
    else:
        assert streamer.plan.streamed_blocks and streamer.peak_bytes <= limit
    to_host(model, torch.device("cpu"))
    assert device_side_bytes(model, host) == 0


def test_prefetch_overlaps_the_current_block(files):
    """With an asynchronous link the next streamed block's copy is issued before the current
    block computes, and waited for only when that next block is about to run."""
    model = load_dit(files["fp32"])
    budget, link = counting_budget(model, 0.45, asynchronous=True)
    place(model, torch.device("cpu"), budget)
    streamer = streamer_of(model)
    streamed = streamer.plan.streamed_blocks
    assert len(streamed) >= 2
    at_block = {}
    streamer.observers.append(lambda i, s: at_block.setdefault(i, (sorted(s.loaded), list(link.events))))
    forward(model)
    for a, b in zip(streamed, streamed[1:]):
        loaded, events = at_block[a]
        assert loaded == [a, b]  # b is already being copied while a runs
        copies = [n for kind, n in events if kind == "copy"]
        waits = [n for kind, n in events if kind == "wait"]
        assert len(copies) == len(waits) + 1  # exactly one copy in flight: the prefetch of b


def test_offload_keeps_only_the_file_mapping(files):
    path = files["fp16"]
    model = load_dit(path)
    mapped = host_pointers(model)  # as loaded on CPU, every tensor is a view of the mapping
    budget, _ = counting_budget(model, 1.0)
    place(model, torch.device("cpu"), budget)  # "device" copies of everything
    assert device_side_bytes(model, mapped) == tensor_bytes(model)
    to_host(model, torch.device("cpu"))
    assert device_side_bytes(model, mapped) == 0  # nothing outside the file mapping
    assert torch.equal(forward(model), forward(load_dit(path)))


def test_offload_of_a_merged_lora_copies_only_the_merged_weights(files, lora_file):
    model = load_dit(files["bf16"])
    mapped = host_pointers(model)
    apply_loras(model, [(lora_file, 1.0)], keep_backup=False)
    merged = device_side_bytes(model, mapped)
    assert merged > 0  # merged weights are no longer the file's bytes: that is their RAM cost
    budget, _ = counting_budget(model, 1.0)
    place(model, torch.device("cpu"), budget)
    to_host(model, torch.device("cpu"))
    assert device_side_bytes(model, mapped) == merged


def test_offload_of_fp8_lora_keeps_only_branches(files, lora_file):
    model = load_dit(files["fp8_scaled"])
    mapped = host_pointers(model)
    apply_loras(model, [(lora_file, 1.0)], keep_backup=False)
    budget, _ = counting_budget(model, 1.0)
    place(model, torch.device("cpu"), budget)
    to_host(model, torch.device("cpu"))
    branch_bytes = sum(b.up.nbytes + (0 if b.down is None else b.down.nbytes)
                       for m in model.modules() for b in getattr(m, "lora_branches", ()))
    # the fp8 Linears are untouched (file-backed); what is off the mapping is the branches
    # plus the small non-fp8 tensors the LoRA merged into (biases, norms)
    off = device_side_bytes(model, mapped)
    assert branch_bytes > 0 and off >= branch_bytes
    fp8_weights = sum(m.weight.nbytes for m in model.modules() if getattr(m, "lora_branches", ()))
    assert off < branch_bytes + fp8_weights / 4


@pytest.mark.parametrize("value", [-1, -0.5, 0, float("nan"), float("inf"), "nan", "-3", "lots", "12 TB", True])
def test_bad_budget_values_are_named(value):
    with pytest.raises(BudgetError, match="budget"):
        parse_budget(value)


@pytest.mark.parametrize("value,expected", [("auto", "auto"), (" AUTO ", "auto"), ("12", 12.0), ("12.5 GB", 12.5),
                                            ("8g", 8.0), (16, 16.0), (None, None), ("none", None), ("", None)])
def test_budget_values_parse(value, expected):
    assert parse_budget(value) == expected


def test_budget_larger_than_the_device_is_named(files):
    model = load_dit(files["fp16"])
    link = CountingLink(total_bytes=2 * GIB)
    budget = Budget(3, link=lambda device, block: link)
    with pytest.raises(BudgetError, match="larger than"):
        place(model, torch.device("cpu"), budget)


def test_budget_smaller_than_one_block_is_named(files):
    model = load_dit(files["fp16"])
    block = tensor_bytes(model.blocks[0])
    budget = Budget(block / 2 / GIB, link=lambda device, b: CountingLink())
    with pytest.raises(BudgetError, match="smaller than the least streaming needs"):
        place(model, torch.device("cpu"), budget)


def test_sample_streams_through_the_residency(files):
    """The budget reaches the experts through sample(); the streamed run equals the resident one."""
    path = files["fp32"]

    def handle():
        return ModelHandle(lambda d: load_dit(path), "cpu", torch.float32,
                           {"config": load_dit(path).config, "weight_bytes": path.stat().st_size})

    latent = torch.zeros(1, 16, 2, 8, 8)
    pos, neg = torch.randn(1, 5, 64), torch.randn(1, 5, 64)
    kwargs = dict(seed=3, steps=3, switch_step=2, memory="offload_cpu")
    probe = load_dit(path)
    # resident, every tensor a fresh copy: aligned as the streamed blocks are (_exact)
    plain = sample(handle(), handle(), latent, pos, neg, budget=copies_budget(probe), **kwargs).latent
    link = CountingLink()
    budget = Budget(tensor_bytes(probe) * 0.5 / GIB, link=lambda device, block: link)
    high, low = handle(), handle()
    streamed = sample(high, low, latent, pos, neg, budget=budget, **kwargs).latent
    assert torch.equal(streamed, plain)
    assert streamer_of(high.acquire(budget=budget)).plan.streamed_blocks  # it did stream
    assert len(link.events) >= 3 * len(streamer_of(high.acquire(budget=budget)).plan.streamed_blocks)  # per step
    assert math.isfinite(float(streamed.abs().max()))
    with pytest.raises(BudgetError):
        sample(handle(), handle(), latent, pos, neg, budget="-2", **kwargs)


def test_needs_streaming_decides_from_free_memory_minus_activations(monkeypatch):
    """The GPU decision without a GPU: device_free / device_total stand in for torch.cuda's."""
    import wan22duo.engine.memory.streaming as streaming
    from wan22duo.engine.memory.streaming import needs_streaming

    monkeypatch.setattr(streaming, "device_total", lambda device: 16 * GIB)
    monkeypatch.setattr(streaming, "device_free", lambda device: 15 * GIB)
    cuda = torch.device("cuda:0")
    act = 4 * GIB
    assert not needs_streaming(10 * GIB, cuda, Budget("auto", activations=act))  # 15 - 4 = 11 >= 10
    assert needs_streaming(12 * GIB, cuda, Budget("auto", activations=act))
    assert needs_streaming(12 * GIB, cuda, Budget(8))
    assert not needs_streaming(12 * GIB, cuda, Budget(None))
    assert not needs_streaming(12 * GIB, torch.device("cpu"), Budget(8))  # CPU: read in place
    assert not needs_streaming(12 * GIB, cuda, None)
    with pytest.raises(BudgetError, match="larger than cuda:0"):
        needs_streaming(12 * GIB, cuda, Budget(20))


def test_streaming_weights_converted_on_load(files):
    """weight_dtype converts on load: the host form is not the file's (an anonymous copy); it streams
    the same, and offloading keeps that copy (the stated cost) while the untouched tensors rebind."""
    model = load_dit(files["fp16"], weight_dtype="fp8_e4m3fn")
    mapped = forward(model)
    expected = resident_copies(model, lambda: forward(model))  # weights aligned as the streamed ones (_exact)
    budget, _ = counting_budget(model, 0.45, asynchronous=True)
    place(model, torch.device("cpu"), budget)
    assert streamer_of(model).plan.streamed_blocks
    assert torch.equal(forward(model), expected)
    to_host(model, torch.device("cpu"))
    assert torch.equal(forward(model), mapped)


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K"])
def test_gguf_expert_streams_bit_identical_and_offloads_to_its_mapping(tmp_path, qtype):
    """GGUF weights (raw quantized bytes decoded per call, engine.weights.gguf) move with _apply, so they stream
    unchanged; the loader records its file views, so offloading keeps only the mapping."""
    pytest.importorskip("gguf")
    from wan22duo.engine.weights.gguf import load_gguf_dit
    from wan22duo.engine.testing.tiny_gguf import write_tiny_gguf

    path = write_tiny_gguf(tmp_path / f"e_{qtype}.gguf", qtype=qtype, seed=4, dim=256, ffn_dim=512,
                           num_layers=LAYERS, text_dim=256)  # K-quants need rows of 256
    model = load_gguf_dit(path, compute_dtype=torch.bfloat16)
    x, t, _ = inputs()
    ctx = torch.randn(1, 7, 256, generator=torch.Generator().manual_seed(1))

    def run():
        with torch.no_grad():
            return model(x, t, ctx)

    mapped = host_pointers(model)
    decoded = device_side_bytes(model, mapped)  # quantized norms/biases are decoded at load (not file bytes)
    on_mapping = run()
    expected = resident_copies(model, run)  # weights aligned as the streamed ones (_exact)
    budget, _ = counting_budget(model, 0.45, asynchronous=True)
    place(model, torch.device("cpu"), budget)
    assert streamer_of(model).plan.streamed_blocks
    assert torch.equal(run(), expected) and torch.equal(run(), expected)
    to_host(model, torch.device("cpu"))
    assert device_side_bytes(model, mapped) == decoded
    assert torch.equal(run(), on_mapping)


def test_auto_falls_back_to_two_pass_activations_when_batched_ones_leave_too_little(files):
    """auto = free - activations; when batched guidance's activations leave less than streaming needs,
    the two-pass estimate is used instead (the guidance falls back to two passes by itself)."""
    model = load_dit(files["fp16"])
    total = tensor_bytes(model)
    free = int(total * 0.6)
    link = CountingLink(free_bytes=free, total_bytes=4 * total)
    batched, two_pass = int(total * 0.5), int(total * 0.1)  # 0.1 left: too little; 0.5 left: enough
    with pytest.raises(BudgetError):
        place(model, torch.device("cpu"), Budget("auto", activations=batched, link=lambda d, b: link))
    place(model, torch.device("cpu"), Budget("auto", activations=batched, fallback=two_pass,
                                             link=lambda d, b: link))
    assert streamer_of(model).plan.budget_bytes == free - two_pass
    assert streamer_of(model).plan.streamed_blocks


def test_auto_picks_the_guidance_mode_that_copies_less(files):
    from wan22duo.engine.sampling import guidance

    total = tensor_bytes(load_dit(files["fp16"]))
    link = CountingLink(free_bytes=int(total * 0.9), total_bytes=4 * total)
    # batched leaves 0.8 of the weights (copies ~0.2 + window per step); two passes leave 0.85 but copy twice
    model = load_dit(files["fp16"])
    place(model, torch.device("cpu"), Budget("auto", activations=int(total * 0.1), fallback=int(total * 0.05),
                                             link=lambda d, b: link, on_two_passes=guidance.prefer_two_passes))
    assert streamer_of(model).plan.budget_bytes == int(total * 0.9) - int(total * 0.1)
    assert not guidance._marked(model)
    # batched leaves 0.35 (copies most blocks once); two passes leave 0.85 (copies few blocks twice)
    model = load_dit(files["fp16"])
    place(model, torch.device("cpu"), Budget("auto", activations=int(total * 0.55), fallback=int(total * 0.05),
                                             link=lambda d, b: link, on_two_passes=guidance.prefer_two_passes))
    assert streamer_of(model).plan.budget_bytes == int(total * 0.9) - int(total * 0.05)
    assert guidance._marked(model)  # the guidance will not try the batched forward first


def test_handles_of_other_kinds_get_no_budget():
    """A handle that is not a ModelHandle (ComfyExpert: ComfyUI places its weights) is acquired as before,
    with one argument, whatever budget the run has."""
    from wan22duo.engine.memory.residency import Residency
    from wan22duo.engine.sampling.loop import expert_budgets

    class Duck:
        info, device, loaded, location = {}, torch.device("cpu"), False, None

        def acquire(self, device=None):
            self.loaded = True
            return "module"

    duck, real = Duck(), ModelHandle(lambda d: None, "cpu", info={})
    budgets = expert_budgets("auto", {"high": duck, "low": real}, (1, 16, 2, 8, 8), (4.0, 3.0))
    assert list(budgets) == ["low"] and budgets["low"].spec == "auto"
    assert Residency("offload_cpu", {"high": duck}, budgets=budgets).use("high") == "module"


def test_streaming_composes_with_compiled_blocks(files):
    """Compiled blocks (engine.sampling.fast, inductor on CPU) streamed through the CUDA link's logic
    (engine.testing.stream_sim): same output as the compiled resident model, bit for bit, and swapping
    a block's weights in and out compiles nothing new."""
    from wan22duo.engine.sampling import fast
    from wan22duo.engine.testing.stream_sim import DeferredCuda
    from wan22duo.engine.memory.streaming import CudaLink

    model = load_dit(files["bf16"], compute_dtype=torch.bfloat16)
    before = fast.compile_count()
    fast.apply_fast_options(model, compile="inductor")
    expected = resident_copies(model, lambda: forward(model))  # weights aligned as the streamed ones (_exact)
    assert fast.compile_failure("inductor") is None
    compiled = fast.compile_count()
    assert compiled > before  # the blocks did run compiled
    api = DeferredCuda()
    budget = Budget(tensor_bytes(model) * 0.45 / GIB, link=lambda device, block: CudaLink(device, block, api=api))
    place(model, torch.device("cpu"), budget)
    assert len(streamer_of(model).plan.streamed_blocks) >= 2
    assert torch.equal(forward(model), expected) and torch.equal(forward(model), expected)
    assert api.copies > 0
    assert fast.compile_count() == compiled  # new weight tensors of the same shapes: no recompile
    fast.apply_fast_options(model, compile="off")
