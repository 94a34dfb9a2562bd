"""What a continuation costs outside the sampler: the conditioning encode of the extend and keyframe nodes.

The sampler's cost per clip does not depend on the overlap (every latent frame, known or
kept, goes through the DiT), so an extension of L frames with overlap k costs a full clip for
L - k new frames. What does change with the overlap is the VAE work of the conditioning node:

* ``Wan22DuoTI2VExtend`` encodes only the ``overlap`` frames (the causal encoder needs nothing
  after the last kept latent frame), against the full clip for ``Wan22DuoTI2VKeyframes`` with an
  end image;
* ``Wan22DuoI2VExtend`` encodes the whole L-frame conditioning video whatever the overlap, as
  every I2V conditioning does.

This script times those node calls with the VAEs at their real channel widths (random
weights, fp32, CPU) on small frames, so the numbers show how the cost scales with frames, not
what a GPU takes at 720p. One process, one torch thread, best of ``--repeat`` (wall clock).

    python bench/bench_keyframes.py --size 64 --repeat 2 --write bench/results_keyframes.md
"""
import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

REAL_DIMS = {"2.1": (96, 96), "2.2": (160, 256)}  # base_dim, dec_dim


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64, help="frame width and height in pixels")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--write", type=Path, help="write a markdown table here")
    args = parser.parse_args(argv)

    from packpath import load_pack

    load_pack()
    import torch

    from wan22duo.engine.testing.tiny_vae import write_tiny_vae
    from wan22duo.nodes.keyframes import Wan22DuoI2VExtend, Wan22DuoTI2VExtend, Wan22DuoTI2VKeyframes
    from wan22duo.nodes.loaders import Wan22DuoVAELoader

    torch.set_num_threads(1)
    size = args.size
    g = torch.Generator().manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        vaes = {}
        for version, (base, dec) in REAL_DIMS.items():
            path = write_tiny_vae(Path(tmp) / f"wan_{version}_vae_real_widths.safetensors", version, base, dec)
            vaes[version] = Wan22DuoVAELoader().load(str(path), "fp32", "cpu")["result"][0]
            vaes[version].acquire()  # load once, outside the timings
        previous = torch.rand(17, size, size, 3, generator=g)
        text = [[torch.zeros(1, 4, 4096), {}]]
        for overlap in (1, 5, 9, 17):
            t = _best(lambda: Wan22DuoTI2VExtend().extend(vaes["2.2"], 121, overlap, previous_images=previous),
                      args.repeat)
            rows.append(("TI2V-5B extend, 121 frames", overlap, overlap, t))
        t = _best(lambda: Wan22DuoTI2VKeyframes().generate(vaes["2.2"], size, size, 121, 1,
                                                           start_image=previous[:1], end_image=previous[-1:]),
                  args.repeat)
        rows.append(("TI2V-5B first-last, 121 frames", "-", 121, t))
        for overlap in (1, 5, 17):
            t = _best(lambda: Wan22DuoI2VExtend().extend(text, text, vaes["2.1"], 81, overlap,
                                                         previous_images=previous), args.repeat)
            rows.append(("I2V-A14B extend, 81 frames", overlap, 81, t))
    cpu = platform.processor() or platform.machine()
    header = (f"Conditioning node time, VAE at real widths, random weights, fp32, CPU ({cpu}), 1 torch thread, "
              f"{size}x{size} frames, best of {args.repeat}, torch {torch.__version__}.\n\n"
              "| node call | overlap | frames encoded | seconds |\n|---|---|---|---|\n")
    table = header + "".join(f"| {name} | {k} | {frames} | {t:.2f} |\n" for name, k, frames, t in rows)
    print(table)
    if args.write:
        args.write.write_text("# Keyframe and continuation nodes: conditioning cost (bench/bench_keyframes.py)\n\n"
                              + table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
