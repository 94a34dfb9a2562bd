"""GPU memory and speed of weight streaming at real Wan 2.2 shapes, random weights (no downloads).

For each model and video size, the DiT is built at its real size (A14B: dim 5120, 40
layers; TI2V-5B: dim 3072, 30 layers) with random weights on the host in the stored form
(A14B: fp8 e4m3fn with a per-tensor scale, as ComfyUI's fp8_scaled files; TI2V-5B: bf16;
``--weights`` or ``model:WxHxF:weights`` changes it), then for every card size in
``--cards`` (GB):

* the weight budget is what ``auto`` would give on an empty card of that size: the card
  minus ``engine.memory.estimates.activation_bytes`` for this latent (bf16 compute, cfg != 1);
* ``engine.memory.streaming.place`` puts the expert on the GPU within it (blocks that do not fit
  stream through the CUDA link: side stream, pinned staging buffers);
* one warm-up forward, then ``--forwards`` timed forwards; reported: seconds per step
  (two forwards: CFG runs conditional and unconditional passes one after the other),
  ``torch.cuda.max_memory_allocated`` over the timed forwards, blocks streamed.

"resident" is the whole expert on the GPU (no budget), the speed to compare with (goal:
a 16 GB card within 15 % of it for A14B 480p).

Each streamed output is compared with the resident one for the same input (``identical``:
bit for bit, as streaming promises), so a GPU run also checks the CUDA link's waits.

``--tiny`` runs the same code on CPU at tiny shapes: the same ``streaming.CudaLink``, its
CUDA calls played by ``engine.testing.stream_sim.DeferredCuda`` (copies deferred until waited for,
staging-buffer refills checked), card sizes scaled to the tiny model. It is what the test
suite runs (tests/test_bench_gpu_memory.py), so the script is known to work before a GPU
session uses it.

Usage::

    python bench/bench_gpu_memory.py --out /tmp/gpu.md                  # the full matrix (GPU)
    python bench/bench_gpu_memory.py --runs a14b:832x480x81 --cards 16 resident
    python bench/bench_gpu_memory.py --tiny                             # CPU smoke run
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

GIB = 1024 ** 3
RUNS = ["a14b:832x480x81", "a14b:1280x720x81", "ti2v_5b:1280x704x121"]  # model:WxHxF[:weights]
DEFAULT_WEIGHTS = {"a14b": "fp8_scaled", "ti2v_5b": "bf16"}  # as the files users run come
CARDS = ["8", "12", "16", "24", "resident"]
CONFIGS = {  # spec §1.1: real sizes
    "a14b": dict(dim=5120, ffn_dim=13824, num_layers=40, in_dim=16, out_dim=16),
    "ti2v_5b": dict(dim=3072, ffn_dim=14336, num_layers=30, in_dim=48, out_dim=48),
}
TINY = {"a14b": dict(dim=256, ffn_dim=512, num_layers=8, in_dim=16, out_dim=16, text_dim=64),
        "ti2v_5b": dict(dim=256, ffn_dim=768, num_layers=6, in_dim=48, out_dim=48, text_dim=64)}


def latent_shape(model: str, size: str) -> tuple[int, int, int]:
    """(frames, h, w) of the latent for ``WIDTHxHEIGHTxFRAMES`` pixels."""
    w, h, f = (int(v) for v in size.split("x"))
    stride = 16 if model == "ti2v_5b" else 8
    return (f - 1) // 4 + 1, h // stride, w // stride


def tiny_run(run: str) -> str:
    """The same run at 1/8 of the width and height (whole latent patches) and fewer frames."""
    model, size, *form = run.split(":")
    w, h, f = (int(v) for v in size.split("x"))
    step = 32 if model == "ti2v_5b" else 16
    shrink = [max(step, round(v / 8 / step) * step) for v in (w, h)]
    return ":".join([model, f"{shrink[0]}x{shrink[1]}x{min(f, 4 * ((f - 1) // 40) + 5)}", *form])


def random_model(model: str, weights: str, tiny: bool):
    """The DiT with random weights on the host, in the stored form."""
    import torch

    from wan22duo.engine.model.dit import WanConfig, WanModel
    from wan22duo.engine.model.ops import CASTING_LAYERS

    config = WanConfig(**(TINY if tiny else CONFIGS)[model])
    with torch.device("meta"):
        net = WanModel(config, compute_dtype=torch.bfloat16)
    casting = {n for n, m in net.named_modules() if isinstance(m, CASTING_LAYERS)}
    # One pool of standard-normal values, tiled into every tensor: fast (a copy, not a random
    # draw per element of 14B) and random enough for timing and memory.
    g = torch.Generator().manual_seed(0)
    pool = {torch.bfloat16: torch.randn(1 << 24, generator=g).to(torch.bfloat16)}
    pool[torch.float8_e4m3fn] = pool[torch.bfloat16].to(torch.float8_e4m3fn)
    for name, param in list(net.named_parameters()):
        owner_name, _, attr = name.rpartition(".")
        owner = net.get_submodule(owner_name)
        fan_in = max(1, param[0].numel()) if param.ndim > 1 else 1
        fp8 = owner_name in casting and attr == "weight" and weights == "fp8_scaled"
        value = _tiled(pool[torch.float8_e4m3fn if fp8 else torch.bfloat16], param.shape)
        if fp8:
            owner.scale_weight = torch.tensor(fan_in ** -0.5, dtype=torch.float32)
        elif param.ndim > 1:
            value.mul_(fan_in ** -0.5)
        else:
            value.mul_(0.05).add_(1.0 if attr == "weight" else 0.0)  # norms around 1, small biases
        setattr(owner, attr, torch.nn.Parameter(value, requires_grad=False))
    return net


def _tiled(pool, shape):
    import math

    import torch

    out = torch.empty(shape, dtype=pool.dtype).view(-1)
    n = math.prod(shape)
    for start in range(0, n, pool.numel()):
        stop = min(n, start + pool.numel())
        out[start:stop].view(torch.uint8).copy_(pool[: stop - start].view(torch.uint8))
    return out.view(shape)


def measure(args, net, model: str, size: str, weights: str, card: str, reference=None) -> tuple[dict, object]:
    """One card size for one video on ``net`` (on the host; it is back on the host afterwards).

    Returns the row and the output (on the host); ``reference``: the resident output to compare with."""
    import torch

    from wan22duo.engine.memory.estimates import activation_bytes
    from wan22duo.engine.testing.stream_sim import DeferredCuda
    from wan22duo.engine.memory.streaming import Budget, CudaLink, place, streamer_of, tensor_bytes, to_host

    frames, h, w = latent_shape(model, size)
    cfg = net.config
    weight_bytes = tensor_bytes(net)
    acts = activation_bytes(cfg, frames, h, w, torch.bfloat16, cfg=5.0)
    device = torch.device("cpu" if args.tiny else "cuda")
    scale = weight_bytes / (14.3 * GIB) if args.tiny else 1.0  # tiny: cards scaled like an fp8 A14B
    row = {"model": model, "size": size, "card": card, "weights": weights, "weight_gib": weight_bytes / GIB,
           "activation_estimate_gib": acts / GIB, "tokens": frames * (h // 2) * (w // 2)}
    # --tiny: the CUDA link itself, its CUDA calls played on CPU
    tiny_link = (lambda d, b: CudaLink(d, b, api=DeferredCuda())) if args.tiny else None
    if card == "resident":
        budget = None if not args.tiny else Budget(None, link=tiny_link)
    else:
        limit = float(card) * GIB * scale - (acts if not args.tiny else 0)
        row["weight_budget_gib"] = limit / GIB / scale
        if limit <= 0:
            return {**row, "fits": False, "why": "activations alone exceed the card"}, None
        budget = Budget(limit / GIB, link=tiny_link)
    try:
        place(net, device, budget)
    except ValueError as err:  # BudgetError: smaller than streaming needs
        return {**row, "fits": False, "why": str(err)}, None
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, cfg.in_dim, frames, h, w, generator=g).to(device)
    t = torch.tensor([900.0], device=device)
    ctx = torch.randn(1, 512, cfg.text_dim, generator=g).to(device)
    streamer = streamer_of(net)
    with torch.no_grad():
        net(x, t, ctx)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(args.forwards):
            out = net(x, t, ctx)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / args.forwards
    # On CPU (--tiny) the "device" is the counting link: its peak weight bytes stand in.
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else (
        streamer.peak_bytes if streamer else weight_bytes)
    out = out.cpu()
    row.update(fits=True, finite=bool(torch.isfinite(out).all()), seconds_per_step=2 * seconds,
               peak_gib=peak / GIB / (scale if args.tiny else 1.0),
               streamed_blocks=len(streamer.plan.streamed_blocks) if streamer else 0, blocks=cfg.num_layers)
    if reference is not None:
        row["identical"] = bool(torch.equal(out, reference))
    del x, ctx, streamer
    to_host(net, torch.device("cpu"))
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row, out


def table(rows: list[dict]) -> str:
    lines = ["| model | video | card GB | weight budget GiB | blocks streamed | peak allocated GiB | s / step "
             "| vs resident | output |", "|---|---|---|---|---|---|---|---|---|"]
    resident = {(r["model"], r["size"]): r["seconds_per_step"] for r in rows
                if r["card"] == "resident" and r.get("fits")}
    for r in rows:
        if not r.get("fits"):
            lines.append(f"| {r['model']} | {r['size']} | {r['card']} | {r.get('weight_budget_gib', 0):.1f} | "
                         f"does not fit: {r['why'][:120]} | | | | |")
            continue
        base = resident.get((r["model"], r["size"]))
        ratio = f"{r['seconds_per_step'] / base:.2f}x" if base else "-"
        budget = f"{r['weight_budget_gib']:.1f}" if "weight_budget_gib" in r else "-"
        same = {True: "= resident", False: "DIFFERS", None: "-"}[r.get("identical")] if r["card"] != "resident" \
            else "reference"
        lines.append(f"| {r['model']} | {r['size']} | {r['card']} | {budget} | {r['streamed_blocks']} of "
                     f"{r['blocks']} | {r['peak_gib']:.2f} | {r['seconds_per_step']:.2f} | {ratio} | {same} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", nargs="+", default=RUNS, help="model:WIDTHxHEIGHTxFRAMES")
    ap.add_argument("--cards", nargs="+", default=CARDS, help="card sizes in GB, or 'resident'")
    ap.add_argument("--weights", choices=["fp8_scaled", "bf16"], default=None,
                    help="stored form for runs that do not name one (default: fp8_scaled A14B, bf16 TI2V-5B)")
    ap.add_argument("--forwards", type=int, default=1)
    ap.add_argument("--tiny", action="store_true", help="CPU smoke run at tiny shapes (what the tests run)")
    ap.add_argument("--out", type=Path, help="write the markdown table and JSON lines here")
    args = ap.parse_args(argv)
    from packpath import load_pack

    load_pack()
    import torch

    if not args.tiny and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU, or pass --tiny for the CPU smoke run")
    if args.tiny:
        args.runs = [tiny_run(r) for r in args.runs]
    rows, built = [], {}
    for run in args.runs:
        model, size, *form = run.split(":")
        weights = form[0] if form else args.weights or DEFAULT_WEIGHTS[model]
        if (model, weights) not in built:
            built.clear()  # one model on the host at a time
            start = time.perf_counter()
            built[(model, weights)] = random_model(model, weights, args.tiny)
            print(f"built {model} ({weights}) in {time.perf_counter() - start:.1f} s", flush=True)
        reference, done = None, {}
        for card in sorted(args.cards, key=lambda c: c != "resident"):  # resident first: the reference output
            row, out = measure(args, built[(model, weights)], model, size, weights, card, reference)
            if card == "resident":
                reference = out
            done[card] = row
            print(json.dumps(row), flush=True)
        rows += [done[card] for card in args.cards]
    text = table(rows)
    print(text)
    if args.out:
        args.out.write_text(text + "\n\n" + "\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return rows


if __name__ == "__main__":
    main()
