"""Peak working memory of one VAE decode, the data ``engine.memory.estimates.vae_decode_bytes`` is fitted to.

Each measurement runs in a fresh subprocess that builds the Wan 2.1 or 2.2 VAE at its
real widths with random weights (``bench_vae._random_state``: seeded, order-1
activations) in the asked dtype, then:

* warms up with one small decode (kernels, thread pools: a per-process cost);
* ``gc.collect()``, ``malloc_trim(0)``, resets the kernel's peak-RSS counter
  (``echo 5 > /proc/self/clear_refs``) and reads the baseline ``VmRSS`` / ``RssAnon``;
* decodes once while a thread polls ``RssAnon`` (``/proc/self/status``) every 0.5 ms;
* reports ``anon``: the polled peak ``RssAnon`` minus its baseline (memory the process
  owns; file-backed pages such as library code do not count), and ``hwm``: ``VmHWM``
  minus the baseline ``VmRSS`` (the kernel's exact peak, which also counts file pages
  touched during the decode). The polled figure can miss a spike shorter than the
  poll interval; ``hwm`` cannot, so the fit bounds both.

The decoded video is assembled on the ``meta`` device by default (``--output meta``):
that measures the decode's own working set, which is what must fit on the GPU (the
node assembles the video on ComfyUI's intermediate device, the CPU). ``--output cpu``
includes the video, as ``bench_vae.py`` does.

Usage (repository root)::

    python bench/bench_vae_memory.py --worker 2.1 float32 5 64 64            # one JSON line
    python bench/bench_vae_memory.py --worker 2.1 float32 5 256 256 --tile 128 --overlap 64
    python bench/bench_vae_memory.py --matrix                                 # the results_memory.md table
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from bench_memory import AnonPeak, status_kib  # noqa: E402  (the same RssAnon poller and /proc reader)

REAL_DIMS = {"2.1": (96, 96, 16), "2.2": (160, 256, 48)}  # as bench_vae.py
MIB = 2 ** 20

# (version, dtype, frames, height, width[, tile, overlap]): the matrix recorded in bench/results_memory.md.
MATRIX = (
    [("2.1", "float32", 5, s, s) for s in (64, 96, 128, 192, 256)]
    + [("2.1", "float32", 5, 128, 256), ("2.1", "float32", 5, 256, 128), ("2.1", "float32", 13, 64, 64),
       ("2.1", "float32", 13, 128, 128)]
    + [("2.2", "float32", 5, s, s) for s in (64, 96, 128, 192, 256)]
    + [("2.2", "float32", 5, 128, 256), ("2.2", "float32", 13, 64, 64), ("2.2", "float32", 13, 128, 128)]
    + [("2.1", "bfloat16", 5, s, s) for s in (64, 128, 192)]
    + [("2.2", "bfloat16", 5, s, s) for s in (64, 128, 192)]
    + [("2.2", "float32", 5, 256, 128)]
    # added after the first pass: larger frames (does glibc's retention level off?), 384 px fp32 with 2 runs
    + [("2.1", "float32", 5, 384, 384), ("2.1", "bfloat16", 5, 256, 256), ("2.1", "bfloat16", 5, 384, 384),
       ("2.2", "bfloat16", 5, 256, 256)]
    # tiled: 2 x 2 tiles of 128 px with 64 px overlap (the tile's own decode plus the blending)
    + [("2.1", "float32", 5, 192, 192, 128, 64), ("2.2", "float32", 5, 192, 192, 128, 64)]
)


def worker(version: str, dtype_name: str, frames: int, height: int, width: int, tile: int, overlap: int,
           output: str, threads: int) -> dict:
    import torch

    from bench_vae import _random_state
    from wan22duo.engine.model.vae.tiling import Tiling
    from wan22duo.engine.weights.vae_checkpoint import build_vae

    torch.set_num_threads(threads)
    dtype = getattr(torch, dtype_name)
    state, config = _random_state(version)
    model = build_vae(config)
    model.load_state_dict(state, strict=True, assign=True)
    del state
    model = model.to(dtype).eval().requires_grad_(False)
    s = config.spatial_stride
    latent = torch.randn(1, config.z_dim, (frames - 1) // 4 + 1, height // s, width // s,
                         generator=torch.Generator().manual_seed(1))
    tiling = Tiling(tile, overlap) if tile else None
    model.decode(torch.randn(1, config.z_dim, 2, 2, 2), output_device=output)  # warm-up, not counted
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current VmRSS
    base_rss, base_file = status_kib("VmRSS"), status_kib("RssFile")
    start = time.perf_counter()
    with AnonPeak(interval=0.0005) as anon:
        video = model.decode(latent, tiling=tiling, output_device=output)
    seconds = time.perf_counter() - start
    hwm = status_kib("VmHWM")
    assert tuple(video.shape) == (1, 3, frames, height, width), video.shape
    return {
        "version": version, "dtype": dtype_name, "frames": frames, "height": height, "width": width,
        "tile": tile, "overlap": overlap if tile else 0, "output": output, "threads": threads,
        "seconds": round(seconds, 2),
        "anon_mib": round(anon.peak / MIB, 1), "hwm_mib": round((hwm - base_rss) / 1024, 1),
        "file_delta_mib": round((status_kib("RssFile") - base_file) / 1024, 1),
        "output_mib": round(video.numel() * 4 / MIB, 1) if output != "meta" else 0.0,
    }


def run_one(version, dtype, frames, height, width, tile=0, overlap=64, output="meta", threads=1,
            malloc="default") -> dict:
    """One worker process. ``malloc="mmap128k"`` sets ``MALLOC_MMAP_THRESHOLD_=131072``: every block
    above 128 KiB is its own mapping, unmapped when freed, so RSS follows the live tensors (glibc's
    default raises that threshold as blocks are freed, up to 32 MiB, and keeps freed heap memory: the
    same decode then measures tens of MiB more or less from run to run)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", version, dtype, str(frames), str(height),
           str(width), "--tile", str(tile), "--overlap", str(overlap), "--output", output, "--threads", str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if malloc == "mmap128k":
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT, env=env)
    result = {**json.loads(out.stdout.strip().splitlines()[-1]), "malloc": malloc}
    print(json.dumps(result), flush=True)
    return result


