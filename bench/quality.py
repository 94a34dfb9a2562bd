"""Toy quality table: how sampling options change the video of the trained toy Wan 2.2 MoE (toy/).

    python bench/quality.py [--clips 16] [--weights toy/weights] [--out bench/results_quality.md]

Not yet run on trained weights: no trained toy is committed (see bench/results_quality.md);
tests/test_bench_quality.py runs it end to end on untrained toy files.

Every number is measured on the toy (a dim-128, 2-layer T2V-A14B-layout MoE trained on synthetic
clips), never on Wan 2.2. For ``--clips`` held-out evaluation clips (seeds from ``data.HELD_OUT_SEED``,
every fifth one so the captions vary) it samples each configuration through the pack's nodes
(``toy/run.py``: Wan22DuoExpertLoader x2 -> Wan22DuoSampler -> Wan22DuoVAEDecode) and scores the video
against its caption (``toy/score.py``), and against a reference run of the same seed (UniPC, 50 steps,
official boundary, fp32): pixel RMS (0-255) and the RMS distance between the shape's centroid tracks.

Rows: UniPC at 4/8/20/40 steps; Euler and DPM++ 2M at 20; the boundary far from the official 0.875
(0.5, so the high-noise expert runs steps it was never trained on, and 0.99, the reverse); bf16 compute;
the experts swapped. The ComfyUI-model sampler (Wan22DuoModelSampler) and ComfyUI's two-KSampler graph
are scored in the integration suite (integration/test_toy_comfy.py), not here: they need ComfyUI.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from packpath import load_pack  # noqa: E402

CONFIGS = [  # (label, generate() options, compute dtype)
    ("UniPC 4 steps", {"steps": 4}, "fp32"),
    ("UniPC 8 steps", {"steps": 8}, "fp32"),
    ("UniPC 20 steps", {"steps": 20}, "fp32"),
    ("UniPC 40 steps", {"steps": 40}, "fp32"),
    ("Euler 20 steps", {"steps": 20, "sampler": "euler"}, "fp32"),
    ("DPM++ 2M 20 steps", {"steps": 20, "sampler": "dpmpp_2m"}, "fp32"),
    ("boundary 0.5 (far off), 20 steps", {"steps": 20, "boundary": 0.5}, "fp32"),
    ("boundary 0.99 (far off), 20 steps", {"steps": 20, "boundary": 0.99}, "fp32"),
    ("bf16 compute, 20 steps", {"steps": 20}, "bf16"),
    ("bf16 compute, 40 steps", {"steps": 40}, "bf16"),
    ("experts swapped, 20 steps", {"steps": 20}, "swapped"),
]
REFERENCE = {"steps": 50}


def evaluate(clips: int, weights: Path | None = None, log=print) -> list[dict]:
    import torch

    from wan22duo.toy import data, run, score

    torch.set_num_threads(1)
    seeds = [data.HELD_OUT_SEED + 5 * i for i in range(clips)]
    captions = [data.draw_clip(s).caption for s in seeds]
    models = {dtype: run.load(weights, compute_dtype=dtype) for dtype in ("fp32", "bf16")}
    models["swapped"] = run.load(weights, swap_experts=True)
    refs = [run.generate(models["fp32"], c, seed=s, **REFERENCE)[0] for s, c in zip(seeds, captions)]
    rows = []
    for label, options, dtype in [("UniPC 50 steps (the reference)", REFERENCE, "fp32")] + CONFIGS:
        start = time.perf_counter()
        results, dists = [], []
        for s, c, ref in zip(seeds, captions, refs):
            video = run.generate(models[dtype], c, seed=s, **options)[0]
            results.append(score.score_video(video, c))
            dists.append(score.distance(video, ref))
        n = len(results)
        finite = [r for r in results if r.speed_error != float("inf")]
        rows.append({
            "config": label, "pass": sum(r.ok for r in results) / n,
            "colour": sum(r.colour_ok for r in results) / n, "direction": sum(r.direction_ok for r in results) / n,
            "speed_error": sum(r.speed_error for r in finite) / max(1, len(finite)),
            "jitter": sum(min(r.jitter, 99.0) for r in results) / n, "score": sum(r.score for r in results) / n,
            "pixel_rms": sum(d["pixel_rms"] for d in dists) / n, "track_rms": sum(d["track_rms"] for d in dists) / n,
            "seconds": (time.perf_counter() - start) / n,
        })
        log(format_row(rows[-1]))
    return rows


HEADER = ("| configuration | pass | colour right | direction right | speed error | jitter (px) | mean score "
          "| pixel RMS to ref | track RMS to ref (px) | s / clip |\n|---|---|---|---|---|---|---|---|---|---|")


def format_row(r: dict) -> str:
    return (f"| {r['config']} | {r['pass']:.0%} | {r['colour']:.0%} | {r['direction']:.0%} | "
            f"{r['speed_error']:.0%} | {r['jitter']:.2f} | {r['score']:.2f} | {r['pixel_rms']:.1f} | "
            f"{r['track_rms']:.1f} | {r['seconds']:.1f} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--weights", type=Path, default=None, help="folder of toy files (default toy/weights)")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the table into this markdown file, replacing what follows its "
                             "'## Measurements' heading (e.g. bench/results_quality.md)")
    args = parser.parse_args(argv)
    load_pack()
    import torch

    rows = evaluate(args.clips, args.weights, lambda line: print(line, flush=True))
    table = "\n".join([HEADER] + [format_row(r) for r in rows])
    print(table)
    if args.out:
        head = args.out.read_text().split("## Measurements")[0] if args.out.exists() else ""
        args.out.write_text(f"{head}## Measurements\n\nMeasured by `python bench/quality.py --clips {args.clips}` "
                            f"(torch {torch.__version__}, one CPU thread) on the toy, {args.clips} held-out clips; "
                            f"the reference is UniPC 50 steps, same seed.\n\n{table}\n")


if __name__ == "__main__":
    main()
