"""Print how many bytes sequence parallel moves per sampling step (the README's table).

    python scripts/parallel_traffic.py

For the real model sizes (T2V/I2V-A14B: dim 5120, 40 layers; TI2V-5B: dim 3072, 30
layers) and the official video sizes, it counts with ``engine.parallel.sequence.step_bytes``
(the formula the gloo test checks against the bytes that really went through the
collectives): bf16 activations, batch 1, two forwards per step (CFG), at 2, 4 and 8
ranks, and the seconds the transfers alone take per step at a few link speeds. The
all-to-alls are not overlapped with compute, so these seconds add to each step.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from packpath import load_pack  # noqa: E402

RANKS = (2, 4, 8)
# (label, family, frames, height, width)
VIDEOS = (("A14B 480p (832x480, 81 frames)", "a14b", 81, 480, 832),
          ("A14B 720p (1280x720, 81 frames)", "a14b", 81, 720, 1280),
          ("TI2V-5B 720p (1280x704, 121 frames)", "ti2v_5b", 121, 704, 1280))
MODELS = {"a14b": dict(dim=5120, ffn_dim=13824, num_layers=40, in_dim=16, out_dim=16),
          "ti2v_5b": dict(dim=3072, ffn_dim=14336, num_layers=30, in_dim=48, out_dim=48)}
# GB/s one way per GPU: 100 Gb/s Ethernet or InfiniBand, 400 Gb/s InfiniBand, PCIe 4.0 x16 (nominal)
LINKS = (("100 Gb/s", 12.5), ("400 Gb/s", 50.0), ("PCIe 4 x16", 32.0))


def rows() -> list[str]:
    load_pack()
    from wan22duo.engine.model.dit import WanConfig
    from wan22duo.engine.model.geometry import latent_shape
    from wan22duo.engine.parallel.sequence import step_bytes

    out = ["| video | tokens | ranks | GB sent per rank per step | " + " | ".join(f"s at {n}" for n, _ in LINKS) + " |",
           "|---|---|---|---|" + "---|" * len(LINKS)]
    for label, family, frames, height, width in VIDEOS:
        _, _, t, h, w = latent_shape(family, frames, height, width)
        tokens = t * (h // 2) * (w // 2)
        config = WanConfig(**MODELS[family])
        for ranks in RANKS:
            gb = step_bytes(config, tokens, ranks) / 1e9
            seconds = " | ".join(f"{gb / speed:.2f}" for _, speed in LINKS)
            out.append(f"| {label} | {tokens} | {ranks} | {gb:.1f} | {seconds} |")
    return out


if __name__ == "__main__":
    print("\n".join(rows()))