def _key(r: dict) -> tuple:
    return (r["version"], r["dtype"], r["frames"], r["height"], r["width"], r["tile"], r["overlap"], r["output"])


def report(runs: list[dict]) -> str:
    """Markdown table: per point the largest default-malloc peak, the live-tensor peak, the estimate."""
    import torch

    from wan22duo.engine.memory.estimates import vae_decode_bytes
    from wan22duo.engine.model.vae.model import VAEConfig

    points: dict = {}
    for r in runs:
        points.setdefault(_key(r), []).append(r)
    rows = ["| VAE | dtype | frames | H x W | tile | default malloc: peak MiB (max of n) | n | spread MiB "
            "| live tensors MiB | estimate MiB | estimate / peak | estimate / live | old estimate / peak |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, rs in points.items():
        version, dtype, frames, height, width, tile, overlap, _ = key
        default = [max(r["anon_mib"], r["hwm_mib"]) for r in rs if r["malloc"] == "default"]
        live = [max(r["anon_mib"], r["hwm_mib"]) for r in rs if r["malloc"] == "mmap128k"]
        config = VAEConfig(version, *REAL_DIMS[version])
        th, tw = (min(tile, height), min(tile, width)) if tile else (height, width)
        est = vae_decode_bytes(config, th, tw, getattr(torch, dtype)) / MIB
        # the estimate before this fit: pixels of the last stage x dec_dim x itemsize x 80, no fixed term
        old = (th * tw if version == "2.1" else th * tw // 4) * REAL_DIMS[version][1] * (4 if dtype == "float32" else 2)
        old = old * 80 / MIB
        peak = max(default) if default else float("nan")
        live_v = max(live) if live else float("nan")
        rows.append(f"| {version} | {dtype} | {frames} | {height} x {width} | {f'{tile}/{overlap}' if tile else '-'} "
                    f"| {peak:.1f} | {len(default)} | {max(default) - min(default) if default else 0:.1f} "
                    f"| {live_v:.1f} | {est:.1f} | {est / peak:.2f} | {est / live_v:.2f} | {old / peak:.2f} |")
    return "\n".join(rows)


def _points(runs: list[dict]) -> dict:
    """(version, itemsize) -> [(pixels of the decoded frame or tile, max peak of any run, live peak)]."""
    groups: dict = {}
    by_key: dict = {}
    for r in runs:
        by_key.setdefault(_key(r), []).append(r)
    for key, rs in by_key.items():
        version, dtype, frames, height, width, tile, *_ = key
        pixels = min(tile, height) * min(tile, width) if tile else height * width
        peak = max(max(r["anon_mib"], r["hwm_mib"]) for r in rs)
        live = max(max(r["anon_mib"], r["hwm_mib"]) for r in rs if r["malloc"] == "mmap128k")
        itemsize = 4 if dtype == "float32" else 2
        groups.setdefault((version, itemsize), []).append((pixels, peak, live))
    return groups


def fit(runs: list[dict], margin: float = 1.05) -> dict:
    """``engine.memory.estimates._VAE_DECODE_FIT`` from the runs: per pixel, ``margin`` x the least-squares
    slope of the live-tensor peaks (what grows with the frame); fixed, the least that makes
    ``fixed + per_pixel * pixels >= margin * peak`` at every point (peak: the largest of any run)."""
    result = {}
    for group, pts in sorted(_points(runs).items()):
        n = len(pts)
        mx = sum(p for p, _, _ in pts) / n
        my = sum(live for _, _, live in pts) / n
        slope = sum((p - mx) * (live - my) for p, _, live in pts) / sum((p - mx) ** 2 for p, _, _ in pts)
        per_pixel = math.ceil(margin * slope * MIB)
        fixed = max(math.ceil((margin * peak * MIB - per_pixel * p) / MIB) for p, peak, _ in pts)
        result[group] = (max(fixed, 0) * MIB, per_pixel)
    return result


def main() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    from packpath import load_pack

    load_pack()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", nargs=5, metavar=("VERSION", "DTYPE", "FRAMES", "HEIGHT", "WIDTH"))
    ap.add_argument("--matrix", action="store_true", help="run every point of MATRIX, one process each")
    ap.add_argument("--tile", type=int, default=0, help="tile size in px (0: whole frames)")
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--output", default="meta", choices=["meta", "cpu"], help="where the video is assembled")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="--matrix: default-malloc runs per point")
    ap.add_argument("--jsonl", type=Path, default=ROOT / "bench" / "results_vae_memory.jsonl",
                    help="--matrix appends every run here; --report reads it")
    ap.add_argument("--report", action="store_true", help="print the markdown table of --jsonl")
    ap.add_argument("--fit", action="store_true", help="print engine.memory.estimates._VAE_DECODE_FIT fitted to --jsonl")
    args = ap.parse_args()
    if args.worker:
        version, dtype, frames, height, width = args.worker
        print(json.dumps(worker(version, dtype, int(frames), int(height), int(width), args.tile, args.overlap,
                                args.output, args.threads)))
    elif args.matrix:
        for point in MATRIX:
            for malloc in ["mmap128k"] + ["default"] * args.repeats:
                result = run_one(*point, output=args.output, threads=args.threads, malloc=malloc)
                with open(args.jsonl, "a") as f:
                    f.write(json.dumps(result) + "\n")
    elif args.fit:
        runs = [json.loads(line) for line in args.jsonl.read_text().splitlines() if line.strip()]
        for (version, itemsize), (fixed, per_pixel) in fit(runs).items():
            print(f'    ("{version}", {itemsize}): ({fixed // MIB} * MIB, {per_pixel}),')
    elif args.report:
        print(report([json.loads(line) for line in args.jsonl.read_text().splitlines() if line.strip()]))
    else:
        ap.print_help()


if __name__ == "__main__":
    main()
