"""The README's "what runs on 8 / 12 / 16 / 24 GB" table, computed (not measured).

For each model, stored form and video size: the weight bytes of the real architecture
(counted from the model built on the meta device, fp8 files holding their Linear weights
in fp8 and the rest in 16 bits), the activation estimate of one bf16 forward with CFG
batched into one forward (``engine.sampling.guidance``'s default; ``--two-pass`` for two passes),
and per card the weight budget ``auto`` would give on an otherwise empty card (card -
0.5 GiB for the CUDA context - activations). The expert streams the blocks that do not
fit; when the batched activations leave too little, ``auto`` counts two passes instead
("(2 passes)"); "no" means even that is below what streaming needs (everything outside
the blocks plus two blocks in flight).

These are estimates: no GPU was available to measure them (bench/bench_gpu_memory.py
measures them when one is).

    python bench/memory_table.py
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

GIB = 1024 ** 3
CONTEXT = 0.5 * GIB  # CUDA context and ComfyUI's own allocations, roughly
CARDS = (8, 12, 16, 24)
ROWS = [  # model, stored form, video (w x h x frames)
    ("a14b", "fp8_scaled", (832, 480, 81)),
    ("a14b", "fp8_scaled", (1280, 720, 81)),
    ("a14b", "fp16", (832, 480, 81)),
    ("a14b", "fp16", (1280, 720, 81)),
    ("ti2v_5b", "fp16", (1280, 704, 121)),
    ("ti2v_5b", "fp16", (832, 480, 81)),
]
CONFIGS = {
    "a14b": dict(dim=5120, ffn_dim=13824, num_layers=40, in_dim=16, out_dim=16),
    "ti2v_5b": dict(dim=3072, ffn_dim=14336, num_layers=30, in_dim=48, out_dim=48),
}


def weight_bytes(model, stored: str) -> tuple[int, int, int]:
    """(total, largest block, outside the blocks) bytes in the stored form."""
    from wan22duo.engine.model.ops import CASTING_LAYERS

    def size(module) -> int:
        total = 0
        for sub in module.modules():
            for name, p in sub.named_parameters(recurse=False):
                fp8 = stored == "fp8_scaled" and isinstance(sub, CASTING_LAYERS) and name == "weight"
                total += p.numel() * (1 if fp8 else 2)
        return total

    blocks = [size(b) for b in model.blocks]
    total = size(model)
    return total, max(blocks), total - sum(blocks)


def rows(passes: int = 2) -> list[dict]:
    """``passes``: guidance passes per forward (2: engine.sampling.guidance's batched CFG, the default; 1: one after
    the other, as with ``set_batched_guidance(False)`` or contexts that cannot share a batch)."""
    from packpath import load_pack

    load_pack()
    import torch

    from wan22duo.engine.model.dit import WanConfig, WanModel
    from wan22duo.engine.memory.estimates import activation_bytes

    out = []
    for name, stored, (w, h, f) in ROWS:
        config = WanConfig(**CONFIGS[name])
        with torch.device("meta"):
            model = WanModel(config)
        total, block, outside = weight_bytes(model, stored)
        stride = 16 if name == "ti2v_5b" else 8
        latent = ((f - 1) // 4 + 1, h // stride, w // stride)
        batched, single = (activation_bytes(config, *latent, torch.bfloat16, cfg=5.0, guidance_batch=n)
                           for n in (passes, 1))
        cards = {}
        for card in CARDS:  # as streaming.choose_plan: the mode that copies fewer bytes per step
            one = _copied(card * GIB - CONTEXT - batched, total, block, outside)
            two = _copied(card * GIB - CONTEXT - single, total, block, outside) if single < batched else None
            if two is not None and (one is None or 2 * two < one):
                cards[card] = _cell(card * GIB - CONTEXT - single, total, block, outside) + " (2 passes)"
            else:
                cards[card] = _cell(card * GIB - CONTEXT - batched, total, block, outside)
        out.append(dict(model=name, stored=stored, video=f"{w}x{h}x{f}", weights=total / GIB, acts=batched / GIB,
                        cards=cards))
    return out


def _copied(budget: float, total: int, block: int, outside: int):
    """Bytes streamed per forward, or None when streaming does not fit (resident: 0)."""
    if budget >= total:
        return 0
    if budget < outside + 2 * block:
        return None
    return total - budget + 2 * block  # the blocks that are not resident (the window is part of the budget)


def _cell(budget: float, total: int, block: int, outside: int) -> str:
    if budget >= total:
        return "resident"
    if budget >= outside + 2 * block:
        return f"streams {1 - (budget - outside) / (total - outside):.0%}"
    return "no"


def markdown(table: list[dict]) -> str:
    head = "| model | weights | video | weights GiB | activations GiB (est.) | " + \
           " | ".join(f"{c} GB" for c in CARDS) + " |"
    lines = [head, "|" + "---|" * (5 + len(CARDS))]
    for r in table:
        title = "A14B (per expert)" if r["model"] == "a14b" else "TI2V-5B"
        lines.append(f"| {title} | {r['stored']} | {r['video']} | {r['weights']:.1f} | {r['acts']:.1f} | " +
                     " | ".join(r["cards"][c] for c in CARDS) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(rows(2 if "--two-pass" not in sys.argv else 1)))
