"""Host RAM of a chained long video on the disk route, measured: peak RssAnon over 10 chained clips.

    python bench/long_video_ram.py [--clips 10] [--frames 81] [--width 832] [--height 480] [--overlap 5]
                                   [--base-dim 2] [--no-colour-match] [--no-save]

Runs the route of workflow 16 (``i2v_a14b_svi_disk``) in a **fresh process**: per clip, a LATENT of
``--frames`` frames goes through ``Wan22DuoVAEDecodeToDisk`` (clip 1 alone; each later clip appended to
the previous store with ``--overlap`` frames dropped and colour-matched to an anchor image), then
``Wan22DuoSaveVideoFromDisk`` writes the MP4. Every node output is kept alive to the end, as ComfyUI's
default (classic) cache keeps them: the stores, every clip's ``last_images`` and every latent.

What is measured: ``RssAnon`` from ``/proc/self/status`` (anonymous resident memory: tensors, the
allocator's heap; not the page cache the segment and video files pass through), sampled every 2 ms by
a thread, its maximum per clip and over the run, minus the baseline after loading the VAE.

What is not Wan: the latents are random (``randn``, the right shape for 832x480) and the VAE is the real
Wan 2.1 architecture at a small width (``--base-dim``, random weights, ``engine/testing/tiny_vae.py``),
run on the CPU, because the real VAE at 480p takes minutes per clip on this machine. The frames it
writes have the real size, so the bytes the route moves are the real ones. In a real run the VAE
decodes on the GPU: its activations are GPU memory (see the per-clip accelerator figures in
``bench/results_drift.md``), and host RAM is what is measured here plus the model weights' own share.
The IMAGE route's figures it is compared with are ``bench/drift.py``'s ``long_video_ram`` (computed).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))


def rss_anon() -> int:
    """Bytes of anonymous resident memory of this process (``RssAnon`` in /proc/self/status)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")


class PeakSampler:
    """Samples ``rss_anon`` on a thread; ``take()`` returns the maximum since the last ``take()``."""

    def __init__(self, interval: float = 0.002):
        self.interval, self.peak, self._stop = interval, rss_anon(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_anon())
            time.sleep(self.interval)

    def take(self) -> int:
        peak, self.peak = max(self.peak, rss_anon()), rss_anon()
        return peak

    def stop(self):
        self._stop.set()
        self.thread.join()


