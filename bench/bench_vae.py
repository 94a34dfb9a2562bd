"""Decode time and peak memory of our Wan VAE against diffusers' AutoencoderKLWan.

Every measurement runs in a fresh subprocess that builds one implementation with
real channel widths and random weights (the same seeded weights for both, order-1
activations as in ``engine/testing/tiny_vae.py``), creates a random latent, then:

* returns freed heap to the OS (``malloc_trim(0)``) and resets the kernel's peak-RSS
  counter (``echo 5 > /proc/self/clear_refs``) so model construction does not count,
  then reads the baseline ``VmRSS``;
* after one warm-up decode of a 2x2-cell, 2-latent-frame latent (which loads the
  conv kernels and thread pools, a fixed per-process cost), times one ``decode`` call
  (wall clock);
* reads ``VmHWM`` (peak RSS) from ``/proc/self/status``; "extra" = peak - baseline,
  which includes the decoded video itself (reported separately as "output").

Usage (from the repository root):

    .venv/bin/python bench/bench_vae.py                       # default matrix below
    .venv/bin/python bench/bench_vae.py --version 2.1 --size 64 --frames 9 33 81
    .venv/bin/python bench/bench_vae.py --worker ours 2.1 9 64    # one measurement, JSON line
    .venv/bin/python bench/bench_vae.py --timing 2.1 9 64 3       # same-process time comparison

Memory is measured one fresh process per number; time is better compared with
``--timing``, which builds both implementations in one process and alternates their
decodes (the machine is shared, so single timings are noisy).

Results are appended to ``bench/results_vae.md`` (``--out``).
"""
import argparse
import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))

REAL_DIMS = {"2.1": (96, 96, 16), "2.2": (160, 256, 48)}  # base_dim, dec_dim, z_dim


def _status_mib(field: str) -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", text).group(1)) / 1024


