"""Peak host memory of a two-expert run under each memory policy, on CPU.

What it measures: the peak resident set (Linux ``VmHWM``) of ``engine.sampling.loop.sample``
alone, in a fresh Python process per configuration, for mid-size random experts
written to disk and loaded lazily with ``load_dit`` (as the loader node does):

* ``one expert``: the high-noise expert runs every step, no low model. This is "one
  expert's weights plus activations", the yardstick.
* ``two experts, release``: the high-noise expert is dropped before the low-noise
  expert is loaded (the policy that saves host memory).
* ``two experts, offload_cpu``: the default. On a CPU-only machine the compute device
  *is* the CPU, so offloading moves nothing and both experts stay in RAM; it saves
  accelerator memory, not host memory.
* ``two experts, keep_both``: the both-resident baseline.

How: each worker imports everything, builds its inputs and handles, reads ``VmRSS``
(the baseline), resets the peak counter by writing ``5`` to ``/proc/self/clear_refs``
(Linux >= 4.0), runs ``sample``, then reads ``VmHWM``. "Peak over baseline" is
``VmHWM - baseline``, i.e. the memory the run itself added. The weights are
memory-mapped from the file by ``load_dit``; touched pages count in the resident set.

Usage::

    .venv/bin/python bench/bench_sampling.py            # defaults below, prints a markdown table
    .venv/bin/python bench/bench_sampling.py --dim 1024 --layers 8 --ffn 4096 --steps 4 --frames 5 --size 16
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

RUNS = [
    ("one expert (high only)", "release", False),
    ("two experts, release", "release", True),
    ("two experts, offload_cpu (default)", "offload_cpu", True),
    ("two experts, keep_both (baseline)", "keep_both", True),
]


def proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def worker(args: argparse.Namespace) -> dict:
    from packpath import load_pack

    load_pack()
    import torch

    from wan22duo.engine.weights.checkpoint import detect_dit, load_dit
    from wan22duo.engine.memory.residency import ModelHandle
    from wan22duo.engine.sampling.loop import sample

    torch.set_num_threads(args.threads)

    def handle(path: str, role: str) -> ModelHandle:
        return ModelHandle(lambda device: load_dit(path, compute_dtype=torch.float32, device=device), "cpu",
                           torch.float32, {"config": detect_dit(path), "role": role, "path": path})

    high = handle(args.high, "high_noise")
    low = handle(args.low, "low_noise") if args.two else None
    g = torch.Generator().manual_seed(0)
    positive = torch.randn(1, 24, 4096, generator=g)
    negative = torch.randn(1, 12, 4096, generator=g)
    latent = torch.zeros(1, 16, args.frames, args.size, args.size)
    switch = args.steps // 2 if args.two else args.steps

    baseline = proc_status_kib("VmRSS")
    peak_reset = reset_peak()
    start = time.perf_counter()
    result = sample(high, low, latent, positive, negative, seed=1, steps=args.steps, shift=12.0,
                    switch_step=switch, memory=args.memory)
    seconds = time.perf_counter() - start
    return {
        "baseline_kib": baseline,
        "peak_kib": proc_status_kib("VmHWM"),
        "after_kib": proc_status_kib("VmRSS"),
        "peak_reset": peak_reset,
        "seconds": seconds,
        "switch_step": result.switch_step,
        "finite": bool(torch.isfinite(result.latent).all()),
    }


def write_experts(args: argparse.Namespace, folder: Path) -> tuple[Path, Path, int]:
    from packpath import load_pack

    load_pack()
    from wan22duo.engine.testing.tiny import write_tiny_dit

    dims = {"dim": args.dim, "ffn_dim": args.ffn, "num_layers": args.layers}
    high = write_tiny_dit(folder / "high.safetensors", "t2v_a14b", seed=1, **dims)
    low = write_tiny_dit(folder / "low.safetensors", "t2v_a14b", seed=2, **dims)
    return high, low, high.stat().st_size


def run_worker(args: argparse.Namespace, high: Path, low: Path, memory: str, two: bool) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--high", str(high), "--low", str(low), "--memory", memory,
           "--steps", str(args.steps), "--frames", str(args.frames), "--size", str(args.size),
           "--threads", str(args.threads)] + (["--two"] if two else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--ffn", type=int, default=4096)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--frames", type=int, default=5, help="latent frames")
    p.add_argument("--size", type=int, default=16, help="latent height and width")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=None, help="where to write the expert files (default: a temp dir)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--high", help=argparse.SUPPRESS)
    p.add_argument("--low", help=argparse.SUPPRESS)
    p.add_argument("--memory", help=argparse.SUPPRESS)
    p.add_argument("--two", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        high, low, weight_bytes = write_experts(args, Path(tmp))
        rows = [(label, run_worker(args, high, low, memory, two)) for label, memory, two in RUNS]
    mib = 1024 * 1024
    one = rows[0][1]["peak_kib"] - rows[0][1]["baseline_kib"]
    print(f"expert file: {weight_bytes / mib:.0f} MiB (dim {args.dim}, {args.layers} layers, ffn {args.ffn}, fp32); "
          f"latent 1x16x{args.frames}x{args.size}x{args.size}, {args.steps} steps, cfg on, {args.threads} threads\n")
    print("| run | baseline RSS (MiB) | peak VmHWM (MiB) | peak over baseline (MiB) | vs one expert | "
          "RSS after (MiB) | time (s) |")
    print("|---|---|---|---|---|---|---|")
    for label, r in rows:
        added = r["peak_kib"] - r["baseline_kib"]
        print(f"| {label} | {r['baseline_kib'] / 1024:.0f} | {r['peak_kib'] / 1024:.0f} | {added / 1024:.0f} | "
              f"{added / one:.3f}x | {r['after_kib'] / 1024:.0f} | {r['seconds']:.1f} |")
    if not all(r["peak_reset"] for _, r in rows):
        print("\nwarning: /proc/self/clear_refs was not writable; peaks include import-time memory")


if __name__ == "__main__":
    main()
