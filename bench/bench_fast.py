"""CPU time per sampling step of the speed options against eager two-pass CFG, on the mid-size bench model.

Not a test. The model is ``bench/bench_sampling.py``'s expert (dim 1024, 8 layers,
ffn 4096, random weights, fp32) at its latent (1x16x5x16x16, 320 tokens) with 512-row
contexts; one step is ``engine.sampling.loop.guided_velocity`` at cfg 5 (conditional and
unconditional pass). Configurations:

* ``eager, two passes``: the two passes one after the other (the behaviour before batched guidance);
* ``eager, batched``: one forward of batch 2 (``engine.sampling.guidance``, the default now);
* ``compile, batched``: the same with the blocks compiled by inductor (``engine.sampling.fast``).

Method: one warm-up step per configuration (the compile row's includes compiling,
unless inductor's on-disk cache already holds the graph from an earlier run), then ``--rounds`` rounds that run every configuration once, in turn, so
load changes on this shared machine hit all of them alike. Per step the *thread CPU
time* is recorded (single-threaded torch, ``--threads 1``: CPU time does not grow when
the process is descheduled) together with wall time; the table gives minimum and
median.

``--fp8-matmul`` adds a one-matmul measurement of ``torch._scaled_mm`` against the
upcast on this CPU (why fp8 matmul stays a GPU option).

Usage: ``python bench/bench_fast.py [--rounds 5] [--write bench/results_fast.md]``
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_suite  # noqa: E402  (imports the pack)
import torch  # noqa: E402

from wan22duo.engine.sampling import fast, guidance  # noqa: E402
from wan22duo.engine.sampling.loop import guided_velocity  # noqa: E402

CONFIGS = [("eager, two passes", "off", False), ("eager, batched", "off", True),
           ("compile (inductor), batched", "inductor", True)]


def step(model, data, compile_mode, batched):
    fast.apply_fast_options(model, compile=compile_mode)
    previous = guidance.set_batched_guidance(batched)
    try:
        cpu, wall = time.thread_time(), time.perf_counter()
        with torch.no_grad():
            out = guided_velocity(model, *data, gpu_suite.CFG)
        return time.thread_time() - cpu, time.perf_counter() - wall, out
    finally:
        guidance.set_batched_guidance(previous)


def fp8_matmul_micro(n: int = 256) -> tuple[float, float]:
    from wan22duo.engine.model.ops import fp8_matmul, quantize_fp8

    x = torch.randn(n, n)
    w, s = quantize_fp8(torch.randn(n, n) / n ** 0.5, torch.float8_e4m3fn)
    times = []
    for fn in (lambda: fp8_matmul(x, w, s), lambda: torch.nn.functional.linear(x, w.float() * s)):
        fn()
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    return times[0], times[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--fp8-matmul", action="store_true")
    p.add_argument("--write", type=Path)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    case = gpu_suite.cases("mid")[0]
    model = gpu_suite.random_model(case.config, torch.device("cpu"), torch.float32)
    data = gpu_suite.inputs(case, torch.device("cpu"))
    cpu = {name: [] for name, _, _ in CONFIGS}
    wall = {name: [] for name, _, _ in CONFIGS}
    first, outs = {}, {}
    for name, mode, batched in CONFIGS:
        c, w, outs[name] = step(model, data, mode, batched)
        first[name] = w
    for _ in range(args.rounds):
        for name, mode, batched in CONFIGS:
            c, w, _ = step(model, data, mode, batched)
            cpu[name].append(c)
            wall[name].append(w)
    base = min(cpu[CONFIGS[0][0]])
    ref = outs[CONFIGS[0][0]]
    lines = [f"Model: {case.label}, {case.tokens} tokens, 512-row contexts, cfg {gpu_suite.CFG:g}, fp32, "
             f"{args.threads} thread(s), torch {torch.__version__}; {args.rounds} alternating rounds after one "
             "warm-up step each. Command: `python bench/bench_fast.py " + " ".join(sys.argv[1:]) + "`.",
             "",
             "| configuration | CPU s/step min | median | wall s/step min | median | vs eager two passes (CPU min) "
             "| warm-up step wall (s) | rel. L2 to two passes |",
             "|---|---|---|---|---|---|---|---|"]
    for name, _, _ in CONFIGS:
        rel = float((outs[name] - ref).norm() / ref.norm())
        lines.append(f"| {name} | {min(cpu[name]):.3f} | {statistics.median(cpu[name]):.3f} | {min(wall[name]):.3f} | "
                     f"{statistics.median(wall[name]):.3f} | {min(cpu[name]) / base:.3f}x | {first[name]:.1f} | "
                     f"{rel:.1e} |")
    if args.fp8_matmul:
        f8, up = fp8_matmul_micro()
        lines += ["", f"fp8 matmul on this CPU, one 256x256x256 product: torch._scaled_mm {f8 * 1e3:.1f} ms CPU, "
                      f"upcast + F.linear {up * 1e3:.2f} ms ({f8 / up:.0f}x slower)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        args.write.write_text("# Speed options on CPU (`bench/bench_fast.py`)\n\n" + __doc__.split("\n\n", 1)[1]
                              .split("Usage:")[0].strip() + "\n\n" + text, encoding="utf-8")


if __name__ == "__main__":
    main()
