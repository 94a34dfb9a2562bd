"""One DiT forward step: our WanModel against diffusers' WanTransformer3DModel (CPU, fp32).

Not a test. Both models get the same random weights (a mid-size Wan config written by
``engine.testing.tiny``), the same latents, timestep and 512-row context.

* Time: both models live in this process; after one warm-up each, forwards alternate
  (ours, diffusers, ours, ...) ``--repeats`` times. Process CPU time and wall time are
  recorded; the ratio reported is of the minimum CPU time (the least disturbed run),
  with ``--threads 1`` by default: on a shared 2-core machine, multi-threaded wall times
  swing by 50 % from run to run as OpenMP threads wait on descheduled siblings.
* Peak memory: each model runs in a fresh subprocess (``--measure ours|diffusers``)
  with ``MALLOC_MMAP_THRESHOLD_`` fixed so freed buffers go back to the OS and RSS
  follows live memory. After loading and one warm-up forward (so every weight page
  is resident for both), the subprocess notes its RSS, resets the kernel's high-water
  mark (``/proc/self/clear_refs`` = 5) and runs one forward; the forward's peak is
  ``VmHWM - RSS before``. The subprocess also reports ``ru_maxrss`` over its whole
  life (load included) minus its RSS after imports.

Usage: ``.venv/bin/python bench/bench_dit.py [--write bench/results_dit.md]``
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="t2v_a14b", choices=["t2v_a14b", "i2v_a14b", "ti2v_5b"])
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--ffn", type=int, default=4096)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--frames", type=int, default=5)
    p.add_argument("--height", type=int, default=40, help="latent height")
    p.add_argument("--width", type=int, default=64, help="latent width")
    p.add_argument("--per-token", action="store_true", help="TI2V-style [B, L] timestep with frame 0 at t=0")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads (timing and memory runs)")
    p.add_argument("--write", type=Path, help="write a markdown report here")
    p.add_argument("--measure", choices=["ours", "diffusers"], help=argparse.SUPPRESS)
    p.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def rss_kib(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def make_inputs(args, in_dim: int):
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, in_dim, args.frames, args.height, args.width, generator=g)
    context = torch.randn(1, 512, 4096, generator=g)
    if args.per_token:
        tokens = args.frames * (args.height // 2) * (args.width // 2)
        t = torch.full((1, tokens), 937)
        t[:, : tokens // args.frames] = 0
    else:
        t = torch.tensor([937])
    return x, t, context


def build(which: str, weights: Path):
    from packpath import load_pack

    load_pack()
    from wan22duo.engine.weights import checkpoint

    ours = checkpoint.load_dit(weights)
    if which == "ours":
        return ours, lambda x, t, c: ours(x, t, c)
    from test_dit_parity import diffusers_model

    ref = diffusers_model(weights, ours.config)
    del ours
    return ref, lambda x, t, c: ref(x, t, c, return_dict=False)[0]


def measure(args) -> dict:
    """Runs in a fresh subprocess: memory of one model's load and forward."""
    import resource

    from packpath import load_pack

    load_pack()
    import test_dit_parity  # noqa: F401  (diffusers and torch imported before the baseline, for both)
    import torch

    torch.set_num_threads(args.threads)
    after_imports = rss_kib()
    model, forward = build(args.measure, args.weights)
    x, t, context = make_inputs(args, model.config.in_channels if args.measure == "diffusers" else model.config.in_dim)
    with torch.no_grad():
        forward(x, t, context)  # warm-up: every weight page resident, kernels initialised
        before = rss_kib()
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        start = time.perf_counter()
        forward(x, t, context)
        seconds = time.perf_counter() - start
        peak = rss_kib("VmHWM")
    return {"forward_peak_mib": (peak - before) / 1024, "resident_before_mib": before / 1024,
            "whole_run_peak_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - after_imports) / 1024,
            "seconds": seconds}


