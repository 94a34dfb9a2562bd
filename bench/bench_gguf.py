"""GGUF experts on CPU: forward time of Q8_0 and Q4_K against fp16 weights, and resident memory.

Not a test. One mid-size Wan expert (random weights from ``engine.testing.tiny``, dim 1024, ffn 4096,
4 layers, text_dim 4096 by default) is written three times: fp16 safetensors
(``engine.testing.tiny.write_tiny_dit``), Q8_0 GGUF and Q4_K GGUF (``engine.testing.tiny_gguf``, city96's
layout; Q4_K with random valid blocks, as ``gguf`` cannot quantize K types). Every model
computes in fp32 (the CPU default), so each Linear upcasts (fp16) or decodes (GGUF) its
weight at every call.

* Time: the three models live in one process; after a warm-up each, forwards alternate
  ``--repeats`` times at each token count; process CPU time, single-threaded by default
  (on this shared 2-core machine multi-threaded wall times swing by tens of percent).
  The ratio is the best CPU time against fp16's best.
* Memory: each file is loaded in a fresh subprocess, which runs one forward (so every
  weight page has been read) and then reads ``/proc/self/smaps``: the resident size of
  the file's own mapping (``Rss``) and how much of it became private anonymous memory
  (``Anonymous``, copy-on-write; 0 means the file's page cache is the only copy), and
  ``RssAnon`` of ``/proc/self/status`` before loading and after the forward.
* Decode speed: each block type decoding a [4096, 4096] weight into fp32, best of 3.

Usage: ``python bench/bench_gguf.py [--write bench/results_gguf.md]``
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

FORMATS = ("fp16", "Q8_0", "Q4_K")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--ffn", type=int, default=4096)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--tokens", type=int, nargs="+", default=[320, 3200],
                   help="token counts to time (5 latent frames; 320 = 5 x 8 x 8 patches, 3200 = 5 x 20 x 32)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--write", type=Path, help="write a markdown report here")
    p.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def mapping_kib(path: Path) -> dict:
    """Rss and Anonymous (KiB) of this process's mappings of ``path``, from /proc/self/smaps."""
    total = {"Rss": 0, "Anonymous": 0, "Size": 0}
    inside = False
    target = str(path.resolve())
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and not line.endswith(" kB"):
            inside = len(head) >= 6 and head[-1] == target
            continue
        if inside and head and head[0].rstrip(":") in total:
            total[head[0].rstrip(":")] += int(head[1])
    return total


def load_pack():
    from packpath import load_pack as load

    return load()


def write_models(folder: Path, args) -> dict[str, Path]:
    load_pack()
    from wan22duo.engine.testing import tiny, tiny_gguf

    sizes = dict(dim=args.dim, ffn_dim=args.ffn, num_layers=args.layers)
    return {"fp16": tiny.write_tiny_dit(folder / "expert_fp16.safetensors", storage="fp16", **sizes),
            "Q8_0": tiny_gguf.write_tiny_gguf(folder / "expert-Q8_0.gguf", qtype="Q8_0", **sizes),
            "Q4_K": tiny_gguf.write_tiny_gguf(folder / "expert-Q4_K.gguf", qtype="Q4_K", **sizes)}