def child(args) -> dict:
    import torch

    from packpath import load_pack

    load_pack()
    from wan22duo.engine.testing.tiny_vae import write_tiny_vae
    from wan22duo.nodes import _comfy
    from wan22duo.nodes.frames import Wan22DuoSaveVideoFromDisk, Wan22DuoVAEDecodeToDisk
    from wan22duo.nodes.loaders import Wan22DuoVAELoader

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="wan22duo_ram_"))
    _comfy.temp_directory = lambda: str(work)  # segments and the MP4 go here, not to the system temp root
    vae = Wan22DuoVAELoader().load(str(write_tiny_vae(work / "vae.safetensors", "2.1", base_dim=args.base_dim)),
                                   "fp32", "cpu")["result"][0]
    node = Wan22DuoVAEDecodeToDisk()
    g = torch.Generator().manual_seed(0)
    anchor = torch.rand(1, args.height, args.width, 3, generator=g)
    latent_frames = (args.frames - 1) // 4 + 1
    node.decode(vae, {"samples": torch.randn(1, 16, 2, 2, 2, generator=g)}, 0, 64)  # warm-up: load the VAE
    sampler = PeakSampler()
    baseline = sampler.take()
    if args.vae_only:  # the VAE's own CPU working memory: one clip decoded by decode_stream, every frame dropped
        module = vae.acquire()
        samples = torch.randn(1, 16, latent_frames, args.height // 8, args.width // 8, generator=g)
        t0 = time.perf_counter()
        for _ in module.decode_stream(samples, output_device="cpu"):
            pass
        row = {"peak": sampler.take() - baseline, "seconds": time.perf_counter() - t0}
        sampler.stop()
        return {"baseline": baseline, "vae_only": row, "torch": torch.__version__, "base_dim": args.base_dim}
    kept, store, rows = [], None, []  # kept: every output, as ComfyUI's classic cache keeps them
    for clip in range(args.clips):
        t0 = time.perf_counter()
        samples = {"samples": torch.randn(1, 16, latent_frames, args.height // 8, args.width // 8, generator=g)}
        match = "anchor" if clip and args.colour_match else "off"
        store, last = node.decode(vae, samples, 0, 64, previous_frames=store, overlap=args.overlap if clip else 0,
                                  colour_match=match, anchor_image=anchor)
        kept += [samples, store, last]
        rows.append({"clip": clip + 1, "frames": store.frames, "peak": sampler.take() - baseline,
                     "seconds": time.perf_counter() - t0})
        print(json.dumps({"progress": rows[-1]}), flush=True)
    save = None
    if args.save:
        t0 = time.perf_counter()
        result = Wan22DuoSaveVideoFromDisk().save(store, 16.0, "video/ram_bench")
        record = result["ui"]["images"][0]
        video = work / record["subfolder"] / record["filename"]
        save = {"peak": sampler.take() - baseline, "seconds": time.perf_counter() - t0,
                "video_bytes": video.stat().st_size}
    sampler.stop()
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    disk = sum(s.path.stat().st_size for s in store.segments)
    return {"baseline": baseline, "clips": rows, "save": save, "vm_hwm": hwm, "segment_bytes": disk,
            "frames": store.frames, "torch": torch.__version__, "base_dim": args.base_dim}


def format_result(r: dict, args) -> str:
    from drift import long_video_ram

    g = lambda n: f"{n / 1024 ** 3:.2f} GiB"  # noqa: E731
    m = lambda n: f"{n / 1024 ** 2:.0f} MiB"  # noqa: E731
    image = long_video_ram(args.clips, args.frames, args.width, args.height, args.overlap)
    peak = max([c["peak"] for c in r["clips"]] + ([r["save"]["peak"]] if r["save"] else []))
    lines = [
        f"Disk route, {args.clips} chained {args.frames}-frame {args.width}x{args.height} clips ({r['frames']} frames), "
        f"clips 2-{args.clips} colour-matched to an anchor: " if args.colour_match else
        f"Disk route, {args.clips} chained {args.frames}-frame {args.width}x{args.height} clips ({r['frames']} frames): ",
        "",
        "| clip | frames on disk | peak RssAnon above baseline | seconds |",
        "|---|---|---|---|",
    ]
    lines += [f"| {c['clip']} | {c['frames']} | {m(c['peak'])} | {c['seconds']:.0f} |" for c in r["clips"]]
    if r["save"]:
        lines.append(f"| save MP4 (H.264, {r['save']['video_bytes'] / 1024 ** 2:.0f} MiB) | {r['frames']} | "
                     f"{m(r['save']['peak'])} | {r['save']['seconds']:.0f} |")
    lines += [
        "",
        f"Peak over the run: **{m(peak)}** above the baseline ({m(r['baseline'])} RssAnon: Python, torch and the "
        f"VAE); segment files on disk {g(r['segment_bytes'])} (8-bit RGB). VmHWM (peak RSS including file pages) "
        f"{m(r['vm_hwm'])}. Measured by `python bench/long_video_ram.py` (torch {r['torch']}, one CPU thread, "
        f"VAE base_dim {r['base_dim']}).",
        "",
        f"The IMAGE route for the same video (computed, `python bench/drift.py --memory`): {g(image['cached_total'])} "
        f"under ComfyUI's classic cache, {g(image['uncached_peak'])} with `--cache-none`, and "
        f"{g(image['final'])} for the final video as one IMAGE.",
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=10)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--overlap", type=int, default=5)
    parser.add_argument("--base-dim", type=int, default=2, help="VAE channel width (real Wan 2.1: 96)")
    parser.add_argument("--no-colour-match", dest="colour_match", action="store_false")
    parser.add_argument("--no-save", dest="save", action="store_false")
    parser.add_argument("--vae-only", action="store_true",
                        help="only the VAE's working memory: decode one clip with decode_stream, keep no frame")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps({"result": child(args)}), flush=True)
        return
    # a fresh process: nothing allocated before (imports, other benchmarks) counts in its peak
    command = [sys.executable, __file__, "--child"] + [a for a in (argv if argv is not None else sys.argv[1:])]
    result = None
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        for line in proc.stdout:
            message = json.loads(line)
            if "progress" in message:
                c = message["progress"]
                print(f"clip {c['clip']}: {c['frames']} frames on disk, peak {c['peak'] / 1024 ** 2:.0f} MiB above "
                      f"baseline, {c['seconds']:.0f} s", flush=True)
            else:
                result = message["result"]
    if proc.returncode or result is None:
        raise SystemExit(f"the measuring process failed (exit {proc.returncode})")
    if args.vae_only:
        v = result["vae_only"]
        print(f"VAE alone (base_dim {result['base_dim']}), one {args.frames}-frame {args.width}x{args.height} clip by "
              f"decode_stream, frames dropped: peak RssAnon {v['peak'] / 1024 ** 2:.0f} MiB above the baseline "
              f"({result['baseline'] / 1024 ** 2:.0f} MiB), {v['seconds']:.0f} s (torch {result['torch']})")
        return
    print(format_result(result, args))


if __name__ == "__main__":
    main()
