"""``streaming.CudaLink`` (side stream, two pinned staging buffers, events) run on CPU against
``engine.testing.stream_sim.DeferredCuda``, which runs the side stream's copies only when a wait forces
them and poisons device tensors until then (see its module doc).

What this checks is CudaLink's own logic: which buffer a block is staged in, when the host
waits before refilling one, when the compute stream waits before a block reads its weights,
and that the next block's copy is in flight while the current one computes. The one-line
``torch.cuda`` calls of ``streaming.CudaApi`` run only on a GPU.
"""
import pytest
import torch

from _exact import copies_budget, resident_copies
from wan22duo.engine.weights.checkpoint import load_dit
from wan22duo.engine.weights.lora import apply_loras
from wan22duo.engine.testing.tiny_lora import write_tiny_lora
from wan22duo.engine.memory.residency import ModelHandle
from wan22duo.engine.sampling.loop import sample
from wan22duo.engine.testing.stream_sim import DeferredCuda, SimEvent, SimStream, StagingHazard
from wan22duo.engine.memory.streaming import Budget, CudaLink, place, streamer_of, tensor_bytes, to_host
from wan22duo.engine.testing.tiny import write_tiny_dit

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GIB = 1024 ** 3
LAYERS = 6
STORAGES = ("fp32", "fp16", "bf16", "fp8_e4m3fn", "fp8_scaled")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cudalink")
    return {s: write_tiny_dit(folder / f"{s}.safetensors", storage=s, num_layers=LAYERS, dim=128, ffn_dim=256,
                              text_dim=64, seed=7) for s in STORAGES}


def inputs(seed=0, text_dim=64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 16, 2, 8, 8, generator=g), torch.tensor([600.0]), torch.randn(1, 5, text_dim, generator=g)


def forward(model, seed=0, text_dim=64):
    x, t, ctx = inputs(seed, text_dim)
    with torch.no_grad():
        return model(x, t, ctx)


def cuda_budget(model, fraction, mode="lazy"):
    """A budget of ``fraction`` of the model, streamed through a CudaLink on the CPU stand-in."""
    api = DeferredCuda(mode)
    links = []

    def make(device, block_bytes):
        links.append(CudaLink(device, block_bytes, api=api))
        return links[-1]

    return Budget(tensor_bytes(model) * fraction / GIB, link=make), api, links


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("mode", ["lazy", "eager"])
def test_cuda_link_streams_bit_identical(files, storage, mode):
    model = load_dit(files[storage], compute_dtype=torch.bfloat16 if storage != "fp32" else torch.float32)
    mapped = forward(model)
    expected = resident_copies(model, lambda: forward(model))  # weights aligned as the streamed ones (_exact)
    budget, api, links = cuda_budget(model, 0.5, mode)
    place(model, torch.device("cpu"), budget)
    streamer = streamer_of(model)
    assert len(streamer.plan.streamed_blocks) >= 2
    for _ in range(3):  # the later forwards start from the prefetch that wrapped around
        assert torch.equal(forward(model), expected)
    assert api.copies > 0 and len(api.pinned_buffers) == 2
    to_host(model, torch.device("cpu"))
    assert torch.equal(forward(model), mapped)


@pytest.mark.parametrize("storage", ["bf16", "fp8_scaled"])
def test_cuda_link_streams_lora_branches(files, tmp_path, storage):
    lora = write_tiny_lora(tmp_path / "lora.safetensors", files["fp32"], rank=4, seed=2, full_deltas=True)
    model = load_dit(files[storage], compute_dtype=torch.bfloat16)
    apply_loras(model, [(lora, 0.7)], keep_backup=False)
    expected = resident_copies(model, lambda: forward(model))  # weights aligned as the streamed ones (_exact)
    budget, api, _ = cuda_budget(model, 0.5)
    place(model, torch.device("cpu"), budget)
    assert streamer_of(model).plan.streamed_blocks
    assert torch.equal(forward(model), expected) and torch.equal(forward(model), expected)


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K"])
def test_cuda_link_streams_gguf_bytes(tmp_path, qtype):
    pytest.importorskip("gguf")
    from wan22duo.engine.weights.gguf import load_gguf_dit
    from wan22duo.engine.testing.tiny_gguf import write_tiny_gguf

    path = write_tiny_gguf(tmp_path / f"e_{qtype}.gguf", qtype=qtype, seed=4, dim=256, ffn_dim=512,
                           num_layers=LAYERS, text_dim=256)  # K-quants need rows of 256
    model = load_gguf_dit(path, compute_dtype=torch.bfloat16)
    expected = resident_copies(model, lambda: forward(model, text_dim=256))  # aligned as streamed ones (_exact)
    budget, api, _ = cuda_budget(model, 0.5)
    place(model, torch.device("cpu"), budget)
    assert streamer_of(model).plan.streamed_blocks
    assert torch.equal(forward(model, text_dim=256), expected)
    assert torch.equal(forward(model, text_dim=256), expected)
    assert api.copies > 0  # the raw quantized bytes went through the staging buffers


