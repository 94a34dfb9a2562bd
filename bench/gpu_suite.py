"""One-command speed suite of the DiT step: real shapes on a GPU, tiny shapes on CPU (CI smoke test).

Not a test. With random weights (nothing is downloaded) it builds each model at its
real size directly on the device, in the compute dtype (bf16 on GPU, fp32 on CPU), and
times one *sampling step with CFG on*: ``engine.sampling.loop.guided_velocity`` with
cfg 5, i.e. the conditional and unconditional passes (one batch-2 forward by default,
``engine.sampling.guidance``). Cases (GPU, ``--size real``):

* T2V-A14B (dim 5120, 40 layers) at 832x480x81 and 1280x720x81 (32,760 / 75,600 tokens);
* TI2V-5B (dim 3072, 30 layers) at 1280x704x121 (27,280 tokens).

Per case, one row per configuration: each attention kernel that is available and
passes its check (``engine.model.attention``; SDPA at least), with and without
``torch.compile`` of the blocks (inductor), and SDPA with the two passes run one after
the other; then (``--fp8``, default on a GPU only) the blocks' weights quantised to
e4m3fn, once upcast per matmul and once with fp8 matmul (``engine.weights.fp8``). Two more rows
per case time a whole video: ``engine.sampling.loop.sample`` for ``--video-steps`` (20) steps at
cfg 5 (both A14B experts played by the one random model), without the step cache and with it at
``step_cache.DEFAULT_THRESHOLD``; their s/step column holds seconds per video, and the note says
how many steps ran (random weights decide that count, not real ones).
Columns: seconds per step (best of ``--repeats`` after one warm-up step;
a compile row's warm-up includes compiling, reported apart), peak memory of the step
above what was allocated before it (CUDA allocator peak; on CPU the kernel's resident
high-water mark), and the bf16 roofline ratio: matmul FLOPs of the step (counted from
the shapes) per second, over the best dense matmul rate this device reached on an
8192^3 GEMM in the compute dtype at the start of the run.

``--comfyui PATH`` (a ComfyUI checkout, 0.3.76 tested) adds ComfyUI's own WanModel
(``comfy.ldm.wan.model``) on the *same* weight tensors (assigned, not copied) and
inputs, timed the same way at batch 2 (as ComfyUI batches cond and uncond when memory
allows), with its default attention; the table gives its velocity's distance from ours
as a check that the peer computes the same model. It needs ComfyUI's Python
environment (torch + einops + ComfyUI's requirements).

The run stops starting new rows after ``--budget`` seconds (default 420 on GPU) and
lists the rows it skipped. Results go to ``--write`` (default ``bench/results_gpu.md``
on a GPU, stdout only on CPU).

Usage (repository root)::

    python bench/gpu_suite.py                                   # GPU: real shapes, writes bench/results_gpu.md
    python bench/gpu_suite.py --comfyui ../shared/comfyui/ComfyUI-0.3.76
    python bench/gpu_suite.py --size tiny                       # CPU smoke (CI); --size mid for a CPU benchmark
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from packpath import load_pack  # noqa: E402

load_pack()
import torch  # noqa: E402

from wan22duo.engine.model import attention as attn  # noqa: E402
from wan22duo.engine.sampling import fast, guidance  # noqa: E402
from wan22duo.engine.model.dit import WanConfig, WanModel  # noqa: E402
from wan22duo.engine.weights.fp8 import check_fp8_matmul as fp8_check  # noqa: E402
from wan22duo.engine.model.ops import CastLinear, quantize_fp8  # noqa: E402
from wan22duo.engine.memory.residency import ModelHandle  # noqa: E402
from wan22duo.engine.sampling.loop import guided_velocity, sample  # noqa: E402
from wan22duo.engine.sampling.step_cache import DEFAULT_THRESHOLD, StepCache  # noqa: E402

CFG = 5.0
TEXT_LEN = 512


@dataclass(frozen=True)
class Case:
    label: str
    config: WanConfig
    latent: tuple[int, int, int, int]  # C, T, h, w

    @property
    def tokens(self) -> int:
        _, t, h, w = self.latent
        return t * (h // 2) * (w // 2)


def a14b(dim=5120, ffn=13824, layers=40) -> WanConfig:
    return WanConfig(dim=dim, ffn_dim=ffn, num_layers=layers, in_dim=16, out_dim=16)


def ti2v(dim=3072, ffn=14336, layers=30) -> WanConfig:
    return WanConfig(dim=dim, ffn_dim=ffn, num_layers=layers, in_dim=48, out_dim=48)


def cases(size: str) -> list[Case]:
    if size == "real":
        return [Case("T2V-A14B 832x480x81", a14b(), (16, 21, 60, 104)),
                Case("T2V-A14B 1280x720x81", a14b(), (16, 21, 90, 160)),
                Case("TI2V-5B 1280x704x121", ti2v(), (48, 31, 44, 80))]
    if size == "mid":  # bench_sampling.py's expert and latent, 320 tokens
        return [Case("T2V mid (dim 1024, 8 layers) 5x16x16 latent", a14b(1024, 4096, 8), (16, 5, 16, 16))]
    return [Case("T2V tiny (dim 256, 2 layers)", a14b(256, 512, 2), (16, 2, 8, 12)),
            Case("TI2V tiny (dim 256, 2 layers)", ti2v(256, 512, 2), (48, 2, 8, 8))]


# ---------------------------------------------------------------- models and inputs


def random_model(cfg: WanConfig, device: torch.device, dtype: torch.dtype, seed: int = 0) -> WanModel:
    """A WanModel with random weights made on ``device`` in ``dtype``, scaled for order-1 activations."""
    with torch.device("meta"):
        model = WanModel(cfg, compute_dtype=dtype)
    g = torch.Generator(device=device).manual_seed(seed)
    linears = {name for name, m in model.named_modules() if isinstance(m, CastLinear)}
    for name, p in list(model.named_parameters()):
        module_name, attr = name.rsplit(".", 1)
        module = model.get_submodule(module_name)
        fan_in = p.shape[1:].numel() if p.ndim > 1 else p.shape[0]
        if attr == "weight" and (module_name in linears or module_name == "patch_embedding"):
            value = torch.randn(p.shape, generator=g, device=device, dtype=dtype).mul_(fan_in ** -0.5)
        elif attr == "bias":
            value = torch.randn(p.shape, generator=g, device=device, dtype=dtype).mul_(0.1)
        elif attr == "modulation":
            value = torch.randn(p.shape, generator=g, device=device, dtype=dtype).mul_(cfg.dim ** -0.5)
        else:  # norm weights
            value = torch.randn(p.shape, generator=g, device=device, dtype=dtype).mul_(0.1).add_(1.0)
        setattr(module, attr, torch.nn.Parameter(value, requires_grad=False))
    return model


def inputs(case: Case, device: torch.device):
    g = torch.Generator(device=device).manual_seed(1)
    x = torch.randn(1, *case.latent, generator=g, device=device)
    pos = torch.randn(1, TEXT_LEN, 4096, generator=g, device=device)
    neg = torch.randn(1, TEXT_LEN, 4096, generator=g, device=device)
    return x, torch.tensor([937.0], device=device), pos, neg


def step_flops(case: Case) -> float:
    """Matmul FLOPs of one CFG step (two forwards): projections, attention, FFN, embeddings."""
    c, L, Lc = case.config, case.tokens, TEXT_LEN
    d, f = c.dim, c.ffn_dim
    block = (2 * L * d * d * 4 + 4 * L * L * d  # self-attention: q, k, v, o and QK^T, PV
             + 2 * L * d * d * 2 + 2 * Lc * d * d * 2 + 4 * L * Lc * d  # cross-attention
             + 2 * L * d * f * 2)  # FFN
    embed = 2 * Lc * (c.text_dim * d + d * d) + 2 * L * d * c.in_dim * 4 + 2 * L * d * c.out_dim * 4
    return 2.0 * (c.num_layers * block + embed)


# ---------------------------------------------------------------- measuring


class Device:
    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def name(self) -> str:
        if self.cuda:
            return torch.cuda.get_device_name(self.device)
        return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"

    def reset_peak(self) -> int:
        """Start a peak measurement; returns the baseline in bytes."""
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            return torch.cuda.memory_allocated(self.device)
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        return _status_kib("VmRSS") * 1024

    def peak(self) -> int:
        if self.cuda:
            return torch.cuda.max_memory_allocated(self.device)
        return _status_kib("VmHWM") * 1024


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def matmul_peak(dev: Device, dtype: torch.dtype, n: int) -> float:
    """Best FLOP/s of an n x n x n matmul in ``dtype`` (the roofline's denominator)."""
    a = torch.randn(n, n, device=dev.device, dtype=dtype)
    b = torch.randn(n, n, device=dev.device, dtype=dtype)
    best = float("inf")
    for _ in range(4):
        dev.sync()
        start = time.perf_counter()
        a @ b
        dev.sync()
        best = min(best, time.perf_counter() - start)
    return 2.0 * n ** 3 / best


@dataclass
class Row:
    case: str
    config: str
    seconds: Optional[float] = None
    first: Optional[float] = None  # the warm-up step (compiling, for compile rows)
    peak_bytes: Optional[int] = None
    roofline: Optional[float] = None
    note: str = ""
    extra: dict = field(default_factory=dict)


def time_step(dev: Device, step: Callable[[], torch.Tensor], repeats: int) -> tuple[float, float, int, torch.Tensor]:
    """(best seconds, first-call seconds, peak bytes above baseline, output) of ``step``."""
    base = dev.reset_peak()
    dev.sync()
    start = time.perf_counter()
    out = step()
    dev.sync()
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        dev.sync()
        start = time.perf_counter()
        out = step()
        dev.sync()
        best = min(best, time.perf_counter() - start)
    return best, first, max(0, dev.peak() - base), out


# ---------------------------------------------------------------- ComfyUI's WanModel


def comfy_model(path: Path, ours: WanModel, dev: Device):
    """ComfyUI's WanModel holding our weight tensors (assigned), and its batch-2 CFG step function."""
    sys.path.insert(0, str(path))
    import comfy.options

    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args

    if not dev.cuda:
        args.cpu = True  # as `main.py --cpu`; ComfyUI would look for a GPU otherwise
    import comfy.ops
    from comfy.ldm.wan.model import WanModel as ComfyWan

    c = ours.config
    with torch.device("meta"):
        peer = ComfyWan(model_type="t2v", patch_size=c.patch_size, text_len=c.text_len, in_dim=c.in_dim, dim=c.dim,
                        ffn_dim=c.ffn_dim, freq_dim=c.freq_dim, text_dim=c.text_dim, out_dim=c.out_dim,
                        num_heads=c.num_heads, num_layers=c.num_layers, qk_norm=True, cross_attn_norm=True, eps=c.eps,
                        dtype=ours.compute_dtype, operations=comfy.ops.disable_weight_init)
    state = dict(ours.state_dict())
    # ComfyUI runs the patch embedding in float32 (its weight is made float32 whatever the dtype).
    for key in ("patch_embedding.weight", "patch_embedding.bias"):
        state[key] = state[key].float()
    missing, unexpected = peer.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise RuntimeError(f"ComfyUI's WanModel does not take our keys: missing {missing}, unexpected {unexpected}")
    peer.eval()

    def cfg_step(x, t, pos, neg):
        dtype = ours.compute_dtype
        out = peer(torch.cat([x, x]).to(dtype), torch.cat([t, t]), torch.cat([pos, neg]).to(dtype)).float()
        v_cond, v_uncond = out.chunk(2)
        return v_uncond + CFG * (v_cond - v_uncond)

    import comfy.ldm.modules.attention as comfy_attention

    return peer, cfg_step, comfy_attention.optimized_attention.__name__


# ---------------------------------------------------------------- the run


COMPILE_GUESS_S = 120.0  # what compiling the block graph may take (inductor; unmeasured on a GPU)


def _step_guess(rows: list, case: str) -> float:
    """Seconds per step this case is expected to take: its first timed row's, else 0."""
    return next((r.seconds for r in rows if r.case == case and r.seconds is not None), 0.0)


def run_case(case: Case, dev: Device, dtype: torch.dtype, args, rows: list, deadline: float, peak_flops: float):
    flops = step_flops(case)
    info = {"case": case.label, "tokens": case.tokens, "step_tflop": flops / 1e12, "build_s": None}
    if time.perf_counter() > deadline:  # not even the model is built
        rows.append(Row(case.label, "all", note="skipped (time budget)"))
        return info
    build_start = time.perf_counter()
    model = random_model(case.config, dev.device, dtype)
    dev.sync()
    built = time.perf_counter() - build_start
    x, t, pos, neg = inputs(case, dev.device)
    kernels = [name for name in attn.backend_names() if name != "auto"
               and (name == "sdpa" or attn.check_kernel(name, dev.device, dtype) is None)]
    configs = [(k, "off", True) for k in kernels]
    if args.compile:
        configs += [(k, "inductor", True) for k in kernels]
    configs.append(("sdpa", "off", False))  # the two CFG passes one after the other
    reference = None
    for kernel, compile_mode, batched in configs:
        name = f"{kernel}{', compile' if compile_mode != 'off' else ''}{'' if batched else ', two passes'}"
        row = Row(case.label, name)
        rows.append(row)
        # Rows are skipped when they would end past the budget: (1 + repeats) steps at the
        # first row's speed, plus COMPILE_GUESS_S for compiling.
        guess = (1 + args.repeats) * _step_guess(rows, case.label)
        if compile_mode != "off":
            guess += COMPILE_GUESS_S
        if time.perf_counter() + guess > deadline:
            row.note = "skipped (time budget)"
            continue
        fast.apply_fast_options(model, attention=kernel, compile=compile_mode)
        previous = guidance.set_batched_guidance(batched)
        try:
            with torch.no_grad():
                seconds, first, peak, out = time_step(
                    dev, lambda: guided_velocity(model, x, t, pos, neg, CFG), args.repeats)
        finally:
            guidance.set_batched_guidance(previous)
            fast.apply_fast_options(model, attention="auto", compile="off")
        row.seconds, row.first, row.peak_bytes = seconds, first, peak
        row.roofline = flops / seconds / peak_flops
        if reference is None:
            reference = out
        else:
            row.extra["rel_to_first"] = attn.rel_l2(out, reference)
        if compile_mode != "off" and fast.compile_failure(compile_mode):
            row.note = f"compile failed, ran eagerly: {fast.compile_failure(compile_mode)}"
    if args.comfyui:
        row = Row(case.label, "ComfyUI WanModel (batch 2)")
        rows.append(row)
        if time.perf_counter() + (1 + args.repeats) * _step_guess(rows, case.label) > deadline:
            row.note = "skipped (time budget)"
        else:
            peer, cfg_step, attention_name = comfy_model(Path(args.comfyui), model, dev)
            with torch.no_grad():
                seconds, first, peak, out = time_step(dev, lambda: cfg_step(x, t, pos, neg), args.repeats)
            row.seconds, row.first, row.peak_bytes = seconds, first, peak
            row.roofline = flops / seconds / peak_flops
            row.extra["rel_to_first"] = attn.rel_l2(out, reference)
            row.note = f"attention: {attention_name}"
            del peer
    if args.video_steps:
        video_rows(case, model, dev, args, rows, deadline, (pos, neg))
    if args.fp8:
        fp8_rows(case, model, dev, args, rows, deadline, flops, peak_flops, (x, t, pos, neg), reference)
    del model
    gc.collect()
    return {**info, "build_s": built}


def video_rows(case, model, dev, args, rows, deadline, text):
    """Seconds per video: the whole ``sample`` loop, without and with the step cache at its default threshold.

    One random model stands in for both A14B experts (two handles on the same weights, both resident:
    the same cost per step as two experts, half the memory); TI2V-5B runs alone. Steps reused depend on
    the weights, so the row's note gives the count: on random weights it says nothing about real ones.
    """
    pos, neg = text
    steps = args.video_steps
    a14b = case.config.out_dim == 16
    cfgs = dict(cfg_high=CFG, cfg_low=CFG) if a14b else dict(cfg_high=CFG)
    shift = 12.0 if a14b else 5.0
    for label, cache in ((f"video, {steps} steps, no cache", None),
                         (f"video, {steps} steps, step cache {DEFAULT_THRESHOLD:g}", StepCache(DEFAULT_THRESHOLD))):
        row = Row(case.label, label)
        rows.append(row)
        if time.perf_counter() + steps * _step_guess(rows, case.label) > deadline:
            row.note = "skipped (time budget)"
            continue
        handles = [ModelHandle.from_module(model, dev.device, {"role": role})
                   for role in (("high_noise", "low_noise") if a14b else ("high_noise",))]
        base = dev.reset_peak()
        dev.sync()
        start = time.perf_counter()
        with torch.no_grad():
            result = sample(handles[0], handles[1] if a14b else None, torch.zeros(1, *case.latent), pos, neg, seed=0,
                            steps=steps, shift=shift, memory="keep_both", budget=None, step_cache=cache, **cfgs)
        dev.sync()
        row.seconds = time.perf_counter() - start
        row.peak_bytes = max(0, dev.peak() - base)
        reused = len(result.cache["reused"]) if result.cache else 0
        row.extra["reused_steps"] = reused
        row.note = (f"s/video; {steps - reused} of {steps} steps ran"
                    + (f", {reused} reused (random weights: the share on real weights differs)" if cache else ""))
        if not torch.isfinite(result.latent).all():
            row.seconds = float("nan")
            row.note += "; NON-FINITE latent"


def fp8_rows(case, model, dev, args, rows, deadline, flops, peak_flops, data, reference):
    """The blocks' Linear weights quantised to e4m3fn in place (per-tensor scale), then upcast vs fp8 matmul."""
    for layer in (m for block in model.blocks for m in block.modules() if isinstance(m, CastLinear)):
        w, scale = quantize_fp8(layer.weight, torch.float8_e4m3fn)
        layer.weight = torch.nn.Parameter(w, requires_grad=False)
        layer.scale_weight = scale
    x, t, pos, neg = data
    for label, on in (("sdpa, fp8 weights (upcast)", False), ("sdpa, fp8 weights, fp8 matmul", True)):
        row = Row(case.label, label)
        rows.append(row)
        if time.perf_counter() + (1 + args.repeats) * _step_guess(rows, case.label) > deadline:
            row.note = "skipped (time budget)"
            continue
        fast.apply_fast_options(model, attention="sdpa", fp8_matmul=on)
        with torch.no_grad():
            seconds, first, peak, out = time_step(dev, lambda: guided_velocity(model, x, t, pos, neg, CFG),
                                                  args.repeats)
        row.seconds, row.first, row.peak_bytes = seconds, first, peak
        row.roofline = flops / seconds / peak_flops
        row.extra["rel_to_first"] = attn.rel_l2(out, reference)
        if on:
            why = fp8_check(dev.device, model.compute_dtype)
            row.note = "fp8 matmul used" if why is None else f"fell back to the upcast: {why}"


def markdown(meta: dict, infos: list, rows: list) -> str:
    lines = [
        "# DiT step speed suite (`bench/gpu_suite.py`)",
        "",
        f"Device: {meta['device']}; torch {meta['torch']}; compute dtype {meta['dtype']}; size `{meta['size']}`; "
        f"random weights. One step = CFG on (cfg {CFG:g}), conditional + unconditional; best of "
        f"{meta['repeats']} after one warm-up. Matmul roofline: {meta['peak_tflops']:.1f} TFLOP/s measured on a "
        f"{meta['gemm']}^3 {meta['dtype']} GEMM. Attention kernels registered: {', '.join(meta['kernels'])}; "
        f"waiting for a device to be exercised on: {', '.join(attn.WAITING_KERNELS)}. fp8 rows: "
        f"{'yes' if meta['fp8'] else 'no'}. Command: `{meta['command']}`; whole run {meta['total_s']:.0f} s.",
        "",
        "| case | tokens | TFLOP/step | config | s/step | first step (s) | peak above start (MiB) | roofline | "
        "rel. L2 to first row | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    info = {i["case"]: i for i in infos}
    for r in rows:
        i = info.get(r.case, {"tokens": "", "step_tflop": float("nan")})
        fmt = (lambda v, spec: "" if v is None else format(v, spec))
        rel = r.extra.get("rel_to_first")
        lines.append(f"| {r.case} | {i['tokens']} | {i['step_tflop']:.3g} | {r.config} | {fmt(r.seconds, '.3f')} | "
                     f"{fmt(r.first, '.2f')} | {fmt(None if r.peak_bytes is None else r.peak_bytes / 2**20, '.0f')} "
                     f"| {fmt(r.roofline, '.3f')} | {'' if rel is None else format(rel, '.1e')} | {r.note} |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto: cuda when available, else cpu")
    p.add_argument("--size", choices=["auto", "real", "mid", "tiny"], default="auto",
                   help="auto: real on a GPU, tiny on CPU")
    p.add_argument("--repeats", type=int, default=None, help="timed steps per row (default 2 on GPU, 1 on CPU)")
    p.add_argument("--budget", type=float, default=None, help="seconds after which no new row starts "
                                                              "(default 420 on GPU, none on CPU)")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="leave out the torch.compile rows")
    p.add_argument("--comfyui", type=Path, help="a ComfyUI checkout: add its WanModel as the peer")
    p.add_argument("--fp8", choices=["auto", "on", "off"], default="auto",
                   help="fp8 rows (blocks quantised to e4m3fn, upcast vs torch._scaled_mm); auto: on a GPU only, "
                        "since torch._scaled_mm on CPU is a slow reference kernel (about 80 s per tiny step)")
    p.add_argument("--threads", type=int, default=None, help="CPU torch threads")
    p.add_argument("--video-steps", type=int, default=20,
                   help="steps of the whole-video rows (no cache / step cache at its default threshold); "
                        "0: no such rows")
    p.add_argument("--write", type=Path, help="markdown output (default bench/results_gpu.md on a GPU)")
    p.add_argument("--json", type=Path, help="also write the rows as JSON")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    dev = Device(device)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = args.size if args.size != "auto" else ("real" if dev.cuda else "tiny")
    dtype = torch.bfloat16 if dev.cuda else torch.float32
    args.repeats = args.repeats or (2 if dev.cuda else 1)
    args.fp8 = args.fp8 == "on" or (args.fp8 == "auto" and dev.cuda)
    budget = args.budget if args.budget is not None else (420.0 if dev.cuda else float("inf"))
    write = args.write or (ROOT / "bench" / "results_gpu.md" if dev.cuda else None)
    gemm = 8192 if dev.cuda else 1024
    peak_flops = matmul_peak(dev, dtype, gemm)
    rows: list = []
    infos = []
    deadline = start + budget
    for case in cases(size):
        infos.append(run_case(case, dev, dtype, args, rows, deadline, peak_flops))
        print(f"{case.label}: done at {time.perf_counter() - start:.0f} s", file=sys.stderr)
    meta = {"device": dev.name(), "torch": torch.__version__, "dtype": str(dtype).replace("torch.", ""),
            "size": size, "repeats": args.repeats, "fp8": args.fp8, "peak_tflops": peak_flops / 1e12, "gemm": gemm,
            "kernels": [n for n in attn.backend_names() if n != "auto"],
            "command": "python bench/gpu_suite.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "total_s": time.perf_counter() - start}
    text = markdown(meta, infos, rows)
    print(text)
    if write:
        write.write_text(text, encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "cases": infos, "rows": [r.__dict__ for r in rows]}, indent=1))
    bad = [r for r in rows if r.seconds is not None and not math.isfinite(r.seconds)]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