def _reset_peak() -> None:
    """Return freed heap to the OS (so neither side reuses memory freed during setup), reset VmHWM."""
    import ctypes

    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def _random_state(version: str) -> dict:
    import torch

    from packpath import load_pack

    load_pack()
    from wan22duo.engine.weights.vae_checkpoint import build_vae
    from wan22duo.engine.model.vae.model import VAEConfig
    from wan22duo.engine.testing.tiny_vae import _init

    base, dec, z = REAL_DIMS[version]
    shapes = {k: tuple(v.shape) for k, v in build_vae(VAEConfig(version, base, dec, z)).state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    return {k: _init(k, s, gen) for k, s in sorted(shapes.items())}, VAEConfig(version, base, dec, z)


def _build(impl: str, version: str, state_config=None):
    """Return a callable ``decode(latent) -> video`` for one implementation."""
    import torch

    state, config = state_config or _random_state(version)
    if impl == "ours":
        from wan22duo.engine.weights.vae_checkpoint import build_vae

        model = build_vae(config)
        model.load_state_dict(state, strict=True, assign=True)
        model.eval().requires_grad_(False)
        return model.decode
    from test_vae_diffusers import diffusers_vae_from_state

    model = diffusers_vae_from_state(state, version, config.base_dim, config.dec_dim)

    def decode(latent):
        with torch.no_grad():
            return model.decode(latent).sample

    return decode


def worker(impl: str, version: str, frames: int, size: int) -> dict:
    import gc

    import torch

    decode = _build(impl, version)
    stride = 8 if version == "2.1" else 16
    z_dim = REAL_DIMS[version][2]
    latent_t = (frames - 1) // 4 + 1
    latent = torch.randn(1, z_dim, latent_t, size // stride, size // stride, generator=torch.Generator().manual_seed(1))
    decode(torch.randn(1, z_dim, 2, 2, 2))  # warm-up: loads kernels and thread pools, not timed or counted
    gc.collect()
    _reset_peak()
    baseline = _status_mib("VmRSS")
    start = time.perf_counter()
    video = decode(latent)
    seconds = time.perf_counter() - start
    peak = _status_mib("VmHWM")
    assert video.shape == (1, 3, frames, size, size), video.shape
    return {
        "impl": impl, "version": version, "frames": frames, "size": size, "seconds": round(seconds, 2),
        "baseline_mib": round(baseline, 1), "peak_mib": round(peak, 1), "extra_mib": round(peak - baseline, 1),
        "output_mib": round(video.numel() * video.element_size() / 2**20, 1), "threads": torch.get_num_threads(),
    }


def timing_worker(version: str, frames: int, size: int, repeats: int) -> dict:
    """Both implementations in one process, decodes alternated; min and median seconds of each.

    Seconds are single-thread process CPU time: on a shared 2-core machine wall time
    with two threads swings by tens of percent from run to run, CPU time far less.
    """
    import statistics

    import torch

    torch.set_num_threads(1)

    state_config = _random_state(version)
    decoders = {impl: _build(impl, version, state_config) for impl in ("ours", "diffusers")}
    del state_config
    stride = 8 if version == "2.1" else 16
    z_dim = REAL_DIMS[version][2]
    latent = torch.randn(1, z_dim, (frames - 1) // 4 + 1, size // stride, size // stride,
                         generator=torch.Generator().manual_seed(1))
    times = {impl: [] for impl in decoders}
    for impl, decode in decoders.items():
        decode(torch.randn(1, z_dim, 2, 2, 2))  # warm-up
    for _ in range(repeats):
        for impl, decode in decoders.items():
            start = time.process_time()
            decode(latent)
            times[impl].append(time.process_time() - start)
    return {"version": version, "frames": frames, "size": size, "repeats": repeats,
            **{f"{impl}_min": round(min(t), 2) for impl, t in times.items()},
            **{f"{impl}_median": round(statistics.median(t), 2) for impl, t in times.items()}}


def run_one(impl: str, version: str, frames: int, size: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", impl, version, str(frames), str(size)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(result), flush=True)
    return result


def report(results: list[dict], command: str) -> str:
    import torch

    lines = [
        f"### VAE decode, Wan {results[0]['version']} real widths, random weights, {results[0]['size']}x{results[0]['size']}",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.processor() or platform.machine()}, {_cpu_name()}, torch {torch.__version__}, "
        f"{results[0]['threads']} threads; shared with other jobs, so times are noisy.",
        "",
        "| impl | frames | decode s | extra peak RSS MiB | of which output MiB | extra minus output MiB |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['impl']} | {r['frames']} | {r['seconds']} | {r['extra_mib']} | {r['output_mib']} | "
            f"{round(r['extra_mib'] - r['output_mib'], 1)} |"
        )
    by = {(r["impl"], r["frames"]): r for r in results}
    ratios = []
    for (impl, frames), r in sorted(by.items()):
        ref = by.get(("diffusers", frames))
        if impl == "ours" and ref:
            ratios.append(
                f"- {frames} frames: time {r['seconds'] / ref['seconds']:.2f}x, "
                f"extra memory {r['extra_mib'] / max(ref['extra_mib'], 0.1):.2f}x of diffusers"
            )
    return "\n".join(lines + [""] + ratios + [""])


def _cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        return re.search(r"model name\s*:\s*(.*)", text).group(1).strip()
    except (OSError, AttributeError):
        return "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs=4, metavar=("IMPL", "VERSION", "FRAMES", "SIZE"))
    parser.add_argument("--version", default="2.1", choices=sorted(REAL_DIMS))
    parser.add_argument("--size", type=int, default=64, help="square frame size in pixels")
    parser.add_argument("--frames", type=int, nargs="+", default=[9, 33, 81])
    parser.add_argument("--impl", nargs="+", default=["ours", "diffusers"], choices=["ours", "diffusers"])
    parser.add_argument("--timing", nargs=4, metavar=("VERSION", "FRAMES", "SIZE", "REPEATS"),
                        help="only the same-process alternating time comparison")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results_vae.md")
    args = parser.parse_args()
    if args.worker:
        impl, version, frames, size = args.worker
        print(json.dumps(worker(impl, version, int(frames), int(size))))
        return
    if args.timing:
        version, frames, size, repeats = args.timing
        result = timing_worker(version, int(frames), int(size), int(repeats))
        print(json.dumps(result))
        with open(args.out, "a") as f:
            f.write(f"Time, same process, alternating (`python bench/bench_vae.py --timing {' '.join(args.timing)}`): "
                    f"{json.dumps(result)}\n\n")
        return
    results = [run_one(impl, args.version, f, args.size) for f in args.frames for impl in args.impl]
    command = "python bench/bench_vae.py " + " ".join(sys.argv[1:])
    with open(args.out, "a") as f:
        f.write(report(results, command.strip()) + "\n")
    print(f"appended to {args.out}")


if __name__ == "__main__":
    main()