def inputs(tokens: int):
    """Latents of 5 frames whose (h/2) x (w/2) patch grid holds ``tokens`` / 5 patches, as square as it goes."""
    import torch

    frames, per_frame = 5, tokens // 5
    if tokens % 5:
        raise SystemExit(f"--tokens {tokens}: use a multiple of 5 (5 latent frames)")
    gh = max(d for d in range(1, int(per_frame ** 0.5) + 1) if per_frame % d == 0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, frames, 2 * gh, 2 * (per_frame // gh), generator=g)
    context = torch.zeros(1, 512, 4096)
    context[:, :24] = torch.randn(1, 24, 4096, generator=g)
    return x, torch.tensor([700.0]), context


def measure(path: Path) -> dict:
    """In a fresh process: load, one forward, then the mapping's residency and anonymous memory."""
    import torch

    load_pack()
    from wan22duo.engine.weights.checkpoint import load_dit

    torch.set_num_threads(1)
    anon_before = status_kib("RssAnon")
    model = load_dit(path)
    anon_loaded = status_kib("RssAnon")
    x, t, context = inputs(320)
    with torch.no_grad():
        model(x, t, context)
    held = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"file": path.stat().st_size, "held": held, "map": mapping_kib(path), "anon_before": anon_before,
            "anon_loaded": anon_loaded, "anon_after": status_kib("RssAnon")}


def time_forwards(paths: dict[str, Path], args) -> dict:
    import torch

    load_pack()
    from wan22duo.engine.weights.checkpoint import load_dit

    torch.set_num_threads(args.threads)
    models = {name: load_dit(path) for name, path in paths.items()}
    out = {}
    for tokens in args.tokens:
        x, t, context = inputs(tokens)
        results = {}
        with torch.no_grad():
            for name, model in models.items():
                results[name] = model(x, t, context)  # warm-up, pages read
            times = {name: [] for name in models}
            for _ in range(args.repeats):
                for name, model in models.items():
                    start = time.process_time()
                    model(x, t, context)
                    times[name].append(time.process_time() - start)
        ref = results["fp16"]
        drift = {n: float((r - ref).norm() / ref.norm()) for n, r in results.items()}
        out[tokens] = {"times": times, "drift": drift, "shape": list(x.shape)}
    return out


def decode_speed() -> dict:
    import numpy as np
    import torch

    load_pack()
    from wan22duo.engine.weights import ggml
    from wan22duo.engine.testing import tiny_gguf

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4096, 4096)).astype(np.float32) * 0.02
    out = {}
    for kind in ggml.BLOCK_TYPES:
        raw = torch.from_numpy(np.ascontiguousarray(tiny_gguf.encode(w, kind, rng)))
        best = min(_timed(lambda: ggml.dequantize(raw, kind, (4096, 4096), torch.float32)) for _ in range(3))
        out[kind] = {"seconds": best, "bytes": raw.numel()}
    return out


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def report(args, paths, mem, timing, decode) -> str:
    import torch

    lines = ["## GGUF experts (engine/weights/gguf.py, engine/weights/ggml.py) against fp16 weights", ""]
    lines.append(f"CPU fp32 compute, torch {torch.__version__}, {args.threads} thread(s), 2 shared cores "
                 f"(load average {os.getloadavg()[0]:.1f}). Expert: t2v_a14b layout, dim {args.dim}, ffn {args.ffn}, "
                 f"{args.layers} layers, text_dim 4096, random weights; context 512 rows. Command: "
                 f"`python bench/bench_gguf.py --write bench/results_gguf.md`.")
    lines += ["", "### Forward time (process CPU seconds, best of runs; fp16 = safetensors fp16 upcast per call)", "",
              "| tokens (latent) | fp16 | Q8_0 | Q4_K | Q8_0 / fp16 | Q4_K / fp16 | rel. L2 vs fp16 output (Q8_0 / Q4_K) |",
              "|---|---|---|---|---|---|---|"]
    for tokens, r in timing.items():
        best = {n: min(v) for n, v in r["times"].items()}
        lines.append(f"| {tokens} ({'x'.join(map(str, r['shape'][2:]))}) | {best['fp16']:.2f} | {best['Q8_0']:.2f} | "
                     f"{best['Q4_K']:.2f} | {best['Q8_0'] / best['fp16']:.2f}x | {best['Q4_K'] / best['fp16']:.2f}x | "
                     f"{r['drift']['Q8_0']:.2g} / {r['drift']['Q4_K']:.2g} |")
    lines += ["", "All runs (s): " + "; ".join(
        f"{tokens} tokens: " + ", ".join(f"{n} {[round(v, 2) for v in ts]}"
                                         for n, ts in r["times"].items())
        for tokens, r in timing.items()),
        "", "The Q4_K expert's weights are random valid blocks, not a quantization of the fp16 weights, so its "
        "output drift against fp16 is meaningless (listed for completeness); Q8_0's is its real quantization "
        "error.", "",
        "### Resident memory (fresh process per file, after one forward)", "",
        "| format | file | tensors held by the model | file mapping resident (Rss) | of it private (Anonymous) | "
        "resident / file | RssAnon: before load / after load / after forward |",
        "|---|---|---|---|---|---|---|"]
    mib = 2 ** 20
    for name, m in mem.items():
        rss = m["map"]["Rss"] * 1024
        lines.append(f"| {name} | {m['file'] / mib:.1f} MiB | {m['held'] / mib:.1f} MiB | {rss / mib:.1f} MiB | "
                     f"{m['map']['Anonymous']} KiB | {rss / m['file']:.3f} | {m['anon_before'] / 1024:.0f} / "
                     f"{m['anon_loaded'] / 1024:.0f} / {m['anon_after'] / 1024:.0f} MiB |")
    lines += ["", "Resident = the file's own mapping in `/proc/self/smaps`: the quantized bytes stay the file's "
              "page cache (no anonymous copy). Anonymous memory grows by the forward's activations and, for "
              "GGUF, the decoded weight of one layer at a time with its decoding temporaries (freed after each "
              "layer, but kept by glibc's allocator for reuse, so RssAnon stays at that high-water mark).", "",
              "### Decoding a [4096, 4096] weight into fp32 (1 thread, best of 3)", "",
              "| type | bytes | ms | weights / s |", "|---|---|---|---|"]
    for kind, d in decode.items():
        lines.append(f"| {kind} | {d['bytes'] / mib:.1f} MiB | {d['seconds'] * 1e3:.0f} | "
                     f"{4096 * 4096 / d['seconds'] / 1e6:.0f} M |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_models(Path(tmp), args)
        mem = {}
        for name, path in paths.items():
            proc = subprocess.run([sys.executable, __file__, "--measure", str(path)], capture_output=True, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True)
            mem[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        timing = time_forwards(paths, args)
    decode = decode_speed()
    text = report(args, paths, mem, timing, decode)
    print(text)
    if args.write:
        args.write.write_text(text)


if __name__ == "__main__":
    main()