def run_measure(args, which: str, weights: Path) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    cmd = [sys.executable, __file__, "--measure", which, "--weights", str(weights), "--variant", args.variant,
           "--threads", str(args.threads),
           "--frames", str(args.frames), "--height", str(args.height), "--width", str(args.width)]
    if args.per_token:
        cmd.append("--per-token")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"measuring {which} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def time_both(args, weights: Path) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    ours, run_ours = build("ours", weights)
    _, run_ref = build("diffusers", weights)
    x, t, context = make_inputs(args, ours.config.in_dim)
    cpu, wall = {"ours": [], "diffusers": []}, {"ours": [], "diffusers": []}
    with torch.no_grad():
        a, b = run_ours(x, t, context), run_ref(x, t, context)
        rel = ((a - b).norm() / b.norm()).item()
        for _ in range(args.repeats):
            for name, fn in (("ours", run_ours), ("diffusers", run_ref)):
                c0, w0 = time.process_time(), time.perf_counter()
                fn(x, t, context)
                cpu[name].append(time.process_time() - c0)
                wall[name].append(time.perf_counter() - w0)
    return {"cpu": cpu, "wall": wall, "rel_l2": rel, "tokens": a.shape[2] * a.shape[3] * a.shape[4] // 4}


def report(args, timing: dict, mem: dict, command: str) -> str:
    import torch

    best = {k: min(v) for k, v in timing["cpu"].items()}
    med = {k: statistics.median(v) for k, v in timing["wall"].items()}
    m_o, m_d = mem["ours"], mem["diffusers"]
    rows = [
        ("forward CPU time, best of runs (s)", f"{best['ours']:.2f}", f"{best['diffusers']:.2f}",
         best["ours"] / best["diffusers"]),
        ("forward wall time, median (s)", f"{med['ours']:.2f}", f"{med['diffusers']:.2f}",
         med["ours"] / med["diffusers"]),
        ("forward peak memory above resident (MiB)", f"{m_o['forward_peak_mib']:.0f}",
         f"{m_d['forward_peak_mib']:.0f}", m_o["forward_peak_mib"] / m_d["forward_peak_mib"]),
        ("whole-run peak RSS: load + 2 forwards (MiB)", f"{m_o['whole_run_peak_mib']:.0f}",
         f"{m_d['whole_run_peak_mib']:.0f}", m_o["whole_run_peak_mib"] / m_d["whole_run_peak_mib"]),
    ]
    t_mode = "per-token [1, L] (frame 0 at t=0)" if args.per_token else "[1] (uniform)"
    lines = [
        f"### DiT forward vs diffusers: {args.variant}, dim {args.dim}, ffn {args.ffn}, {args.layers} layers, "
        f"{timing['tokens']} tokens, t {t_mode}",
        "",
        f"CPU fp32, torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} cores (shared, load "
        f"average {os.getloadavg()[0]:.1f}). Outputs agree to rel L2 {timing['rel_l2']:.1e}. {args.repeats} "
        f"alternating runs each; CPU seconds ours {[round(v, 2) for v in timing['cpu']['ours']]}, diffusers "
        f"{[round(v, 2) for v in timing['cpu']['diffusers']]}.",
        "",
        "| measure | ours | diffusers | ratio |",
        "|---|---|---|---|",
        *[f"| {name} | {o} | {d} | {r:.2f}x |" for name, o, d, r in rows],
        "",
        "Memory: each model in a fresh subprocess with `MALLOC_MMAP_THRESHOLD_=131072`; after load and a warm-up "
        "forward, RSS is noted, the kernel's peak-RSS mark is reset (`/proc/self/clear_refs` = 5) and one forward "
        "runs; forward peak = `VmHWM` - RSS before. Whole-run peak = `ru_maxrss` - RSS after imports (our weights are "
        "a file memory map, diffusers' are loaded with `safetensors.torch.load_file` into a randomly initialised "
        "model, as `load_state_dict` needs).",
        "",
        f"Command: `{command}`",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args)))
        return
    from packpath import load_pack

    load_pack()
    from wan22duo.engine.testing import tiny

    with tempfile.TemporaryDirectory() as tmp:
        weights = tiny.write_tiny_dit(Path(tmp) / "dit.safetensors", args.variant, dim=args.dim, ffn_dim=args.ffn,
                                      num_layers=args.layers)
        mem = {which: run_measure(args, which, weights) for which in ("ours", "diffusers")}
        timing = time_both(args, weights)
    command = ".venv/bin/python bench/bench_dit.py " + " ".join(a for a in (argv or sys.argv[1:]))
    text = report(args, timing, mem, command.strip())
    print(text)
    if args.write:
        with open(args.write, "a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
