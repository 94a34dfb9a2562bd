"""Memory tiers on CPU: anonymous RSS of a two-expert run, weight streaming, the activation estimate.

Three parts, each number from a fresh Python process (``--worker``):

``anon``: peak **anonymous** RSS (``RssAnon`` in ``/proc/self/status``: memory the
process owns, excluding the file-backed page cache that holds the memory-mapped
weights) of a two-expert ``engine.sampling.loop.sample`` run under ``offload_cpu``, for
mid-size experts written to disk in their stored form and loaded lazily as the loader
node does. A polling thread reads ``RssAnon`` every 2 ms; the peak is over the run,
minus the value just before it (so the Python/torch baseline does not count).

* ``cpu``: the experts compute on the CPU, as on this machine: weights are read from the
  mapping, nothing is copied;
* ``emulated``: the experts compute on an *emulated device*: ``streaming.CountingLink``
  copies every weight into separate (anonymous) memory, as a GPU upload would, and the
  device-side bytes it holds are subtracted from ``RssAnon`` (on a GPU they would be in
  VRAM). ``offload=copy`` reproduces the old offload (the device copy becomes a host
  copy, as ``module.to("cpu")`` from a GPU makes one); ``offload=file`` is the new one
  (``streaming.to_host``: rebind to the mapping). This is where the two differ.
* LoRA variants: an fp8 expert with a LoRA (runtime branches, small) and a bf16 expert
  with a LoRA merged into every Linear (host form differs from the file: its cost).

``stream``: one expert placed with ``streaming.place`` at budgets of 100 / 50 / 25 % of
its weight bytes on a ``CountingLink`` (synchronous, and asynchronous: copies deferred
to the wait, the CUDA link's order), against the fully resident expert (no placement).
Reports the streamer's peak device-side bytes and process CPU seconds per forward pass
(``--stream-threads``, default 1: the machine is shared, wall time is noise). On CPU the
"copies" are CPU memcpy work added to the compute, with no overlap, so this is the cost
of the copies themselves, not of a PCIe transfer. Outputs are checked bit-identical to
the resident run.

``estimate``: the forward's peak memory above resident (``VmHWM`` after
``clear_refs``), against ``engine.memory.estimates.activation_bytes`` at two latent sizes (fp32).

Usage (repository root)::

    python bench/bench_memory.py                      # all parts, default sizes, prints markdown
    python bench/bench_memory.py --parts anon --write bench/results_memory.md
    python bench/bench_memory.py --dim 1024 --layers 8 --ffn 4096 --frames 3 --size 24
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

ANON_RUNS = [
    # label, storage, mode, offload, lora, two experts
    ("one expert (high only), CPU", "fp16", "cpu", "file", None, False),
    ("one expert (high only), CPU, fp8_scaled", "fp8_scaled", "cpu", "file", None, False),
    ("one expert (high only), CPU, bf16", "bf16", "cpu", "file", None, False),
    ("two experts, CPU", "fp16", "cpu", "file", None, True),
    ("two experts, emulated device, old offload (copy to RAM)", "fp16", "emulated", "copy", None, True),
    ("two experts, emulated device, file-backed offload", "fp16", "emulated", "file", None, True),
    ("two experts + LoRA on fp8 (branches), emulated, file-backed", "fp8_scaled", "emulated", "file", "lora", True),
    ("two experts + LoRA merged into bf16, emulated, file-backed", "bf16", "emulated", "file", "lora", True),
]


def status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


class AnonPeak:
    """Polls RssAnon (minus ``minus()`` bytes, the emulated device's) on a thread; keeps the peak.

    While ``paused`` is set (an emulated upload or offload is under way, when the device
    copies exist but the ledger does not count them yet) samples are skipped.
    """

    def __init__(self, minus=lambda: 0, interval: float = 0.002):
        self.minus, self.interval, self.peak, self._stop = minus, interval, 0, threading.Event()
        self.paused = threading.Event()

    def __enter__(self):
        self.base = status_kib("RssAnon") * 1024
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            time.sleep(self.interval)

    def sample(self):
        if self.paused.is_set():
            return
        value = status_kib("RssAnon") * 1024 - self.minus() - self.base
        if not self.paused.is_set():
            self.peak = max(self.peak, value)

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()
        self.sample()


def _pack():
    from packpath import load_pack

    load_pack()


def anon_worker(args) -> dict:
    _pack()
    import torch

    from wan22duo.engine.weights.checkpoint import detect_dit, load_dit
    from wan22duo.engine.weights.lora import apply_loras
    from wan22duo.engine.memory.residency import ModelHandle, free_cached_memory
    from wan22duo.engine.sampling.loop import sample

    if args.mode == "emulated":  # (imported only here, so the cpu mode also runs against older code)
        from wan22duo.engine.memory.streaming import Budget, CountingLink, streamer_of, to_host
    else:
        def streamer_of(model):
            return None

    def tensor_bytes(model):
        return sum(t.nbytes for t in list(model.parameters()) + list(model.buffers()))

    torch.set_num_threads(args.threads)
    lora = None
    if args.lora:
        from safetensors.torch import load_file

        lora = load_file(args.lora)
    placed = []

    gate = threading.Event()  # set while an emulated transfer is under way (see AnonPeak)

    class EmulatedHandle(ModelHandle):
        """Offloads even though the emulated device is the CPU (Residency sees one device)."""

        def acquire(self, device=None, budget=None):
            gate.set()
            try:
                return super().acquire(device, budget)
            finally:
                gate.clear()

        def offload(self):
            if self._module is None or self._budget is None:
                return
            gate.set()
            streamer = streamer_of(self._module)
            if args.offload == "file":
                self._module = to_host(self._module, torch.device("cpu"))
            elif streamer is not None:
                streamer.detach()  # the device copies stay behind as the host copy, as .to("cpu") makes one
            self._budget = None
            free_cached_memory(collect=False)  # as ModelHandle.offload does: hand freed heap back (malloc_trim)
            gate.clear()

    def load(path):
        def fn(device):
            model = load_dit(path, compute_dtype=torch.float32, device=device)
            if lora is not None:
                apply_loras(model, [(lora, 1.0)], keep_backup=False, warn=False)
            placed.append(model)
            return model
        return fn

    cls = EmulatedHandle if args.mode == "emulated" else ModelHandle
    high = cls(load(args.high), "cpu", torch.float32, {"config": detect_dit(args.high), "role": "high_noise"})
    low = cls(load(args.low), "cpu", torch.float32, {"config": detect_dit(args.low), "role": "low_noise"}) \
        if args.two else None
    budget = None
    if args.mode == "emulated":
        link = CountingLink()
        budget = Budget(None, link=lambda device, block: link)

    def device_bytes():
        total = 0
        for model in list(placed):
            streamer = streamer_of(model)
            if streamer is not None:
                total += streamer.device_bytes
        return total

    g = torch.Generator().manual_seed(0)
    positive, negative = torch.randn(1, 24, 4096, generator=g), torch.randn(1, 12, 4096, generator=g)
    latent = torch.zeros(1, 16, args.frames, args.size, args.size)
    switch = args.steps // 2 if args.two else args.steps
    free_cached_memory()
    with AnonPeak(device_bytes) as peak:
        peak.paused = gate
        start = time.perf_counter()
        extra = {} if budget is None else {"budget": budget}  # (so the worker also runs against older code)
        result = sample(high, low, latent, positive, negative, seed=1, steps=args.steps, shift=12.0,
                        switch_step=switch, memory="offload_cpu", **extra)
        seconds = time.perf_counter() - start
    expert = tensor_bytes(high.acquire()) if args.mode == "cpu" else tensor_bytes(placed[0])
    branches = sum(b.up.nbytes + (0 if b.down is None else b.down.nbytes)
                   for m in placed[:1] for sub in m.modules() for b in getattr(sub, "lora_branches", ()))
    return {"peak_anon": peak.peak, "seconds": seconds, "expert_bytes": expert, "branch_bytes": branches,
            "finite": bool(torch.isfinite(result.latent).all())}


def forward_inputs(args, torch):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, args.frames, args.size, args.size, generator=g)
    return x, torch.tensor([700.0]), torch.randn(1, 24, 4096, generator=g)


def stream_worker(args) -> dict:
    _pack()
    import torch

    from wan22duo.engine.weights.checkpoint import load_dit
    from wan22duo.engine.memory.streaming import Budget, CountingLink, place, streamer_of, tensor_bytes

    torch.set_num_threads(args.threads)
    model = load_dit(args.high, compute_dtype=torch.float32)
    x, t, ctx = forward_inputs(args, torch)
    with torch.no_grad():
        expected = model(x, t, ctx)
    total = tensor_bytes(model)
    streamer = None
    if args.fraction > 0:
        link = CountingLink(asynchronous=args.asynchronous)
        place(model, torch.device("cpu"), Budget(total * args.fraction / 1024 ** 3, link=lambda d, b: link))
        streamer = streamer_of(model)
    times = []
    with torch.no_grad():
        for _ in range(args.repeats):
            # process CPU time, not wall time: the machine is shared, and on CPU the copies are CPU work too
            start = time.process_time()
            out = model(x, t, ctx)
            times.append(time.process_time() - start)
    return {"total": total, "fraction": args.fraction, "asynchronous": args.asynchronous,
            "peak_device": streamer.peak_bytes if streamer else total,
            "streamed_blocks": len(streamer.plan.streamed_blocks) if streamer else 0,
            "blocks": len(model.blocks), "seconds": min(times), "identical": bool(torch.equal(out, expected))}


def estimate_worker(args) -> dict:
    _pack()
    import torch

    from wan22duo.engine.weights.checkpoint import load_dit
    from wan22duo.engine.memory.estimates import activation_bytes

    torch.set_num_threads(args.threads)
    model = load_dit(args.high, compute_dtype=torch.float32)
    x, t, ctx = forward_inputs(args, torch)
    with torch.no_grad():
        model(x[..., :2, :2], t, ctx)  # warm-up: kernels, thread pools, weight pages
        for p in model.parameters():
            float(p.flatten()[-1])
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        base = status_kib("VmRSS")
        model(x, t, ctx)
        peak = status_kib("VmHWM")
    estimate = activation_bytes(model.config, args.frames, args.size, args.size, torch.float32)
    return {"measured": (peak - base) * 1024, "estimate": estimate,
            "tokens": args.frames * (args.size // 2) ** 2}


def run(args, *extra) -> dict:
    cmd = [sys.executable, __file__, "--threads", str(args.threads), "--steps", str(args.steps),
           "--frames", str(args.frames), "--size", str(args.size), "--repeats", str(args.repeats), *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    if out.returncode:
        raise RuntimeError(f"worker failed: {' '.join(cmd)}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def mib(n: float) -> str:
    return f"{n / 1024 ** 2:.1f}"


def write_experts(args, folder: Path) -> dict:
    _pack()
    from wan22duo.engine.testing.tiny_lora import write_tiny_lora
    from wan22duo.engine.testing.tiny import write_tiny_dit

    dims = {"dim": args.dim, "ffn_dim": args.ffn, "num_layers": args.layers}
    files = {}
    for storage in ("fp16", "bf16", "fp8_scaled"):
        files[storage] = tuple(write_tiny_dit(folder / f"{role}_{storage}.safetensors", "t2v_a14b", storage=storage,
                                              seed=seed, **dims) for role, seed in (("high", 1), ("low", 2)))
    files["lora"] = folder / "lora.safetensors"
    write_tiny_lora(files["lora"], files["fp16"][0], rank=args.rank, seed=3)
    return files


def anon_part(args, files) -> list[str]:
    rows = ["| run | peak RssAnon over baseline MiB | one expert's weights MiB | LoRA branches MiB | s |",
            "|---|---|---|---|---|"]
    for label, storage, mode, offload, lora, two in ANON_RUNS:
        if args.rows and not any(r in label for r in args.rows):
            continue
        high, low = files[storage]
        extra = ["--worker", "anon", "--high", str(high), "--low", str(low), "--mode", mode, "--offload", offload]
        extra += ["--two"] if two else []
        extra += ["--lora", str(files["lora"])] if lora else []
        r = run(args, *extra)
        assert r["finite"], label
        rows.append(f"| {label} | {mib(r['peak_anon'])} | {mib(r['expert_bytes'])} | {mib(r['branch_bytes'])} "
                    f"| {r['seconds']:.1f} |")
        print(rows[-1], flush=True)
    return rows


def stream_part(args, files) -> list[str]:
    args = argparse.Namespace(**{**vars(args), "threads": args.stream_threads})
    rows = ["| placement | link | streamed blocks | peak device-side MiB | of the expert | CPU s / forward (best of "
            f"{args.repeats}) | vs resident | bit-identical |", "|---|---|---|---|---|---|---|---|"]
    high = files["fp16"][0]
    resident = run(args, "--worker", "stream", "--high", str(high), "--fraction", "0")
    base = resident["seconds"]
    rows.append(f"| resident (no placement) | - | 0 of {resident['blocks']} | {mib(resident['total'])} | 100 % | "
                f"{base:.3f} | 1.00x | - |")
    for fraction in (1.0, 0.5, 0.25):
        for asynchronous in (False, True):
            extra = ["--worker", "stream", "--high", str(high), "--fraction", str(fraction)]
            extra += ["--asynchronous"] if asynchronous else []
            try:
                r = run(args, *extra)
            except RuntimeError as err:
                reason = str(err).strip().splitlines()[-1][:160]
                rows.append(f"| budget {fraction:.0%} | {'async' if asynchronous else 'sync'} | refused: {reason} "
                            f"| | | | | |")
                continue
            rows.append(f"| budget {fraction:.0%} | {'async (deferred)' if asynchronous else 'sync'} | "
                        f"{r['streamed_blocks']} of {r['blocks']} | {mib(r['peak_device'])} | "
                        f"{r['peak_device'] / r['total']:.0%} | {r['seconds']:.3f} | {r['seconds'] / base:.2f}x | "
                        f"{'yes' if r['identical'] else 'NO'} |")
            print(rows[-1], flush=True)
    return rows


def estimate_part(args, files) -> list[str]:
    rows = ["| latent (frames x size²) | tokens | measured forward peak MiB | estimate MiB | estimate / measured |",
            "|---|---|---|---|---|"]
    for frames, size in ((args.frames, args.size), (args.frames + 2, args.size * 2)):
        r = run(args, "--worker", "estimate", "--high", str(files["fp16"][0]), "--frames-override", str(frames),
                "--size-override", str(size))
        rows.append(f"| {frames} x {size}² | {r['tokens']} | {mib(r['measured'])} | {mib(r['estimate'])} | "
                    f"{r['estimate'] / max(1, r['measured']):.2f} |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--ffn", type=int, default=4096)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--size", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stream-threads", type=int, default=1)
    ap.add_argument("--parts", nargs="+", default=["anon", "stream", "estimate"])
    ap.add_argument("--write", type=Path, help="append the markdown to this file")
    ap.add_argument("--rows", nargs="+", help="anon part: only the runs whose label contains one of these")
    # worker options
    ap.add_argument("--worker", choices=["anon", "stream", "estimate"])
    ap.add_argument("--high")
    ap.add_argument("--low")
    ap.add_argument("--two", action="store_true")
    ap.add_argument("--mode", default="cpu")
    ap.add_argument("--offload", default="file")
    ap.add_argument("--lora")
    ap.add_argument("--fraction", type=float, default=0.0)
    ap.add_argument("--asynchronous", action="store_true")
    ap.add_argument("--frames-override", type=int)
    ap.add_argument("--size-override", type=int)
    args = ap.parse_args()
    if args.frames_override:
        args.frames, args.size = args.frames_override, args.size_override
    if args.worker:
        worker = {"anon": anon_worker, "stream": stream_worker, "estimate": estimate_worker}[args.worker]
        print(json.dumps(worker(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        files = write_experts(args, Path(tmp))
        size = Path(files["fp16"][0]).stat().st_size
        out = [f"## Run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
               f"Experts: dim {args.dim}, ffn {args.ffn}, {args.layers} layers ({size / 1024 ** 2:.0f} MiB as fp16), "
               f"latent 16 x {args.frames} x {args.size} x {args.size}, {args.steps} steps, {args.threads} threads, "
               f"LoRA rank {args.rank} on every Linear. Command: `python bench/bench_memory.py "
               f"{' '.join(sys.argv[1:])}`", ""]
        parts = {"anon": anon_part, "stream": stream_part, "estimate": estimate_part}
        for name in args.parts:
            out += [f"### {name}", ""] + parts[name](args, files) + [""]
    text = "\n".join(out)
    print(text)
    if args.write:
        with open(args.write, "a", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