def test_next_block_is_in_flight_while_the_current_one_computes(files):
    """At each streamed block: its own copy has been waited for, the next one's has been issued
    and not waited for, and the host waited for a staging buffer only once its copy was issued
    two blocks earlier (the other buffer is the one in flight)."""
    model = load_dit(files["fp32"])
    budget, api, _ = cuda_budget(model, 0.45)
    place(model, torch.device("cpu"), budget)
    streamer = streamer_of(model)
    streamed = streamer.plan.streamed_blocks
    assert len(streamed) >= 3
    seen = {}
    streamer.observers.append(lambda i, s: seen.setdefault(i, list(api.log)))
    forward(model)
    for a, b in zip(streamed, streamed[1:]):
        log = seen[a]
        copies = [n for kind, n in log if kind == "copy"]
        waits = {n for kind, n in log if kind == "wait"}
        assert copies[-1] not in waits and copies[-2] in waits  # b in flight, a ready
        assert api.streams[0].ran < len(api.streams[0].work)  # and b's copy has truly not run yet
        syncs = [n for kind, n in log if kind == "sync"]
        assert all(n <= copies[-1] - 2 for n in syncs)  # never waited for the copy still in flight


def test_a_missing_compute_wait_is_caught(files, monkeypatch):
    """The stand-in can fail: a compute stream that does not wait reads the poisoned bytes."""
    model = load_dit(files["fp32"])
    expected = forward(model)
    budget, api, _ = cuda_budget(model, 0.45)
    place(model, torch.device("cpu"), budget)
    monkeypatch.setattr(SimStream, "wait_event", lambda self, event: None)
    assert not torch.isfinite(forward(model)).all()
    monkeypatch.undo()
    to_host(model, torch.device("cpu"))
    assert torch.equal(forward(model), expected)


def test_a_missing_buffer_fence_is_caught(files, monkeypatch):
    """The stand-in can fail: refilling a staging buffer without first synchronizing with the copy
    that last read it is named, even though the compute stream had waited for that copy."""
    model = load_dit(files["fp32"])
    budget, api, _ = cuda_budget(model, 0.45)
    place(model, torch.device("cpu"), budget)
    monkeypatch.setattr(SimEvent, "synchronize", SimEvent.complete)  # runs the copies, tells the host nothing
    with pytest.raises(StagingHazard, match="refilled while copy #"):
        forward(model)


def test_a_resident_expert_makes_no_stream_or_buffers(files):
    model = load_dit(files["bf16"], compute_dtype=torch.bfloat16)
    expected = resident_copies(model, lambda: forward(model))  # placed as copies, as below (_exact)
    budget, api, links = cuda_budget(model, 2.0)
    place(model, torch.device("cpu"), budget)
    assert not streamer_of(model).plan.streamed_blocks
    assert torch.equal(forward(model), expected)
    assert not api.streams and not api.pinned_buffers and links[0].buffers == []


def test_a_block_larger_than_the_staging_buffer_is_named(files):
    model = load_dit(files["fp32"])
    link = CudaLink(torch.device("cpu"), 1024, api=DeferredCuda())
    budget = Budget(tensor_bytes(model) * 0.45 / GIB, link=lambda device, block_bytes: link)
    place(model, torch.device("cpu"), budget)
    with pytest.raises(RuntimeError, match="larger than its staging buffer"):
        forward(model)


def test_two_expert_sample_through_the_cuda_link_equals_resident(files):
    """The whole loop: both experts streamed through CudaLinks (offload_cpu), same latent as resident."""
    def handle(storage):
        path = files[storage]
        return ModelHandle(lambda d: load_dit(path, compute_dtype=torch.bfloat16), "cpu", torch.bfloat16,
                           {"config": load_dit(path).config, "weight_bytes": path.stat().st_size})

    latent = torch.zeros(1, 16, 2, 8, 8)
    g = torch.Generator().manual_seed(3)
    pos, neg = torch.randn(1, 6, 64, generator=g), torch.randn(1, 4, 64, generator=g)
    kwargs = dict(seed=9, steps=4, switch_step=2, cfg_high=4.0, cfg_low=3.0, memory="offload_cpu")
    # resident, every tensor a fresh copy: aligned as the streamed blocks are (_exact)
    expected = sample(handle("fp16"), handle("bf16"), latent, pos, neg, budget=copies_budget(load_dit(files["fp16"])),
                      **kwargs).latent
    budget, api, links = cuda_budget(load_dit(files["fp16"]), 0.5)
    high, low = handle("fp16"), handle("bf16")
    streamed = sample(high, low, latent, pos, neg, budget=budget, **kwargs).latent
    assert len(links) >= 2 and api.copies > 0  # a link per placement of each expert
    assert streamer_of(high.acquire(budget=budget)).plan.streamed_blocks
    assert torch.equal(streamed, expected)
